//! The task that owns the libp2p swarm: connections, the gossip and sync
//! protocols, observer limits, redials and backpressure towards the node.

use super::*;

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub(crate) struct Behaviour {
    pub(crate) gossip: request_response::Behaviour<GossipCodec>,
    pub(crate) sync: request_response::Behaviour<SyncCodec>,
}

/// A sync request being answered by the node: the peer, where to answer,
/// and the answer (None when the node gave none).
pub(crate) type Responder = BoxFuture<
    'static,
    (
        PeerId,
        ResponseChannel<pb::SyncResponse>,
        Option<pb::SyncResponse>,
    ),
>;

/// Owns the swarm; runs until every [`Network`] handle is dropped.
pub(crate) struct SwarmTask {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Sender<NetEvent>,
    pub(crate) events_closed: bool,
    /// Events waiting for room in `events`, in order.
    pub(crate) pending_events: VecDeque<NetEvent>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) members: MemberTable,
    pub(crate) self_index: Option<usize>,
    pub(crate) max_observer_connections: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) observer_sync_rate: u32,
    pub(crate) targets: Vec<DialTarget>,
    /// Accepted connections.
    pub(crate) connections: HashMap<ConnectionId, PeerId>,
    /// Connections closed for exceeding the observer limit.
    pub(crate) rejected: HashSet<ConnectionId>,
    pub(crate) observer_connections: usize,
    pub(crate) sync_buckets: HashMap<PeerId, TokenBucket>,
    pub(crate) pending_syncs: HashMap<OutboundRequestId, (PeerId, SyncReply)>,
    /// Sync requests waiting for the node's answer.
    pub(crate) responders: FuturesUnordered<Responder>,
    pub(crate) sync_rotation: usize,
    pub(crate) warn_bad_message: LogLimiter,
    pub(crate) warn_non_member_gossip: LogLimiter,
    pub(crate) warn_observer_limit: LogLimiter,
    pub(crate) warn_sync_rate: LogLimiter,
    pub(crate) warn_send: LogLimiter,
}

