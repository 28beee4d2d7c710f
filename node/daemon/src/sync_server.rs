//! Serving block sync (blocks + commit certificates) to peers, off the
//! consensus task.
//!
//! The network admits each request (a few outstanding per peer, observers
//! rate limited) and hands it here; the [`SyncServer`] task answers it from
//! the store on tokio's blocking pool. Members and observers have separate
//! read lanes, so observer traffic never delays a member catching up, and
//! observers share a byte budget per second. A request for a block that is
//! not final yet is held open (long poll) until it is, or its wait runs out.
//! Nothing here takes a lock the consensus task holds for long: the tip
//! comes from the chain's watch channel and blocks straight from RocksDB.

use crate::chain::Chain;
use crate::network::{InboundSync, SYNC_MAX_BLOCKS};
use fedpeg_proto::v1 as pb;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// Longest a request for a not-yet-final block is held open (well under
/// the network's 10 s request timeout).
pub const MAX_SYNC_WAIT: Duration = Duration::from_secs(5);
/// Most bytes of blocks in a response to a member (the block that crosses
/// it is the last one).
pub const MEMBER_SYNC_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Most bytes of blocks in a response to an observer: smaller, so the
/// responses observers may have outstanding (2 per peer, 32 peers) stay
/// within 64 MiB even when they are never read.
pub const OBSERVER_SYNC_MAX_BYTES: usize = 1024 * 1024;

/// Limits of a [`SyncServer`].
#[derive(Clone, Debug)]
pub struct SyncServerConfig {
    /// Requests from members read from the store at once.
    pub member_reads: usize,
    /// Requests from observers read from the store at once.
    pub observer_reads: usize,
    /// Bytes of blocks per second served to all observers together (burst: one second's worth).
    pub observer_bytes_per_sec: u64,
}

impl Default for SyncServerConfig {
    fn default() -> Self {
        SyncServerConfig {
            member_reads: 4,
            observer_reads: 2,
            observer_bytes_per_sec: 32 * 1024 * 1024,
        }
    }
}

/// Answers admitted sync requests from the chain's store.
#[derive(Clone)]
pub struct SyncServer {
    chain: Arc<Chain>,
    member_reads: Arc<Semaphore>,
    observer_reads: Arc<Semaphore>,
    observer_budget: Arc<Mutex<BytePacer>>,
}

impl SyncServer {
    /// A server of `chain` with `cfg`'s limits.
    pub fn new(chain: Arc<Chain>, cfg: &SyncServerConfig) -> SyncServer {
        SyncServer {
            chain,
            member_reads: Arc::new(Semaphore::new(cfg.member_reads.max(1))),
            observer_reads: Arc::new(Semaphore::new(cfg.observer_reads.max(1))),
            observer_budget: Arc::new(Mutex::new(BytePacer::new(
                cfg.observer_bytes_per_sec.max(1),
                Instant::now(),
            ))),
        }
    }

    /// Serves requests until the network drops its sender.
    pub async fn run(self, mut requests: mpsc::Receiver<InboundSync>) {
        // One task per request: the network bounds how many are in flight.
        while let Some(req) = requests.recv().await {
            tokio::spawn(self.clone().serve(req));
        }
        tracing::debug!("sync server stopped: network gone");
    }

    /// Answers one request (after its long poll, if any); gives up quietly
    /// when the requester is gone.
    pub async fn serve(self, req: InboundSync) {
        let InboundSync {
            peer,
            member,
            request,
            mut respond,
        } = req;
        let wait = Duration::from_millis(request.wait_ms.into()).min(MAX_SYNC_WAIT);
        tokio::select! {
            _ = self.wait_for_height(request.from_height, wait) => {}
            _ = respond.closed() => return,
        }
        let response = tokio::select! {
            r = self.read(member.is_some(), request) => r,
            _ = respond.closed() => return,
        };
        match response {
            Ok(response) => {
                let _ = respond.send(response);
            }
            Err(e) => tracing::warn!(%peer, error = %e, "cannot serve sync request"),
        }
    }

