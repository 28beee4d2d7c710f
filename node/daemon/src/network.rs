//! Peer-to-peer networking of a node over libp2p (TCP + Noise + Yamux).
//!
//! [`Network::start`] binds the listen address and spawns one tokio task that
//! owns the libp2p swarm; the [`Network`] handle talks to it through a
//! command channel and a shared peer table, and the task reports what
//! happens as [`NetEvent`]s. Two request-response protocols carry
//! length-prefixed protobuf:
//!
//! - `/fedpeg/gossip/1`: a [`pb::GossipBatch`] answered by an empty ack.
//!   Only genesis members may send it; a non-member that tries is
//!   disconnected. Each request travels on its own substream, so batches to
//!   one peer may arrive out of order (consensus tolerates reordering).
//! - `/fedpeg/sync/1`: a [`pb::SyncRequest`] answered by a
//!   [`pb::SyncResponse`]. Anyone may ask; non-members are rate limited per
//!   peer (token bucket) and over-limit requests are dropped unanswered.
//!
//! Members and observers keep a connection to every other genesis member
//! (redialing with exponential backoff) and to every address given to
//! [`Network::dial`]. Connections from non-members are capped. Every
//! message is bounded by `max_message_bytes` and decoded defensively: a peer
//! that sends an oversize or undecodable message is disconnected. When the
//! node falls behind on events the task buffers a bounded number and then
//! stops reading the network until there is room (backpressure, no drops).
//!
//! This module does not validate what it carries (the driver checks
//! signatures, heights and transactions), does not discover peers beyond
//! genesis and explicit dials, and does not relay gossip between members
//! (the mesh is full).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fedpeg_proto::v1 as pb;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{
    self, InboundFailure, OutboundFailure, OutboundRequestId, ProtocolSupport, ResponseChannel,
};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{identity, noise, tcp, yamux, StreamProtocol, Swarm};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, trace, warn};

pub use libp2p::{Multiaddr, PeerId};

/// Protocol name of member-to-member gossip.
pub const GOSSIP_PROTOCOL: &str = "/fedpeg/gossip/1";
/// Protocol name of block sync.
pub const SYNC_PROTOCOL: &str = "/fedpeg/sync/1";
/// Default of [`NetworkConfig::max_observer_connections`].
pub const DEFAULT_MAX_OBSERVER_CONNECTIONS: usize = 32;
/// Default of [`NetworkConfig::max_message_bytes`] (16 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default of [`NetworkConfig::observer_sync_rate`].
pub const DEFAULT_OBSERVER_SYNC_RATE: u32 = 20;
/// How long a request (gossip or sync) may take before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A sync request is two integers; anything bigger is garbage.
const MAX_SYNC_REQUEST_BYTES: usize = 1024;
/// The gossip ack is an empty message.
const MAX_ACK_BYTES: usize = 0;
/// First redial delay after a lost or failed connection.
const REDIAL_INITIAL: Duration = Duration::from_millis(250);
/// Longest redial delay.
const REDIAL_MAX: Duration = Duration::from_secs(5);
/// A connection that lived at least this long resets the backoff; shorter
/// ones (e.g. a member closing us as an excess observer) keep it growing so
/// we do not hammer the remote.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// How often the swarm task looks for due redials.
const REDIAL_TICK: Duration = Duration::from_millis(100);
/// Commands queued to the swarm task before `broadcast`/`send_to` drop.
const COMMAND_QUEUE: usize = 8192;
/// Events buffered inside the swarm task while `events` is full; beyond
/// this the task stops reading the network (backpressure on peers).
const MAX_PENDING_EVENTS: usize = 1024;
/// Concurrent gossip substreams per connection (4-15 members push many
/// batches; the libp2p default of 100 would stall bursts).
const GOSSIP_MAX_STREAMS: usize = 256;
/// Concurrent sync substreams per connection.
const SYNC_MAX_STREAMS: usize = 64;
/// How long `start` waits for the listener to report its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest interval between two warnings of one kind (floods of bad input
/// must not flood the log).
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// A federation member as the network sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPeer {
    /// Position of the member in genesis.
    pub index: usize,
    /// Its libp2p identity (from its consensus key).
    pub peer_id: PeerId,
    /// Its genesis p2p address.
    pub addr: Multiaddr,
}

/// What [`Network::start`] needs.
#[derive(Clone)]
pub struct NetworkConfig {
    /// ed25519 secret key bytes of this node: a member's consensus key (so PeerId = genesis identity); None = observer (a random identity is generated).
    pub secret_key: Option<[u8; 32]>,
    /// Address to listen on (a member uses its genesis p2p_address; an observer e.g. /ip4/127.0.0.1/tcp/0).
    pub listen: Multiaddr,
    /// All genesis members (including self if a member; skip dialing self).
    pub members: Vec<MemberPeer>,
    /// Most simultaneous connections from non-members (observers). Default 32.
    pub max_observer_connections: usize,
    /// Largest accepted message (gossip batch or sync response) in bytes. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Sync requests served per second per non-member peer (token bucket). Default 20.
    pub observer_sync_rate: u32,
}

impl NetworkConfig {
    /// A configuration with the documented defaults for the limits.
    pub fn new(secret_key: Option<[u8; 32]>, listen: Multiaddr, members: Vec<MemberPeer>) -> Self {
        NetworkConfig {
            secret_key,
            listen,
            members,
            max_observer_connections: DEFAULT_MAX_OBSERVER_CONNECTIONS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            observer_sync_rate: DEFAULT_OBSERVER_SYNC_RATE,
        }
    }
}

