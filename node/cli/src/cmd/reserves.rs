//! `fedpeg reserves`: the federation's Bitcoin reserves against what it owes.

use fedpeg_proto::v1 as pb;
use serde_json::json;

use super::Context;
use crate::client::status_error;
use crate::report::Report;

/// The reserves with each federation UTXO.
pub async fn run(ctx: &Context<'_>) -> anyhow::Result<Report> {
    let c = ctx.connect().await?;
    let r = c
        .wallet()
        .get_reserves(pb::GetReservesRequest {})
        .await
        .map_err(|s| status_error("reserves", s))?
        .into_inner();
    let mut text = lines(&r);
    text.extend(r.utxos.iter().map(|u| {
        let lock = match u.locked_by_batch {
            Some(b) => format!(" (locked by batch {b})"),
            None => String::new(),
        };
        // The epoch names the descriptor it pays (`fedpeg federation show`).
        format!(
            "  {} {} sats {} (epoch {}){}",
            u.outpoint, u.amount, u.kind, u.epoch, lock
        )
    }));
    Ok(Report::new(text.join("\n"), json(&r)))
}

/// The reserves as JSON (UTXOs counted, not listed).
pub fn json(r: &pb::GetReservesResponse) -> serde_json::Value {
    json!({"height": r.height, "available": r.available, "locked": r.locked,
        "pending_change": r.pending_change, "supply": r.supply, "queued": r.queued,
        "in_batches": r.in_batches, "fee_pool": r.fee_pool, "covered": r.covered,
        "utxos": r.utxos.len(), "oldest_utxo": r.oldest_utxo,
        "oldest_utxo_blocks_to_expiry": r.oldest_utxo_blocks_to_expiry,
        "oldest_utxo_rollover_in_ms": r.oldest_utxo_rollover_in_ms})
}

/// The reserves as lines of text (without the UTXOs).
pub fn lines(r: &pb::GetReservesResponse) -> Vec<String> {
    vec![
        format!("at height {}", r.height),
        format!(
            "reserves  {} sats confirmed ({} free, {} locked in unconfirmed batches; {} change pending)",
            r.available + r.locked,
            r.available,
            r.locked,
            r.pending_change
        ),
        format!(
            "owed      {} sats ({} supply, {} queued peg-outs, {} in batches)",
            r.supply + r.queued + r.in_batches,
            r.supply,
            r.queued,
            r.in_batches
        ),
        format!("fee pool  {} sats", r.fee_pool),
        format!("covered   {}", if r.covered { "yes" } else { "NO" }),
    ]
    .into_iter()
    .chain(r.oldest_utxo_rollover_in_ms.map(|ms| {
        let expiry = match r.oldest_utxo_blocks_to_expiry {
            Some(b) => format!("{b} bitcoin blocks to its emergency timelock"),
            None => "blocks to its emergency timelock unknown".into(),
        };
        format!(
            "oldest    {}: {expiry}; rolled over in {:.1} days",
            r.oldest_utxo,
            ms as f64 / 86_400_000.0
        )
    }))
    .collect()
}
