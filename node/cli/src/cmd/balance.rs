//! `fedpeg balance`: an account's balance, with what is still pending.

use serde_json::json;

use super::{address, Context};
use crate::report::Report;

/// The balance of `address` (default: the wallet's).
pub async fn run(ctx: &Context<'_>, address: Option<&str>) -> anyhow::Result<Report> {
    let c = ctx.connect().await?;
    let address = address::given_or_wallet(ctx, &c, address).await?;
    let a = c.account(address, "balance").await?;
    let mut text = format!("{}: {} sats", a.address, a.balance);
    if a.spendable != a.balance || a.next_nonce != a.nonce {
        text += &format!(
            "\n  pending: spendable {} sats, next nonce {}",
            a.spendable, a.next_nonce
        );
    }
    Ok(Report::new(
        text,
        json!({ "address": a.address, "balance": a.balance, "spendable": a.spendable,
            "nonce": a.nonce, "next_nonce": a.next_nonce }),
    ))
}
