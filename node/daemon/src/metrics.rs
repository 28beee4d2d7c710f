//! Prometheus metrics (text format 0.0.4) over plain HTTP on their own port:
//! `GET /metrics`. Values are read live from the chain, consensus and peg
//! watcher; nothing here changes state.

use crate::chain::Chain;
use crate::driver::ConsensusStatus;
use crate::network::Network;
use crate::watcher::Watcher;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the metrics are read from.
#[derive(Clone)]
pub struct Sources {
    pub chain: Arc<Chain>,
    pub consensus: Arc<ConsensusStatus>,
    pub net: Network,
    pub watcher: Option<Arc<Watcher>>,
    /// Latency histograms, stream counters, reserves.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

pub(crate) fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The metrics page.
pub fn render(s: &Sources) -> String {
    let mut o = String::new();
    let params = s.chain.params();
    let (height, supply, fee_pool, queued, minted, fee_rate) = s.chain.with_state(|st| {
        (
            st.height,
            st.supply.to_sat(),
            st.fee_pool.to_sat(),
            st.withdrawals
                .values()
                .map(|w| w.amount.to_sat())
                .sum::<u64>(),
            st.minted.len() as u64,
            st.fee_rate(params),
        )
    });
    // How long the oldest free UTXO is past the age at which the rollover
    // should have moved it (0 when none is, or without an emergency branch).
    let rollover_overdue_ms = s.chain.with_state(|st| {
        fedpeg_ledger::rollover::oldest(st, params).map(|(_, at)| st.tip_time_ms.saturating_sub(at))
    });
    // The version is built in (crate version + git commit, see
    // `build_info`): hex, digits, dots and `+` only, nothing to escape.
    let _ = writeln!(
        o,
        "# HELP fedpeg_build_info The fedpegd version this node runs (value always 1).\n# TYPE fedpeg_build_info gauge\nfedpeg_build_info{{version=\"{}\"}} 1",
        crate::build_info::VERSION
    );
    metric(
        &mut o,
        "fedpeg_height",
        "gauge",
        "Finalized sidechain height.",
        height.0,
    );
    metric(
        &mut o,
        "fedpeg_consensus_round",
        "gauge",
        "Consensus round at the current height.",
        s.consensus.round.load(Ordering::Relaxed).into(),
    );
    metric(
        &mut o,
        "fedpeg_equivocations_detected_total",
        "counter",
        "Double signs detected since start.",
        s.consensus.equivocations.load(Ordering::Relaxed),
    );
    metric(
        &mut o,
        "fedpeg_rejoining",
        "gauge",
        "1 while this member, restored from a backup, follows the chain without voting (until its vote floor).",
        s.consensus.rejoining.load(Ordering::Relaxed).into(),
    );
    metric(
        &mut o,
        "fedpeg_synced_blocks_total",
        "counter",
        "Blocks applied from block sync since start.",
        s.consensus.synced_blocks.load(Ordering::Relaxed),
    );
    metric(
        &mut o,
        "fedpeg_mempool_transactions",
        "gauge",
        "Pending transactions.",
        s.chain.mempool_len() as u64,
    );
    metric(
        &mut o,
        "fedpeg_peers",
        "gauge",
        "Connected libp2p peers.",
        s.net.peers().len() as u64,
    );
    // Which members' precommits make it into commit certificates: one that
    // stops voting falls behind the tip here.
    let _ = writeln!(
        o,
        "# HELP fedpeg_member_last_signed_height Last height whose commit certificate holds the member's precommit (since this node started).\n# TYPE fedpeg_member_last_signed_height gauge"
    );
    for (m, h) in s
        .chain
        .spec
        .genesis
        .members
        .iter()
        .zip(s.chain.last_signed())
    {
        if let Some(h) = h {
            // Member names are genesis data: keep label values plain.
            let name: String = m
                .name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            let _ = writeln!(
                o,
                "fedpeg_member_last_signed_height{{member=\"{name}\"}} {h}"
            );
        }
    }
    metric(
        &mut o,
        "fedpeg_p2p_events_dropped_total",
        "counter",
        "Gossip dropped unacknowledged because the consensus task lagged more than the network's event buffer (consensus rebroadcasts).",
        s.net.events_dropped(),
    );
    metric(
        &mut o,
        "fedpeg_supply_sats",
        "gauge",
        "Pegged BTC in circulation.",
        supply,
    );
    metric(
        &mut o,
        "fedpeg_fee_pool_sats",
        "gauge",
        "Fees collected by the federation.",
        fee_pool,
    );
    metric(
        &mut o,
        "fedpeg_queued_withdrawals_sats",
        "gauge",
        "Burned, not yet paid peg-outs.",
        queued,
    );
    let (reserves, batches, next_batch) = s
        .chain
        .with_state(|st| (st.reserves(), st.batches.len() as u64, st.next_batch_id));
    let clamp = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
    metric(
        &mut o,
        "fedpeg_reserves_confirmed_sats",
        "gauge",
        "Confirmed federation UTXOs on Bitcoin (free + locked in unconfirmed batches).",
        clamp(reserves.confirmed()),
    );
    metric(
        &mut o,
        "fedpeg_reserves_pending_change_sats",
        "gauge",
        "Change that unconfirmed peg-out batches return.",
        clamp(reserves.pending_change),
    );
    metric(
        &mut o,
        "fedpeg_liabilities_sats",
        "gauge",
        "Supply plus every unpaid peg-out.",
        clamp(reserves.liabilities()),
    );
    metric(
        &mut o,
        "fedpeg_reserves_covered",
        "gauge",
        "1 if confirmed reserves cover supply and unpaid peg-outs.",
        reserves.covered().into(),
    );
    metric(
        &mut o,
        "fedpeg_pegout_batches_unconfirmed",
        "gauge",
        "Peg-out batches waiting for Bitcoin confirmation.",
        batches,
    );
    metric(
        &mut o,
        "fedpeg_pegout_batches_total",
        "counter",
        "Peg-out batches formed.",
        next_batch.0,
    );
    metric(
        &mut o,
        "fedpeg_pegins_minted_total",
        "counter",
        "Deposits minted.",
        minted,
    );
    metric(
        &mut o,
        "fedpeg_fee_rate_sat_per_vbyte",
        "gauge",
        "Agreed Bitcoin fee rate.",
        fee_rate.0,
    );
    metric(
        &mut o,
        "fedpeg_rollover_overdue_seconds",
        "gauge",
        "How long the oldest free federation UTXO is past its timelock rollover (block time; 0 when none is or without an emergency branch).",
        rollover_overdue_ms.unwrap_or(0) / 1000,
    );
    if let Some(w) = &s.watcher {
        metric(
            &mut o,
            "fedpeg_bitcoind_reachable",
            "gauge",
            "1 if this member's bitcoind answered the last poll.",
            w.reachable().into(),
        );
        metric(
            &mut o,
            "fedpeg_bitcoin_block_notifications_total",
            "counter",
            "Block notifications from this member's bitcoind (ZMQ hashblock; 0 without bitcoin.zmq_block).",
            w.block_notifications(),
        );
        metric(
            &mut o,
            "fedpeg_bitcoin_tip_height",
            "gauge",
            "Bitcoin tip seen by this member.",
            w.tip().unwrap_or(0),
        );
        metric(
            &mut o,
            "fedpeg_deep_reorg_alerts",
            "gauge",
            "Minted deposits and confirmed federation spends whose block left the best chain, not yet acknowledged (kept across restarts).",
            w.deep_reorgs().len() as u64,
        );
    }
    s.telemetry.render(&mut o, &s.chain);
    o
}

/// Serves `GET /metrics` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sources: Sources,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            _ = &mut shutdown => return,
            c = listener.accept() => c,
        };
        let Ok((mut stream, _)) = conn else { continue };
        let sources = sources.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // Read the request head (bounded in size and time).
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    match stream.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let (status, body) = if buf[..n].starts_with(b"GET /metrics") {
                ("200 OK", render(&sources))
            } else {
                (
                    "404 Not Found",
                    "fedpeg serves GET /metrics only\n".to_string(),
                )
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