impl std::fmt::Debug for NetworkConfig {
    // Never print the secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkConfig")
            .field("secret_key", &self.secret_key.map(|_| "<redacted>"))
            .field("listen", &self.listen)
            .field("members", &self.members)
            .field("max_observer_connections", &self.max_observer_connections)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("observer_sync_rate", &self.observer_sync_rate)
            .finish()
    }
}

/// Converts a genesis member's ed25519 consensus key to its libp2p PeerId.
pub fn peer_id_from_consensus_key(key: &[u8; 32]) -> Result<PeerId, NetworkError> {
    let public = identity::ed25519::PublicKey::try_from_bytes(key)
        .map_err(|e| NetworkError::InvalidConsensusKey(e.to_string()))?;
    Ok(identity::PublicKey::from(public).to_peer_id())
}

/// What the network reports to the node.
#[derive(Debug)]
pub enum NetEvent {
    /// A gossip batch from a genesis member (already decoded, size-checked). Never emitted for non-members.
    Gossip {
        /// Genesis index of the sender.
        from: usize,
        /// The batch.
        batch: pb::GossipBatch,
    },
    /// A peer asks for blocks; answer through `respond` (dropping it sends nothing / closes the stream).
    SyncRequest {
        /// Who asks.
        peer: PeerId,
        /// Its genesis index if it is a member.
        member: Option<usize>,
        /// What it asks for (not validated).
        request: pb::SyncRequest,
        /// Where the answer goes; must be answered within [`REQUEST_TIMEOUT`].
        respond: oneshot::Sender<pb::SyncResponse>,
    },
    /// The first connection to a peer was established.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Its genesis index if it is a member.
        member: Option<usize>,
    },
    /// The last connection to a peer was closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
        /// Its genesis index if it is a member.
        member: Option<usize>,
    },
}

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The [`NetworkConfig`] is inconsistent.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// A genesis consensus key is not an ed25519 point.
    #[error("consensus key is not a valid ed25519 public key ({0}); check the member's consensus_key in genesis")]
    InvalidConsensusKey(String),
    /// The node's secret key was rejected.
    #[error("secret key is not a valid ed25519 secret key ({0}); check the key file")]
    InvalidSecretKey(String),
    /// The libp2p transport could not be built.
    #[error("cannot build the p2p transport: {0}")]
    Transport(String),
    /// The listen address could not be bound.
    #[error("cannot listen for p2p on {addr}: {reason}; check that the address is local and the port is free")]
    Listen {
        /// The configured listen address.
        addr: Multiaddr,
        /// What the transport said.
        reason: String,
    },
    /// No peer is connected to ask.
    #[error("no p2p peer is connected; check that members are running and reachable at their genesis p2p addresses")]
    NoPeer,
    /// The requested peer is not connected.
    #[error("p2p peer {0} is not connected")]
    NotConnected(PeerId),
    /// The peer did not answer in time.
    #[error("p2p peer {peer} did not answer within {}s; it may be overloaded or unreachable", REQUEST_TIMEOUT.as_secs())]
    Timeout {
        /// The peer asked.
        peer: PeerId,
    },
    /// The network task did not report an outcome in time.
    #[error("the p2p task did not answer within {}s; the node may be overloaded", REQUEST_TIMEOUT.as_secs() + 2)]
    Stalled,
    /// The peer answered with something oversize or undecodable.
    #[error("p2p peer {peer} sent an invalid response ({reason}); it was disconnected")]
    BadResponse {
        /// The peer asked.
        peer: PeerId,
        /// What was wrong.
        reason: String,
    },
    /// The request failed for another reason (connection lost, peer refused).
    #[error("request to p2p peer {peer} failed: {reason}")]
    RequestFailed {
        /// The peer asked.
        peer: PeerId,
        /// What happened.
        reason: String,
    },
    /// The network task is gone.
    #[error("the p2p task has stopped (is the node shutting down?)")]
    Shutdown,
}

type SyncReply = oneshot::Sender<Result<(PeerId, pb::SyncResponse), NetworkError>>;

/// What a [`Network`] handle asks the swarm task to do.
enum Command {
    Broadcast(pb::GossipBatch),
    SendTo(usize, pb::GossipBatch),
    Sync {
        peer: Option<PeerId>,
        request: pb::SyncRequest,
        reply: SyncReply,
    },
    Dial(Multiaddr),
}

/// A connected peer in the shared table.
struct PeerEntry {
    member: Option<usize>,
    /// Open connections, oldest first, with the remote address of each.
    connections: Vec<(ConnectionId, Multiaddr)>,
}

/// State the swarm task publishes for the handles.
#[derive(Default)]
struct Shared {
    listen_addrs: Mutex<Vec<Multiaddr>>,
    peers: Mutex<HashMap<PeerId, PeerEntry>>,
}

/// Locks `m`, ignoring poisoning: the tables stay consistent across a
/// panicking reader because every writer is the swarm task.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Handle to the running network; cheap to clone. The swarm task stops
/// when the last handle is dropped.
#[derive(Clone)]
pub struct Network {
    local_peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    /// Gossip commands dropped because the queue was full (for rate-limited logs).
    dropped: Arc<AtomicU64>,
}

