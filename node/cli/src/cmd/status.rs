//! `fedpeg status`: the node, its federation, Bitcoin and the reserves.

use fedpeg_proto::v1 as pb;
use serde_json::json;

use super::{reserves, Context};
use crate::report::Report;

/// The node's status, with its federation's when the node has that service.
pub async fn run(ctx: &Context<'_>) -> anyhow::Result<Report> {
    let c = ctx.connect().await?;
    let s = c.status().await?;
    // Older nodes have no federation service: show what there is.
    let f = c
        .federation()
        .get_federation(pb::GetFederationRequest {})
        .await
        .ok()
        .map(|r| r.into_inner());
    Ok(Report::new(text(&s, f.as_ref()), json(&s, f.as_ref())))
}

fn role_name(s: &pb::GetStatusResponse) -> &'static str {
    pb::NodeRole::try_from(s.role)
        .map(|r| r.as_str_name())
        .unwrap_or("UNKNOWN")
}

fn json(s: &pb::GetStatusResponse, f: Option<&pb::GetFederationResponse>) -> serde_json::Value {
    json!({ "chain_id": s.chain_id, "network": s.network, "height": s.height, "tip_hash": s.tip_hash,
        "role": role_name(s), "member_name": s.member_name, "members": s.members, "mempool_size": s.mempool_size,
        "min_tx_fee": s.min_tx_fee, "pegout_fee": s.pegout_fee, "version": s.version,
        "halt_height": (s.halt_height > 0).then_some(s.halt_height),
        "round": s.round, "peers": s.peers.len(),
        "rejoining": s.rejoining, "vote_floor": s.vote_floor,
        "federation": f.map(federation_json),
        "bitcoin": { "reachable": s.bitcoind_reachable,
            "tip_height": f.map(|f| f.bitcoin_tip_height),
            "deep_reorg_alerts": s.deep_reorg_alerts } })
}

fn text(s: &pb::GetStatusResponse, f: Option<&pb::GetFederationResponse>) -> String {
    let mut lines = vec![
        format!("chain    {} ({})", s.chain_id, s.network),
        format!("height   {} tip {}", s.height, s.tip_hash),
        format!(
            "node     {} {} (fedpegd {})",
            role_name(s),
            s.member_name,
            shown(&s.version)
        ),
        format!("members  {}", s.members),
        format!("mempool  {} transaction(s)", s.mempool_size),
        format!(
            "fees     min {} sats, peg-out {} sats",
            s.min_tx_fee, s.pegout_fee
        ),
        format!("round    {}, {} peer(s)", s.round, s.peers.len()),
    ];
    if s.halt_height > 0 {
        lines.push(format!(
            "halt     after block {} (--halt-height)",
            s.halt_height
        ));
    }
    if s.rejoining {
        lines.push(match s.vote_floor {
            0 => "restored following the chain without voting; waiting for the members' tips to fix its vote floor".into(),
            f => format!("restored following the chain without voting; votes again from height {f}"),
        });
    }
    if let Some(f) = f {
        lines.extend(federation_lines(f, s));
    }
    lines.join("\n")
}

/// A version as reported, or "unknown" when empty.
fn shown(version: &str) -> &str {
    if version.is_empty() {
        "unknown"
    } else {
        version
    }
}

fn federation_json(f: &pb::GetFederationResponse) -> serde_json::Value {
    json!({
        "members": f.members.iter().map(|m| json!({ "name": m.name, "online": m.online,
            "last_seen_ms": m.last_seen_ms, "is_self": m.is_self, "version": m.version })).collect::<Vec<_>>(),
        "consensus_quorum": f.consensus_quorum, "peg_threshold": f.peg_threshold,
        "pegin_confirmations": f.pegin_confirmations, "peg_descriptor": f.peg_descriptor,
        "reserves": f.reserves.as_ref().map(reserves::json),
    })
}

fn federation_lines(f: &pb::GetFederationResponse, s: &pb::GetStatusResponse) -> Vec<String> {
    let online = f.members.iter().filter(|m| m.online).count();
    let mut lines = vec![format!(
        "quorum   {} of {} to finalize, peg {} of {}; {} member(s) online",
        f.consensus_quorum,
        f.members.len(),
        f.peg_threshold,
        f.members.len(),
        online
    )];
    lines.extend(
        f.members
            .iter()
            .map(|m| format!("  {:<12} {:<20} {}", m.name, shown(&m.version), seen(m))),
    );
    lines.push(bitcoin_line(f, s));
    if let Some(r) = &f.reserves {
        lines.extend(reserves::lines(r));
    }
    lines
}

fn seen(m: &pb::FederationMember) -> String {
    if m.is_self {
        "this node".to_string()
    } else if m.online {
        "online".to_string()
    } else if m.last_seen_ms == 0 {
        "not seen".to_string()
    } else {
        format!("last seen at {} ms", m.last_seen_ms)
    }
}

fn bitcoin_line(f: &pb::GetFederationResponse, s: &pb::GetStatusResponse) -> String {
    if f.bitcoin_tip_height > 0 || s.bitcoind_reachable {
        format!(
            "bitcoin  tip {} ({}), {} deep-reorg alert(s)",
            f.bitcoin_tip_height,
            if s.bitcoind_reachable {
                "reachable"
            } else {
                "UNREACHABLE"
            },
            s.deep_reorg_alerts.len()
        )
    } else {
        "bitcoin  this node watches no bitcoind".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_member_says_when_it_votes_again() {
        let mut s = pb::GetStatusResponse::default();
        assert!(!text(&s, None).contains("restored"));
        s.rejoining = true;
        assert!(text(&s, None).contains("waiting for the members' tips"));
        s.vote_floor = 42;
        assert!(text(&s, None).contains("votes again from height 42"));
        assert_eq!(json(&s, None)["vote_floor"], 42);
    }
}
