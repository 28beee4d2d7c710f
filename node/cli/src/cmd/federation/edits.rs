//! The edits of `fedpeg federation propose` and the member set they make
//! from the one in force. Pure (no node, no clock): every refusal is a unit
//! test. Edits apply in a fixed order whatever the order of the flags:
//! removals, then additions (appended, in the order given), then key and
//! address changes (which may name an added member), then the threshold.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use fedpeg_ledger::genesis::{safe_peg_thresholds, MemberInfo};
use fedpeg_proto::v1 as pb;

/// The flags of `fedpeg federation propose` that edit the member set.
pub struct Flags<'a> {
    /// `--add-member FILE`: member public info files.
    pub add_members: &'a [PathBuf],
    /// `--remove-member NAME`.
    pub remove_members: &'a [String],
    /// `--set-consensus-key NAME=HEX`.
    pub set_consensus_keys: &'a [String],
    /// `--set-peg-key NAME=HEX`.
    pub set_peg_keys: &'a [String],
    /// `--set-p2p-address NAME=MULTIADDR`.
    pub set_p2p_addresses: &'a [String],
    /// `--peg-threshold M`.
    pub peg_threshold: Option<u32>,
}

/// The edits, each value checked on its own (names are checked against the
/// member set in [`Edits::apply`]).
#[derive(Debug, Default)]
pub struct Edits {
    add: Vec<pb::EpochMember>,
    remove: Vec<String>,
    consensus_keys: Vec<(String, Vec<u8>)>,
    peg_keys: Vec<(String, Vec<u8>)>,
    p2p_addresses: Vec<(String, String)>,
    peg_threshold: Option<u32>,
}

impl Edits {
    /// Reads the member files and checks every key and address given.
    pub fn parse(f: &Flags<'_>) -> anyhow::Result<Edits> {
        let edits = Edits {
            add: f
                .add_members
                .iter()
                .map(|p| member_file(p))
                .collect::<anyhow::Result<_>>()?,
            remove: f.remove_members.to_vec(),
            consensus_keys: assignments(
                f.set_consensus_keys,
                "--set-consensus-key",
                consensus_key,
            )?,
            peg_keys: assignments(f.set_peg_keys, "--set-peg-key", peg_key)?,
            p2p_addresses: assignments(f.set_p2p_addresses, "--set-p2p-address", |v, w| {
                p2p_address(v, w).map(str::to_string)
            })?,
            peg_threshold: f.peg_threshold,
        };
        if edits.add.is_empty()
            && edits.remove.is_empty()
            && edits.consensus_keys.is_empty()
            && edits.peg_keys.is_empty()
            && edits.p2p_addresses.is_empty()
            && edits.peg_threshold.is_none()
        {
            bail!("nothing to propose: give at least one of --add-member, --remove-member, --set-consensus-key, --set-peg-key, --set-p2p-address, --peg-threshold");
        }
        Ok(edits)
    }

    /// The change these edits make to `current`, activating at
    /// `activation_height`; refused when it leaves nobody, repeats a name,
    /// key or address, has an unsafe threshold, or changes nothing.
    pub fn apply(
        &self,
        current: &pb::EpochView,
        activation_height: u64,
    ) -> anyhow::Result<pb::FederationChange> {
        let mut members = current.members.clone();
        for name in &self.remove {
            let i = position(&members, name, "--remove-member", current.number)?;
            members.remove(i);
        }
        if members.is_empty() && self.add.is_empty() {
            bail!("--remove-member: removing every member leaves nobody to run the chain; add members in the same change or remove fewer");
        }
        for m in &self.add {
            if members.iter().any(|o| o.name == m.name) {
                bail!("--add-member: a member named '{}' is already in epoch {}; to replace it give --remove-member {} as well, or change its keys with --set-consensus-key/--set-peg-key", m.name, current.number, m.name);
            }
            members.push(m.clone());
        }
        for (name, key) in &self.consensus_keys {
            let i = position(&members, name, "--set-consensus-key", current.number)?;
            members[i].consensus_key = key.clone();
        }
        for (name, key) in &self.peg_keys {
            let i = position(&members, name, "--set-peg-key", current.number)?;
            members[i].peg_key = key.clone();
        }
        for (name, address) in &self.p2p_addresses {
            let i = position(&members, name, "--set-p2p-address", current.number)?;
            members[i].p2p_address = address.clone();
        }
        refuse_repeats(&members)?;
        let peg_threshold = self.peg_threshold.unwrap_or(current.peg_threshold);
        check_threshold(peg_threshold, members.len(), self.peg_threshold.is_some())?;
        if members == current.members && peg_threshold == current.peg_threshold {
            bail!(
                "these edits leave epoch {} as it is; nothing to propose",
                current.number
            );
        }
        Ok(pb::FederationChange {
            members,
            peg_threshold,
            activation_height,
            base_epoch: current.number,
        })
    }
}