impl SwarmTask {
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(REDIAL_TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.flush_events();
            // Backpressure: stop reading the network while the node lags.
            let read_network = self.pending_events.len() < MAX_PENDING_EVENTS;
            let waiting = !self.pending_events.is_empty() && !self.events_closed;
            // A clone, so the permit does not borrow `self` (cheap: an Arc).
            let events = self.events.clone();
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                ev = self.swarm.select_next_some(), if read_network => self.on_swarm_event(ev),
                permit = events.reserve(), if waiting => match permit {
                    Ok(permit) => {
                        if let Some(ev) = self.pending_events.pop_front() {
                            permit.send(ev);
                        }
                    }
                    Err(_) => self.close_events(),
                },
                Some((peer, channel, response)) = self.responders.next(), if !self.responders.is_empty() => {
                    self.on_sync_answer(peer, channel, response);
                }
                _ = tick.tick() => self.redial_due(),
            }
        }
        debug!(peer_id = %self.swarm.local_peer_id(), "p2p task stopped: all handles dropped");
    }

    pub(crate) fn push_event(&mut self, ev: NetEvent) {
        if !self.events_closed {
            self.pending_events.push_back(ev);
        }
    }

    /// Moves buffered events into `events` while it has room.
    pub(crate) fn flush_events(&mut self) {
        while let Some(ev) = self.pending_events.pop_front() {
            match self.events.try_send(ev) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(ev)) => {
                    self.pending_events.push_front(ev);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.close_events();
                    return;
                }
            }
        }
    }

    pub(crate) fn close_events(&mut self) {
        if !self.events_closed {
            debug!("p2p event receiver dropped; discarding further events");
        }
        self.events_closed = true;
        self.pending_events.clear();
    }

    pub(crate) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Broadcast(batch) => {
                let targets: Vec<usize> = self.members.by_index.keys().copied().collect();
                for index in targets {
                    if Some(index) != self.self_index {
                        self.send_gossip(index, batch.clone(), false);
                    }
                }
            }
            Command::SendTo(index, batch) => self.send_gossip(index, batch, true),
            Command::Sync {
                peer,
                request,
                reply,
            } => self.start_sync(peer, request, reply),
            Command::Dial(addr) => self.add_dial(addr),
        }
    }

    /// Sends gossip to member `index` if this node is a member and the target
    /// is connected; otherwise drops it (logged at debug when `explicit`).
    pub(crate) fn send_gossip(&mut self, index: usize, batch: pb::GossipBatch, explicit: bool) {
        if self.self_index.is_none() {
            if let Some(suppressed) = self.warn_send.check() {
                warn!(suppressed, "this node is not a genesis member; gossip is not sent (members would disconnect it)");
            }
            return;
        }
        if Some(index) == self.self_index {
            return;
        }
        let Some((peer, _)) = self.members.by_index.get(&index) else {
            debug!(member = index, "gossip to an unknown member index dropped");
            return;
        };
        let peer = *peer;
        if !self.swarm.is_connected(&peer) {
            if explicit {
                debug!(member = index, %peer, "member not connected; gossip dropped");
            }
            return;
        }
        let len = batch.encoded_len();
        if len > self.max_message_bytes {
            if let Some(suppressed) = self.warn_send.check() {
                warn!(
                    bytes = len,
                    limit = self.max_message_bytes,
                    suppressed,
                    "gossip batch too large; not sent"
                );
            }
            return;
        }
        self.swarm
            .behaviour_mut()
            .gossip
            .send_request(&peer, Checked::Valid(batch));
    }

    pub(crate) fn start_sync(
        &mut self,
        peer: Option<PeerId>,
        request: pb::SyncRequest,
        reply: SyncReply,
    ) {
        let target = match peer {
            Some(p) if self.swarm.is_connected(&p) => p,
            Some(p) => {
                let _ = reply.send(Err(NetworkError::NotConnected(p)));
                return;
            }
            None => match self.pick_sync_peer() {
                Some(p) => p,
                None => {
                    let _ = reply.send(Err(NetworkError::NoPeer));
                    return;
                }
            },
        };
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&target, Checked::Valid(request));
        trace!(peer = %target, "sync request sent");
        self.pending_syncs.insert(id, (target, reply));
    }

    /// A connected member other than self, rotating between calls; else any connected peer.
    pub(crate) fn pick_sync_peer(&mut self) -> Option<PeerId> {
        let members: Vec<PeerId> = self
            .members
            .by_index
            .iter()
            .filter(|(i, (p, _))| Some(**i) != self.self_index && self.swarm.is_connected(p))
            .map(|(_, (p, _))| *p)
            .collect();
        if !members.is_empty() {
            self.sync_rotation = self.sync_rotation.wrapping_add(1);
            return members.get(self.sync_rotation % members.len()).copied();
        }
        let mut others: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        others.sort();
        others.first().copied()
    }

    pub(crate) fn add_dial(&mut self, addr: Multiaddr) {
        // A genesis member's address dials that member (no duplicate connection).
        let peer = match addr.iter().last() {
            Some(Protocol::P2p(p)) => Some(p),
            _ => self
                .members
                .by_index
                .values()
                .find(|(_, a)| *a == addr)
                .map(|(p, _)| *p),
        };
        if peer == Some(*self.swarm.local_peer_id()) {
            warn!(%addr, "not dialing our own address");
            return;
        }
        let now = Instant::now();
        match self.targets.iter_mut().find(|t| t.addr == addr) {
            Some(t) => t.redial.next_at = Some(now),
            None => self.targets.push(DialTarget::new(peer, addr, now)),
        }
        self.redial_due();
    }

    /// Dials every target whose redial time has come and is not connected.
    pub(crate) fn redial_due(&mut self) {
        let now = Instant::now();
        for t in &mut self.targets {
            if !t.redial.take_due(now) {
                continue;
            }
            if let Some(p) = t.peer {
                if self.swarm.is_connected(&p) {
                    t.redial.connected(now);
                    continue;
                }
            }
            let opts = match t.peer {
                Some(p) => DialOpts::peer_id(p)
                    .addresses(vec![t.addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::unknown_peer_id().address(t.addr.clone()).build(),
            };
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    trace!(addr = %t.addr, peer = ?t.peer, "dialing");
                    t.pending = Some(id);
                }
                // Already connected or dialing: that dial's outcome reschedules us.
                Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    debug!(addr = %t.addr, peer = ?t.peer, error = %e, "dial failed");
                    t.redial.schedule(now);
                }
            }
        }
    }

    pub(crate) fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(ev)) => self.on_gossip_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(ev)) => self.on_sync_event(ev),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.on_connection_established(
                    peer_id,
                    connection_id,
                    endpoint.get_remote_address().clone(),
                );
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                self.on_connection_closed(peer_id, connection_id, cause.map(|c| c.to_string()));
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                debug!(peer = ?peer_id, %error, "outgoing p2p connection failed");
                let now = Instant::now();
                for t in &mut self.targets {
                    let ours = t.pending == Some(connection_id);
                    if ours || (peer_id.is_some() && t.peer == peer_id) {
                        if ours {
                            t.pending = None;
                        }
                        if !t.peer.is_some_and(|p| self.swarm.is_connected(&p)) {
                            t.redial.schedule(now);
                        }
                    }
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                peer_id,
                ..
            } => {
                debug!(peer = ?peer_id, addr = %send_back_addr, %error, "incoming p2p connection failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                debug!(%address, "p2p listen address");
                lock(&self.shared.listen_addrs).push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                lock(&self.shared.listen_addrs).retain(|a| *a != address);
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                warn!(?addresses, ?reason, "p2p listener closed");
                lock(&self.shared.listen_addrs).retain(|a| !addresses.contains(a));
            }
            SwarmEvent::ListenerError { error, .. } => {
                warn!(%error, "p2p listener error");
            }
            _ => {}
        }
    }

    pub(crate) fn on_connection_established(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        addr: Multiaddr,
    ) {
        let member = self.members.index_of(&peer);
        if member.is_none() {
            if self.observer_connections >= self.max_observer_connections {
                self.rejected.insert(id);
                self.swarm.close_connection(id);
                if let Some(suppressed) = self.warn_observer_limit.check() {
                    warn!(
                        %peer, %addr, limit = self.max_observer_connections, suppressed,
                        "too many connections from non-members; closing this one (raise max_observer_connections if expected)"
                    );
                }
                return;
            }
            self.observer_connections += 1;
        }
        self.connections.insert(id, peer);
        let first = {
            let mut peers = lock(&self.shared.peers);
            let e = peers.entry(peer).or_insert_with(|| PeerEntry {
                member,
                connections: Vec::new(),
            });
            e.connections.push((id, addr.clone()));
            e.connections.len() == 1
        };
        let now = Instant::now();
        for t in &mut self.targets {
            if t.pending == Some(id) || t.peer == Some(peer) {
                if t.pending == Some(id) {
                    t.pending = None;
                }
                t.peer.get_or_insert(peer);
                t.redial.connected(now);
            }
        }
        if first {
            info!(%peer, ?member, %addr, "p2p peer connected");
            self.push_event(NetEvent::PeerConnected { peer, member });
        }
    }

    pub(crate) fn on_connection_closed(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        cause: Option<String>,
    ) {
        if self.rejected.remove(&id) || self.connections.remove(&id).is_none() {
            return;
        }
        let member = self.members.index_of(&peer);
        if member.is_none() {
            self.observer_connections = self.observer_connections.saturating_sub(1);
        }
        let last = {
            let mut peers = lock(&self.shared.peers);
            match peers.get_mut(&peer) {
                Some(e) => {
                    e.connections.retain(|(c, _)| *c != id);
                    let empty = e.connections.is_empty();
                    if empty {
                        peers.remove(&peer);
                    }
                    empty
                }
                None => false,
            }
        };
        if !last {
            return;
        }
        info!(%peer, ?member, ?cause, "p2p peer disconnected");
        self.sync_buckets.remove(&peer);
        let now = Instant::now();
        for t in &mut self.targets {
            if t.peer == Some(peer) {
                t.redial.disconnected(now);
            }
        }
        self.push_event(NetEvent::PeerDisconnected { peer, member });
    }

    /// Drops a peer that sent an oversize or undecodable message.
    pub(crate) fn bad_message(&mut self, peer: PeerId, what: &str, error: &str) {
        if let Some(suppressed) = self.warn_bad_message.check() {
            warn!(%peer, what, %error, suppressed, "invalid p2p message; disconnecting the peer");
        }
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    pub(crate) fn on_gossip_event(
        &mut self,
        ev: request_response::Event<Checked<pb::GossipBatch>, ()>,
    ) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                match (self.members.index_of(&peer), request) {
                    (Some(from), Checked::Valid(batch)) => {
                        // Ack at once: the ack means "received", not "valid".
                        let _ = self.swarm.behaviour_mut().gossip.send_response(channel, ());
                        self.push_event(NetEvent::Gossip { from, batch });
                    }
                    (Some(_), Checked::Invalid(why)) => {
                        drop(channel);
                        self.bad_message(peer, "gossip batch", &why);
                    }
                    (None, _) => {
                        drop(channel);
                        if let Some(suppressed) = self.warn_non_member_gossip.check() {
                            warn!(%peer, suppressed, "gossip from a peer that is not a genesis member; disconnecting it");
                        }
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
            }
            Event::Message {
                message: Message::Response { .. },
                ..
            } => {}
            Event::OutboundFailure { peer, error, .. } => match &error {
                OutboundFailure::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                    self.bad_message(peer, "gossip ack", &e.to_string())
                }
                _ => debug!(%peer, %error, "gossip to peer failed"),
            },
            Event::InboundFailure { peer, error, .. } => {
                self.on_inbound_failure(peer, "gossip batch", error)
            }
            Event::ResponseSent { .. } => {}
        }
    }

    pub(crate) fn on_sync_event(
        &mut self,
        ev: request_response::Event<Checked<pb::SyncRequest>, pb::SyncResponse>,
    ) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let request = match request {
                    Checked::Valid(request) => request,
                    Checked::Invalid(why) => {
                        drop(channel);
                        self.bad_message(peer, "sync request", &why);
                        return;
                    }
                };
                let member = self.members.index_of(&peer);
                if member.is_none() {
                    let now = Instant::now();
                    let rate = self.observer_sync_rate;
                    let allowed = self
                        .sync_buckets
                        .entry(peer)
                        .or_insert_with(|| TokenBucket::full(rate, now))
                        .try_take(rate, now);
                    if !allowed {
                        if let Some(suppressed) = self.warn_sync_rate.check() {
                            warn!(%peer, rate, suppressed, "sync requests over the per-observer rate; dropping");
                        }
                        return;
                    }
                }
                let (respond, answer) = oneshot::channel();
                self.responders.push(
                    async move {
                        let response = tokio::time::timeout(REQUEST_TIMEOUT, answer)
                            .await
                            .ok()
                            .and_then(Result::ok);
                        (peer, channel, response)
                    }
                    .boxed(),
                );
                self.push_event(NetEvent::SyncRequest {
                    peer,
                    member,
                    request,
                    respond,
                });
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((_, reply)) = self.pending_syncs.remove(&request_id) {
                    let _ = reply.send(Ok((peer, response)));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let err = match error {
                    OutboundFailure::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                        self.bad_message(peer, "sync response", &e.to_string());
                        NetworkError::BadResponse {
                            peer,
                            reason: e.to_string(),
                        }
                    }
                    OutboundFailure::Timeout => NetworkError::Timeout { peer },
                    other => NetworkError::RequestFailed {
                        peer,
                        reason: other.to_string(),
                    },
                };
                debug!(%peer, error = %err, "sync request failed");
                if let Some((_, reply)) = self.pending_syncs.remove(&request_id) {
                    let _ = reply.send(Err(err));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                self.on_inbound_failure(peer, "sync request", error)
            }
            Event::ResponseSent { .. } => {}
        }
    }

    pub(crate) fn on_inbound_failure(&mut self, peer: PeerId, what: &str, error: InboundFailure) {
        match &error {
            InboundFailure::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                self.bad_message(peer, what, &e.to_string())
            }
            InboundFailure::Io(e) if e.kind() == io::ErrorKind::InvalidInput => {
                if let Some(suppressed) = self.warn_send.check() {
                    warn!(%peer, what, error = %e, suppressed, "response not sent");
                }
            }
            // We dropped the channel on purpose (rate limit, non-member, no answer).
            InboundFailure::ResponseOmission => trace!(%peer, what, "request left unanswered"),
            _ => debug!(%peer, what, %error, "inbound request failed"),
        }
    }

    pub(crate) fn on_sync_answer(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<pb::SyncResponse>,
        response: Option<pb::SyncResponse>,
    ) {
        match response {
            Some(response) => {
                if self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response)
                    .is_err()
                {
                    debug!(%peer, "sync requester went away before the answer");
                }
            }
            None => debug!(%peer, "sync request not answered by the node"),
        }
    }
}
