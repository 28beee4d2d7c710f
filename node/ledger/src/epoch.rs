//! Federation epochs: the member set in force over a range of heights, and
//! the changes members vote on to replace it.
//!
//! Epoch 0 is genesis (activation 0). A [`FederationChange`] voted by a
//! quorum (⌊2n/3⌋ + 1) of the members in force is adopted in that block and
//! becomes the next epoch at its `activation` height: from then on its
//! members sign federation transactions and commit certificates.
//!
//! Each epoch also has its own peg descriptor
//! ([`crate::LedgerParams::federation_of`]): its members' peg keys, its
//! `peg_threshold` and the genesis emergency branch. UTXOs and batches
//! carry the epoch whose descriptor they pay or spend. From an activation
//! on, new deposit addresses and all change pay the new descriptor;
//! deposits to the previous epoch's addresses are still credited for
//! [`DEPOSIT_GRACE_BLOCKS`]; every UTXO of a past epoch is swept to the new
//! descriptor by change-only batches (see [`crate::rollover`]), and
//! peg-out batches spend only UTXOs of the epoch in force, so peg-outs right
//! after an activation wait until the sweep's change is confirmed. A change
//! must let the old UTXOs be signed (continuity) and is refused until the
//! previous sweep is confirmed (see `fed::federation_change`).
//!
//! Canonical bytes of a change (its id is `H_tag("fedpeg/federation-change",
//! bytes)`, and a vote signs them): `count u32 || (name_len u32 || name ||
//! consensus_key[32] || peg_key[33] || addr_len u32 || addr)* ||
//! peg_threshold u32 || activation u64 || base_epoch u32`, integers
//! big-endian.

use crate::encoding::{Reader, RecordError, Writer};
use crate::hash::Hash32;
use crate::ids::MemberIndex;
use crate::tx::DecodeError;
use bitcoin::secp256k1::PublicKey;
use ed25519_dalek::VerifyingKey;
use fedpeg_consensus::Height;
use fedpeg_proto::v1 as pb;
use std::collections::BTreeMap;

/// Sidechain blocks after an epoch's activation during which deposits to
/// the previous epoch's addresses are still credited (and then swept):
/// 100,800, about 28 hours at one block a second. A busy chain makes
/// blocks faster than that (a block as soon as there is work), so the
/// grace is shorter in wall-clock time there; wallets should fetch a new
/// address (`GetPegInAddress`) after a change.
pub const DEPOSIT_GRACE_BLOCKS: u64 = 100_800;

/// Least lead between a vote's block height and the change's activation.
pub const MIN_ACTIVATION_LEAD: u64 = 10;
/// Most lead between a vote's block height and the change's activation.
pub const MAX_ACTIVATION_LEAD: u64 = 100_000;
/// Most members an epoch may have.
pub const MAX_EPOCH_MEMBERS: usize = 64;
/// Longest member name, bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest p2p address, bytes.
pub const MAX_ADDRESS_BYTES: usize = 256;

/// A member of an epoch, as in genesis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochMember {
    pub name: String,
    /// ed25519 consensus key (signs votes, blocks, federation transactions).
    pub consensus_key: VerifyingKey,
    /// secp256k1 peg key (signs peg-outs if it is one of the federation's).
    pub peg_key: PublicKey,
    /// libp2p multiaddress the others dial.
    pub p2p_address: String,
}

impl EpochMember {
    /// The wire form.
    pub fn to_proto(&self) -> pb::EpochMember {
        pb::EpochMember {
            name: self.name.clone(),
            consensus_key: self.consensus_key.to_bytes().to_vec(),
            peg_key: self.peg_key.serialize().to_vec(),
            p2p_address: self.p2p_address.clone(),
        }
    }
}

/// The member set in force from `activation` on (until the next epoch's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epoch {
    /// 0 for genesis, then +1 per adopted change.
    pub number: u32,
    /// First height this set decides.
    pub activation: Height,
    /// Height of the block that adopted it (0 for genesis).
    pub adopted: Height,
    /// Members in order: index = [`MemberIndex`] while it is in force.
    pub members: Vec<EpochMember>,
    pub peg_threshold: u32,
}

