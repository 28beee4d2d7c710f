//! The task that owns the libp2p swarm: connections, the gossip and sync
//! protocols, redials, sync admission and backpressure towards the node.

use super::*;
use libp2p::request_response::InboundRequestId;

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub(crate) struct Behaviour {
    /// First: a connection it refuses is never seen by the others.
    pub(crate) slots: ConnectionSlots,
    pub(crate) gossip: MembersOnly<request_response::Behaviour<GossipCodec>>,
    pub(crate) sync: request_response::Behaviour<SyncCodec>,
    /// Versions, between members only (see `versions.rs`).
    pub(crate) identify: MembersOnly<libp2p::identify::Behaviour>,
}

/// A sync request being answered by the sync server: the peer, the request,
/// where to answer, and the answer (None when the server gave none).
pub(crate) type Responder = BoxFuture<
    'static,
    (
        PeerId,
        InboundRequestId,
        ResponseChannel<pb::SyncResponse>,
        Option<pb::SyncResponse>,
    ),
>;

/// Owns the swarm; runs until every [`Network`] handle is dropped.
pub(crate) struct SwarmTask {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Sender<NetEvent>,
    /// Admitted sync requests, for the sync server (never waited for).
    pub(crate) sync_requests: mpsc::Sender<InboundSync>,
    pub(crate) events_closed: bool,
    /// Events waiting for room in `events`, in order.
    pub(crate) pending_events: VecDeque<NetEvent>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) members: MemberTable,
    pub(crate) self_index: Option<usize>,
    pub(crate) max_gossip_bytes: usize,
    pub(crate) targets: Vec<DialTarget>,
    /// Accepted connections.
    pub(crate) connections: HashMap<ConnectionId, PeerId>,
    pub(crate) sync_admission: SyncAdmission<InboundRequestId>,
    pub(crate) pending_syncs: HashMap<OutboundRequestId, (PeerId, SyncReply)>,
    /// Sync requests waiting for the node's answer.
    pub(crate) responders: FuturesUnordered<Responder>,
    pub(crate) sync_rotation: usize,
    pub(crate) warn_bad_message: LogLimiter,
    pub(crate) warn_non_member_gossip: LogLimiter,
    pub(crate) warn_observer_limit: LogLimiter,
    pub(crate) warn_sync_rate: LogLimiter,
    pub(crate) warn_sync_queue: LogLimiter,
    pub(crate) warn_events_dropped: LogLimiter,
    pub(crate) warn_send: LogLimiter,
}

