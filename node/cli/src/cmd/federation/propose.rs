//! `fedpeg federation propose`: the operator edits the member set in force
//! and votes for the result; the other operators approve it by its id.

use std::path::Path;

use anyhow::bail;
use fedpeg_proto::v1 as pb;
use serde_json::json;

use super::diff::{self, Diff};
use super::edits::{Edits, Flags};
use super::show::change_json;
use super::{approve_command, vote, Snapshot, MIN_ACTIVATION_DELAY};
use crate::client::load_admin_token;
use crate::cmd::Context;
use crate::report::{Printer, Report};

/// The flags of `fedpeg federation propose`.
pub struct Args<'a> {
    /// `--admin-token FILE`.
    pub admin_token: &'a Path,
    /// The edits of the member set.
    pub edits: Flags<'a>,
    /// `--activation-height H`.
    pub activation_height: Option<u64>,
    /// `--activate-in BLOCKS` (used without `--activation-height`).
    pub activate_in: u64,
}

/// Builds the change from the set in force, shows it, and votes for it.
/// Every local check runs before anything is sent.
pub async fn run(ctx: &Context<'_>, out: &mut Printer, a: &Args<'_>) -> anyhow::Result<Report> {
    let token = load_admin_token(a.admin_token)?;
    let edits = Edits::parse(&a.edits)?;
    let c = ctx.connect().await?;
    let s = Snapshot::fetch(&c, "federation propose").await?;
    s.refuse_if_waiting()?;
    let current = s.current()?;
    let activation = activation(&s, a.activation_height, a.activate_in)?;
    let change = edits.apply(current, activation)?;
    let d = diff::between(current.into(), (&change).into());
    out.emit(&Report::text_only(proposal(&s, current, &change, &d)))?;
    let r = vote(&c, &token, &change, "federation propose").await?;
    let text = format!(
        "voted for change {id} (transaction {tx})\n\
         adopted once {q} of the {n} members of epoch {e} vote for it, by height {last}; the other operators approve it with:\n  {cmd}",
        id = r.change_id,
        tx = r.tx_id,
        q = current.consensus_quorum,
        n = current.members.len(),
        e = current.number,
        last = activation - MIN_ACTIVATION_DELAY,
        cmd = approve_command(&r.change_id),
    );
    Ok(Report::new(
        text,
        json!({ "change_id": r.change_id, "tx_id": r.tx_id, "change": change_json(&change),
            "diff": d.json(), "needed": current.consensus_quorum,
            "approve": approve_command(&r.change_id) }),
    ))
}

/// The activation height asked for, refused when no adoption could come
/// early enough for it.
fn activation(s: &Snapshot, height: Option<u64>, activate_in: u64) -> anyhow::Result<u64> {
    let (h, flag) = match height {
        Some(h) => (h, format!("--activation-height {h}")),
        None => (
            s.height.saturating_add(activate_in),
            format!("--activate-in {activate_in}"),
        ),
    };
    let earliest = s.earliest_activation();
    if h < earliest {
        bail!(
            "{flag} is too soon: the node is at height {}, and a change activates at least {MIN_ACTIVATION_DELAY} blocks after the block that adopts it; give --activation-height {earliest} or more (or --activate-in {}), leaving the other operators time to approve",
            s.height,
            earliest - s.height
        );
    }
    Ok(h)
}

/// The proposed set and what it changes, shown before the vote is sent.
fn proposal(s: &Snapshot, current: &pb::EpochView, c: &pb::FederationChange, d: &Diff) -> String {
    let mut lines = vec![format!(
        "proposed epoch {}: activates at height {}, {}; peg {} of {}",
        current.number + 1,
        c.activation_height,
        s.in_blocks(c.activation_height),
        c.peg_threshold,
        c.members.len()
    )];
    lines.extend(
        c.members
            .iter()
            .map(|m| format!("  {}", diff::member_line(m))),
    );
    lines.push(format!("changes from epoch {}:", current.number));
    lines.extend(d.lines().iter().map(|l| format!("  {l}")));
    lines.join("\n")
}
