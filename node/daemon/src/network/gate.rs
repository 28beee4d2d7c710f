//! [`MembersOnly`]: a protocol that only members may open.
//!
//! libp2p request-response decides which protocols it accepts once for all
//! connections, and its codec never learns who is on the other end. So the
//! gossip behaviour is wrapped: on a connection to a member the
//! wrapper installs the real handler; on any other connection a
//! [`dummy::ConnectionHandler`], which advertises no protocol. A non-member
//! that asks for `/fedpeg/gossip/2` is answered "not supported" during
//! protocol negotiation: not one byte of its request is read, let alone
//! decoded. The inner behaviour never hears of those connections.
//!
//! The handler is chosen once, when a connection is established, so a
//! change of the member set ([`MembersOnly::set_members`]) applies to
//! connections opened afterwards; the swarm task closes the connections of
//! peers whose role changed so that they reopen under the new one.

use super::*;
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, ConnectionDenied, FromSwarm, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use std::task::{Context, Poll};

/// Wraps `B` so that only `members` reach it.
pub(crate) struct MembersOnly<B> {
    pub(crate) inner: B,
    members: HashSet<PeerId>,
    /// Connections to non-members (given a dummy handler).
    outsiders: HashSet<ConnectionId>,
}

impl<B> MembersOnly<B> {
    pub(crate) fn new(inner: B, members: impl IntoIterator<Item = PeerId>) -> Self {
        MembersOnly {
            inner,
            members: members.into_iter().collect(),
            outsiders: HashSet::new(),
        }
    }

    /// Replaces the member set; see the module docs for open connections.
    pub(crate) fn set_members(&mut self, members: impl IntoIterator<Item = PeerId>) {
        self.members = members.into_iter().collect();
    }

    /// The handler for a connection to `peer`: the inner one for members.
    fn handler(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        inner: impl FnOnce(&mut B) -> Result<THandler<B>, ConnectionDenied>,
    ) -> Result<Either<THandler<B>, dummy::ConnectionHandler>, ConnectionDenied>
    where
        B: NetworkBehaviour,
    {
        if self.members.contains(&peer) {
            return inner(&mut self.inner).map(Either::Left);
        }
        self.outsiders.insert(id);
        Ok(Either::Right(dummy::ConnectionHandler))
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for MembersOnly<B> {
    type ConnectionHandler = Either<THandler<B>, dummy::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.handler(id, peer, |b| {
            b.handle_established_inbound_connection(id, peer, local_addr, remote_addr)
        })
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner
            .handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.handler(id, peer, |b| {
            b.handle_established_outbound_connection(id, peer, addr, role, port_use)
        })
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // The inner behaviour must not hear of connections it has no
        // handler on (request-response panics on closing unknown ones).
        match event {
            FromSwarm::ConnectionEstablished(e) if self.outsiders.contains(&e.connection_id) => {}
            FromSwarm::AddressChange(e) if self.outsiders.contains(&e.connection_id) => {}
            FromSwarm::ConnectionClosed(e) if self.outsiders.remove(&e.connection_id) => {}
            other => self.inner.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(event) => self.inner.on_connection_handler_event(peer, id, event),
            Either::Right(never) => match never {},
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        // Events the inner behaviour sends to handlers only go to connections
        // it knows, i.e. to members: always the `Left` side.
        self.inner.poll(cx).map(|ev| ev.map_in(Either::Left))
    }
}
