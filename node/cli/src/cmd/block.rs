//! `fedpeg block`: a block by height or hash.

use fedpeg_proto::v1 as pb;
use serde_json::json;

use super::{tx, Context};
use crate::client::status_error;
use crate::report::Report;

/// The block at height `id`, or with hash `id`.
pub async fn run(ctx: &Context<'_>, id: &str) -> anyhow::Result<Report> {
    let c = ctx.connect().await?;
    let selector = match id.parse::<u64>() {
        Ok(h) => pb::get_block_request::Selector::Height(h),
        Err(_) => pb::get_block_request::Selector::Hash(id.to_string()),
    };
    let b = c
        .explorer()
        .get_block(pb::GetBlockRequest {
            selector: Some(selector),
        })
        .await
        .map_err(|s| status_error("block", s))?
        .into_inner()
        .block
        .unwrap_or_default();
    let mut text = vec![
        format!("block {} {}", b.height, b.hash),
        format!("  parent   {}", b.parent_hash),
        format!("  time     {} ms", b.time_ms),
        format!("  proposer {} ({})", b.proposer_name, b.proposer),
        format!("  {} transaction(s)", b.transactions.len()),
    ];
    text.extend(
        b.transactions
            .iter()
            .map(|t| format!("  {}", tx::describe(t))),
    );
    Ok(Report::new(
        text.join("\n"),
        json!({ "height": b.height, "hash": b.hash, "parent_hash": b.parent_hash, "time_ms": b.time_ms,
            "proposer": b.proposer_name, "state_root": b.state_root,
            "transactions": b.transactions.iter().map(tx::json).collect::<Vec<_>>() }),
    ))
}
