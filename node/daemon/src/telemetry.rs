//! Operator telemetry that needs history, not just a look at current state:
//! latency histograms (block commit, peg-in, peg-out), when members were
//! last seen, the age of the Bitcoin tip, and explorer stream counters.
//!
//! A collector task ([`Telemetry::run`]) follows the finalized tip and
//! reads each new block's header and stored events, so nothing here sits
//! on the commit path. Rendering appends to the metrics page
//! ([`crate::metrics`]).

use crate::chain::Chain;
use crate::feed::FeedStats;
use crate::network::Network;
use crate::watcher::Watcher;
use fedpeg_proto::v1 as pb;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of block commit latency buckets.
pub const COMMIT_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Upper bounds (seconds) of peg-in / peg-out latency buckets: minutes to hours.
pub const PEG_BUCKETS: &[f64] = &[
    1.0, 10.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

/// A Prometheus histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Empty histogram with these bucket upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Appends the histogram in text format 0.0.4 (cumulative buckets).
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            self.count, self.sum, self.count
        );
    }
}

#[derive(Debug)]
struct Inner {
    commit_latency: Histogram,
    pegin_latency: Histogram,
    pegout_latency: Histogram,
    pegout_signed_latency: Histogram,
    pegouts_confirmed: u64,
    /// Member index → last time (ms since epoch) this node saw it connected.
    last_seen_ms: Vec<u64>,
    /// Deposits this node's watcher has seen, by outpoint ("txid:vout").
    deposit_seen: HashMap<String, Instant>,
    /// Peg-outs queued since start, by withdrawal id.
    pegout_queued: HashMap<u64, Instant>,
    bitcoin_tip: Option<(u64, Instant)>,
    /// The newest finalized blocks this node saw (web app charts).
    recent_blocks: VecDeque<BlockSample>,
    /// Reserves against liabilities over time (web app audit chart).
    coverage: VecDeque<CoverageSample>,
}

/// Most members whose last-seen time is tracked (an epoch has at most
/// `fedpeg_ledger::epoch::MAX_EPOCH_MEMBERS`).
const MAX_TRACKED_MEMBERS: usize = 256;

/// How many recent blocks and coverage samples are kept for the web app.
pub const RECENT_SAMPLES: usize = 600;
/// Least time between two coverage samples.
const COVERAGE_EVERY_MS: u64 = 10_000;

/// One finalized block as the web app charts it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockSample {
    pub height: u64,
    /// Proposal time and when this node finalized it (ms since epoch).
    pub time_ms: u64,
    pub finalized_ms: u64,
    /// User transactions, and sats minted (peg-in) and burned (peg-out).
    pub txs: u32,
    pub minted: u64,
    pub burned: u64,
}

/// Reserves (confirmed federation UTXOs) against liabilities (supply plus
/// unpaid peg-outs) at one time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CoverageSample {
    pub time_ms: u64,
    pub reserves: u64,
    pub liabilities: u64,
}

/// Shared telemetry of one node.
#[derive(Debug)]
pub struct Telemetry {
    inner: Mutex<Inner>,
    feed: Arc<FeedStats>,
}

impl Telemetry {
    /// Telemetry for a federation of `members`.
    pub fn new(members: usize) -> Telemetry {
        Telemetry {
            inner: Mutex::new(Inner {
                commit_latency: Histogram::new(COMMIT_BUCKETS),
                pegin_latency: Histogram::new(PEG_BUCKETS),
                pegout_latency: Histogram::new(PEG_BUCKETS),
                pegout_signed_latency: Histogram::new(COMMIT_BUCKETS),
                pegouts_confirmed: 0,
                last_seen_ms: vec![0; members],
                deposit_seen: HashMap::new(),
                pegout_queued: HashMap::new(),
                bitcoin_tip: None,
                recent_blocks: VecDeque::new(),
                coverage: VecDeque::new(),
            }),
            feed: Arc::new(FeedStats::default()),
        }
    }

