//! Redialing members and explicit peers with exponential backoff.

use super::*;

/// Exponential redial backoff of one dial target.
pub(crate) struct Redial {
    pub(crate) backoff: Duration,
    pub(crate) next_at: Option<Instant>,
    pub(crate) connected_since: Option<Instant>,
}

impl Redial {
    pub(crate) fn connected(&mut self, now: Instant) {
        self.next_at = None;
        self.connected_since.get_or_insert(now);
    }

    pub(crate) fn disconnected(&mut self, now: Instant) {
        if let Some(since) = self.connected_since.take() {
            if now.duration_since(since) >= BACKOFF_RESET_AFTER {
                self.backoff = REDIAL_INITIAL;
            }
        }
        self.schedule(now);
    }

    pub(crate) fn schedule(&mut self, now: Instant) {
        if self.next_at.is_none() {
            self.next_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(REDIAL_MAX);
        }
    }

    pub(crate) fn take_due(&mut self, now: Instant) -> bool {
        match self.next_at {
            Some(t) if t <= now => {
                self.next_at = None;
                true
            }
            _ => false,
        }
    }
}

/// Why a [`DialTarget`] is kept connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialReason {
    /// It is in the member list in force; dropped when a new list leaves it out.
    Member,
    /// It was given to [`Network::dial`]; kept whatever the member list.
    Explicit,
}

/// A peer the node keeps connected: a member or an explicit dial.
pub(crate) struct DialTarget {
    /// Known from the member list or `/p2p/`, or learned from the first connection.
    pub(crate) peer: Option<PeerId>,
    pub(crate) addr: Multiaddr,
    pub(crate) reason: DialReason,
    /// The dial in flight, if any.
    pub(crate) pending: Option<ConnectionId>,
    pub(crate) redial: Redial,
}

impl DialTarget {
    pub(crate) fn new(
        peer: Option<PeerId>,
        addr: Multiaddr,
        reason: DialReason,
        now: Instant,
    ) -> Self {
        DialTarget {
            peer,
            addr,
            reason,
            pending: None,
            redial: Redial {
                backoff: REDIAL_INITIAL,
                next_at: Some(now),
                connected_since: None,
            },
        }
    }
}
