//! Who may hold a connection: [`SlotTable`] (the policy, sans-IO) and
//! [`ConnectionSlots`] (the libp2p behaviour that applies it when a
//! connection is established, before any other behaviour sees it).
//!
//! Policy:
//! - Members never take an observer slot and are never refused for
//!   lack of one; each member may hold [`MAX_CONNECTIONS_PER_MEMBER`]
//!   connections (simultaneous dials make two).
//! - Everyone else shares `max_observer_connections` slots, at most
//!   [`MAX_CONNECTIONS_PER_OBSERVER`] per peer id.
//! - When every slot is taken, a newcomer replaces the observer that has
//!   held its slot longest, provided it has held it for at least the
//!   tenure; otherwise the newcomer is refused. So no one keeps a slot
//!   forever against others who want one: an observer that is refused
//!   retries (with backoff) and gets in once some slot has aged past the
//!   tenure, and whoever gets in keeps its slot for at least the tenure.
//!   Identities are free, so an outsider can still compete for slots, but
//!   only by reconnecting, never by sitting on them.

use super::*;
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, CloseConnection, ConnectionDenied, FromSwarm, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use std::task::{Context, Poll};

/// Connections one member may hold at once.
pub(crate) const MAX_CONNECTIONS_PER_MEMBER: usize = 4;
/// Connections one non-member peer id may hold at once.
pub(crate) const MAX_CONNECTIONS_PER_OBSERVER: usize = 2;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// Every observer slot is held, none for longer than the tenure.
    #[error("all {0} observer slots are taken (raise max_observer_connections if expected)")]
    ObserverSlotsFull(usize),
    /// This peer id already holds its share.
    #[error("this peer already holds {0} connections")]
    PeerLimit(usize),
}

/// The outcome of admitting a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Admitted.
    Accept,
    /// Admitted in place of this observer connection, which must be closed.
    Replace(PeerId, ConnectionId),
    /// Refused.
    Refuse(Refusal),
}

struct Slot {
    id: ConnectionId,
    peer: PeerId,
    since: Instant,
}

/// Connections by kind (sans-IO: the caller passes the time).
pub(crate) struct SlotTable {
    max_observers: usize,
    tenure: Duration,
    /// Observer connections, oldest first.
    observers: Vec<Slot>,
    members: HashMap<PeerId, Vec<ConnectionId>>,
}

impl SlotTable {
    pub(crate) fn new(max_observers: usize, tenure: Duration) -> Self {
        SlotTable {
            max_observers,
            tenure,
            observers: Vec::new(),
            members: HashMap::new(),
        }
    }

    /// Admits connection `id` of member `peer`.
    pub(crate) fn admit_member(&mut self, peer: PeerId, id: ConnectionId) -> Admission {
        let conns = self.members.entry(peer).or_default();
        if conns.len() >= MAX_CONNECTIONS_PER_MEMBER {
            return Admission::Refuse(Refusal::PeerLimit(MAX_CONNECTIONS_PER_MEMBER));
        }
        conns.push(id);
        Admission::Accept
    }

    /// Admits connection `id` of non-member `peer` at `now`.
    pub(crate) fn admit_observer(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        now: Instant,
    ) -> Admission {
        let held = self.observers.iter().filter(|s| s.peer == peer).count();
        if held >= MAX_CONNECTIONS_PER_OBSERVER {
            return Admission::Refuse(Refusal::PeerLimit(MAX_CONNECTIONS_PER_OBSERVER));
        }
        let slot = Slot {
            id,
            peer,
            since: now,
        };
        if self.observers.len() < self.max_observers {
            self.observers.push(slot);
            return Admission::Accept;
        }
        // Oldest first: the first one past its tenure is the longest held.
        let Some(pos) = self
            .observers
            .iter()
            .position(|s| now.saturating_duration_since(s.since) >= self.tenure)
        else {
            return Admission::Refuse(Refusal::ObserverSlotsFull(self.max_observers));
        };
        let old = self.observers.remove(pos);
        self.observers.push(slot);
        Admission::Replace(old.peer, old.id)
    }

    /// Forgets a closed connection (unknown ones are ignored).
    pub(crate) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        self.observers.retain(|s| s.id != id);
        if let Some(conns) = self.members.get_mut(&peer) {
            conns.retain(|c| *c != id);
            if conns.is_empty() {
                self.members.remove(&peer);
            }
        }
    }

    /// Observer connections held.
    pub(crate) fn observers(&self) -> usize {
        self.observers.len()
    }
}

/// What [`ConnectionSlots`] reports (for rate-limited logs).
#[derive(Debug)]
pub(crate) enum SlotEvent {
    /// A connection was refused.
    Refused {
        peer: PeerId,
        addr: Multiaddr,
        why: Refusal,
    },
    /// An observer connection was closed to make room for `by`.
    Replaced { peer: PeerId, by: PeerId },
}

/// Applies [`SlotTable`] to every established connection. Must be the first
/// field of the swarm's behaviour so that a refused connection is never
/// seen by the others.
pub(crate) struct ConnectionSlots {
    members: HashSet<PeerId>,
    table: SlotTable,
    pending: VecDeque<ToSwarm<SlotEvent, Infallible>>,
}

impl ConnectionSlots {
    pub(crate) fn new(
        members: impl IntoIterator<Item = PeerId>,
        max_observers: usize,
        tenure: Duration,
    ) -> Self {
        ConnectionSlots {
            members: members.into_iter().collect(),
            table: SlotTable::new(max_observers, tenure),
            pending: VecDeque::new(),
        }
    }

    /// Observer connections held.
    pub(crate) fn observers(&self) -> usize {
        self.table.observers()
    }

    /// Replaces the member set. Applies to connections established from now
    /// on: a connection is counted as what its peer was when it opened until
    /// it closes, and the swarm task closes those of peers whose role
    /// changed (see `members.rs`).
    pub(crate) fn set_members(&mut self, members: impl IntoIterator<Item = PeerId>) {
        self.members = members.into_iter().collect();
    }

    fn admit(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
    ) -> Result<dummy::ConnectionHandler, ConnectionDenied> {
        let admission = if self.members.contains(&peer) {
            self.table.admit_member(peer, id)
        } else {
            self.table.admit_observer(peer, id, Instant::now())
        };
        match admission {
            Admission::Accept => {}
            Admission::Replace(old_peer, old_id) => {
                self.pending.push_back(ToSwarm::CloseConnection {
                    peer_id: old_peer,
                    connection: CloseConnection::One(old_id),
                });
                self.pending
                    .push_back(ToSwarm::GenerateEvent(SlotEvent::Replaced {
                        peer: old_peer,
                        by: peer,
                    }));
            }
            Admission::Refuse(why) => {
                self.pending
                    .push_back(ToSwarm::GenerateEvent(SlotEvent::Refused {
                        peer,
                        addr: addr.clone(),
                        why,
                    }));
                return Err(ConnectionDenied::new(why));
            }
        }
        Ok(dummy::ConnectionHandler)
    }
}

impl NetworkBehaviour for ConnectionSlots {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = SlotEvent;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(id, peer, remote_addr)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(id, peer, addr)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(e) = event {
            self.table.closed(e.peer_id, e.connection_id);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.pending.pop_front() {
            Some(ev) => Poll::Ready(ev),
            None => Poll::Pending,
        }
    }
}
