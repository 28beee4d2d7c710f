//! SubscribeBlocks / SubscribeEvents: one task per stream that replays from
//! the store, then follows the tip, with a bounded buffer, a lag and stall
//! cut-off, and a slot in the node's stream limit.

use super::*;

/// Which events a SubscribeEvents stream wants.
#[derive(Debug, Default)]
pub(crate) struct EventFilter {
    pub(crate) accounts: HashSet<String>,
    pub(crate) kinds: HashSet<i32>,
}

impl EventFilter {
    pub(crate) fn matches(&self, e: &pb::ChainEvent) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && (self.accounts.is_empty()
                || fedpeg_ledger::events::accounts_of(e)
                    .iter()
                    .any(|a| self.accounts.contains(*a)))
    }
}

/// Decrements a stream gauge when the stream goes away.
pub(crate) struct GaugeGuard(Arc<FeedStats>, fn(&FeedStats) -> &AtomicU64);

impl GaugeGuard {
    pub(crate) fn new(stats: &Arc<FeedStats>, gauge: fn(&FeedStats) -> &AtomicU64) -> GaugeGuard {
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
    pub(crate) rx: mpsc::Receiver<M>,
    pub(crate) cut: Option<oneshot::Receiver<Status>>,
    /// Set once the stream ended with a status.
    pub(crate) ended: bool,
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

/// What became of one message pushed to a stream's buffer.
pub(crate) enum Sent {
    Ok,
    Closed,
    Cut(String),
}

impl Feed {
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

    pub(super) fn event_filter(
        &self,
        req: &pb::SubscribeEventsRequest,
    ) -> Result<EventFilter, Status> {
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
    pub(super) fn open<M, F>(
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
    pub(super) async fn pump<M, F>(
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
    pub(super) async fn send<M>(
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
}
