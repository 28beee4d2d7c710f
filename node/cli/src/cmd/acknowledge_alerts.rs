//! `fedpeg acknowledge-alerts`: the operator acknowledges deep-reorg alerts
//! (all open ones, or the outpoints given) so the member signs peg-outs
//! again. An admin call: it sends the node's admin token.

use fedpeg_proto::v1 as pb;
use serde_json::json;
use std::path::Path;

use super::Context;
use crate::client::{admin_request, load_admin_token, status_error};
use crate::report::Report;

/// Acknowledges `outpoints` (every open alert when empty).
pub async fn run(
    ctx: &Context<'_>,
    admin_token: &Path,
    outpoints: &[String],
) -> anyhow::Result<Report> {
    let token = load_admin_token(admin_token)?;
    let c = ctx.connect().await?;
    let outpoints = if outpoints.is_empty() {
        c.status().await?.deep_reorg_alerts
    } else {
        outpoints.to_vec()
    };
    let req = admin_request(
        &token,
        pb::AcknowledgeAlertsRequest {
            outpoints: outpoints.clone(),
        },
    )?;
    let r = c
        .node()
        .acknowledge_alerts(req)
        .await
        .map_err(|s| status_error("acknowledge-alerts", s))?
        .into_inner();
    let text = if r.remaining.is_empty() {
        format!(
            "acknowledged {} alert(s); none open: peg-outs resume",
            outpoints.len()
        )
    } else {
        format!(
            "acknowledged {} alert(s); still open: {}",
            outpoints.len(),
            r.remaining.join(", ")
        )
    };
    Ok(Report::new(
        text,
        json!({"acknowledged": outpoints, "remaining": r.remaining}),
    ))
}
