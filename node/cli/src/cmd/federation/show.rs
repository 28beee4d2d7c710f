//! `fedpeg federation show`: every epoch with its members, an adopted
//! change waiting for its height, and the changes being voted on.

use fedpeg_proto::v1 as pb;
use serde_json::{json, Value};

use super::diff::{self, Side};
use super::Snapshot;
use crate::cmd::Context;
use crate::report::Report;

/// The federation by epoch and its pending changes.
pub async fn run(ctx: &Context<'_>) -> anyhow::Result<Report> {
    let c = ctx.connect().await?;
    let s = Snapshot::fetch(&c, "federation show").await?;
    let current = s.current()?;
    Ok(Report::new(text(&s, current), json(&s, current)))
}

/// Where an epoch stands at the node's height.
fn state(s: &Snapshot, e: &pb::EpochView) -> &'static str {
    use std::cmp::Ordering::*;
    match e.number.cmp(&s.federation.epoch) {
        Less => "past",
        Equal => "in force",
        Greater => "adopted",
    }
}

fn text(s: &Snapshot, current: &pb::EpochView) -> String {
    let f = &s.federation;
    let mut lines = vec![format!("height {}; epoch {} in force", s.height, f.epoch)];
    for (i, e) in f.epochs.iter().enumerate() {
        lines.push(epoch_line(s, e, f.epochs.get(i + 1)));
        lines.extend(
            e.members
                .iter()
                .map(|m| format!("  {}", diff::member_line(m))),
        );
        if state(s, e) == "adopted" {
            lines.push("  changes from the epoch in force:".into());
            let d = diff::between(current.into(), e.into());
            lines.extend(d.lines().iter().map(|l| format!("    {l}")));
        }
    }
    if f.pending_changes.is_empty() {
        lines.push("no pending changes".into());
    }
    for p in &f.pending_changes {
        lines.extend(pending_lines(s, current, p));
    }
    lines.join("\n")
}

fn epoch_line(s: &Snapshot, e: &pb::EpochView, next: Option<&pb::EpochView>) -> String {
    let n = e.members.len();
    let origin = match e.number {
        0 => "genesis".to_string(),
        _ => format!("adopted at height {}", e.adopted_height),
    };
    let span = match (state(s, e), next) {
        ("adopted", _) => format!(
            "activates at height {}, {}",
            e.activation_height,
            s.in_blocks(e.activation_height)
        ),
        ("past", Some(next)) => format!(
            "in force from height {} to {}",
            e.activation_height,
            next.activation_height.saturating_sub(1)
        ),
        _ => format!("in force from height {}", e.activation_height),
    };
    format!(
        "epoch {} ({}): {origin}, {span}; peg {} of {n}, quorum {} of {n}",
        e.number,
        state(s, e),
        e.peg_threshold,
        e.consensus_quorum
    )
}

/// A pending change: its id, votes, activation, and what it changes.
pub fn pending_lines(
    s: &Snapshot,
    current: &pb::EpochView,
    p: &pb::PendingFederationChange,
) -> Vec<String> {
    let change = p.change.clone().unwrap_or_default();
    let voters = match p.voters.is_empty() {
        true => "none".to_string(),
        false => p.voters.join(", "),
    };
    let mut lines = vec![format!(
        "pending change {}: {}/{} votes ({voters}); activates at height {}, {}",
        p.change_id,
        p.voters.len(),
        p.needed,
        change.activation_height,
        s.in_blocks(change.activation_height)
    )];
    if change.activation_height < s.earliest_activation() {
        lines.push(format!(
            "  too late to adopt: a change activates at least {} blocks after the block that adopts it; propose it again with a later height",
            super::MIN_ACTIVATION_DELAY
        ));
    }
    let d = diff::between(current.into(), Side::from(&change));
    lines.extend(d.lines().iter().map(|l| format!("  {l}")));
    lines
}

fn json(s: &Snapshot, current: &pb::EpochView) -> Value {
    let f = &s.federation;
    json!({
        "height": s.height,
        "epoch": f.epoch,
        "epochs": f.epochs.iter().map(|e| json!({
            "number": e.number, "state": state(s, e).replace(' ', "_"),
            "activation_height": e.activation_height, "adopted_height": e.adopted_height,
            "members": e.members.iter().map(diff::member_json).collect::<Vec<_>>(),
            "peg_threshold": e.peg_threshold, "consensus_quorum": e.consensus_quorum,
        })).collect::<Vec<_>>(),
        "pending_changes": f.pending_changes.iter().map(|p| pending_json(current, p)).collect::<Vec<_>>(),
    })
}

/// A pending change as JSON, with its difference from the epoch in force.
pub fn pending_json(current: &pb::EpochView, p: &pb::PendingFederationChange) -> Value {
    let change = p.change.clone().unwrap_or_default();
    json!({
        "change_id": p.change_id, "voters": p.voters, "votes": p.voters.len(), "needed": p.needed,
        "change": change_json(&change),
        "diff": diff::between(current.into(), Side::from(&change)).json(),
    })
}

/// A change as JSON, keys in hex.
pub fn change_json(c: &pb::FederationChange) -> Value {
    json!({ "members": c.members.iter().map(diff::member_json).collect::<Vec<_>>(),
        "peg_threshold": c.peg_threshold, "activation_height": c.activation_height })
}
