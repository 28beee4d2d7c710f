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

use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::block::CommittedBlock;
use crate::chain::Chain;
use crate::config::ExplorerConfig;
use fedpeg_ledger::fedtx::FedTxKind;
use crate::store::TxLocation;
use fedpeg_ledger::tx::{Transaction, TxKind};
use fedpeg_peg::bitcoin::hashes::Hash;
use fedpeg_peg::bitcoin::{BlockHash, Txid};
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
    quorum: u32,
    stats: Arc<FeedStats>,
}

/// A transaction as the API shows it.
pub fn tx_view(tx: &Transaction, hrp: &str) -> pb::TransactionView {
    let (kind, to, bitcoin_address) = match &tx.kind {
        TxKind::Transfer { to, .. } => (
            pb::TransactionKind::Transfer,
            to.to_address(hrp),
            String::new(),
        ),
        TxKind::PegOut {
            bitcoin_address, ..
        } => (
            pb::TransactionKind::PegOut,
            String::new(),
            bitcoin_address.clone(),
        ),
    };
    pb::TransactionView {
        txid: tx.id().to_hex(),
        sender: tx.sender.to_address(hrp),
        nonce: tx.nonce,
        fee: tx.fee.0,
        kind: kind as i32,
        to,
        bitcoin_address,
        amount: tx.amount().0,
    }
}

/// Opaque page token: version, kind, position; hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cursor {
    /// Next block height.
    Blocks(u64),
    /// Last transaction returned, and a tag of the account it pages
    /// (a cursor of one account is refused for another).
    AccountTxs(TxLocation, [u8; 4]),
}

/// The 4-byte tag of `account` in its history cursors.
fn account_tag(account: &AccountId) -> [u8; 4] {
    let h = fedpeg_ledger::hash::Hash32::tagged("fedpeg/history-cursor", &[&account.0]);
    [h.0[0], h.0[1], h.0[2], h.0[3]]
}

impl Cursor {
    fn encode(self) -> String {
        let mut b = vec![1u8];
        match self {
            Cursor::Blocks(h) => {
                b.push(b'b');
                b.extend_from_slice(&h.to_be_bytes());
            }
            Cursor::AccountTxs(l, tag) => {
                b.push(b'a');
                b.extend_from_slice(&l.height.to_be_bytes());
                b.extend_from_slice(&l.index.to_be_bytes());
                b.extend_from_slice(&tag);
            }
        }
        hex::encode(b)
    }

    fn decode(s: &str) -> Result<Cursor, Status> {
        let bad = || {
            Status::invalid_argument(
                "page_token is not one this node issued; pass next_page_token unchanged, or leave it empty for the first page",
            )
        };
        let b = hex::decode(s).map_err(|_| bad())?;
        let u64_at = |at: usize| {
            b.get(at..at + 8)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_be_bytes)
        };
        match (b.first(), b.get(1), b.len()) {
            (Some(1), Some(b'b'), 10) => u64_at(2).map(Cursor::Blocks).ok_or_else(bad),
            (Some(1), Some(b'a'), 18) => {
                let height = u64_at(2).ok_or_else(bad)?;
                let index = u32::from_be_bytes([b[10], b[11], b[12], b[13]]);
                Ok(Cursor::AccountTxs(
                    TxLocation { height, index },
                    [b[14], b[15], b[16], b[17]],
                ))
            }
            _ => Err(bad()),
        }
    }
}

/// Which events a SubscribeEvents stream wants.
#[derive(Debug, Default)]
struct EventFilter {
    accounts: HashSet<String>,
    kinds: HashSet<i32>,
}

impl EventFilter {
    fn matches(&self, e: &pb::ChainEvent) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && (self.accounts.is_empty()
                || fedpeg_ledger::events::accounts_of(e)
                    .iter()
                    .any(|a| self.accounts.contains(*a)))
    }
}

/// Decrements a stream gauge when the stream goes away.
struct GaugeGuard(Arc<FeedStats>, fn(&FeedStats) -> &AtomicU64);

