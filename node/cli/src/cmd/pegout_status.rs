//! `fedpeg pegout-status`: where a peg-out is; and how a peg-out reads.

use anyhow::Context as _;
use fedpeg_proto::v1 as pb;
use serde_json::json;

use super::Context;
use crate::client::status_error;
use crate::report::Report;

/// The peg-out with sidechain txid or withdrawal id `id`.
pub async fn run(ctx: &Context<'_>, id: &str) -> anyhow::Result<Report> {
    let c = ctx.connect().await?;
    let selector = match id.parse::<u64>() {
        Ok(n) if id.len() < 20 => pb::get_peg_out_request::Selector::WithdrawalId(n),
        _ => pb::get_peg_out_request::Selector::Txid(id.to_string()),
    };
    let p = c
        .wallet()
        .get_peg_out(pb::GetPegOutRequest {
            selector: Some(selector),
        })
        .await
        .map_err(|s| status_error("peg-out", s))?
        .into_inner()
        .peg_out
        .context("node sent no peg-out")?;
    Ok(report(&p))
}

/// The name of a peg-out state, as in JSON output.
pub fn state_name(s: i32) -> &'static str {
    match pb::PegOutState::try_from(s).unwrap_or(pb::PegOutState::Unspecified) {
        pb::PegOutState::Queued => "QUEUED",
        pb::PegOutState::Signing => "SIGNING",
        pb::PegOutState::Broadcast => "BROADCAST",
        pb::PegOutState::Confirmed => "CONFIRMED",
        pb::PegOutState::Replaced => "REPLACED",
        pb::PegOutState::Unspecified => "UNKNOWN",
    }
}

/// One peg-out, as a line and as JSON.
pub fn report(p: &pb::PegOutInfo) -> Report {
    let state = state_name(p.state);
    Report::new(
        format!(
            "peg-out {} of {} sats to {}: {state} {}",
            p.withdrawal_id,
            p.amount,
            p.bitcoin_address,
            detail(p, state)
        ),
        json!({"withdrawal_id": p.withdrawal_id, "txid": p.txid, "state": state,
            "amount": p.amount, "bitcoin_address": p.bitcoin_address, "batch": p.batch,
            "bitcoin_txid": p.bitcoin_txid, "vout": p.vout, "signatures": p.signatures,
            "signatures_required": p.signatures_required, "confirmations": p.confirmations,
            "confirmations_required": p.confirmations_required, "eta_seconds": p.eta_seconds,
            "fee_rate_sat_vb": p.fee_rate_sat_vb}),
    )
}

/// What a peg-out in `state` is waiting for.
fn detail(p: &pb::PegOutInfo, state: &str) -> String {
    match state {
        "QUEUED" => "waiting for a batch".to_string(),
        "SIGNING" => format!(
            "batch {} ({}), signatures {} of {}",
            p.batch, p.bitcoin_txid, p.signatures, p.signatures_required
        ),
        "BROADCAST" => format!(
            "bitcoin tx {}:{} at {} sat/vB, confirmations {} of {}, about {} min left",
            p.bitcoin_txid,
            p.vout,
            p.fee_rate_sat_vb,
            p.confirmations,
            p.confirmations_required,
            p.eta_seconds.div_ceil(60)
        ),
        "CONFIRMED" => format!("paid by bitcoin tx {}:{}", p.bitcoin_txid, p.vout),
        _ => String::new(),
    }
}