    /// Returns once the chain reaches `height` or `wait` passes.
    async fn wait_for_height(&self, height: u64, wait: Duration) {
        let mut tip = self.chain.subscribe_tip();
        if wait.is_zero() || *tip.borrow() >= height {
            return;
        }
        let _ = tokio::time::timeout(wait, tip.wait_for(|t| *t >= height)).await;
    }

    /// Reads the response on the blocking pool, within the lane's limits.
    async fn read(
        &self,
        member: bool,
        request: pb::SyncRequest,
    ) -> Result<pb::SyncResponse, String> {
        let (lane, max_bytes) = if member {
            (&self.member_reads, MEMBER_SYNC_MAX_BYTES)
        } else {
            self.observer_budget_wait().await;
            (&self.observer_reads, OBSERVER_SYNC_MAX_BYTES)
        };
        let permit = lane
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let chain = self.chain.clone();
        let tip = *chain.subscribe_tip().borrow();
        // The permit lives as long as the read, even if this future is
        // dropped (requester gone) while the read runs.
        let response = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            read_blocks(&chain, &request, tip, max_bytes)
        })
        .await
        .map_err(|e| format!("sync read task failed: {e}"))??;
        if !member {
            let bytes = prost::Message::encoded_len(&response) as u64;
            self.with_budget(|b| b.charge(bytes, Instant::now()));
        }
        Ok(response)
    }

    /// Waits until the observers' byte budget is no longer overdrawn.
    async fn observer_budget_wait(&self) {
        loop {
            let delay = self.with_budget(|b| b.delay(Instant::now()));
            if delay.is_zero() {
                return;
            }
            tokio::time::sleep(delay).await;
        }
    }

    fn with_budget<R>(&self, f: impl FnOnce(&mut BytePacer) -> R) -> R {
        let mut budget = self
            .observer_budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut budget)
    }
}

/// Blocks `from_height..` up to `tip`: at most [`SYNC_MAX_BLOCKS`] (or
/// fewer if asked) and about `max_bytes` (at least one block if any).
pub fn read_blocks(
    chain: &Chain,
    req: &pb::SyncRequest,
    tip: u64,
    max_bytes: usize,
) -> Result<pb::SyncResponse, String> {
    let mut blocks = Vec::new();
    let mut bytes = 0usize;
    let from = req.from_height.max(1);
    let max = u64::from(req.max_blocks.clamp(1, SYNC_MAX_BLOCKS));
    for h in from..from.saturating_add(max) {
        if h > tip {
            break;
        }
        let Some(cb) = chain.block(h).map_err(|e| e.to_string())? else {
            break;
        };
        let block = pb::CommittedBlock {
            block: Some(cb.block.to_proto()),
            commit: cb.commit,
        };
        let len = prost::Message::encoded_len(&block);
        if !blocks.is_empty() && bytes + len > max_bytes {
            break;
        }
        bytes += len;
        blocks.push(block);
    }
    Ok(pb::SyncResponse {
        blocks,
        tip_height: tip,
    })
}

/// A byte budget refilled at `rate` per second, at most one second's worth
/// banked; it may be overdrawn by one response, which then delays the next
/// (sans-IO: the caller passes the time).
#[derive(Debug)]
pub struct BytePacer {
    rate: f64,
    available: f64,
    last: Instant,
}

impl BytePacer {
    /// A full budget of `rate` bytes per second.
    pub fn new(rate: u64, now: Instant) -> BytePacer {
        BytePacer {
            rate: rate as f64,
            available: rate as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.available = (self.available + elapsed * self.rate).min(self.rate);
    }

    /// How long until the budget is no longer overdrawn (zero: serve now).
    pub fn delay(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.available >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.available / self.rate)
        }
    }

    /// Spends `bytes` (possibly overdrawing).
    pub fn charge(&mut self, bytes: u64, now: Instant) {
        self.refill(now);
        self.available -= bytes as f64;
    }
}

#[cfg(test)]
mod tests;
