//! Which inbound sync requests are handed to the sync server (sans-IO).
//!
//! A request holds its place from admission until its response is sent or
//! fails (that is when the response's memory is freed), so each peer has a
//! bounded number of requests outstanding: [`MEMBER_SYNC_OUTSTANDING`] for a
//! member, [`OBSERVER_SYNC_OUTSTANDING`] for anyone else. Observers
//! are also rate limited (token bucket per peer). Requests beyond either are
//! dropped unanswered; the sync server serves what is admitted first come,
//! first served, so a peer that floods only ever has its few requests in the
//! line and cannot push others out.

use super::*;
use std::hash::Hash;

/// Sync requests one member may have outstanding.
pub const MEMBER_SYNC_OUTSTANDING: usize = 8;
/// Sync requests one non-member peer may have outstanding (one long poll
/// and one catch-up request).
pub const OBSERVER_SYNC_OUTSTANDING: usize = 2;

/// Why a sync request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncRefusal {
    /// An observer asked faster than its rate.
    OverRate,
    /// The peer already has its share outstanding.
    Outstanding(usize),
}

/// Outstanding sync requests per peer and the observers' token buckets, by
/// request id `R` (libp2p's inbound request id).
pub(crate) struct SyncAdmission<R> {
    observer_rate: u32,
    buckets: HashMap<PeerId, TokenBucket>,
    outstanding: HashMap<PeerId, usize>,
    requests: HashMap<R, PeerId>,
}

impl<R: Hash + Eq> SyncAdmission<R> {
    pub(crate) fn new(observer_rate: u32) -> Self {
        SyncAdmission {
            observer_rate,
            buckets: HashMap::new(),
            outstanding: HashMap::new(),
            requests: HashMap::new(),
        }
    }

    /// Admits request `id` of `peer` (a member or not) at `now`.
    pub(crate) fn admit(
        &mut self,
        peer: PeerId,
        member: bool,
        id: R,
        now: Instant,
    ) -> Result<(), SyncRefusal> {
        let cap = if member {
            MEMBER_SYNC_OUTSTANDING
        } else {
            OBSERVER_SYNC_OUTSTANDING
        };
        let held = self.outstanding.get(&peer).copied().unwrap_or(0);
        if held >= cap {
            return Err(SyncRefusal::Outstanding(cap));
        }
        if !member {
            let rate = self.observer_rate;
            let allowed = self
                .buckets
                .entry(peer)
                .or_insert_with(|| TokenBucket::full(rate, now))
                .try_take(rate, now);
            if !allowed {
                return Err(SyncRefusal::OverRate);
            }
        }
        *self.outstanding.entry(peer).or_default() += 1;
        self.requests.insert(id, peer);
        Ok(())
    }

    /// Request `id` is over (response sent, failed or dropped). Unknown ids
    /// (requests that were never admitted) are ignored.
    pub(crate) fn done(&mut self, id: R) {
        let Some(peer) = self.requests.remove(&id) else {
            return;
        };
        if let Some(n) = self.outstanding.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.outstanding.remove(&peer);
            }
        }
    }

    /// The peer's last connection closed (its requests end on their own).
    pub(crate) fn peer_gone(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
    }

    /// Requests outstanding over all peers.
    pub(crate) fn outstanding(&self) -> usize {
        self.requests.len()
    }
}