/// Where `name` is in `members`, or an error naming the flag and the members.
fn position(
    members: &[pb::EpochMember],
    name: &str,
    flag: &str,
    epoch: u32,
) -> anyhow::Result<usize> {
    members.iter().position(|m| m.name == name).with_context(|| {
        let names: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
        format!(
            "{flag} {name}: no member '{name}' in epoch {epoch} after the removals and additions (members: {})",
            names.join(", ")
        )
    })
}

/// Refuses two members with the same name, key or address.
fn refuse_repeats(members: &[pb::EpochMember]) -> anyhow::Result<()> {
    type Field = fn(&pb::EpochMember) -> String;
    let fields: [(&str, Field); 4] = [
        ("name", |m| m.name.clone()),
        ("consensus key", |m| hex::encode(&m.consensus_key)),
        ("peg key", |m| hex::encode(&m.peg_key)),
        ("p2p address", |m| m.p2p_address.clone()),
    ];
    for (what, field) in fields {
        for (i, a) in members.iter().enumerate() {
            if let Some(b) = members[..i].iter().find(|b| field(b) == field(a)) {
                bail!(
                    "members '{}' and '{}' would have the same {what} {}; each member needs its own",
                    b.name,
                    a.name,
                    field(a)
                );
            }
        }
    }
    Ok(())
}

/// Refuses a peg threshold that f faulty members of `n` could abuse, as
/// genesis does (`safe_peg_thresholds`).
fn check_threshold(m: u32, n: usize, given: bool) -> anyhow::Result<()> {
    let n = u32::try_from(n).context("too many members")?;
    let safe = safe_peg_thresholds(n);
    if safe.contains(&m) {
        return Ok(());
    }
    let (lo, hi) = (safe.start(), safe.end());
    if given {
        bail!("--peg-threshold {m} is unsafe for {n} members: it must be between {lo} and {hi} so that the f faulty members tolerated can neither sign alone nor block signing");
    }
    bail!("the peg threshold in force, {m}, is unsafe for {n} members: give --peg-threshold between {lo} and {hi}");
}

/// Parses repeated `NAME=VALUE` flags with `value` (given the value and the
/// flag's text for errors).
fn assignments<T>(
    given: &[String],
    flag: &str,
    value: impl Fn(&str, &str) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<(String, T)>> {
    given
        .iter()
        .map(|a| {
            let (name, v) = a
                .split_once('=')
                .filter(|(name, _)| !name.is_empty())
                .with_context(|| format!("{flag} '{a}' must be NAME=VALUE"))?;
            Ok((name.to_string(), value(v, &format!("{flag} {name}"))?))
        })
        .collect()
}

/// A member entry from a `fedpegd keygen --public-out` file (the shape of
/// a genesis `members[]` entry), with its keys and address checked.
pub fn member_file(path: &Path) -> anyhow::Result<pb::EpochMember> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--add-member: cannot read {shown}"))?;
    let info: MemberInfo = serde_json::from_str(&text).with_context(|| {
        format!("--add-member {shown} is not a member public info file (the JSON `fedpegd keygen --public-out FILE` writes: name, consensus_key, peg_key, p2p_address)")
    })?;
    let what = format!("--add-member {shown}");
    if info.name.trim().is_empty() || info.name.trim() != info.name {
        bail!(
            "{what}: the name '{}' must be non-empty, without leading or trailing spaces",
            info.name
        );
    }
    Ok(pb::EpochMember {
        consensus_key: consensus_key(&info.consensus_key, &format!("{what}: consensus_key"))?,
        peg_key: peg_key(&info.peg_key, &format!("{what}: peg_key"))?,
        p2p_address: p2p_address(&info.p2p_address, &format!("{what}: p2p_address"))?.to_string(),
        name: info.name,
    })
}