/// What [`crate::State::epoch_at`] answers for a state without epochs (a
/// hand-built test state): nobody is a member.
pub(crate) static NO_EPOCH: Epoch = Epoch {
    number: 0,
    activation: Height(0),
    adopted: Height(0),
    members: Vec::new(),
    peg_threshold: 0,
};

impl Epoch {
    /// Members' consensus keys in order.
    pub fn consensus_keys(&self) -> Vec<VerifyingKey> {
        self.members.iter().map(|m| m.consensus_key).collect()
    }

    /// Index of the member with this consensus key.
    pub fn member_index(&self, key: &VerifyingKey) -> Option<usize> {
        self.members.iter().position(|m| m.consensus_key == *key)
    }

    /// Votes that finalize a block or adopt a change: ⌊2n/3⌋ + 1.
    pub fn quorum(&self) -> usize {
        2 * self.members.len() / 3 + 1
    }

    /// Members whose votes show that at least one honest member agrees:
    /// f + 1 with f = ⌊(n - 1)/3⌋.
    pub fn honest_quorum(&self) -> usize {
        self.members.len().saturating_sub(1) / 3 + 1
    }

    /// Writes the epoch (number, activation, adopted, members, threshold)
    /// as the state root and the store hold it.
    pub fn write(&self, w: &mut Writer) {
        w.u32(self.number);
        w.u64(self.activation.0);
        w.u64(self.adopted.0);
        write_members(&self.members, w);
        w.u32(self.peg_threshold);
    }

    fn read(r: &mut Reader<'_>) -> Result<Epoch, RecordError> {
        Ok(Epoch {
            number: r.u32()?,
            activation: Height(r.u64()?),
            adopted: Height(r.u64()?),
            members: read_members(r)?,
            peg_threshold: r.u32()?,
        })
    }

    /// The stored record of an epoch list: version byte 1, count, epochs.
    pub fn encode_list(list: &[Epoch]) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(1);
        w.len(list.len());
        for e in list {
            e.write(&mut w);
        }
        w.buf
    }

    /// Parses [`Epoch::encode_list`]'s bytes.
    pub fn decode_list(bytes: &[u8]) -> Result<Vec<Epoch>, RecordError> {
        let mut r = Reader::new(bytes, "epochs");
        let v = r.u8()?;
        if v != 1 {
            return Err(r.err(format!("unknown record version {v}")));
        }
        let n = r.len(24)?;
        let mut list = Vec::with_capacity(n);
        for _ in 0..n {
            list.push(Epoch::read(&mut r)?);
        }
        r.finish()?;
        Ok(list)
    }
}

fn write_members(members: &[EpochMember], w: &mut Writer) {
    w.len(members.len());
    for m in members {
        w.var_bytes(m.name.as_bytes());
        w.bytes32(m.consensus_key.as_bytes());
        w.buf.extend_from_slice(&m.peg_key.serialize());
        w.var_bytes(m.p2p_address.as_bytes());
    }
}

fn read_members(r: &mut Reader<'_>) -> Result<Vec<EpochMember>, RecordError> {
    let n = r.len(73)?;
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        let name = String::from_utf8(r.var_bytes()?).map_err(|_| r.err("name is not UTF-8"))?;
        let consensus_key = VerifyingKey::from_bytes(&r.bytes32()?)
            .map_err(|_| r.err("invalid ed25519 consensus key"))?;
        let peg_key = PublicKey::from_slice(&r.array::<33>()?)
            .map_err(|_| r.err("invalid secp256k1 peg key"))?;
        let p2p_address =
            String::from_utf8(r.var_bytes()?).map_err(|_| r.err("address is not UTF-8"))?;
        members.push(EpochMember {
            name,
            consensus_key,
            peg_key,
            p2p_address,
        });
    }
    Ok(members)
}