impl Network {
    /// Binds, spawns the swarm task on the current tokio runtime, starts dialing members. Events go to `events`.
    pub async fn start(
        cfg: NetworkConfig,
        events: mpsc::Sender<NetEvent>,
    ) -> Result<Network, NetworkError> {
        if cfg.max_message_bytes == 0 || u32::try_from(cfg.max_message_bytes).is_err() {
            return Err(NetworkError::InvalidConfig(format!(
                "max_message_bytes is {}; it must be between 1 and {}",
                cfg.max_message_bytes,
                u32::MAX
            )));
        }
        let members = MemberTable::new(&cfg.members)?;
        let secret = cfg.secret_key.unwrap_or_else(fedpeg_keys::random_32);
        // `ed25519_from_bytes` zeroizes the copy it is given.
        let keypair = identity::Keypair::ed25519_from_bytes(secret)
            .map_err(|e| NetworkError::InvalidSecretKey(e.to_string()))?;
        let local_peer_id = keypair.public().to_peer_id();
        let self_index = members.index_of(&local_peer_id);
        if cfg.secret_key.is_some() && self_index.is_none() {
            info!(peer_id = %local_peer_id, "p2p identity is not a genesis member; running as an observer");
        }

        let behaviour = Behaviour {
            gossip: request_response::Behaviour::with_codec(
                ProstCodec::new(cfg.max_message_bytes, MAX_ACK_BYTES),
                [(StreamProtocol::new(GOSSIP_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(GOSSIP_MAX_STREAMS),
            ),
            sync: request_response::Behaviour::with_codec(
                ProstCodec::new(MAX_SYNC_REQUEST_BYTES, cfg.max_message_bytes),
                [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(SYNC_MAX_STREAMS),
            ),
        };
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| NetworkError::Transport(e.to_string()))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| NetworkError::Transport(e.to_string()))?
            // Members keep idle connections: consensus may be quiet for a while.
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        swarm
            .listen_on(cfg.listen.clone())
            .map_err(|e| NetworkError::Listen {
                addr: cfg.listen.clone(),
                reason: e.to_string(),
            })?;

        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let shared = Arc::new(Shared::default());
        let now = Instant::now();
        let targets = members
            .by_index
            .iter()
            .filter(|(_, (peer, _))| *peer != local_peer_id)
            .map(|(_, (peer, addr))| DialTarget::new(Some(*peer), addr.clone(), now))
            .collect();
        let mut task = SwarmTask {
            swarm,
            commands: cmd_rx,
            events,
            events_closed: false,
            pending_events: VecDeque::new(),
            shared: shared.clone(),
            members,
            self_index,
            max_observer_connections: cfg.max_observer_connections,
            max_message_bytes: cfg.max_message_bytes,
            observer_sync_rate: cfg.observer_sync_rate,
            targets,
            connections: HashMap::new(),
            rejected: HashSet::new(),
            observer_connections: 0,
            sync_buckets: HashMap::new(),
            pending_syncs: HashMap::new(),
            responders: FuturesUnordered::new(),
            sync_rotation: 0,
            warn_bad_message: LogLimiter::default(),
            warn_non_member_gossip: LogLimiter::default(),
            warn_observer_limit: LogLimiter::default(),
            warn_sync_rate: LogLimiter::default(),
            warn_send: LogLimiter::default(),
        };

        // Wait until the listener is up so `listen_addrs` is meaningful as
        // soon as `start` returns (it matters for /tcp/0).
        let deadline = tokio::time::sleep(LISTEN_TIMEOUT);
        tokio::pin!(deadline);
        while lock(&shared.listen_addrs).is_empty() {
            tokio::select! {
                ev = task.swarm.select_next_some() => {
                    if let SwarmEvent::ListenerClosed { reason, .. } = &ev {
                        return Err(NetworkError::Listen {
                            addr: cfg.listen.clone(),
                            reason: format!("listener closed: {reason:?}"),
                        });
                    }
                    task.on_swarm_event(ev);
                }
                _ = &mut deadline => {
                    return Err(NetworkError::Listen {
                        addr: cfg.listen.clone(),
                        reason: format!("no listen address reported within {}s", LISTEN_TIMEOUT.as_secs()),
                    });
                }
            }
        }
        info!(
            peer_id = %local_peer_id,
            member = ?self_index,
            listen = ?lock(&shared.listen_addrs),
            "p2p listening"
        );
        task.redial_due();
        tokio::spawn(task.run());
        Ok(Network {
            local_peer_id,
            commands: cmd_tx,
            shared,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// This node's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The actual listen addresses (after binding /tcp/0).
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        lock(&self.shared.listen_addrs).clone()
    }

    /// Sends the batch to every connected member except self (fire and
    /// forget). Does nothing on a node that is not a genesis member: members
    /// would disconnect it. Batches to one peer may arrive reordered.
    pub fn broadcast(&self, batch: pb::GossipBatch) {
        self.enqueue(Command::Broadcast(batch));
    }

    /// Sends the batch to one member if it is connected (fire and forget).
    pub fn send_to(&self, member: usize, batch: pb::GossipBatch) {
        self.enqueue(Command::SendTo(member, batch));
    }

    /// Asks `peer` (or, if None, some connected member — members are
    /// preferred and rotated; with no member connected, any connected peer)
    /// for blocks. Fails on timeout, no peer, or an oversize/garbage response.
    pub async fn sync(
        &self,
        peer: Option<PeerId>,
        request: pb::SyncRequest,
    ) -> Result<(PeerId, pb::SyncResponse), NetworkError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Sync {
                peer,
                request,
                reply,
            })
            .await
            .map_err(|_| NetworkError::Shutdown)?;
        // The request-response timeout answers first; this only guards
        // against a swarm task that stopped reading the network.
        match tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(2), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NetworkError::Shutdown),
            Err(_) => Err(NetworkError::Stalled),
        }
    }

    /// Currently connected peers: (peer id, remote address, member index).
    pub fn peers(&self) -> Vec<(PeerId, Multiaddr, Option<usize>)> {
        let peers = lock(&self.shared.peers);
        let mut out: Vec<_> = peers
            .iter()
            .filter_map(|(peer, e)| {
                e.connections
                    .first()
                    .map(|(_, a)| (*peer, a.clone(), e.member))
            })
            .collect();
        out.sort_by_key(|(peer, _, member)| (member.is_none(), *member, *peer));
        out
    }