    /// Explorer stream counters (shared with the feed).
    pub fn feed_stats(&self) -> &Arc<FeedStats> {
        &self.feed
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        match self.inner.lock() {
            Ok(mut i) => f(&mut i),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Marks the members connected to `net` (and `me`) as seen now.
    pub fn observe_peers(&self, net: Option<&Network>, me: Option<usize>) {
        let now = crate::driver::now_ms();
        let connected: Vec<usize> = net
            .map(|n| n.peers().into_iter().filter_map(|(_, _, m)| m).collect())
            .unwrap_or_default();
        self.with(|i| {
            for m in connected.into_iter().chain(me) {
                // Members are indexed in the epoch in force, which a
                // federation change may make larger.
                if m < MAX_TRACKED_MEMBERS && m >= i.last_seen_ms.len() {
                    i.last_seen_ms.resize(m + 1, 0);
                }
                if let Some(t) = i.last_seen_ms.get_mut(m) {
                    *t = now;
                }
            }
        });
    }

    /// When each member was last seen connected (ms since epoch, 0: never).
    pub fn last_seen_ms(&self) -> Vec<u64> {
        self.with(|i| i.last_seen_ms.clone())
    }

    /// The newest finalized blocks seen since start, oldest first.
    pub fn recent_blocks(&self) -> Vec<BlockSample> {
        self.with(|i| i.recent_blocks.iter().cloned().collect())
    }

    /// Coverage samples since start, oldest first.
    pub fn coverage(&self) -> Vec<CoverageSample> {
        self.with(|i| i.coverage.iter().cloned().collect())
    }

    /// Records reserves against liabilities, at most every 10 s.
    pub fn observe_reserves(&self, r: &pb::GetReservesResponse) {
        let now = crate::driver::now_ms();
        self.with(|i| {
            if i.coverage
                .back()
                .is_some_and(|c| now.saturating_sub(c.time_ms) < COVERAGE_EVERY_MS)
            {
                return;
            }
            if i.coverage.len() >= RECENT_SAMPLES {
                i.coverage.pop_front();
            }
            i.coverage.push_back(CoverageSample {
                time_ms: now,
                reserves: r.available.saturating_add(r.locked),
                liabilities: r
                    .supply
                    .saturating_add(r.queued)
                    .saturating_add(r.in_batches),
            });
        });
    }

    /// Records what a newly finalized block shows: its commit latency and
    /// the peg events in it.
    pub fn observe_block(&self, height: u64, time_ms: u64, events: &[pb::ChainEvent]) {
        use pb::chain_event::Event as Ev;
        let now_ms = crate::driver::now_ms();
        let mut sample = BlockSample {
            height,
            time_ms,
            finalized_ms: now_ms,
            txs: events
                .iter()
                .filter(|e| !e.txid.is_empty())
                .map(|e| e.txid.as_str())
                .collect::<HashSet<_>>()
                .len() as u32,
            ..BlockSample::default()
        };
        for e in events {
            match &e.event {
                Some(Ev::Mint(m)) => sample.minted = sample.minted.saturating_add(m.amount),
                Some(Ev::Burn(b)) => sample.burned = sample.burned.saturating_add(b.amount),
                _ => {}
            }
        }
        self.with(|i| {
            if i.recent_blocks.len() >= RECENT_SAMPLES {
                i.recent_blocks.pop_front();
            }
            i.recent_blocks.push_back(sample);
            i.commit_latency
                .observe(now_ms.saturating_sub(time_ms) as f64 / 1000.0);
            for e in events {
                match &e.event {
                    Some(Ev::Mint(m)) => {
                        if let Some(seen) = i.deposit_seen.remove(&m.outpoint) {
                            i.pegin_latency.observe(seen.elapsed().as_secs_f64());
                        }
                    }
                    Some(Ev::Burn(b)) => {
                        i.pegout_queued.insert(b.withdrawal_id, Instant::now());
                    }
                    Some(Ev::PegOutStateChanged(p))
                        if p.state == pb::PegOutState::Broadcast as i32 =>
                    {
                        for id in &p.withdrawal_ids {
                            if let Some(q) = i.pegout_queued.get(id) {
                                i.pegout_signed_latency.observe(q.elapsed().as_secs_f64());
                            }
                        }
                    }
                    Some(Ev::PegOutStateChanged(p))
                        if p.state == pb::PegOutState::Confirmed as i32 =>
                    {
                        for id in &p.withdrawal_ids {
                            i.pegouts_confirmed += 1;
                            if let Some(q) = i.pegout_queued.remove(id) {
                                i.pegout_latency.observe(q.elapsed().as_secs_f64());
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
    }

    /// Notes deposits the watcher sees and the Bitcoin tip.
    pub fn observe_watcher(&self, w: &Watcher) {
        let (seen, _, tip) = w.deposits(|_| true);
        self.with(|i| {
            for d in seen {
                i.deposit_seen
                    .entry(d.outpoint.to_string())
                    .or_insert_with(Instant::now);
            }
            if let Some(t) = tip {
                if i.bitcoin_tip.is_none_or(|(h, _)| h != t) {
                    i.bitcoin_tip = Some((t, Instant::now()));
                }
            }
        });
    }

    /// Follows the finalized tip until `stop` resolves; `me` is this
    /// node's consensus key if it has one.
    pub async fn run(
        self: Arc<Self>,
        chain: Arc<Chain>,
        net: Option<Network>,
        me: Option<ed25519_dalek::VerifyingKey>,
        watcher: Option<Arc<Watcher>>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut tip_rx = chain.subscribe_tip();
        // Blocks committed before this start are history, not latency.
        let mut done = *tip_rx.borrow_and_update();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut stop => return,
                r = tip_rx.changed() => if r.is_err() { return },
                _ = tick.tick() => {
                    let index = me.and_then(|k| {
                        chain.with_state(|s| s.epoch_at(s.height.next()).member_index(&k))
                    });
                    self.observe_peers(net.as_ref(), index);
                    if let Some(w) = &watcher {
                        self.observe_watcher(w);
                    }
                }
            }
            let tip = *tip_rx.borrow_and_update();
            while done < tip {
                done += 1;
                let time_ms = match chain.block(done) {
                    Ok(Some(cb)) => cb.block.header.time_ms,
                    _ => continue,
                };
                let events = chain.block_events(done).ok().flatten().unwrap_or_default();
                self.observe_block(done, time_ms, &events);
            }
            self.observe_reserves(&crate::pegout_api::reserves(&chain));
        }
    }

    /// Appends the telemetry metrics.
    pub fn render(&self, o: &mut String, chain: &Chain) {
        use crate::metrics::metric;
        let f = &self.feed;
        let (queued_total, unpaid) =
            chain.with_state(|s| (s.next_withdrawal_id, s.withdrawals.len() as u64));
        self.with(|i| {
            i.commit_latency.render(
                o,
                "fedpeg_block_commit_latency_seconds",
                "From a block's proposal timestamp to its finalization on this node.",
            );
            i.pegin_latency.render(
                o,
                "fedpeg_pegin_latency_seconds",
                "From this member's watcher first seeing a deposit to its mint.",
            );
            i.pegout_latency.render(
                o,
                "fedpeg_pegout_latency_seconds",
                "From a peg-out's burn to its confirmation on Bitcoin.",
            );
            i.pegout_signed_latency.render(
                o,
                "fedpeg_pegout_signed_latency_seconds",
                "From a peg-out's burn to its batch being fully signed (ready for Bitcoin).",
            );
            metric(
                o,
                "fedpeg_pegouts_confirmed_total",
                "counter",
                "Peg-outs confirmed on Bitcoin since start.",
                i.pegouts_confirmed,
            );
            if let Some((_, at)) = i.bitcoin_tip {
                metric(
                    o,
                    "fedpeg_bitcoin_tip_age_seconds",
                    "gauge",
                    "Seconds since this member's bitcoind last showed a new tip (lag indicator).",
                    at.elapsed().as_secs(),
                );
            }
        });
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, u64); 8] = [
            (
                "fedpeg_pegouts_queued_total",
                "counter",
                "Peg-outs ever burned and queued.",
                queued_total.0,
            ),
            (
                "fedpeg_queued_withdrawals",
                "gauge",
                "Peg-outs burned and not yet paid (queued or in an unconfirmed batch).",
                unpaid,
            ),
            (
                "fedpeg_feed_block_subscribers",
                "gauge",
                "Open SubscribeBlocks streams.",
                load(&f.block_streams),
            ),
            (
                "fedpeg_feed_event_subscribers",
                "gauge",
                "Open SubscribeEvents streams.",
                load(&f.event_streams),
            ),
            (
                "fedpeg_feed_streams_cut_off_total",
                "counter",
                "Streams ended with RESOURCE_EXHAUSTED for falling behind.",
                load(&f.cut_off),
            ),
            (
                "fedpeg_feed_streams_refused_total",
                "counter",
                "Streams refused because explorer.max_streams were open.",
                load(&f.refused),
            ),
            (
                "fedpeg_feed_blocks_sent_total",
                "counter",
                "Blocks produced for SubscribeBlocks streams.",
                load(&f.blocks_sent),
            ),
            (
                "fedpeg_feed_events_sent_total",
                "counter",
                "Events produced for SubscribeEvents streams.",
                load(&f.events_sent),
            ),
        ];
        for (name, kind, help, value) in rows {
            metric(o, name, kind, help, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(9.0);
        let mut o = String::new();
        h.render(&mut o, "x", "help");
        assert!(o.contains("x_bucket{le=\"1\"} 1\n"), "{o}");
        assert!(o.contains("x_bucket{le=\"2\"} 2\n"), "{o}");
        assert!(
            o.contains("x_bucket{le=\"+Inf\"} 3\nx_sum 11\nx_count 3"),
            "{o}"
        );
    }

    #[test]
    fn peg_events_feed_the_latency_histograms() {
        use pb::chain_event::Event as Ev;
        let t = Telemetry::new(2);
        let burn = pb::ChainEvent {
            event: Some(Ev::Burn(pb::BurnEvent {
                withdrawal_id: 4,
                ..Default::default()
            })),
            ..Default::default()
        };
        let stage = |state: pb::PegOutState| pb::ChainEvent {
            event: Some(Ev::PegOutStateChanged(pb::PegOutStateChanged {
                withdrawal_ids: vec![4, 5],
                state: state as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        t.observe_block(1, crate::driver::now_ms(), &[burn]);
        t.observe_block(
            2,
            crate::driver::now_ms(),
            &[stage(pb::PegOutState::Broadcast)],
        );
        t.observe_block(
            3,
            crate::driver::now_ms(),
            &[stage(pb::PegOutState::Confirmed)],
        );
        let heights: Vec<u64> = t.recent_blocks().iter().map(|b| b.height).collect();
        assert_eq!(heights, [1, 2, 3]);
        t.with(|i| {
            assert_eq!(i.commit_latency.count(), 3);
            // Withdrawal 5 was burned before this node started: counted, not timed.
            assert_eq!(i.pegout_signed_latency.count(), 1);
            assert_eq!(i.pegout_latency.count(), 1);
            assert!(i.pegout_queued.is_empty());
            assert_eq!(i.pegouts_confirmed, 2);
        });
    }

    #[test]
    fn recent_blocks_count_txs_and_peg_volume_and_keep_a_bounded_window() {
        use pb::chain_event::Event as Ev;
        let t = Telemetry::new(1);
        let ev = |txid: &str, e: Ev| pb::ChainEvent {
            txid: txid.into(),
            event: Some(e),
            ..Default::default()
        };
        let burn = Ev::Burn(pb::BurnEvent {
            amount: 7,
            ..Default::default()
        });
        let mint = Ev::Mint(pb::MintEvent {
            amount: 5,
            ..Default::default()
        });
        let fee = Ev::Fee(pb::FeeEvent::default());
        t.observe_block(1, 0, &[ev("a", burn), ev("a", fee), ev("", mint)]);
        let b = &t.recent_blocks()[0];
        assert_eq!((b.txs, b.minted, b.burned), (1, 5, 7));
        for h in 2..(RECENT_SAMPLES as u64 + 10) {
            t.observe_block(h, 0, &[]);
        }
        assert_eq!(t.recent_blocks().len(), RECENT_SAMPLES);
        assert_eq!(t.recent_blocks()[0].height, 10);
        let r = pb::GetReservesResponse {
            available: 3,
            supply: 4,
            ..Default::default()
        };
        t.observe_reserves(&r);
        t.observe_reserves(&r);
        assert_eq!(t.coverage().len(), 1, "one sample per 10 s");
        assert_eq!(
            (t.coverage()[0].reserves, t.coverage()[0].liabilities),
            (3, 4)
        );
    }
}