impl SwarmTask {
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(REDIAL_TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.flush_events();
            let waiting = !self.pending_events.is_empty() && !self.events_closed;
            // A clone, so the permit does not borrow `self` (cheap: an Arc).
            let events = self.events.clone();
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                // Always read the network: sync, slots and pings must not
                // wait for the consensus task (gossip beyond the buffer is
                // dropped instead, see `push_event`).
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                permit = events.reserve(), if waiting => match permit {
                    Ok(permit) => {
                        if let Some(ev) = self.pending_events.pop_front() {
                            permit.send(ev);
                        }
                    }
                    Err(_) => self.close_events(),
                },
                Some((peer, id, channel, response)) = self.responders.next(), if !self.responders.is_empty() => {
                    self.on_sync_answer(peer, id, channel, response);
                }
                _ = tick.tick() => self.redial_due(),
            }
        }
        debug!(peer_id = %self.swarm.local_peer_id(), "p2p task stopped: all handles dropped");
    }

    /// Queues an event for the consensus task; drops it (counted, warned
    /// at most every few seconds) when the task lags by more than the
    /// buffer, so that a stuck consumer never stalls the network. Returns
    /// whether it was queued.
    pub(crate) fn push_event(&mut self, ev: NetEvent) -> bool {
        if self.events_closed {
            return false;
        }
        if self.pending_events.len() >= MAX_PENDING_EVENTS {
            let n = self.shared.events_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(suppressed) = self.warn_events_dropped.check() {
                warn!(
                    dropped_total = n,
                    suppressed,
                    "consensus task is behind on p2p events; dropping gossip until it catches up"
                );
            }
            return false;
        }
        self.pending_events.push_back(ev);
        true
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
            Command::SetMembers(members) => self.set_members(members),
        }
    }

    /// Sends gossip to member `index` if this node is a member and the target
    /// is connected; otherwise drops it (logged at debug when `explicit`).
    pub(crate) fn send_gossip(&mut self, index: usize, batch: pb::GossipBatch, explicit: bool) {
        if self.self_index.is_none() {
            if let Some(suppressed) = self.warn_send.check() {
                warn!(
                    suppressed,
                    "this node is not a member; gossip is not sent (members would refuse it)"
                );
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
        if len > self.max_gossip_bytes || batch.messages.len() > MAX_GOSSIP_MESSAGES {
            if let Some(suppressed) = self.warn_send.check() {
                warn!(
                    bytes = len,
                    limit = self.max_gossip_bytes,
                    messages = batch.messages.len(),
                    max_messages = MAX_GOSSIP_MESSAGES,
                    suppressed,
                    "gossip batch too large; not sent"
                );
            }
            return;
        }
        self.swarm
            .behaviour_mut()
            .gossip
            .inner
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
        // A member's address dials that member (no duplicate connection).
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
            Some(t) => {
                // Explicit from now on: kept when the member list changes.
                t.reason = DialReason::Explicit;
                t.redial.next_at = Some(now);
            }
            None => self
                .targets
                .push(DialTarget::new(peer, addr, DialReason::Explicit, now)),
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
            SwarmEvent::Behaviour(BehaviourEvent::Slots(ev)) => self.on_slot_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(ev)) => self.on_gossip_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(ev)) => self.on_sync_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(ev)) => self.on_identify_event(ev),
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
        // Admitted by `ConnectionSlots` (refused ones never get here).
        let member = self.members.index_of(&peer);
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
        if self.connections.remove(&id).is_none() {
            return;
        }
        let member = self.members.index_of(&peer);
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
        self.sync_admission.peer_gone(&peer);
        let now = Instant::now();
        for t in &mut self.targets {
            if t.peer == Some(peer) {
                t.redial.disconnected(now);
            }
        }
        self.push_event(NetEvent::PeerDisconnected { peer, member });
    }

    pub(crate) fn on_slot_event(&mut self, ev: SlotEvent) {
        match ev {
            SlotEvent::Refused { peer, addr, why } => {
                if let Some(suppressed) = self.warn_observer_limit.check() {
                    warn!(%peer, %addr, %why, suppressed, "p2p connection refused");
                }
            }
            SlotEvent::Replaced { peer, by } => {
                debug!(%peer, %by, observers = self.swarm.behaviour().slots.observers(), "observer slot handed to a newcomer");
            }
        }
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
                        // Ack once queued: the ack means "received", not
                        // "valid"; a dropped batch is not acked.
                        if self.push_event(NetEvent::Gossip { from, batch }) {
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .gossip
                                .inner
                                .send_response(channel, ());
                        }
                    }
                    (Some(_), Checked::Invalid(why)) => {
                        drop(channel);
                        self.bad_message(peer, "gossip batch", &why);
                    }
                    // `MembersOnly` does not offer gossip to non-members; only
                    // a request already under way when its sender stopped
                    // being a member gets here (its connection is closing).
                    // Kept as a second line of defence too.
                    (None, _) => {
                        drop(channel);
                        if let Some(suppressed) = self.warn_non_member_gossip.check() {
                            warn!(%peer, suppressed, "gossip from a peer that is not a member; disconnecting it");
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
                        request_id,
                        request,
                        channel,
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
                self.on_sync_request(peer, request_id, request, channel);
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
            Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.sync_admission.done(request_id);
                self.on_inbound_failure(peer, "sync request", error)
            }
            Event::ResponseSent { request_id, .. } => self.sync_admission.done(request_id),
        }
    }

    /// Admits a sync request (within the peer's share and rate) and hands it
    /// to the sync server; drops it otherwise (the peer sees no answer).
    pub(crate) fn on_sync_request(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        request: pb::SyncRequest,
        channel: ResponseChannel<pb::SyncResponse>,
    ) {
        let member = self.members.index_of(&peer);
        if let Err(why) = self
            .sync_admission
            .admit(peer, member.is_some(), id, Instant::now())
        {
            if let Some(suppressed) = self.warn_sync_rate.check() {
                warn!(%peer, ?member, ?why, suppressed, "sync request over the peer's share; dropping it");
            }
            return;
        }
        let (respond, answer) = oneshot::channel();
        let inbound = InboundSync {
            peer,
            member,
            request,
            respond,
        };
        if let Err(e) = self.sync_requests.try_send(inbound) {
            // Dropping `channel` ends the request (and its admission).
            if let Some(suppressed) = self.warn_sync_queue.check() {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "sync server busy",
                    mpsc::error::TrySendError::Closed(_) => "sync server stopped",
                };
                warn!(%peer, why, suppressed, outstanding = self.sync_admission.outstanding(), "sync request dropped");
            }
            return;
        }
        self.responders.push(
            async move {
                let response = tokio::time::timeout(REQUEST_TIMEOUT, answer)
                    .await
                    .ok()
                    .and_then(Result::ok);
                (peer, id, channel, response)
            }
            .boxed(),
        );
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
        id: InboundRequestId,
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
                    self.sync_admission.done(id);
                    debug!(%peer, "sync requester went away before the answer");
                }
            }
            None => debug!(%peer, "sync request not answered by the node"),
        }
    }
}
