//! `fedpeg pegout`: burn pegged BTC for a Bitcoin payment, showing the fee
//! first and then the peg-out's progress.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fedpeg_ledger::amount::Sats;
use fedpeg_ledger::tx::TxKind;
use fedpeg_proto::v1 as pb;

use super::{pegout_status, Context};
use crate::client::{status_error, Client};
use crate::report::{Printer, Report};
use crate::signer::Signer;

/// Pegs out `amount` sats to `to`; follows it until the burn is final, or
/// with `wait` until the Bitcoin payment is confirmed.
pub async fn run(
    ctx: &Context<'_>,
    out: &mut Printer,
    to: &str,
    amount: u64,
    wait: bool,
    timeout_secs: u64,
    max_fee: u64,
) -> anyhow::Result<Report> {
    let c = ctx.connect().await?;
    let s = Signer::load(&c, ctx.key).await?;
    let quote = fee_quote(&c, to).await?;
    if quote.fee > max_fee {
        bail!(
            "the node quotes a fee of {} sats ({} sat/vB), above --max-fee {max_fee}; nothing was signed. Check the Bitcoin fee rate (fedpeg status) and raise --max-fee if it is right",
            quote.fee,
            quote.fee_rate_sat_vb
        );
    }
    out.emit(&Report::text_only(format!(
        "peg-out of {amount} sats to {to} ({}): fee {} sats at {} sat/vB; {} sats leave your balance",
        quote.address_type,
        quote.fee,
        quote.fee_rate_sat_vb,
        amount.saturating_add(quote.fee)
    )))?;
    let nonce = s.next_nonce(&c).await?;
    let kind = TxKind::PegOut {
        bitcoin_address: to.to_string(),
        amount: Sats::from_sat(amount).context("--amount")?,
    };
    let started = Instant::now();
    let txid = c
        .submit(
            &s.sign(
                nonce,
                Sats::from_sat(quote.fee).context("the node's fee quote")?,
                kind,
            ),
            "peg-out",
        )
        .await?;
    out.emit(&Report::text_only(format!("burn submitted: {txid}")))?;
    let deadline = started + Duration::from_secs(timeout_secs);
    follow(&c, out, &txid, wait, deadline, timeout_secs).await
}

async fn fee_quote(c: &Client, to: &str) -> anyhow::Result<pb::EstimatePegOutFeeResponse> {
    Ok(c.wallet()
        .estimate_peg_out_fee(pb::EstimatePegOutFeeRequest {
            bitcoin_address: to.to_string(),
        })
        .await
        .map_err(|s| status_error("peg-out fee", s))?
        .into_inner())
}

/// Emits each change of the peg-out of `txid`; returns the one that ends
/// the wait (the first sighting, or with `wait` the confirmation).
async fn follow(
    c: &Client,
    out: &mut Printer,
    txid: &str,
    wait: bool,
    deadline: Instant,
    timeout_secs: u64,
) -> anyhow::Result<Report> {
    let mut last = String::new();
    loop {
        if let Some(p) = poll(c, txid).await? {
            let seen = format!(
                "{}/{}/{}/{}",
                p.state, p.signatures, p.confirmations, p.batch_version
            );
            let report = if seen != last {
                pegout_status::report(&p)
            } else {
                Report::empty()
            };
            last = seen;
            if !wait || p.state == pb::PegOutState::Confirmed as i32 {
                return Ok(report);
            }
            out.emit(&report)?;
        }
        if Instant::now() > deadline {
            bail!("peg-out {txid} not done after {timeout_secs} s; check with `fedpeg pegout-status {txid}`");
        }
        tokio::time::sleep(Duration::from_millis(if wait { 1000 } else { 50 })).await;
    }
}

/// The peg-out of `txid`, or `None` while its burn is still pooled.
async fn poll(c: &Client, txid: &str) -> anyhow::Result<Option<pb::PegOutInfo>> {
    let r = c
        .wallet()
        .get_peg_out(pb::GetPegOutRequest {
            selector: Some(pb::get_peg_out_request::Selector::Txid(txid.to_string())),
        })
        .await;
    match r {
        Ok(r) => Ok(Some(
            r.into_inner().peg_out.context("node sent no peg-out")?,
        )),
        Err(s) if s.code() == tonic::Code::NotFound => {
            // Not final yet: is it still pooled?
            let t = c
                .explorer()
                .get_transaction(pb::GetTransactionRequest {
                    txid: txid.to_string(),
                })
                .await;
            if matches!(&t, Err(s) if s.code() == tonic::Code::NotFound) {
                bail!("peg-out {txid} was dropped before it was included (fee quote changed, or balance/nonce); run the command again");
            }
            Ok(None)
        }
        Err(s) => Err(status_error("peg-out status", s)),
    }
}