impl GaugeGuard {
    fn new(stats: &Arc<FeedStats>, gauge: fn(&FeedStats) -> &AtomicU64) -> GaugeGuard {
        gauge(stats).fetch_add(1, Ordering::Relaxed);
        GaugeGuard(stats.clone(), gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

/// A server stream: the buffered messages of one subscription, or the
/// status that ended it.
pub struct FeedStream<M> {
    rx: mpsc::Receiver<M>,
    cut: Option<oneshot::Receiver<Status>>,
    /// Set once the stream ended with a status.
    ended: bool,
}

impl<M> tokio_stream::Stream for FeedStream<M> {
    type Item = Result<M, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        // A cut-off ends the stream at once: the consumer is too slow to
        // want the backlog, and resumes from what it actually received.
        if let Some(cut) = self.cut.as_mut() {
            match Pin::new(cut).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.cut = None;
                    self.ended = true;
                    self.rx.close();
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Err(_)) => self.cut = None,
                Poll::Pending => {}
            }
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(m)) => Poll::Ready(Some(Ok(m))),
            Poll::Ready(None) => {
                // The producer ended; it may have left a status first.
                let last = self.cut.take().and_then(|mut c| c.try_recv().ok());
                Poll::Ready(last.map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

enum Sent {
    Ok,
    Closed,
    Cut(String),
}

impl Feed {
    /// A feed over `chain` with limits `cfg`.
    pub fn new(chain: Arc<Chain>, cfg: ExplorerConfig) -> Feed {
        Self::with_stats(chain, cfg, Arc::default())
    }

    /// [`Feed::new`], counting into `stats`.
    pub fn with_stats(chain: Arc<Chain>, cfg: ExplorerConfig, stats: Arc<FeedStats>) -> Feed {
        let quorum = crate::driver::validator_set(&chain)
            .map(|v| v.quorum() as u32)
            .unwrap_or(0);
        Feed {
            permits: Arc::new(Semaphore::new(cfg.max_streams)),
            chain,
            cfg,
            quorum,
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

    /// The feed's view of a block.
    pub fn feed_block(
        &self,
        cb: &CommittedBlock,
        events: Vec<pb::ChainEvent>,
        include_raw: bool,
        tip: u64,
    ) -> pb::FeedBlock {
        let h = &cb.block.header;
        let hrp = self.hrp();
        let members = &self.chain.spec.genesis.members;
        let name = |i: u32| {
            members
                .get(i as usize)
                .map(|m| m.name.clone())
                .unwrap_or_default()
        };
        let commit = match fedpeg_consensus::CommitCertificate::decode(&cb.commit) {
            Ok(c) => {
                let signers: Vec<u32> = c.precommits.iter().map(|(i, _)| i.0).collect();
                pb::CommitSummary {
                    round: c.round.0,
                    signer_names: signers.iter().map(|i| name(*i)).collect(),
                    signers,
                    quorum: self.quorum,
                    members: members.len() as u32,
                }
            }
            Err(_) => pb::CommitSummary {
                quorum: self.quorum,
                members: members.len() as u32,
                ..Default::default()
            },
        };
        let mut transactions: Vec<pb::FeedTransaction> = cb
            .block
            .txs
            .iter()
            .enumerate()
            .map(|(i, tx)| pb::FeedTransaction {
                transaction: Some(tx_view(tx, hrp)),
                outcome: pb::TransactionOutcome::Applied as i32,
                index: i as u32,
                event_indexes: vec![],
            })
            .collect();
        let by_txid: HashMap<String, usize> = transactions
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.transaction.as_ref().map(|v| (v.txid.clone(), i)))
            .collect();
        for e in &events {
            if let Some(&i) = by_txid.get(&e.txid) {
                transactions[i].event_indexes.push(e.index);
            }
        }
        let federation_transactions = cb
            .block
            .fed_txs
            .iter()
            .map(|f| {
                let (kind, summary) = match &f.kind {
                    FedTxKind::RegisterDepositAddress { account } => (
                        "register_deposit_address",
                        format!("watch deposits of {}", account.to_address(hrp)),
                    ),
                    FedTxKind::FeeRateVote {
                        sat_per_vbyte,
                        height,
                    } => (
                        "fee_rate_vote",
                        format!("{sat_per_vbyte} sat/vB at height {height}"),
                    ),
                    FedTxKind::PegInMint {
                        outpoint,
                        amount,
                        account,
                        ..
                    } => (
                        "peg_in_mint",
                        format!(
                            "deposit {outpoint} of {} sats to {}",
                            amount.0,
                            account.to_address(hrp)
                        ),
                    ),
                    FedTxKind::PegOutSignatures {
                        batch,
                        version,
                        signatures,
                    } => (
                        "peg_out_signatures",
                        format!(
                            "{} input signature(s) for batch {batch} version {version}",
                            signatures.len()
                        ),
                    ),
                    FedTxKind::PegOutBump { batch, version } => (
                        "peg_out_bump",
                        format!("vote to replace batch {batch} version {version} at a higher fee"),
                    ),
                    FedTxKind::PegOutConfirmed {
                        batch,
                        txid,
                        bitcoin_block,
                    } => (
                        "peg_out_confirmed",
                        format!(
                            "batch {batch} paid by bitcoin tx {} in block {}",
                            Txid::from_byte_array(*txid),
                            BlockHash::from_byte_array(*bitcoin_block)
                        ),
                    ),
                };
                pb::FederationTxView {
                    member: f.member,
                    member_name: name(f.member),
                    kind: kind.into(),
                    summary,
                }
            })
            .collect();
        pb::FeedBlock {
            height: h.height,
            hash: h.hash().to_hex(),
            parent_hash: h.parent.to_hex(),
            time_ms: h.time_ms,
            proposer: h.proposer,
            proposer_name: name(h.proposer),
            state_root: h.state_root.to_hex(),
            commit: Some(commit),
            transactions,
            federation_transactions,
            events,
            raw: if include_raw { cb.encode() } else { vec![] },
            tip_height: tip,
        }
    }

    /// SubscribeBlocks.
    pub fn subscribe_blocks(
        self: &Arc<Self>,
        req: pb::SubscribeBlocksRequest,
    ) -> Result<FeedStream<pb::FeedBlock>, Status> {
        let from = self.start_height(req.from_height)?;
        let include_raw = req.include_raw;
        let feed = self.clone();
        let make = move |h: u64, tip: u64| {
            let (cb, events) = feed.load(h)?;
            feed.stats.blocks_sent.fetch_add(1, Ordering::Relaxed);
            Ok(vec![feed.feed_block(&cb, events, include_raw, tip)])
        };
        self.open(
            from,
            |s| &s.block_streams,
            "resume with SubscribeBlocks(from_height = the last height you received + 1)",
            make,
        )
    }

    /// SubscribeEvents.
    pub fn subscribe_events(
        self: &Arc<Self>,
        req: pb::SubscribeEventsRequest,
    ) -> Result<FeedStream<pb::ChainEvent>, Status> {
        let from = self.start_height(req.from_height)?;
        let filter = self.event_filter(&req)?;
        let from_index = req.from_index;
        let feed = self.clone();
        let make = move |h: u64, _tip: u64| {
            let events: Vec<pb::ChainEvent> = feed
                .events_at(h)?
                .into_iter()
                .filter(|e| (h != from || e.index >= from_index) && filter.matches(e))
                .collect();
            feed.stats
                .events_sent
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            Ok(events)
        };
        self.open(
            from,
            |s| &s.event_streams,
            "resume with SubscribeEvents(from_height = the last event's height, from_index = its index + 1)",
            make,
        )
    }

    fn event_filter(&self, req: &pb::SubscribeEventsRequest) -> Result<EventFilter, Status> {
        if req.accounts.len() > MAX_FILTER_ACCOUNTS {
            return Err(Status::invalid_argument(format!(
                "{} accounts in the filter; at most {MAX_FILTER_ACCOUNTS}, open several streams for more",
                req.accounts.len()
            )));
        }
        let mut f = EventFilter::default();
        for a in &req.accounts {
            let id = AccountId::from_address(a, self.hrp()).map_err(|e| {
                Status::invalid_argument(format!("account filter '{a}' is not an address: {e}"))
            })?;
            f.accounts.insert(id.to_address(self.hrp()));
        }
        for &k in &req.kinds {
            match pb::EventKind::try_from(k) {
                Ok(pb::EventKind::Unspecified) | Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "event kind {k} is unknown; use EVENT_KIND_TRANSFER, _FEE, _MINT, _BURN, _DEPOSIT_ADDRESS_REGISTERED or _PEG_OUT_STATE_CHANGED"
                    )))
                }
                Ok(kind) => {
                    f.kinds.insert(kind as i32);
                }
            }
        }
        Ok(f)
    }

    /// Starts a stream's task from height `from`.
    fn open<M, F>(
        self: &Arc<Self>,
        from: u64,
        gauge: fn(&FeedStats) -> &AtomicU64,
        resume: &'static str,
        make: F,
    ) -> Result<FeedStream<M>, Status>
    where
        M: Send + 'static,
        F: FnMut(u64, u64) -> Result<Vec<M>, Status> + Send + 'static,
    {
        let permit = self.permit()?;
        let (tx, rx) = mpsc::channel(self.cfg.stream_buffer);
        let (cut_tx, cut_rx) = oneshot::channel();
        let feed = self.clone();
        let gauge = GaugeGuard::new(&self.stats, gauge);
        // The slot is held by the task, not the response: it is free again
        // once the task ends (consumer gone, or cut off), even if the
        // transport never polls the response again.
        tokio::spawn(async move {
            feed.pump(from, tx, cut_tx, resume, make).await;
            drop((permit, gauge));
        });
        Ok(FeedStream {
            rx,
            cut: Some(cut_rx),
            ended: false,
        })
    }

    /// A stream's task: produce from `next` on, following the tip, until
    /// the consumer goes away or is cut off.
    async fn pump<M, F>(
        &self,
        mut next: u64,
        tx: mpsc::Sender<M>,
        cut: oneshot::Sender<Status>,
        resume: &'static str,
        mut make: F,
    ) where
        F: FnMut(u64, u64) -> Result<Vec<M>, Status>,
    {
        let mut tip_rx = self.chain.subscribe_tip();
        let mut live = false;
        loop {
            let tip = *tip_rx.borrow_and_update();
            while next <= tip {
                if tx.is_closed() {
                    return;
                }
                // Replay may find nothing to send for many heights (a
                // filter matching little): let other tasks run.
                tokio::task::consume_budget().await;
                let msgs = match make(next, tip) {
                    Ok(m) => m,
                    Err(status) => {
                        let _ = cut.send(status);
                        return;
                    }
                };
                for m in msgs {
                    match self.send(&tx, m, next, live, &mut tip_rx).await {
                        Sent::Ok => {}
                        Sent::Closed => return,
                        Sent::Cut(why) => {
                            self.stats.cut_off.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(height = next, reason = %why, "explorer stream cut off");
                            let _ = cut.send(Status::resource_exhausted(format!(
                                "{why}; this node had queued up to height {}: {resume}",
                                next.saturating_sub(1)
                            )));
                            return;
                        }
                    }
                }
                next += 1;
            }
            live = true;
            // send() may have consumed the notification of a newer tip.
            if *tip_rx.borrow() >= next {
                continue;
            }
            tokio::select! {
                r = tip_rx.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    }

    /// Queues one message of height `height`, waiting for room while the
    /// consumer keeps up.
    async fn send<M>(
        &self,
        tx: &mpsc::Sender<M>,
        m: M,
        height: u64,
        live: bool,
        tip_rx: &mut watch::Receiver<u64>,
    ) -> Sent {
        let m = match tx.try_send(m) {
            Ok(()) => return Sent::Ok,
            Err(TrySendError::Closed(_)) => return Sent::Closed,
            Err(TrySendError::Full(m)) => m,
        };
        let max_lag = self.cfg.max_lag_blocks;
        let too_far = |tip: u64| {
            let lag = tip.saturating_sub(height);
            (live && lag > max_lag).then(|| {
                format!(
                    "the consumer fell {lag} blocks behind the tip (limit {max_lag}, explorer.max_lag_blocks) with its buffer full"
                )
            })
        };
        if let Some(why) = too_far(*tip_rx.borrow()) {
            return Sent::Cut(why);
        }
        let stall = tokio::time::sleep(Duration::from_millis(self.cfg.stall_timeout_ms));
        tokio::pin!(stall);
        loop {
            tokio::select! {
                permit = tx.reserve() => return match permit {
                    Ok(p) => {
                        p.send(m);
                        Sent::Ok
                    }
                    Err(_) => Sent::Closed,
                },
                _ = &mut stall => return Sent::Cut(format!(
                    "the consumer read nothing for {} ms (explorer.stall_timeout_ms)",
                    self.cfg.stall_timeout_ms
                )),
                r = tip_rx.changed(), if live => {
                    if r.is_err() {
                        return Sent::Closed;
                    }
                    if let Some(why) = too_far(*tip_rx.borrow()) {
                        return Sent::Cut(why);
                    }
                }
            }
        }
    }

    fn page_size(&self, requested: u32) -> Result<usize, Status> {
        match requested {
            0 => Ok(DEFAULT_PAGE_SIZE.min(self.cfg.max_page_size) as usize),
            n if n > self.cfg.max_page_size => Err(Status::invalid_argument(format!(
                "page_size {n} is above this node's limit of {} (explorer.max_page_size)",
                self.cfg.max_page_size
            ))),
            n => Ok(n as usize),
        }
    }

    /// ListBlocks.
    pub fn list_blocks(
        &self,
        req: &pb::ListBlocksRequest,
    ) -> Result<pb::ListBlocksResponse, Status> {
        let size = self.page_size(req.page_size)?;
        let tip = self.chain.height();
        let from = req.from_height.max(1);
        if from > tip.saturating_add(1) {
            return Err(Status::out_of_range(format!(
                "from_height {from} is beyond the next block (the tip is at height {tip})"
            )));
        }
        let to = if req.to_height == 0 {
            tip
        } else {
            req.to_height
        };
        if to > tip {
            return Err(Status::out_of_range(format!(
                "to_height {to} is beyond the tip at height {tip}"
            )));
        }
        if from > to {
            // Polling from last + 1 with nothing new: an empty page.
            if req.to_height == 0 {
                return Ok(pb::ListBlocksResponse::default());
            }
            return Err(Status::invalid_argument(format!(
                "from_height {from} is above to_height {to}"
            )));
        }
        let start = match req.page_token.as_str() {
            "" => from,
            t => match Cursor::decode(t)? {
                Cursor::Blocks(h) if (from..=to).contains(&h) => h,
                _ => {
                    return Err(Status::invalid_argument(
                        "page_token belongs to another query; repeat the query it came from, or leave it empty",
                    ))
                }
            },
        };
        let end = to.min(start.saturating_add(size as u64 - 1));
        let mut blocks = Vec::with_capacity((end + 1 - start) as usize);
        for h in start..=end {
            let (cb, events) = self.load(h)?;
            blocks.push(self.feed_block(&cb, events, req.include_raw, tip));
        }
        Ok(pb::ListBlocksResponse {
            blocks,
            next_page_token: if end < to {
                Cursor::Blocks(end + 1).encode()
            } else {
                String::new()
            },
        })
    }

    /// ListAccountTransactions.
    pub fn list_account_transactions(
        &self,
        req: &pb::ListAccountTransactionsRequest,
    ) -> Result<pb::ListAccountTransactionsResponse, Status> {
        let hrp = self.hrp();
        if req.address.trim().is_empty() {
            return Err(Status::invalid_argument(
                "address is empty; pass a fedpeg address (fprt1…)",
            ));
        }
        let id = AccountId::from_address(&req.address, hrp)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let size = self.page_size(req.page_size)?;
        let before =
            match req.page_token.as_str() {
                "" => None,
                t => match Cursor::decode(t)? {
                    Cursor::AccountTxs(l, tag) if tag == account_tag(&id) => Some(l),
                    Cursor::AccountTxs(..) => return Err(Status::invalid_argument(
                        "page_token belongs to another address; pass the token this address's previous page returned",
                    )),
                    Cursor::Blocks(_) => return Err(Status::invalid_argument(
                        "page_token came from ListBlocks; pass this query's own next_page_token",
                    )),
                },
            };
        // One more than a page tells whether another page follows.
        let mut locs = self.chain.account_txs(&id, before, size + 1)?;
        if locs.is_empty()
            && before.is_none()
            && !self.chain.with_state(|s| s.accounts.contains_key(&id))
        {
            return Err(Status::not_found(format!(
                "account {} has no transactions and no balance on this chain",
                req.address
            )));
        }
        let more = locs.len() > size;
        locs.truncate(size);
        let mut out = Vec::with_capacity(locs.len());
        let mut cached: Option<CommittedBlock> = None;
        for l in &locs {
            if cached.as_ref().map(|b| b.block.header.height) != Some(l.height) {
                cached = Some(self.chain.block(l.height)?.ok_or_else(|| {
                    Status::internal(format!("indexed block {} is missing", l.height))
                })?);
            }
            let Some(cb) = cached.as_ref() else { continue };
            let tx = cb
                .block
                .txs
                .get(l.index as usize)
                .ok_or_else(|| Status::internal("account index points outside its block"))?;
            out.push(pb::AccountTransaction {
                transaction: Some(tx_view(tx, hrp)),
                height: l.height,
                index: l.index,
                block_hash: cb.block.hash().to_hex(),
                time_ms: cb.block.header.time_ms,
            });
        }
        Ok(pb::ListAccountTransactionsResponse {
            next_page_token: match (more, locs.last()) {
                (true, Some(l)) => Cursor::AccountTxs(*l, account_tag(&id)).encode(),
                _ => String::new(),
            },
            transactions: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpeg_ledger::amount::Sats;
    use fedpeg_ledger::genesis::DevBalance;
    use ed25519_dalek::SigningKey;
    use tokio_stream::StreamExt;

    fn faucet() -> SigningKey {
        SigningKey::from_bytes(&[5; 32])
    }

    fn account(seed: u8) -> AccountId {
        AccountId(
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .to_bytes(),
        )
    }

    /// A one-member chain in a temp dir, faucet funded.
    fn chain() -> (tempfile::TempDir, Arc<Chain>) {
        let d = tempfile::tempdir().unwrap();
        let spec = fedpeg_ledger::testing::sample_genesis(
            "regtest",
            vec![DevBalance {
                address: account(5).to_address("fprt"),
                amount: 1_000_000,
            }],
        )
        .validate()
        .unwrap();
        let chain = Arc::new(Chain::open(spec, d.path(), 1000).unwrap());
        (d, chain)
    }

    /// Commits a block with `transfers` faucet transfers to account(9).
    fn commit(chain: &Chain, transfers: u64) {
        let nonce = chain.account(&account(5)).effective.nonce;
        for i in 0..transfers {
            let tx = Transaction::sign(
                chain.spec.chain_id,
                &faucet(),
                nonce + i,
                Sats(1),
                TxKind::Transfer {
                    to: account(9),
                    amount: Sats(10),
                },
            );
            chain.submit_tx(tx).unwrap();
        }
        let p = chain.propose(chain.height() + 10, 0, vec![]).unwrap();
        let cb = CommittedBlock {
            block: p.block,
            commit: vec![],
        };
        chain.commit(cb, p.outcome).unwrap();
    }

    fn feed(chain: &Arc<Chain>, cfg: ExplorerConfig) -> Arc<Feed> {
        Arc::new(Feed::new(chain.clone(), cfg))
    }

    fn from(h: i64) -> pb::SubscribeBlocksRequest {
        pb::SubscribeBlocksRequest {
            from_height: Some(h),
            include_raw: false,
        }
    }

    #[tokio::test]
    async fn blocks_replay_then_follow_the_tip_with_their_events() {
        let (_d, chain) = chain();
        for _ in 0..3 {
            commit(&chain, 2);
        }
        let f = feed(&chain, ExplorerConfig::default());
        let mut s = f.subscribe_blocks(from(0)).unwrap();
        let mut heights = vec![];
        for _ in 0..3 {
            let b = s.next().await.unwrap().unwrap();
            assert_eq!(b.transactions.len(), 2);
            // transfer + fee per transaction
            assert_eq!(b.events.len(), 4);
            assert_eq!(b.transactions[1].event_indexes, vec![2, 3]);
            heights.push(b.height);
        }
        commit(&chain, 0);
        commit(&chain, 1);
        for _ in 0..2 {
            heights.push(s.next().await.unwrap().unwrap().height);
        }
        assert_eq!(heights, vec![1, 2, 3, 4, 5]);
        // Resuming from last + 1 continues exactly there.
        let mut r = f.subscribe_blocks(from(4)).unwrap();
        assert_eq!(r.next().await.unwrap().unwrap().height, 4);
        assert_eq!(f.stats().block_streams.load(Ordering::Relaxed), 2);
        drop(r);
        settle(|| f.stats().block_streams.load(Ordering::Relaxed) == 1).await;
    }

    /// Waits (up to 2 s) for a stream task to notice and end.
    async fn settle(done: impl Fn() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("stream task did not end");
    }

    #[tokio::test]
    async fn a_tip_seen_while_waiting_for_room_is_still_sent() {
        let (_d, chain) = chain();
        let f = feed(
            &chain,
            ExplorerConfig {
                stream_buffer: 1,
                ..ExplorerConfig::default()
            },
        );
        let mut s = f.subscribe_blocks(from(1)).unwrap();
        // Block 1 fills the buffer; the task waits for room to send block 2
        // and sees block 3 arrive meanwhile. No block 4 ever comes.
        for _ in 0..3 {
            commit(&chain, 0);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut heights = vec![];
        for _ in 0..3 {
            let b = tokio::time::timeout(Duration::from_secs(2), s.next())
                .await
                .expect("a finalized block was held back")
                .unwrap()
                .unwrap();
            heights.push(b.height);
        }
        assert_eq!(heights, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_consumer_that_never_reads_gives_its_slot_back_when_cut_off() {
        let (_d, chain) = chain();
        let f = feed(
            &chain,
            ExplorerConfig {
                max_streams: 1,
                stream_buffer: 1,
                stall_timeout_ms: 50,
                ..ExplorerConfig::default()
            },
        );
        // Never polled (as when the transport stops reading), never dropped.
        let _idle = f.subscribe_blocks(from(1)).unwrap();
        for _ in 0..3 {
            commit(&chain, 0);
        }
        settle(|| f.stats().cut_off.load(Ordering::Relaxed) == 1).await;
        settle(|| f.stats().block_streams.load(Ordering::Relaxed) == 0).await;
        assert!(f.subscribe_blocks(from(1)).is_ok(), "slot not released");
    }

    #[tokio::test]
    async fn a_dropped_replay_that_finds_nothing_stops() {
        let (_d, chain) = chain();
        for _ in 0..300 {
            commit(&chain, 1);
        }
        let f = feed(&chain, ExplorerConfig::default());
        // A filter no event matches: the replay sends nothing for 300 heights.
        let s = f
            .subscribe_events(pb::SubscribeEventsRequest {
                from_height: Some(0),
                accounts: vec![account(200).to_address("fprt")],
                ..Default::default()
            })
            .unwrap();
        drop(s);
        settle(|| f.stats().event_streams.load(Ordering::Relaxed) == 0).await;
    }

    #[tokio::test]
    async fn events_filter_by_account_and_kind_and_resume_by_index() {
        let (_d, chain) = chain();
        commit(&chain, 3);
        commit(&chain, 1);
        let f = feed(&chain, ExplorerConfig::default());
        let req = |h, index, kinds: Vec<pb::EventKind>| pb::SubscribeEventsRequest {
            from_height: Some(h),
            from_index: index,
            accounts: vec![account(9).to_address("fprt")],
            kinds: kinds.into_iter().map(|k| k as i32).collect(),
        };
        let mut s = f
            .subscribe_events(req(0, 0, vec![pb::EventKind::Transfer]))
            .unwrap();
        let mut got = vec![];
        for _ in 0..4 {
            let e = s.next().await.unwrap().unwrap();
            got.push((e.height, e.index));
        }
        // Each transaction pays its fee (even index), then transfers.
        assert_eq!(got, vec![(1, 1), (1, 3), (1, 5), (2, 1)]);
        let mut r = f.subscribe_events(req(1, 4, vec![])).unwrap();
        let e = r.next().await.unwrap().unwrap();
        assert_eq!(
            (e.height, e.index, e.kind),
            (1, 5, pb::EventKind::Transfer as i32)
        );
        // The fee events name only the faucet: filtered out for account(9).
        let e = r.next().await.unwrap().unwrap();
        assert_eq!((e.height, e.index), (2, 1));
    }

    #[tokio::test]
    async fn bad_subscriptions_get_clear_statuses() {
        let (_d, chain) = chain();
        commit(&chain, 0);
        let f = feed(
            &chain,
            ExplorerConfig {
                max_streams: 1,
                ..ExplorerConfig::default()
            },
        );
        let code = |r: Result<FeedStream<pb::FeedBlock>, Status>| r.err().map(|s| s.code());
        let none = pb::SubscribeBlocksRequest::default();
        assert_eq!(
            code(f.subscribe_blocks(none)),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(f.subscribe_blocks(from(-1))),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(f.subscribe_blocks(from(3))),
            Some(tonic::Code::OutOfRange)
        );
        assert_eq!(
            code(f.subscribe_blocks(from(i64::MAX))),
            Some(tonic::Code::OutOfRange)
        );
        let held = f.subscribe_blocks(from(2)).unwrap();
        assert_eq!(
            code(f.subscribe_blocks(from(1))),
            Some(tonic::Code::ResourceExhausted)
        );
        drop(held);
        settle(|| f.stats().block_streams.load(Ordering::Relaxed) == 0).await;
        assert!(f.subscribe_blocks(from(1)).is_ok());
        let ev = |accounts: Vec<String>, kinds: Vec<i32>| {
            f.subscribe_events(pb::SubscribeEventsRequest {
                from_height: Some(0),
                from_index: 0,
                accounts,
                kinds,
            })
            .err()
            .map(|s| s.code())
        };
        assert_eq!(
            ev(vec!["fprt1nope".into()], vec![]),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(ev(vec![], vec![99]), Some(tonic::Code::InvalidArgument));
        assert_eq!(ev(vec![], vec![0]), Some(tonic::Code::InvalidArgument));
    }

    #[tokio::test]
    async fn slow_consumer_is_cut_off_while_a_fast_one_keeps_up() {
        let (_d, chain) = chain();
        let f = feed(
            &chain,
            ExplorerConfig {
                stream_buffer: 2,
                max_lag_blocks: 3,
                ..ExplorerConfig::default()
            },
        );
        let mut slow = f.subscribe_blocks(from(1)).unwrap();
        let mut fast = f.subscribe_blocks(from(1)).unwrap();
        let reader = tokio::spawn(async move {
            let mut heights = vec![];
            while let Some(Ok(b)) = fast.next().await {
                heights.push(b.height);
                if b.height == 30 {
                    break;
                }
            }
            heights
        });
        for _ in 0..30 {
            commit(&chain, 0);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(reader.await.unwrap(), (1..=30).collect::<Vec<u64>>());
        let err = slow.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("from_height"), "{}", err.message());
        assert!(slow.next().await.is_none());
        assert_eq!(f.stats().cut_off.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn pages_of_blocks_and_account_history() {
        let (_d, chain) = chain();
        for _ in 0..5 {
            commit(&chain, 1);
        }
        let f = feed(&chain, ExplorerConfig::default());
        let mut req = pb::ListBlocksRequest {
            page_size: 2,
            ..Default::default()
        };
        let mut heights = vec![];
        loop {
            let page = f.list_blocks(&req).unwrap();
            heights.extend(page.blocks.iter().map(|b| b.height));
            if page.next_page_token.is_empty() {
                break;
            }
            req.page_token = page.next_page_token;
        }
        assert_eq!(heights, vec![1, 2, 3, 4, 5]);
        let code = |r: pb::ListBlocksRequest| f.list_blocks(&r).unwrap_err().code();
        assert_eq!(
            code(pb::ListBlocksRequest {
                to_height: 6,
                ..Default::default()
            }),
            tonic::Code::OutOfRange
        );
        // Polling from last + 1 with nothing new: an empty page; beyond it,
        // OUT_OF_RANGE; a range upside down, INVALID_ARGUMENT.
        let next = f
            .list_blocks(&pb::ListBlocksRequest {
                from_height: 6,
                ..Default::default()
            })
            .unwrap();
        assert!(next.blocks.is_empty() && next.next_page_token.is_empty());
        for from_height in [7, u64::MAX] {
            assert_eq!(
                code(pb::ListBlocksRequest {
                    from_height,
                    ..Default::default()
                }),
                tonic::Code::OutOfRange
            );
        }
        assert_eq!(
            code(pb::ListBlocksRequest {
                from_height: 4,
                to_height: 2,
                ..Default::default()
            }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(pb::ListBlocksRequest {
                page_token: "garbage".into(),
                ..Default::default()
            }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(pb::ListBlocksRequest {
                page_size: 100_000,
                ..Default::default()
            }),
            tonic::Code::InvalidArgument
        );
        let mut req = pb::ListAccountTransactionsRequest {
            address: account(9).to_address("fprt"),
            page_size: 3,
            page_token: String::new(),
        };
        let first = f.list_account_transactions(&req).unwrap();
        let hs: Vec<u64> = first.transactions.iter().map(|t| t.height).collect();
        assert_eq!(hs, vec![5, 4, 3]);
        // The faucet's own history refuses account(9)'s cursor.
        let other = pb::ListAccountTransactionsRequest {
            address: account(5).to_address("fprt"),
            page_size: 3,
            page_token: first.next_page_token.clone(),
        };
        assert_eq!(
            f.list_account_transactions(&other).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        req.page_token = first.next_page_token;
        let second = f.list_account_transactions(&req).unwrap();
        let hs: Vec<u64> = second.transactions.iter().map(|t| t.height).collect();
        assert_eq!(hs, vec![2, 1]);
        assert!(second.next_page_token.is_empty());
        let unknown = pb::ListAccountTransactionsRequest {
            address: account(77).to_address("fprt"),
            ..Default::default()
        };
        assert_eq!(
            f.list_account_transactions(&unknown).unwrap_err().code(),
            tonic::Code::NotFound
        );
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        for c in [
            Cursor::Blocks(7),
            Cursor::AccountTxs(
                TxLocation {
                    height: 9,
                    index: 3,
                },
                [1, 2, 3, 4],
            ),
        ] {
            assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
        for bad in ["", "zz", "01", "0162", "0262000000000000000001", "016200"] {
            assert_eq!(
                Cursor::decode(bad).unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "{bad}"
            );
        }
    }
}
