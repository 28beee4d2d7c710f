//! `fedpeg pegin`: an account's Bitcoin deposit address, once every member
//! watches it; with `--wait`, the deposits' progress until one is minted.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::bail;
use fedpeg_proto::v1 as pb;
use serde_json::json;

use super::{address, Context};
use crate::client::{status_error, Client};
use crate::report::{Printer, Report};

/// How long `pegin` waits, for the registration and (with `--wait`) a mint.
pub struct Waits {
    /// Give up waiting for the registration after this many seconds.
    pub timeout_secs: u64,
    /// Follow deposits until the next one is minted.
    pub wait: bool,
    /// Give up `wait` after this many seconds.
    pub wait_secs: u64,
}

/// The deposit address of `account` (default: the wallet's), then with
/// `--wait` each deposit's progress; returns the last report.
pub async fn run(
    ctx: &Context<'_>,
    out: &mut Printer,
    account: Option<&str>,
    w: Waits,
) -> anyhow::Result<Report> {
    let c = ctx.connect().await?;
    let address = address::given_or_wallet(ctx, &c, account).await?;
    let r = registered(&c, &address, w.timeout_secs).await?;
    let report = address_report(&address, &r);
    if !w.wait {
        return Ok(report);
    }
    out.emit(&report)?;
    wait_for_mint(&c, out, &address, w.wait_secs).await
}

/// The deposit address of `address`, once it is registered.
async fn registered(
    c: &Client,
    address: &str,
    timeout_secs: u64,
) -> anyhow::Result<pb::GetPegInAddressResponse> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let r = c
            .wallet()
            .get_peg_in_address(pb::GetPegInAddressRequest {
                address: address.to_string(),
            })
            .await
            .map_err(|s| status_error("pegin", s))?
            .into_inner();
        if r.registered {
            return Ok(r);
        }
        if Instant::now() > deadline {
            bail!(
                "the deposit address {} is not registered after {timeout_secs} s; do not send to it yet, retry `fedpeg pegin`",
                r.deposit_address
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn address_report(address: &str, r: &pb::GetPegInAddressResponse) -> Report {
    Report::new(
        [
            format!("send bitcoin to   {}", r.deposit_address),
            format!("credited to       {address}"),
            format!("descriptor        {}", r.descriptor),
            format!(
                "minimum deposit   {} sats (smaller deposits cost more to spend than they are worth)",
                r.min_deposit_sats
            ),
            format!(
                "confirmations     {} before the deposit is minted",
                r.confirmations_required
            ),
        ]
        .join("\n"),
        json!({ "account": address, "deposit_address": r.deposit_address, "descriptor": r.descriptor,
            "registered": r.registered, "confirmations_required": r.confirmations_required,
            "min_deposit_sats": r.min_deposit_sats }),
    )
}

async fn peg_ins(c: &Client, address: &str) -> anyhow::Result<Vec<pb::PegInInfo>> {
    c.wallet()
        .get_peg_ins(pb::GetPegInsRequest {
            selector: Some(pb::get_peg_ins_request::Selector::Address(
                address.to_string(),
            )),
        })
        .await
        .map(|r| r.into_inner().peg_ins)
        .map_err(|s| status_error("pegin --wait", s))
}

/// Emits each deposit's progress until one that was not minted at the
/// start is minted, and returns that one.
async fn wait_for_mint(
    c: &Client,
    out: &mut Printer,
    address: &str,
    wait_secs: u64,
) -> anyhow::Result<Report> {
    let minted = pb::PegInState::Minted as i32;
    let minted_before: HashSet<String> = peg_ins(c, address)
        .await?
        .into_iter()
        .filter(|p| p.state == minted)
        .map(|p| p.outpoint)
        .collect();
    out.hint("waiting for a deposit (Ctrl-C to stop)…");
    let mut last: HashMap<String, (i32, u32)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    loop {
        for p in peg_ins(c, address).await? {
            let now = (p.state, p.confirmations);
            if minted_before.contains(&p.outpoint) || last.get(&p.outpoint) == Some(&now) {
                continue;
            }
            last.insert(p.outpoint.clone(), now);
            if p.state == minted {
                return Ok(deposit_report(&p));
            }
            out.emit(&deposit_report(&p))?;
        }
        if Instant::now() > deadline {
            bail!("no deposit minted within {wait_secs} s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One deposit's progress, as a line and as JSON.
fn deposit_report(p: &pb::PegInInfo) -> Report {
    let state = pb::PegInState::try_from(p.state)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN");
    let text = if p.state == pb::PegInState::Minted as i32 {
        format!(
            "deposit {} minted: {} sats credited at height {}",
            p.outpoint, p.minted_amount, p.minted_height
        )
    } else if p.state == pb::PegInState::Confirming as i32 {
        format!(
            "deposit {} of {} sats: {}/{} confirmations (~{} min)",
            p.outpoint,
            p.amount,
            p.confirmations,
            p.confirmations_required,
            p.eta_seconds / 60
        )
    } else {
        format!("deposit {} of {} sats: {state}", p.outpoint, p.amount)
    };
    Report::new(
        text,
        json!({ "outpoint": p.outpoint, "amount": p.amount, "state": state,
            "confirmations": p.confirmations, "confirmations_required": p.confirmations_required,
            "eta_seconds": p.eta_seconds, "minted_amount": p.minted_amount,
            "minted_height": p.minted_height }),
    )
}
