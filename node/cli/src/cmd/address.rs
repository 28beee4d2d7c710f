//! `fedpeg address`: the wallet's address; and how an address is found from
//! a key, a network name or the node.

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use fedpeg_keys::load_wallet_key;
use fedpeg_ledger::account::{hrp_for, AccountId};
use fedpeg_ledger::genesis::parse_network;
use serde_json::json;

use super::Context;
use crate::client::Client;
use crate::report::Report;

/// Prints the wallet's address on `network` (default: the node's).
pub async fn run(ctx: &Context<'_>, network: Option<&str>) -> anyhow::Result<Report> {
    let hrp = hrp(ctx, network).await?;
    let addr = of_key(&load_wallet_key(ctx.key)?, hrp);
    Ok(Report::new(addr.clone(), json!({ "address": addr })))
}

/// The address of `key` with prefix `hrp`.
pub fn of_key(key: &SigningKey, hrp: &str) -> String {
    AccountId(key.verifying_key().to_bytes()).to_address(hrp)
}

/// The address prefix of `network`, or of the node's network.
pub async fn hrp(ctx: &Context<'_>, network: Option<&str>) -> anyhow::Result<&'static str> {
    match network {
        Some(n) => Ok(hrp_for(parse_network(n)?)),
        None => {
            let c = ctx.connect().await.context("(or pass --network)")?;
            Ok(hrp_for(parse_network(&c.status().await?.network)?))
        }
    }
}

/// `given`, or the wallet's own address on the node's network.
pub async fn given_or_wallet(
    ctx: &Context<'_>,
    c: &Client,
    given: Option<&str>,
) -> anyhow::Result<String> {
    match given {
        Some(a) => Ok(a.to_string()),
        None => {
            let hrp = hrp_for(parse_network(&c.status().await?.network)?);
            Ok(of_key(&load_wallet_key(ctx.key)?, hrp))
        }
    }
}