/// A proposed member set, voted by members of the epoch in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederationChange {
    pub members: Vec<EpochMember>,
    pub peg_threshold: u32,
    /// First height the new set decides.
    pub activation: Height,
    /// The epoch this change replaces: a vote counts only while that epoch
    /// is in force, so no vote signed under one epoch can be replayed in
    /// a later one.
    pub base_epoch: u32,
}

/// Members' votes for changes not yet adopted: voter (index in the epoch in
/// force) → (change id, change).
pub type ChangeVotes = BTreeMap<MemberIndex, (Hash32, FederationChange)>;

impl FederationChange {
    /// Writes the canonical bytes (see the module doc).
    pub fn write(&self, w: &mut Writer) {
        write_members(&self.members, w);
        w.u32(self.peg_threshold);
        w.u64(self.activation.0);
        w.u32(self.base_epoch);
    }

    fn read(r: &mut Reader<'_>) -> Result<FederationChange, RecordError> {
        Ok(FederationChange {
            members: read_members(r)?,
            peg_threshold: r.u32()?,
            activation: Height(r.u64()?),
            base_epoch: r.u32()?,
        })
    }

    /// The canonical bytes (see the module doc).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(&mut w);
        w.buf
    }

    /// Id: `H_tag("fedpeg/federation-change", canonical bytes)`.
    pub fn id(&self) -> Hash32 {
        Hash32::tagged("fedpeg/federation-change", &[&self.canonical_bytes()])
    }

    /// The change from the wire, with every field bounded and every key
    /// checked (a valid, non-weak ed25519 key; a compressed secp256k1 key).
    /// What depends on state (uniqueness, the peg rule, the lead) is checked
    /// when a vote applies.
    pub fn from_proto(p: &pb::FederationChange) -> Result<FederationChange, DecodeError> {
        let bad = |s: String| DecodeError::FederationChange(s);
        if p.members.len() > MAX_EPOCH_MEMBERS {
            return Err(bad(format!(
                "{} members; at most {MAX_EPOCH_MEMBERS}",
                p.members.len()
            )));
        }
        let members = p
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if m.name.len() > MAX_NAME_BYTES {
                    return Err(bad(format!(
                        "member {i}: name is longer than {MAX_NAME_BYTES} bytes"
                    )));
                }
                if m.p2p_address.len() > MAX_ADDRESS_BYTES {
                    return Err(bad(format!(
                        "member {i}: p2p_address is longer than {MAX_ADDRESS_BYTES} bytes"
                    )));
                }
                let ck = <[u8; 32]>::try_from(m.consensus_key.as_slice())
                    .map_err(|_| bad(format!("member {i}: consensus_key must be 32 bytes")))?;
                let consensus_key = VerifyingKey::from_bytes(&ck)
                    .ok()
                    .filter(|k| !k.is_weak())
                    .ok_or_else(|| {
                        bad(format!(
                            "member {i}: consensus_key is not a valid (non-weak) ed25519 public key"
                        ))
                    })?;
                if m.peg_key.len() != 33 {
                    return Err(bad(format!(
                        "member {i}: peg_key must be 33 bytes (compressed secp256k1)"
                    )));
                }
                let peg_key = PublicKey::from_slice(&m.peg_key).map_err(|_| {
                    bad(format!(
                        "member {i}: peg_key is not a compressed secp256k1 public key"
                    ))
                })?;
                Ok(EpochMember {
                    name: m.name.clone(),
                    consensus_key,
                    peg_key,
                    p2p_address: m.p2p_address.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FederationChange {
            members,
            peg_threshold: p.peg_threshold,
            activation: Height(p.activation_height),
            base_epoch: p.base_epoch,
        })
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::FederationChange {
        pb::FederationChange {
            members: self.members.iter().map(EpochMember::to_proto).collect(),
            peg_threshold: self.peg_threshold,
            activation_height: self.activation.0,
            base_epoch: self.base_epoch,
        }
    }

    /// Why this set cannot be a federation (as genesis checks its members),
    /// or None: 1..=[`MAX_EPOCH_MEMBERS`] members, names non-empty and
    /// unique, consensus keys unique and non-weak, peg keys unique,
    /// addresses non-empty multiaddresses (starting with '/').
    pub fn member_set_problem(&self) -> Option<String> {
        let n = self.members.len();
        if n == 0 || n > MAX_EPOCH_MEMBERS {
            return Some(format!(
                "a federation has 1 to {MAX_EPOCH_MEMBERS} members; this change lists {n}"
            ));
        }
        for (i, m) in self.members.iter().enumerate() {
            let earlier = &self.members[..i];
            if m.name.trim().is_empty() || earlier.iter().any(|e| e.name == m.name) {
                return Some(format!(
                    "member {i}: name '{}' is empty or repeated",
                    m.name
                ));
            }
            if m.consensus_key.is_weak() {
                return Some(format!("member '{}': consensus_key is weak", m.name));
            }
            if earlier.iter().any(|e| e.consensus_key == m.consensus_key) {
                return Some(format!("member '{}': consensus_key is repeated", m.name));
            }
            if earlier.iter().any(|e| e.peg_key == m.peg_key) {
                return Some(format!("member '{}': peg_key is repeated", m.name));
            }
            if !m.name.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
                return Some(format!(
                    "member {i}: name {:?} must be printable ASCII (what operators read before they approve)",
                    m.name
                ));
            }
            if let Err(why) = check_p2p_address(&m.p2p_address) {
                return Some(format!(
                    "member '{}': p2p_address {:?} {why}",
                    m.name, m.p2p_address
                ));
            }
        }
        None
    }
}

