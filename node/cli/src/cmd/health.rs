//! `fedpeg health`: the node's `grpc.health.v1` check, for container and
//! load-balancer health checks. Exits 0 only when the node says SERVING.

use std::time::Duration;

use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::HealthCheckRequest;

use super::Context;
use crate::report::Report;

/// Asks the node whether `service` (empty: the whole node) is serving.
pub async fn run(ctx: &Context<'_>, service: &str, timeout_secs: u64) -> anyhow::Result<Report> {
    let check = async {
        let c = ctx.connect().await?;
        c.health()
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map_err(|s| crate::client::status_error("health", s))
    };
    let resp = tokio::time::timeout(Duration::from_secs(timeout_secs.max(1)), check)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "health: no answer from {} within {timeout_secs} s",
                ctx.node
            )
        })??
        .into_inner();
    let status = ServingStatus::try_from(resp.status).unwrap_or(ServingStatus::Unknown);
    let name = status.as_str_name();
    let what = if service.is_empty() { "node" } else { service };
    if status != ServingStatus::Serving {
        anyhow::bail!("health: {what} at {} is {name}", ctx.node);
    }
    Ok(Report::new(
        format!("{what} at {} is {name}", ctx.node),
        json!({ "service": service, "status": name }),
    ))
}