/// An ed25519 public key: 64 hex characters, a valid curve point.
fn consensus_key(hex_key: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = hex_bytes(hex_key, 32, what, "an ed25519 consensus public key")?;
    let array: [u8; 32] = bytes.as_slice().try_into().context(what.to_string())?;
    ed25519_dalek::VerifyingKey::from_bytes(&array)
        .with_context(|| format!("{what}: '{hex_key}' is not an ed25519 public key"))?;
    Ok(bytes)
}

/// A compressed secp256k1 public key: 66 hex characters, a valid point.
fn peg_key(hex_key: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = hex_bytes(hex_key, 33, what, "a compressed secp256k1 peg public key")?;
    fedpeg_peg::bitcoin::secp256k1::PublicKey::from_slice(&bytes)
        .with_context(|| format!("{what}: '{hex_key}' is not a secp256k1 public key"))?;
    Ok(bytes)
}

/// A member's p2p address, by the rule the ledger applies to a change
/// ([`fedpeg_ledger::epoch::check_p2p_address`]).
fn p2p_address<'a>(address: &'a str, what: &str) -> anyhow::Result<&'a str> {
    fedpeg_ledger::epoch::check_p2p_address(address).map_err(|why| {
        anyhow::anyhow!("{what}: '{address}' {why} (e.g. /ip4/203.0.113.7/tcp/30001)")
    })?;
    Ok(address)
}

