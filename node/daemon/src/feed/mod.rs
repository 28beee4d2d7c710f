//! The explorer feed: server-streaming finalized blocks and events, and
//! paged history, over the store.
//!
//! Each stream is one task that reads blocks (and their stored events)
//! from the store, starting at the requested height and then following the
//! finalized tip, and pushes them into a bounded per-stream buffer that
//! tonic drains at the consumer's pace. Blocks are final, so a stream never
//! retracts anything: a consumer that reconnects from its last height + 1
//! sees no gap and no duplicate.
//!
//! Backpressure: replaying history is paced by the consumer (the task waits
//! for room; nothing piles up). Once a stream has caught up with the tip,
//! a consumer whose buffer is full while it is more than `max_lag_blocks`
//! behind is ended with RESOURCE_EXHAUSTED, as is one that reads nothing
//! for `stall_timeout_ms`; the message says where to resume. Other streams
//! are unaffected: each has its own buffer and task.

use crate::chain::Chain;
use crate::config::ExplorerConfig;
use crate::store::TxLocation;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::block::CommittedBlock;
use fedpeg_ledger::fedtx::FedTxKind;
use fedpeg_ledger::tx::{Transaction, TxKind};
use fedpeg_proto::v1 as pb;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

mod history;
mod stream;
#[cfg(test)]
mod tests;
mod view;

pub use stream::FeedStream;
pub use view::tx_view;

/// Most accounts in one SubscribeEvents filter.
pub const MAX_FILTER_ACCOUNTS: usize = 1000;
/// Page size when a request leaves it 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// Counters the metrics page shows.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Open SubscribeBlocks / SubscribeEvents streams.
    pub block_streams: AtomicU64,
    pub event_streams: AtomicU64,
    /// Streams ended for falling behind.
    pub cut_off: AtomicU64,
    /// Streams refused because `max_streams` were open.
    pub refused: AtomicU64,
    /// Messages produced.
    pub blocks_sent: AtomicU64,
    pub events_sent: AtomicU64,
}

/// The feed over one chain.
pub struct Feed {
    chain: Arc<Chain>,
    cfg: ExplorerConfig,
    permits: Arc<Semaphore>,
    stats: Arc<FeedStats>,
}

impl Feed {
    /// A feed over `chain` with limits `cfg`.
    pub fn new(chain: Arc<Chain>, cfg: ExplorerConfig) -> Feed {
        Self::with_stats(chain, cfg, Arc::default())
    }

    /// [`Feed::new`], counting into `stats`.
    pub fn with_stats(chain: Arc<Chain>, cfg: ExplorerConfig, stats: Arc<FeedStats>) -> Feed {
        Feed {
            permits: Arc::new(Semaphore::new(cfg.max_streams)),
            chain,
            cfg,
            stats,
        }
    }

    /// Counters for the metrics page.
    pub fn stats(&self) -> &Arc<FeedStats> {
        &self.stats
    }

    /// Limits in force.
    pub fn config(&self) -> &ExplorerConfig {
        &self.cfg
    }

    fn hrp(&self) -> &'static str {
        self.chain.spec.hrp()
    }

    /// Checks a subscription's start height: required, not negative, at
    /// most the next block. 0 means the first block.
    fn start_height(&self, from: Option<i64>) -> Result<u64, Status> {
        let tip = self.chain.height();
        let Some(from) = from else {
            return Err(Status::invalid_argument(format!(
                "from_height is required: 0 replays the whole chain, {} (tip + 1) follows new blocks only",
                tip + 1
            )));
        };
        let from = u64::try_from(from).map_err(|_| {
            Status::invalid_argument(format!(
                "from_height {from} is negative; heights start at 0 (the whole chain)"
            ))
        })?;
        let from = from.max(1);
        if from > tip + 1 {
            return Err(Status::out_of_range(format!(
                "from_height {from} is beyond the next block: the tip is at height {tip}, so subscribe from at most {}",
                tip + 1
            )));
        }
        Ok(from)
    }

    fn permit(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            Status::resource_exhausted(format!(
                "this node already serves {} streams (explorer.max_streams); close one, retry later or use another node",
                self.cfg.max_streams
            ))
        })
    }

    /// A stored block and its events.
    fn load(&self, height: u64) -> Result<(CommittedBlock, Vec<pb::ChainEvent>), Status> {
        let cb = self
            .chain
            .block(height)?
            .ok_or_else(|| Status::internal(format!("finalized block {height} is missing")))?;
        Ok((cb, self.events_at(height)?))
    }

    /// Stored events of a height (none for blocks stored before events were).
    fn events_at(&self, height: u64) -> Result<Vec<pb::ChainEvent>, Status> {
        Ok(self.chain.block_events(height)?.unwrap_or_default())
    }
}
