//! `fedpeg send`: sign a transfer, submit it, and wait until it is final.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::amount::Sats;
use fedpeg_ledger::tx::TxKind;
use fedpeg_proto::v1 as pb;
use serde_json::json;

use super::Context;
use crate::client::{status_error, Client};
use crate::report::Report;
use crate::signer::Signer;

/// A transfer as given on the command line.
pub struct Transfer<'a> {
    /// Recipient address.
    pub to: &'a str,
    /// Amount in sats.
    pub amount: u64,
    /// Fee in sats (default: the chain's minimum).
    pub fee: Option<u64>,
    /// Nonce (default: the account's next).
    pub nonce: Option<u64>,
}

/// Submits `t`; unless `no_wait`, waits up to `timeout_secs` for it to be final.
pub async fn run(
    ctx: &Context<'_>,
    t: Transfer<'_>,
    no_wait: bool,
    timeout_secs: u64,
) -> anyhow::Result<Report> {
    let c = ctx.connect().await?;
    let s = Signer::load(&c, ctx.key).await?;
    let to = AccountId::from_address(t.to, s.hrp).with_context(|| "--to")?;
    let nonce = match t.nonce {
        Some(n) => n,
        None => s.next_nonce(&c).await?,
    };
    let fee = Sats::from_sat(t.fee.unwrap_or(s.min_tx_fee)).context("--fee")?;
    let kind = TxKind::Transfer {
        to,
        amount: Sats::from_sat(t.amount).context("--amount")?,
    };
    let started = Instant::now();
    let txid = c.submit(&s.sign(nonce, fee, kind), "send").await?;
    if no_wait {
        let pending = json!({ "txid": txid, "status": "PENDING" });
        return Ok(Report::new(format!("submitted {txid}"), pending));
    }
    let r = wait_final(&c, &txid, started, timeout_secs).await?;
    let secs = started.elapsed().as_secs_f64();
    Ok(Report::new(
        format!(
            "sent {} sats to {}\ntxid {txid}\nfinal in block {} after {secs:.2} s",
            t.amount, t.to, r.block_height
        ),
        json!({ "txid": txid, "status": "FINALIZED", "height": r.block_height,
            "block_hash": r.block_hash, "seconds": secs }),
    ))
}

/// Polls until `txid` is in a finalized block, or fails once it is dropped
/// or `timeout_secs` after `started`.
async fn wait_final(
    c: &Client,
    txid: &str,
    started: Instant,
    timeout_secs: u64,
) -> anyhow::Result<pb::GetTransactionResponse> {
    let deadline = started + Duration::from_secs(timeout_secs);
    loop {
        let r = c
            .explorer()
            .get_transaction(pb::GetTransactionRequest {
                txid: txid.to_string(),
            })
            .await;
        match r {
            Ok(r) if r.get_ref().status == pb::TransactionStatus::Finalized as i32 => {
                return Ok(r.into_inner())
            }
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {
                bail!("transaction {txid} was dropped from the mempool before it was included; check balance and nonce, then resend")
            }
            Err(s) => return Err(status_error("waiting for the transaction", s)),
        }
        if Instant::now() > deadline {
            bail!("transaction {txid} not final after {timeout_secs} s; check it later with `fedpeg tx {txid}`");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