    /// Additionally dial this address and keep redialing it with backoff
    /// when the connection is lost (used by observers to reach extra peers;
    /// genesis members are dialed automatically).
    pub fn dial(&self, addr: Multiaddr) {
        self.enqueue(Command::Dial(addr));
    }

    /// Queues a command without waiting; drops it (with a warning at
    /// power-of-two counts, so floods are visible but quiet) if the queue is full.
    fn enqueue(&self, cmd: Command) {
        match self.commands.try_send(cmd) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    warn!(
                        dropped_total = n,
                        "p2p command queue full; dropping outbound gossip"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                debug!("p2p task has stopped; dropping command");
            }
        }
    }
}

/// Genesis members by peer id and by index.
struct MemberTable {
    by_peer: HashMap<PeerId, usize>,
    /// Sorted by index (BTreeMap order) for deterministic dialing and sync rotation.
    by_index: BTreeMap<usize, (PeerId, Multiaddr)>,
}

impl MemberTable {
    fn new(members: &[MemberPeer]) -> Result<MemberTable, NetworkError> {
        let mut t = MemberTable {
            by_peer: HashMap::new(),
            by_index: BTreeMap::new(),
        };
        for m in members {
            if let Some(Protocol::P2p(p)) = m.addr.iter().last() {
                if p != m.peer_id {
                    return Err(NetworkError::InvalidConfig(format!(
                        "member {}: address {} names peer {p} but its consensus key is peer {}",
                        m.index, m.addr, m.peer_id
                    )));
                }
            }
            if t.by_peer.insert(m.peer_id, m.index).is_some() {
                return Err(NetworkError::InvalidConfig(format!(
                    "member {}: peer {} is listed twice",
                    m.index, m.peer_id
                )));
            }
            if t.by_index
                .insert(m.index, (m.peer_id, m.addr.clone()))
                .is_some()
            {
                return Err(NetworkError::InvalidConfig(format!(
                    "member index {} is listed twice",
                    m.index
                )));
            }
        }
        Ok(t)
    }

    fn index_of(&self, peer: &PeerId) -> Option<usize> {
        self.by_peer.get(peer).copied()
    }
}

/// Length-prefixed protobuf: a 4-byte big-endian length, then the message.
/// Requests and responses have separate size limits.
struct ProstCodec<Req, Resp> {
    max_request: usize,
    max_response: usize,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> ProstCodec<Req, Resp> {
    fn new(max_request: usize, max_response: usize) -> Self {
        ProstCodec {
            max_request,
            max_response,
            _types: PhantomData,
        }
    }
}

// Manual impl: a derive would needlessly require `Req: Clone, Resp: Clone`.
impl<Req, Resp> Clone for ProstCodec<Req, Resp> {
    fn clone(&self) -> Self {
        ProstCodec::new(self.max_request, self.max_response)
    }
}

/// An inbound request as read off the wire. Invalid input is a value, not
/// an error, because libp2p only logs `read_request` errors: as a value it
/// reaches the swarm task with the sender's peer id, which then disconnects
/// that peer.
#[derive(Debug)]
enum Checked<T> {
    /// Decoded within the size limit.
    Valid(T),
    /// Oversize or undecodable; why.
    Invalid(String),
}

impl<Req, Resp> request_response::Codec for ProstCodec<Req, Resp>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Checked<Req>;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Checked<Req>>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_message(io, self.max_request).await {
            Ok(req) => Ok(Checked::Valid(req)),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Checked::Invalid(e.to_string())),
            Err(e) => Err(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Checked<Req>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Checked::Valid(req) => write_message(io, &req, self.max_request).await,
            Checked::Invalid(why) => Err(io::Error::new(io::ErrorKind::InvalidInput, why)),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &res, self.max_response).await
    }
}

/// Reads one length-prefixed message of at most `limit` bytes. Oversize or
/// undecodable input is `InvalidData` (the peer's fault: disconnect it).
async fn read_message<M, R>(io: &mut R, limit: usize) -> io::Result<M>
where
    M: prost::Message + Default,
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u64::from(u32::from_be_bytes(prefix));
    if len > limit as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds the {limit}-byte limit"),
        ));
    }
    // Grow the buffer as bytes arrive rather than trusting the prefix.
    let mut buf = Vec::new();
    (&mut *io).take(len).read_to_end(&mut buf).await?;
    if buf.len() as u64 != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stream ended after {} of {len} announced bytes", buf.len()),
        ));
    }
    M::decode(buf.as_slice()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("undecodable protobuf: {e}"),
        )
    })
}

/// Writes one length-prefixed message. A message over `limit` is refused
/// with `InvalidInput` (our fault: the peer would reject it).
async fn write_message<M, W>(io: &mut W, msg: &M, limit: usize) -> io::Result<()>
where
    M: prost::Message,
    W: AsyncWrite + Unpin,
{
    let len = msg.encoded_len();
    let prefix = match u32::try_from(len) {
        Ok(l) if len <= limit => l.to_be_bytes(),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("message of {len} bytes exceeds the {limit}-byte limit; not sent"),
            ))
        }
    };
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&prefix);
    msg.encode(&mut buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    io.write_all(&buf).await?;
    io.flush().await
}

type GossipCodec = ProstCodec<pb::GossipBatch, ()>;
type SyncCodec = ProstCodec<pb::SyncRequest, pb::SyncResponse>;

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Behaviour {
    gossip: request_response::Behaviour<GossipCodec>,
    sync: request_response::Behaviour<SyncCodec>,
}