/// Checks a member's p2p address: `/ip4/A/tcp/P`, `/ip6/A/tcp/P` or
/// `/dns|dns4|dns6/HOST/tcp/P`, nothing more. In particular no `/p2p/`
/// suffix: the peer id comes from the consensus key, and a wrong one would
/// make the whole member list unusable for the network.
pub fn check_p2p_address(addr: &str) -> Result<(), String> {
    let parts: Vec<&str> = addr.split('/').collect();
    let form = "is not /ip4/ADDR/tcp/PORT, /ip6/ADDR/tcp/PORT or /dns/HOST/tcp/PORT";
    let [empty, proto, host, tcp, port] = parts.as_slice() else {
        return Err(form.into());
    };
    if !empty.is_empty() || *tcp != "tcp" {
        return Err(form.into());
    }
    let host_ok = match *proto {
        "ip4" => host.parse::<std::net::Ipv4Addr>().is_ok(),
        "ip6" => host.parse::<std::net::Ipv6Addr>().is_ok(),
        "dns" | "dns4" | "dns6" => {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
        _ => false,
    };
    if !host_ok {
        return Err(format!("{form}: bad host {host:?}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{form}: bad port {port:?}")),
    }
}

/// The stored record of change votes: version byte 1, count, then per vote
/// member u32, change id, change.
pub fn encode_change_votes(votes: &ChangeVotes) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(1);
    write_change_votes(votes, &mut w);
    w.buf
}

/// Writes change votes without a version byte (as the state root hashes them).
pub fn write_change_votes(votes: &ChangeVotes, w: &mut Writer) {
    w.len(votes.len());
    for (m, (id, change)) in votes {
        w.u32(m.0);
        w.bytes32(&id.0);
        change.write(w);
    }
}

