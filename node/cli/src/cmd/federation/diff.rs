//! What a federation change does to the member set in force: members added
//! and removed, keys and addresses changed, the peg threshold. Pure; shown
//! by `show`, `propose` and `approve` alike.

use fedpeg_proto::v1 as pb;
use serde_json::{json, Value};

/// One side of a comparison: a member set and its peg threshold.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub members: &'a [pb::EpochMember],
    pub peg_threshold: u32,
}

impl<'a> From<&'a pb::EpochView> for Side<'a> {
    fn from(e: &'a pb::EpochView) -> Side<'a> {
        Side {
            members: &e.members,
            peg_threshold: e.peg_threshold,
        }
    }
}

impl<'a> From<&'a pb::FederationChange> for Side<'a> {
    fn from(c: &'a pb::FederationChange) -> Side<'a> {
        Side {
            members: &c.members,
            peg_threshold: c.peg_threshold,
        }
    }
}

/// A member's field that changed, old and new value (keys in hex).
#[derive(Debug, PartialEq, Eq)]
pub struct FieldChange {
    pub name: String,
    pub field: &'static str,
    pub from: String,
    pub to: String,
}

/// The differences between two member sets, each list in member order.
#[derive(Debug, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<pb::EpochMember>,
    pub removed: Vec<pb::EpochMember>,
    pub changed: Vec<FieldChange>,
    /// The members both sides keep stand in another order (the order is the
    /// validator index).
    pub reordered: bool,
    /// `(m, n)` before and after, when either changed.
    pub peg_threshold: Option<((u32, usize), (u32, usize))>,
}

/// What `to` changes relative to `from`, matching members by name.
pub fn between(from: Side<'_>, to: Side<'_>) -> Diff {
    let find = |set: &[pb::EpochMember], name: &str| set.iter().position(|m| m.name == name);
    let added = to
        .members
        .iter()
        .filter(|m| find(from.members, &m.name).is_none())
        .cloned()
        .collect();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    let mut kept_order = Vec::new();
    for old in from.members {
        let Some(i) = find(to.members, &old.name) else {
            removed.push(old.clone());
            continue;
        };
        kept_order.push(i);
        let new = &to.members[i];
        let mut field = |field, from: String, to: String| {
            if from != to {
                changed.push(FieldChange {
                    name: old.name.clone(),
                    field,
                    from,
                    to,
                });
            }
        };
        field(
            "consensus key",
            hex::encode(&old.consensus_key),
            hex::encode(&new.consensus_key),
        );
        field(
            "peg key",
            hex::encode(&old.peg_key),
            hex::encode(&new.peg_key),
        );
        field(
            "p2p address",
            old.p2p_address.clone(),
            new.p2p_address.clone(),
        );
    }
    let before = (from.peg_threshold, from.members.len());
    let after = (to.peg_threshold, to.members.len());
    Diff {
        added,
        removed,
        changed,
        reordered: kept_order.windows(2).any(|w| w[0] > w[1]),
        peg_threshold: (before != after).then_some((before, after)),
    }
}

/// A member on one line: name, both keys in hex, address.
pub fn member_line(m: &pb::EpochMember) -> String {
    format!(
        "{:<12} consensus {} peg {} {}",
        m.name,
        hex::encode(&m.consensus_key),
        hex::encode(&m.peg_key),
        m.p2p_address
    )
}

/// A member as JSON, keys in hex (the shape of a genesis `members[]` entry).
pub fn member_json(m: &pb::EpochMember) -> Value {
    json!({ "name": m.name, "consensus_key": hex::encode(&m.consensus_key),
        "peg_key": hex::encode(&m.peg_key), "p2p_address": m.p2p_address })
}

impl Diff {
    /// One line per difference: `+` added, `-` removed, `~` changed.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .added
            .iter()
            .map(|m| format!("+ {}", member_line(m)))
            .chain(self.removed.iter().map(|m| format!("- {}", m.name)))
            .chain(
                self.changed
                    .iter()
                    .map(|c| format!("~ {:<12} {}: {} -> {}", c.name, c.field, c.from, c.to)),
            )
            .collect();
        if self.reordered {
            lines.push("~ members reordered (the order is the validator index)".into());
        }
        if let Some(((m0, n0), (m1, n1))) = self.peg_threshold {
            lines.push(format!("~ peg threshold {m0} of {n0} -> {m1} of {n1}"));
        }
        lines
    }

    /// The differences as JSON.
    pub fn json(&self) -> Value {
        json!({
            "added": self.added.iter().map(member_json).collect::<Vec<_>>(),
            "removed": self.removed.iter().map(|m| &m.name).collect::<Vec<_>>(),
            "changed": self.changed.iter().map(|c| json!({ "name": c.name,
                "field": c.field.replace(' ', "_"), "from": c.from, "to": c.to })).collect::<Vec<_>>(),
            "reordered": self.reordered,
            "peg_threshold": self.peg_threshold.map(|((m0, n0), (m1, n1))|
                json!({ "from": m0, "from_members": n0, "to": m1, "to_members": n1 })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, key: u8) -> pb::EpochMember {
        pb::EpochMember {
            name: name.into(),
            consensus_key: vec![key; 2],
            peg_key: vec![2, key],
            p2p_address: format!("/ip4/10.0.0.{key}/tcp/1"),
        }
    }

    fn side(members: &[pb::EpochMember], m: u32) -> Side<'_> {
        Side {
            members,
            peg_threshold: m,
        }
    }

    #[test]
    fn added_removed_and_changed_members_and_the_threshold_are_listed() {
        let from = [member("a", 1), member("b", 2), member("c", 3)];
        let mut b = member("b", 2);
        b.peg_key = vec![3, 9];
        let to = [member("a", 1), b, member("d", 4)];
        let d = between(side(&from, 2), side(&to, 2));
        assert_eq!(
            d.lines(),
            [
                "+ d            consensus 0404 peg 0204 /ip4/10.0.0.4/tcp/1",
                "- c",
                "~ b            peg key: 0202 -> 0309",
            ]
        );
        assert_eq!(d.json()["changed"][0]["field"], "peg_key");
        assert_eq!(d.json()["peg_threshold"], Value::Null);
        let d = between(side(&from, 2), side(&from[..2], 2));
        assert_eq!(
            d.lines().last().unwrap(),
            "~ peg threshold 2 of 3 -> 2 of 2"
        );
    }

    #[test]
    fn the_same_members_in_another_order_is_a_difference() {
        let from = [member("a", 1), member("b", 2)];
        let to = [member("b", 2), member("a", 1)];
        assert!(between(side(&from, 1), side(&to, 1)).reordered);
        assert!(!between(side(&from, 1), side(&from, 1)).reordered);
    }
}