/// Emits a warning at most once per [`WARN_INTERVAL`], counting the rest.
#[derive(Default)]
struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(number suppressed since the last warning)` if a warning may be logged now.
    fn check(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < WARN_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Per-peer token bucket for sync requests from non-members.
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn full(rate: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(rate),
            last: now,
        }
    }

    /// Refills at `rate` per second (burst `rate`) and takes one token if any.
    fn try_take(&mut self, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate);
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Exponential redial backoff of one dial target.
struct Redial {
    backoff: Duration,
    next_at: Option<Instant>,
    connected_since: Option<Instant>,
}

impl Redial {
    fn connected(&mut self, now: Instant) {
        self.next_at = None;
        self.connected_since.get_or_insert(now);
    }

    fn disconnected(&mut self, now: Instant) {
        if let Some(since) = self.connected_since.take() {
            if now.duration_since(since) >= BACKOFF_RESET_AFTER {
                self.backoff = REDIAL_INITIAL;
            }
        }
        self.schedule(now);
    }

    fn schedule(&mut self, now: Instant) {
        if self.next_at.is_none() {
            self.next_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(REDIAL_MAX);
        }
    }

    fn take_due(&mut self, now: Instant) -> bool {
        match self.next_at {
            Some(t) if t <= now => {
                self.next_at = None;
                true
            }
            _ => false,
        }
    }
}

/// A peer the node keeps connected: a genesis member or an explicit dial.
struct DialTarget {
    /// Known from genesis or `/p2p/`, or learned from the first connection.
    peer: Option<PeerId>,
    addr: Multiaddr,
    /// The dial in flight, if any.
    pending: Option<ConnectionId>,
    redial: Redial,
}

impl DialTarget {
    fn new(peer: Option<PeerId>, addr: Multiaddr, now: Instant) -> Self {
        DialTarget {
            peer,
            addr,
            pending: None,
            redial: Redial {
                backoff: REDIAL_INITIAL,
                next_at: Some(now),
                connected_since: None,
            },
        }
    }
}

type Responder = BoxFuture<
    'static,
    (
        PeerId,
        ResponseChannel<pb::SyncResponse>,
        Option<pb::SyncResponse>,
    ),
>;

/// Owns the swarm; runs until every [`Network`] handle is dropped.
struct SwarmTask {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    events_closed: bool,
    /// Events waiting for room in `events`, in order.
    pending_events: VecDeque<NetEvent>,
    shared: Arc<Shared>,
    members: MemberTable,
    self_index: Option<usize>,
    max_observer_connections: usize,
    max_message_bytes: usize,
    observer_sync_rate: u32,
    targets: Vec<DialTarget>,
    /// Accepted connections.
    connections: HashMap<ConnectionId, PeerId>,
    /// Connections closed for exceeding the observer limit.
    rejected: HashSet<ConnectionId>,
    observer_connections: usize,
    sync_buckets: HashMap<PeerId, TokenBucket>,
    pending_syncs: HashMap<OutboundRequestId, (PeerId, SyncReply)>,
    /// Sync requests waiting for the node's answer.
    responders: FuturesUnordered<Responder>,
    sync_rotation: usize,
    warn_bad_message: LogLimiter,
    warn_non_member_gossip: LogLimiter,
    warn_observer_limit: LogLimiter,
    warn_sync_rate: LogLimiter,
    warn_send: LogLimiter,
}

impl SwarmTask {
    async fn run(mut self) {
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

    fn push_event(&mut self, ev: NetEvent) {
        if !self.events_closed {
            self.pending_events.push_back(ev);
        }
    }

    /// Moves buffered events into `events` while it has room.
    fn flush_events(&mut self) {
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

    fn close_events(&mut self) {
        if !self.events_closed {
            debug!("p2p event receiver dropped; discarding further events");
        }
        self.events_closed = true;
        self.pending_events.clear();
    }

    fn on_command(&mut self, cmd: Command) {
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
    fn send_gossip(&mut self, index: usize, batch: pb::GossipBatch, explicit: bool) {
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

    fn start_sync(&mut self, peer: Option<PeerId>, request: pb::SyncRequest, reply: SyncReply) {
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
    fn pick_sync_peer(&mut self) -> Option<PeerId> {
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

    fn add_dial(&mut self, addr: Multiaddr) {
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
    fn redial_due(&mut self) {
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

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
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

    fn on_connection_established(&mut self, peer: PeerId, id: ConnectionId, addr: Multiaddr) {
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

    fn on_connection_closed(&mut self, peer: PeerId, id: ConnectionId, cause: Option<String>) {
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
    fn bad_message(&mut self, peer: PeerId, what: &str, error: &str) {
        if let Some(suppressed) = self.warn_bad_message.check() {
            warn!(%peer, what, %error, suppressed, "invalid p2p message; disconnecting the peer");
        }
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn on_gossip_event(&mut self, ev: request_response::Event<Checked<pb::GossipBatch>, ()>) {
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

    fn on_sync_event(
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

    fn on_inbound_failure(&mut self, peer: PeerId, what: &str, error: InboundFailure) {
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

    fn on_sync_answer(
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

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn local_addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    fn peer_of(secret: [u8; 32]) -> PeerId {
        identity::Keypair::ed25519_from_bytes(secret)
            .unwrap()
            .public()
            .to_peer_id()
    }

    /// Secret keys and genesis view of an `n`-member federation on free local ports.
    fn federation(n: usize) -> (Vec<[u8; 32]>, Vec<MemberPeer>) {
        let secrets: Vec<[u8; 32]> = (0..n).map(|i| [u8::try_from(i).unwrap() + 1; 32]).collect();
        let members = secrets
            .iter()
            .enumerate()
            .map(|(index, s)| MemberPeer {
                index,
                peer_id: peer_of(*s),
                addr: local_addr(free_port()),
            })
            .collect();
        (secrets, members)
    }

    fn member_config(secrets: &[[u8; 32]], members: &[MemberPeer], i: usize) -> NetworkConfig {
        NetworkConfig::new(Some(secrets[i]), members[i].addr.clone(), members.to_vec())
    }

    fn observer_config(members: &[MemberPeer]) -> NetworkConfig {
        NetworkConfig::new(None, local_addr(0), members.to_vec())
    }

    async fn start(cfg: NetworkConfig) -> (Network, mpsc::Receiver<NetEvent>) {
        let (tx, rx) = mpsc::channel(256);
        (Network::start(cfg, tx).await.unwrap(), rx)
    }

    fn batch(tag: u8, size: usize) -> pb::GossipBatch {
        pb::GossipBatch {
            messages: vec![pb::GossipMessage {
                kind: Some(pb::gossip_message::Kind::Consensus(pb::ConsensusMessage {
                    signed: vec![tag; size],
                })),
            }],
        }
    }

    /// The first event `f` maps to `Some` within `within`.
    async fn next_matching<T>(
        rx: &mut mpsc::Receiver<NetEvent>,
        within: Duration,
        mut f: impl FnMut(NetEvent) -> Option<T>,
    ) -> Option<T> {
        tokio::time::timeout(within, async {
            while let Some(ev) = rx.recv().await {
                if let Some(t) = f(ev) {
                    return Some(t);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits until `net` is connected to every peer in `peers`.
    async fn wait_connected(net: &Network, peers: &[PeerId]) {
        let ok = tokio::time::timeout(WAIT, async {
            loop {
                let connected: Vec<PeerId> = net.peers().into_iter().map(|(p, _, _)| p).collect();
                if peers.iter().all(|p| connected.contains(p)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            ok.is_ok(),
            "{} not connected to {peers:?} in time",
            net.local_peer_id()
        );
    }

    /// Answers every sync request with `tip_height = from_height + 41` and `blocks`.
    fn serve_sync(mut rx: mpsc::Receiver<NetEvent>, blocks: Vec<pb::CommittedBlock>) {
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if let NetEvent::SyncRequest {
                    request, respond, ..
                } = ev
                {
                    let _ = respond.send(pb::SyncResponse {
                        blocks: blocks.clone(),
                        tip_height: request.from_height + 41,
                    });
                }
            }
        });
    }

    #[test]
    fn consensus_key_maps_to_the_peer_id_of_the_secret_key() {
        let secret = [7u8; 32];
        let public = ed25519_dalek::SigningKey::from_bytes(&secret)
            .verifying_key()
            .to_bytes();
        assert_eq!(
            peer_id_from_consensus_key(&public).unwrap(),
            peer_of(secret)
        );
    }

    #[test]
    fn consensus_key_that_is_not_a_curve_point_is_rejected() {
        // y = 2 is not the y-coordinate of any ed25519 point.
        let mut key = [0u8; 32];
        key[0] = 2;
        let err = peer_id_from_consensus_key(&key).unwrap_err();
        assert!(matches!(err, NetworkError::InvalidConsensusKey(_)), "{err}");
    }

    #[tokio::test]
    async fn codec_round_trips_and_rejects_oversize_garbage_and_truncated_input() {
        use futures::io::Cursor;
        let msg = batch(3, 100);
        let mut out = Cursor::new(Vec::new());
        write_message(&mut out, &msg, 1024).await.unwrap();
        let bytes = out.into_inner();
        let back: pb::GossipBatch = read_message(&mut Cursor::new(bytes.clone()), 1024)
            .await
            .unwrap();
        assert_eq!(back, msg);

        // Announced length over the limit: rejected before reading the body.
        let err = read_message::<pb::GossipBatch, _>(&mut Cursor::new(bytes.clone()), 50)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let huge = u32::MAX.to_be_bytes().to_vec();
        let err =
            read_message::<pb::GossipBatch, _>(&mut Cursor::new(huge), DEFAULT_MAX_MESSAGE_BYTES)
                .await
                .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // Undecodable body.
        let mut garbage = 8u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0xff; 8]);
        let err = read_message::<pb::GossipBatch, _>(&mut Cursor::new(garbage), 1024)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // Stream ends early.
        let err = read_message::<pb::GossipBatch, _>(&mut Cursor::new(bytes[..20].to_vec()), 1024)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = read_message::<pb::GossipBatch, _>(&mut Cursor::new(vec![0u8; 2]), 1024)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        // Through the codec, invalid requests become values (so the swarm
        // task learns who sent them); a truncated one stays an I/O error.
        use request_response::Codec as _;
        let proto = StreamProtocol::new(GOSSIP_PROTOCOL);
        let mut codec = GossipCodec::new(50, MAX_ACK_BYTES);
        let req = codec
            .read_request(&proto, &mut Cursor::new(bytes.clone()))
            .await
            .unwrap();
        assert!(matches!(req, Checked::Invalid(_)), "{req:?}");
        let mut codec = GossipCodec::new(1024, MAX_ACK_BYTES);
        let req = codec
            .read_request(&proto, &mut Cursor::new(bytes.clone()))
            .await
            .unwrap();
        assert!(matches!(req, Checked::Valid(ref b) if *b == msg), "{req:?}");
        assert!(codec
            .read_request(&proto, &mut Cursor::new(bytes[..20].to_vec()))
            .await
            .is_err());
        // A non-empty ack is garbage.
        let err = codec
            .read_response(&proto, &mut Cursor::new(bytes.clone()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // Our own oversize message is refused, not sent.
        let err = write_message(&mut Cursor::new(Vec::new()), &msg, 50)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn config_with_a_member_listed_twice_is_rejected() {
        let (_, mut members) = federation(2);
        members[1].peer_id = members[0].peer_id;
        let (tx, _rx) = mpsc::channel(1);
        let err = Network::start(observer_config(&members), tx)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, NetworkError::InvalidConfig(_)), "{err}");
    }

    #[tokio::test]
    async fn zero_max_message_bytes_is_rejected() {
        let mut cfg = observer_config(&[]);
        cfg.max_message_bytes = 0;
        let (tx, _rx) = mpsc::channel(1);
        let err = Network::start(cfg, tx).await.err().unwrap();
        assert!(matches!(err, NetworkError::InvalidConfig(_)), "{err}");
    }

    #[tokio::test]
    async fn three_members_form_a_mesh_and_broadcast_reaches_the_others() {
        let (secrets, members) = federation(3);
        let mut nets = Vec::new();
        for i in 0..3 {
            nets.push(start(member_config(&secrets, &members, i)).await);
        }
        for (i, (net, _)) in nets.iter().enumerate() {
            let others: Vec<PeerId> = members
                .iter()
                .filter(|m| m.index != i)
                .map(|m| m.peer_id)
                .collect();
            wait_connected(net, &others).await;
            assert!(net
                .peers()
                .iter()
                .all(|(_, _, m)| m.is_some() && *m != Some(i)));
        }
        let sent = batch(42, 300);
        nets[0].0.broadcast(sent.clone());
        for (_, rx) in nets.iter_mut().skip(1) {
            let got = next_matching(rx, WAIT, |ev| match ev {
                NetEvent::Gossip { from, batch } => Some((from, batch)),
                _ => None,
            })
            .await;
            assert_eq!(got, Some((0, sent.clone())));
        }
    }

    #[tokio::test]
    async fn observer_sync_gets_the_answer_of_the_member_event_handler() {
        let (secrets, members) = federation(1);
        let (m0, m0_rx) = start(member_config(&secrets, &members, 0)).await;
        serve_sync(m0_rx, vec![]);
        let (obs, _obs_rx) = start(observer_config(&members)).await;
        obs.dial(members[0].addr.clone());
        wait_connected(&obs, &[m0.local_peer_id()]).await;
        assert_eq!(obs.peers()[0].2, Some(0));

        let request = pb::SyncRequest {
            from_height: 9,
            max_blocks: 5,
            wait_ms: 0,
        };
        let (peer, resp) = obs.sync(None, request).await.unwrap();
        assert_eq!(peer, m0.local_peer_id());
        assert_eq!(resp.tip_height, 50);
        let (_, resp) = obs
            .sync(
                Some(m0.local_peer_id()),
                pb::SyncRequest {
                    from_height: 1,
                    max_blocks: 1,
                    wait_ms: 0,
                },
            )
            .await
            .unwrap();
        assert_eq!(resp.tip_height, 42);
        // The member sees the observer as a non-member.
        assert_eq!(
            m0.peers(),
            vec![(obs.local_peer_id(), m0.peers()[0].1.clone(), None)]
        );
    }

    #[tokio::test]
    async fn sync_without_any_connected_peer_fails_fast() {
        let (obs, _rx) = start(observer_config(&[])).await;
        let err = obs
            .sync(None, pb::SyncRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(err, NetworkError::NoPeer), "{err}");
        let stranger = peer_of([9; 32]);
        let err = obs
            .sync(Some(stranger), pb::SyncRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetworkError::NotConnected(p) if p == stranger),
            "{err}"
        );
    }

    #[tokio::test]
    async fn observer_sync_requests_over_the_rate_are_dropped() {
        let (secrets, members) = federation(1);
        let mut cfg = member_config(&secrets, &members, 0);
        cfg.observer_sync_rate = 2;
        let (m0, m0_rx) = start(cfg).await;
        serve_sync(m0_rx, vec![]);
        let (obs, _obs_rx) = start(observer_config(&members)).await;
        wait_connected(&obs, &[m0.local_peer_id()]).await;

        let results = futures::future::join_all((0..6).map(|h| {
            obs.sync(
                None,
                pb::SyncRequest {
                    from_height: h,
                    max_blocks: 1,
                    wait_ms: 0,
                },
            )
        }))
        .await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert!((2..=3).contains(&ok), "{ok} of 6 served: {results:?}");
        assert!(results
            .iter()
            .all(|r| !matches!(r, Err(NetworkError::Timeout { .. }))));
    }

    #[tokio::test]
    async fn gossip_from_a_non_member_is_ignored_and_the_peer_disconnected() {
        let (secrets, members) = federation(1);
        let (_m0, mut m0_rx) = start(member_config(&secrets, &members, 0)).await;
        // A rogue node that believes it is member 1 of the same federation.
        let rogue_secret = [99u8; 32];
        let rogue_peer = peer_of(rogue_secret);
        let mut rogue_members = members.clone();
        rogue_members.push(MemberPeer {
            index: 1,
            peer_id: rogue_peer,
            addr: local_addr(free_port()),
        });
        let (rogue, _rogue_rx) = start(member_config(
            &[secrets[0], rogue_secret],
            &rogue_members,
            1,
        ))
        .await;
        wait_connected(&rogue, &[members[0].peer_id]).await;

        rogue.broadcast(batch(1, 10));
        let mut saw_connect = false;
        let outcome = next_matching(&mut m0_rx, WAIT, |ev| match ev {
            NetEvent::Gossip { .. } => Some(Err("non-member gossip was delivered")),
            NetEvent::PeerConnected { peer, member } if peer == rogue_peer => {
                assert_eq!(member, None);
                saw_connect = true;
                None
            }
            NetEvent::PeerDisconnected { peer, member: None } if peer == rogue_peer => Some(Ok(())),
            _ => None,
        })
        .await;
        assert!(saw_connect);
        assert_eq!(outcome, Some(Ok(())));
        // Nothing slips through afterwards either.
        let late = next_matching(&mut m0_rx, Duration::from_millis(500), |ev| match ev {
            NetEvent::Gossip { .. } => Some(()),
            _ => None,
        })
        .await;
        assert_eq!(late, None);
    }

    #[tokio::test]
    async fn oversize_gossip_is_rejected_and_the_sender_disconnected() {
        let (secrets, members) = federation(2);
        let mut cfg0 = member_config(&secrets, &members, 0);
        cfg0.max_message_bytes = 1024;
        let (m0, mut m0_rx) = start(cfg0).await;
        let (m1, _m1_rx) = start(member_config(&secrets, &members, 1)).await;
        wait_connected(&m0, &[members[1].peer_id]).await;
        wait_connected(&m1, &[members[0].peer_id]).await;

        m1.send_to(0, batch(1, 4096));
        let outcome = next_matching(&mut m0_rx, WAIT, |ev| match ev {
            NetEvent::Gossip { .. } => Some(false),
            NetEvent::PeerDisconnected {
                member: Some(1), ..
            } => Some(true),
            _ => None,
        })
        .await;
        assert_eq!(
            outcome,
            Some(true),
            "oversize gossip must disconnect, not deliver"
        );

        // The members reconnect and small batches flow again.
        let small = batch(2, 100);
        let got = tokio::time::timeout(WAIT, async {
            loop {
                m1.send_to(0, small.clone());
                let got = next_matching(&mut m0_rx, Duration::from_millis(200), |ev| match ev {
                    NetEvent::Gossip { from, batch } => Some((from, batch)),
                    _ => None,
                })
                .await;
                if let Some(got) = got {
                    return got;
                }
            }
        })
        .await;
        assert_eq!(got.ok(), Some((1, small)));
    }

    #[tokio::test]
    async fn oversize_sync_response_is_an_error_for_the_requester() {
        let (secrets, members) = federation(1);
        let (m0, m0_rx) = start(member_config(&secrets, &members, 0)).await;
        serve_sync(
            m0_rx,
            vec![pb::CommittedBlock {
                block: None,
                commit: vec![5; 4096],
            }],
        );
        let mut cfg = observer_config(&members);
        cfg.max_message_bytes = 1024;
        let (obs, _obs_rx) = start(cfg).await;
        wait_connected(&obs, &[m0.local_peer_id()]).await;
        let err = obs
            .sync(
                None,
                pb::SyncRequest {
                    from_height: 1,
                    max_blocks: 1,
                    wait_ms: 0,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, NetworkError::BadResponse { .. }), "{err}");
    }

    #[tokio::test]
    async fn non_member_connections_over_the_limit_are_closed() {
        let (secrets, members) = federation(1);
        let mut cfg = member_config(&secrets, &members, 0);
        cfg.max_observer_connections = 1;
        let (m0, _m0_rx) = start(cfg).await;
        let (a, _a_rx) = start(observer_config(&members)).await;
        wait_connected(&m0, &[a.local_peer_id()]).await;
        let (b, mut b_rx) = start(observer_config(&members)).await;
        let closed = next_matching(&mut b_rx, WAIT, |ev| match ev {
            NetEvent::PeerDisconnected {
                member: Some(0), ..
            } => Some(()),
            _ => None,
        })
        .await;
        assert_eq!(closed, Some(()));
        let peers: Vec<PeerId> = m0.peers().into_iter().map(|(p, _, _)| p).collect();
        assert_eq!(peers, vec![a.local_peer_id()]);
        assert!(!peers.contains(&b.local_peer_id()));
    }

    #[tokio::test]
    async fn a_restarted_member_is_redialed_and_gossip_flows_again() {
        let (secrets, members) = federation(2);
        let (m0, mut m0_rx) = start(member_config(&secrets, &members, 0)).await;
        let (m1, m1_rx) = start(member_config(&secrets, &members, 1)).await;
        wait_connected(&m0, &[members[1].peer_id]).await;
        drop((m1, m1_rx));
        let gone = next_matching(&mut m0_rx, WAIT, |ev| match ev {
            NetEvent::PeerDisconnected {
                member: Some(1), ..
            } => Some(()),
            _ => None,
        })
        .await;
        assert_eq!(gone, Some(()));

        // Restart on the same port (the old listener may take a moment to go).
        let (tx, mut m1_rx) = mpsc::channel(256);
        let m1 = tokio::time::timeout(WAIT, async {
            loop {
                match Network::start(member_config(&secrets, &members, 1), tx.clone()).await {
                    Ok(net) => return net,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await
        .unwrap();
        wait_connected(&m0, &[members[1].peer_id]).await;
        wait_connected(&m1, &[members[0].peer_id]).await;

        let sent = batch(8, 64);
        let got = tokio::time::timeout(WAIT, async {
            loop {
                m0.send_to(1, sent.clone());
                let got = next_matching(&mut m1_rx, Duration::from_millis(200), |ev| match ev {
                    NetEvent::Gossip { from, batch } => Some((from, batch)),
                    _ => None,
                })
                .await;
                if let Some(got) = got {
                    return got;
                }
            }
        })
        .await;
        assert_eq!(got.ok(), Some((0, sent)));
    }
}
