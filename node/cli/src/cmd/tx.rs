//! `fedpeg tx`: a transaction and where it is; and how a transaction reads.

use fedpeg_proto::v1 as pb;
use serde_json::json;

use super::Context;
use crate::client::status_error;
use crate::report::Report;

/// The transaction `txid` with its status and block.
pub async fn run(ctx: &Context<'_>, txid: &str) -> anyhow::Result<Report> {
    let c = ctx.connect().await?;
    let mut r = c
        .explorer()
        .get_transaction(pb::GetTransactionRequest {
            txid: txid.to_string(),
        })
        .await
        .map_err(|s| status_error("tx", s))?
        .into_inner();
    let status = pb::TransactionStatus::try_from(r.status)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN");
    let t = r.transaction.take().unwrap_or_default();
    let place = if r.status == pb::TransactionStatus::Finalized as i32 {
        format!(
            "final in block {} ({}), index {}",
            r.block_height, r.block_hash, r.index_in_block
        )
    } else {
        "pending in the mempool".to_string()
    };
    Ok(Report::new(
        format!("{}\n{place}", describe(&t)),
        json!({ "transaction": json(&t), "status": status, "height": r.block_height,
            "block_hash": r.block_hash, "index": r.index_in_block }),
    ))
}

/// A transaction as JSON.
pub fn json(t: &pb::TransactionView) -> serde_json::Value {
    json!({
        "txid": t.txid, "sender": t.sender, "nonce": t.nonce, "fee": t.fee,
        "kind": pb::TransactionKind::try_from(t.kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN"),
        "to": t.to, "bitcoin_address": t.bitcoin_address, "amount": t.amount,
    })
}

/// A transaction as one line.
pub fn describe(t: &pb::TransactionView) -> String {
    if t.to.is_empty() {
        format!(
            "{} peg-out {} sats → {} (fee {}, nonce {})",
            t.txid, t.amount, t.bitcoin_address, t.fee, t.nonce
        )
    } else {
        format!(
            "{} {} → {}: {} sats (fee {}, nonce {})",
            t.txid, t.sender, t.to, t.amount, t.fee, t.nonce
        )
    }
}