/// Parses [`encode_change_votes`]'s bytes (ids are recomputed and checked).
pub fn decode_change_votes(bytes: &[u8]) -> Result<ChangeVotes, RecordError> {
    let mut r = Reader::new(bytes, "federation change votes");
    let v = r.u8()?;
    if v != 1 {
        return Err(r.err(format!("unknown record version {v}")));
    }
    let n = r.len(52)?;
    let mut votes = ChangeVotes::new();
    for _ in 0..n {
        let m = MemberIndex(r.u32()?);
        let id = Hash32(r.bytes32()?);
        let change = FederationChange::read(&mut r)?;
        if change.id() != id {
            return Err(r.err(format!("vote of member {m}: id does not match its change")));
        }
        votes.insert(m, (id, change));
    }
    r.finish()?;
    Ok(votes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    pub(crate) fn member(i: u8) -> EpochMember {
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let sk = bitcoin::secp256k1::SecretKey::from_slice(&[i + 1; 32]).unwrap();
        EpochMember {
            name: format!("m{i}"),
            consensus_key: SigningKey::from_bytes(&[i + 100; 32]).verifying_key(),
            peg_key: sk.public_key(&secp),
            p2p_address: format!("/ip4/10.0.0.{i}/tcp/40001"),
        }
    }

    pub(crate) fn change(n: u8) -> FederationChange {
        FederationChange {
            members: (0..n).map(member).collect(),
            peg_threshold: 2,
            activation: Height(40),
            base_epoch: 0,
        }
    }

    fn epoch(n: usize) -> Epoch {
        Epoch {
            number: 1,
            activation: Height(5),
            adopted: Height(1),
            members: (0..n as u8).map(member).collect(),
            peg_threshold: 1,
        }
    }

    #[test]
    fn quorums_follow_the_member_count() {
        // (n, quorum = floor(2n/3)+1, honest = f+1)
        for (n, q, h) in [
            (1, 1, 1),
            (2, 2, 1),
            (3, 3, 1),
            (4, 3, 2),
            (5, 4, 2),
            (7, 5, 3),
        ] {
            assert_eq!(
                (epoch(n).quorum(), epoch(n).honest_quorum()),
                (q, h),
                "n={n}"
            );
        }
        let e = epoch(3);
        assert_eq!(e.member_index(&member(2).consensus_key), Some(2));
        assert_eq!(e.member_index(&member(9).consensus_key), None);
        assert_eq!(e.consensus_keys()[1], member(1).consensus_key);
    }

    #[test]
    fn p2p_addresses_are_plain_ip_or_dns_with_a_tcp_port() {
        for ok in [
            "/ip4/10.0.0.1/tcp/40001",
            "/ip6/::1/tcp/1",
            "/dns/member.example.org/tcp/30001",
            "/dns4/a-b.c/tcp/65535",
        ] {
            assert_eq!(check_p2p_address(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/",
            "/ip4/10.0.0.1/tcp/40001/p2p/12D3KooWBmwkafWE2fqfzS96VoTZ8CZQk3xGMPNjkmFKqSWMAm6E",
            "/ip4/10.0.0.300/tcp/1",
            "/ip4/10.0.0.1/udp/1",
            "/ip4/10.0.0.1/tcp/0",
            "/ip4/10.0.0.1/tcp/70000",
            "/dns/bad host/tcp/1",
            "ip4/10.0.0.1/tcp/1",
            "/unix/tmp/x",
        ] {
            assert!(check_p2p_address(bad).is_err(), "{bad}");
        }
        let mut c = change(2);
        c.members[1].name = "evil\u{1b}[2Jname".into();
        assert!(c.member_set_problem().unwrap().contains("printable ASCII"));
        let mut c = change(2);
        c.members[0].p2p_address = "/ip4/1.2.3.4/tcp/1/p2p/x".into();
        assert!(c.member_set_problem().unwrap().contains("p2p_address"));
    }

    #[test]
    fn golden_change_id() {
        // Pins the canonical bytes: changing them is a consensus change.
        let c = change(1);
        let b = c.canonical_bytes();
        assert_eq!(b.len(), 4 + 4 + 2 + 32 + 33 + 4 + 23 + 4 + 8 + 4);
        assert_eq!(
            c.id().to_hex(),
            "eb9f45cefb64c76ccccdf2601249d31b075cf488a7b9de3be95c2ae723bd9faa"
        );
        assert_eq!(&b[..4], &[0, 0, 0, 1]);
        assert_eq!(
            &b[b.len() - 16..],
            &[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 0]
        );
        assert_eq!(
            c.id(),
            Hash32::tagged("fedpeg/federation-change", &[&b]),
            "tagged hash of the canonical bytes"
        );
        let mut other = c.clone();
        other.activation = Height(41);
        assert_ne!(other.id(), c.id());
    }

    #[test]
    fn bad_wire_changes_are_refused_with_the_reason() {
        let good = change(2).to_proto();
        type Edit = Box<dyn Fn(&mut pb::FederationChange)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|p| p.members[0].consensus_key.pop().map(drop).unwrap_or(())),
                "32 bytes",
            ),
            (Box::new(|p| p.members[0].peg_key = vec![2; 32]), "33 bytes"),
            (
                Box::new(|p| p.members[0].peg_key = vec![9; 33]),
                "not a compressed secp256k1",
            ),
            (
                // The identity point: a weak key.
                Box::new(|p| {
                    let mut k = vec![0u8; 32];
                    k[0] = 1;
                    p.members[0].consensus_key = k
                }),
                "non-weak",
            ),
            (
                Box::new(|p| p.members[1].name = "x".repeat(65)),
                "name is longer",
            ),
            (
                Box::new(|p| p.members[1].p2p_address = "/".repeat(257)),
                "p2p_address is longer",
            ),
            (
                Box::new(|p| {
                    let m = p.members[0].clone();
                    p.members = vec![m; MAX_EPOCH_MEMBERS + 1]
                }),
                "at most 64",
            ),
        ];
        for (edit, why) in cases {
            let mut p = good.clone();
            edit(&mut p);
            let e = FederationChange::from_proto(&p).unwrap_err().to_string();
            assert!(e.contains(why), "{e} lacks {why}");
        }
        assert_eq!(FederationChange::from_proto(&good).unwrap(), change(2));
    }

    #[test]
    fn member_set_problems_are_named() {
        assert_eq!(change(3).member_set_problem(), None);
        let mut c = change(3);
        c.members[2].name = "m0".into();
        assert!(c.member_set_problem().unwrap().contains("repeated"));
        let mut c = change(3);
        c.members[2].consensus_key = c.members[0].consensus_key;
        assert!(c
            .member_set_problem()
            .unwrap()
            .contains("consensus_key is repeated"));
        let mut c = change(3);
        c.members[2].peg_key = c.members[1].peg_key;
        assert!(c
            .member_set_problem()
            .unwrap()
            .contains("peg_key is repeated"));
        let mut c = change(3);
        c.members[1].p2p_address = "10.0.0.1:4000".into();
        assert!(c.member_set_problem().unwrap().contains("is not /ip4"));
        assert!(change(0).member_set_problem().unwrap().contains("lists 0"));
    }

    fn arb_change() -> impl Strategy<Value = FederationChange> {
        (1u8..6, any::<u32>(), any::<u64>()).prop_map(|(n, t, a)| FederationChange {
            members: (0..n).map(member).collect(),
            peg_threshold: t,
            activation: Height(a),
            base_epoch: t % 3,
        })
    }

    proptest! {
        #[test]
        fn changes_round_trip_through_proto_and_records(c in arb_change(), voters in proptest::collection::vec(0u32..64, 0..4)) {
            prop_assert_eq!(FederationChange::from_proto(&c.to_proto()).unwrap(), c.clone());
            let votes: ChangeVotes = voters.iter().map(|m| (MemberIndex(*m), (c.id(), c.clone()))).collect();
            prop_assert_eq!(decode_change_votes(&encode_change_votes(&votes)).unwrap(), votes);
            let epochs = vec![epoch(2), Epoch { members: c.members.clone(), ..epoch(1) }];
            prop_assert_eq!(Epoch::decode_list(&Epoch::encode_list(&epochs)).unwrap(), epochs);
        }

        #[test]
        fn cut_records_are_refused(c in arb_change(), cut in any::<prop::sample::Index>()) {
            let votes: ChangeVotes = [(MemberIndex(0), (c.id(), c.clone()))].into_iter().collect();
            let bytes = encode_change_votes(&votes);
            prop_assert!(decode_change_votes(&bytes[..cut.index(bytes.len())]).is_err());
            let bytes = Epoch::encode_list(&[epoch(3)]);
            prop_assert!(Epoch::decode_list(&bytes[..cut.index(bytes.len())]).is_err());
        }
    }
}
