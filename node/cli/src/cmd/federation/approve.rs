//! `fedpeg federation approve`: the operator votes for a pending change,
//! by its id, exactly as proposed.

use std::path::Path;

use anyhow::{bail, Context as _};
use serde_json::json;

use super::show::pending_lines;
use super::{vote, Snapshot};
use crate::client::load_admin_token;
use crate::cmd::Context;
use crate::report::{Printer, Report};

/// Finds pending change `change_id`, shows what it does, and votes for it.
pub async fn run(
    ctx: &Context<'_>,
    out: &mut Printer,
    admin_token: &Path,
    change_id: &str,
) -> anyhow::Result<Report> {
    let token = load_admin_token(admin_token)?;
    let c = ctx.connect().await?;
    let s = Snapshot::fetch(&c, "federation approve").await?;
    s.refuse_if_waiting()?;
    let pending = &s.federation.pending_changes;
    let id = change_id.trim().to_ascii_lowercase();
    let Some(p) = pending.iter().find(|p| p.change_id == id) else {
        if pending.is_empty() {
            bail!(
                "no pending change {change_id}: no change is pending (see fedpeg federation show)"
            );
        }
        let ids: Vec<_> = pending.iter().map(|p| p.change_id.as_str()).collect();
        bail!("no pending change {change_id}; pending: {}", ids.join(", "));
    };
    let change = p
        .change
        .as_ref()
        .with_context(|| format!("the node sent pending change {id} without its content"))?;
    if !s.member_name.is_empty() && p.voters.contains(&s.member_name) {
        bail!(
            "this member ({}) has already voted for change {id}; nothing sent",
            s.member_name
        );
    }
    if change.activation_height < s.earliest_activation() {
        bail!(
            "change {id} activates at height {}, too soon to be adopted now (the node is at height {}); ask its proposer to propose it again with a later --activation-height",
            change.activation_height,
            s.height
        );
    }
    out.emit(&Report::text_only(
        pending_lines(&s, s.current()?, p).join("\n"),
    ))?;
    let r = vote(&c, &token, change, "federation approve").await?;
    if r.change_id != p.change_id {
        out.warn(&format!(
            "the node names the change voted {}, not {id}; check fedpeg federation show",
            r.change_id
        ));
    }
    let votes = p.voters.len() + 1;
    Ok(Report::new(
        format!(
            "voted for change {id} (transaction {}); {votes}/{} votes with this one",
            r.tx_id, p.needed
        ),
        json!({ "change_id": r.change_id, "tx_id": r.tx_id, "votes": votes, "needed": p.needed }),
    ))
}
