//! Block production for a one-member federation: consensus with n = 1, where
//! the only member's proposal is decided as soon as it is built. It drives
//! [`Chain`] through the same propose → commit steps the BFT driver uses.

use crate::block::CommittedBlock;
use crate::chain::Chain;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Produces a block whenever the mempool has transactions, and an empty
/// heartbeat block when `heartbeat` passes without one. Runs until
/// `shutdown` resolves.
pub async fn run_solo(
    chain: Arc<Chain>,
    proposer: u32,
    heartbeat: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut last_block = Instant::now();
    loop {
        if chain.mempool_len() == 0 {
            let wait = heartbeat.saturating_sub(last_block.elapsed());
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = chain.mempool_changed() => {},
                _ = tokio::time::sleep(wait) => {},
            }
            if chain.mempool_len() == 0 && last_block.elapsed() < heartbeat {
                continue;
            }
        }
        let c = chain.clone();
        // Building and persisting are CPU and fsync work: keep them off the
        // async workers so gRPC stays responsive.
        let height = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            let p = c.propose(now_ms(), proposer)?;
            let height = p.block.header.height;
            let n = p.block.txs.len();
            let span = tracing::info_span!("commit", height);
            let _g = span.enter();
            c.commit(
                CommittedBlock {
                    block: p.block,
                    commit: Vec::new(),
                },
                p.outcome,
            )?;
            if n > 0 {
                tracing::info!(txs = n, "block finalized");
            }
            Ok(height)
        })
        .await??;
        let _ = height;
        last_block = Instant::now();
        tokio::task::yield_now().await;
    }
}