fn hex_bytes(text: &str, len: usize, what: &str, kind: &str) -> anyhow::Result<Vec<u8>> {
    match hex::decode(text) {
        Ok(b) if b.len() == len => Ok(b),
        _ => bail!(
            "{what}: '{text}' is not {kind} ({} hex characters)",
            2 * len
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: u8) -> pb::EpochMember {
        pb::EpochMember {
            name: format!("m{i}"),
            consensus_key: vec![i; 32],
            peg_key: vec![2, i],
            p2p_address: format!("/ip4/127.0.0.1/tcp/3000{i}"),
        }
    }

    fn epoch(n: u8) -> pb::EpochView {
        pb::EpochView {
            number: 1,
            members: (0..n).map(member).collect(),
            peg_threshold: 2,
            ..Default::default()
        }
    }

    fn edits() -> Edits {
        Edits::default()
    }

    fn err(r: anyhow::Result<pb::FederationChange>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    const ED_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const SECP_KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    #[test]
    fn removal_then_addition_then_key_changes_in_that_order() {
        let mut new = member(9);
        new.name = "m3".into();
        let e = Edits {
            remove: vec!["m3".into()],
            add: vec![new.clone()],
            p2p_addresses: vec![("m3".into(), "/dns/m3.example/tcp/1".into())],
            ..edits()
        };
        let c = e.apply(&epoch(4), 50).unwrap();
        assert_eq!(c.activation_height, 50);
        assert_eq!(c.peg_threshold, 2);
        assert_eq!(c.members[..3], epoch(4).members[..3]);
        assert_eq!(c.members[3].consensus_key, new.consensus_key);
        assert_eq!(c.members[3].p2p_address, "/dns/m3.example/tcp/1");
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_members_listed() {
        let e = Edits {
            remove: vec!["m7".into()],
            ..edits()
        };
        assert_eq!(
            err(e.apply(&epoch(4), 50)),
            "--remove-member m7: no member 'm7' in epoch 1 after the removals and additions (members: m0, m1, m2, m3)"
        );
        let e = Edits {
            peg_keys: vec![("x".into(), vec![2; 33])],
            ..edits()
        };
        assert!(err(e.apply(&epoch(4), 50)).starts_with("--set-peg-key x: no member 'x'"));
    }

    #[test]
    fn a_repeated_name_key_or_address_is_refused() {
        let e = Edits {
            add: vec![member(1)],
            ..edits()
        };
        assert!(err(e.apply(&epoch(4), 50)).contains("a member named 'm1' is already in epoch 1"));
        let mut twin = member(1);
        twin.name = "m9".into();
        let e = Edits {
            add: vec![twin],
            ..edits()
        };
        assert!(err(e.apply(&epoch(4), 50))
            .starts_with("members 'm1' and 'm9' would have the same consensus key"),);
        let e = Edits {
            p2p_addresses: vec![("m2".into(), member(0).p2p_address)],
            ..edits()
        };
        assert!(err(e.apply(&epoch(4), 50)).contains("the same p2p address"));
    }

    #[test]
    fn removing_everyone_or_changing_nothing_is_refused() {
        let e = Edits {
            remove: vec!["m0".into()],
            ..edits()
        };
        assert!(err(e.apply(&epoch(1), 50)).contains("leaves nobody"));
        let e = Edits {
            peg_threshold: Some(2),
            ..edits()
        };
        assert_eq!(
            err(e.apply(&epoch(4), 50)),
            "these edits leave epoch 1 as it is; nothing to propose"
        );
    }

    #[test]
    fn an_unsafe_threshold_is_refused_with_the_safe_range() {
        let e = Edits {
            peg_threshold: Some(4),
            ..edits()
        };
        assert!(err(e.apply(&epoch(4), 50))
            .starts_with("--peg-threshold 4 is unsafe for 4 members: it must be between 2 and 3"));
        // 2 of 7 is unsafe (f = 2): the threshold in force must be raised.
        let e = Edits {
            add: (4..7).map(member).collect(),
            ..edits()
        };
        assert!(err(e.apply(&epoch(4), 50)).contains("give --peg-threshold between 3 and 5"));
    }

    /// `Edits::parse` of consensus and peg key flags alone.
    fn parse(keys: &[&str], peg: &[&str]) -> anyhow::Result<Edits> {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Edits::parse(&Flags {
            add_members: &[],
            remove_members: &[],
            set_consensus_keys: &owned(keys),
            set_peg_keys: &owned(peg),
            set_p2p_addresses: &[],
            peg_threshold: None,
        })
    }

    #[test]
    fn flags_with_bad_values_are_refused_before_anything_is_sent() {
        let e = parse(&[], &[]).unwrap_err();
        assert!(e.to_string().starts_with("nothing to propose"));
        let e = parse(&["m1=zz"], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--set-consensus-key m1: 'zz' is not an ed25519 consensus public key (64 hex characters)"
        );
        let e = parse(&[ED_KEY], &[]).unwrap_err();
        assert!(e.to_string().ends_with("must be NAME=VALUE"), "{e}");
        let e = parse(&[], &[&format!("m1={ED_KEY}")]).unwrap_err();
        assert!(e.to_string().contains("(66 hex characters)"), "{e}");
        let e = parse(&[&format!("m1={ED_KEY}")], &[&format!("m1={SECP_KEY}")]).unwrap();
        assert_eq!(e.consensus_keys[0].1.len(), 32);
        assert_eq!(e.peg_keys[0].1.len(), 33);
    }

    #[test]
    fn a_keygen_public_info_file_is_a_member_and_other_files_are_explained() {
        let dir = std::env::temp_dir().join(format!("fedpeg-edits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = fedpeg_keys::create_member_keys(&dir.join("m9.key"), "m9").unwrap();
        let info = keys.public_info("/ip4/10.0.0.9/tcp/30001");
        let file = dir.join("m9.json");
        std::fs::write(&file, serde_json::to_string_pretty(&info).unwrap()).unwrap();
        let m = member_file(&file).unwrap();
        assert_eq!(m.name, "m9");
        assert_eq!(hex::encode(&m.consensus_key), info.consensus_key);
        assert_eq!(hex::encode(&m.peg_key), info.peg_key);
        std::fs::write(&file, "{\"name\": \"m9\"}").unwrap();
        let e = format!("{:#}", member_file(&file).unwrap_err());
        assert!(e.contains("is not a member public info file"), "{e}");
        let e = format!("{:#}", member_file(&dir.join("none.json")).unwrap_err());
        assert!(e.starts_with("--add-member: cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
