//! `fedpeg keygen`: a new wallet key file, never over an existing one.

use fedpeg_keys::create_wallet_key;
use serde_json::json;

use super::{address, Context};
use crate::report::Report;

/// Writes a new key file (mode 0600) and reports its address on `network`
/// (default: the node's).
pub async fn run(ctx: &Context<'_>, network: Option<&str>) -> anyhow::Result<Report> {
    let hrp = address::hrp(ctx, network).await?;
    let key = create_wallet_key(ctx.key)?;
    let addr = address::of_key(&key, hrp);
    let note = format!(
        "key written to {} (mode 0600); keep it safe",
        ctx.key.display()
    );
    Ok(Report::new(
        addr.clone(),
        json!({ "address": addr, "key_file": ctx.key }),
    )
    .with_note(note))
}
