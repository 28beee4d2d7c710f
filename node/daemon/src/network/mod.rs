//! Peer-to-peer networking of a node over libp2p (TCP + Noise + Yamux).
//!
//! [`Network::start`] binds the listen address and spawns one tokio task that
//! owns the libp2p swarm; the [`Network`] handle talks to it through a
//! command channel and a shared peer table, and the task reports what
//! happens as [`NetEvent`]s (gossip and peers, for the consensus task) and
//! [`InboundSync`]s (sync requests, for the sync server): two queues, so
//! that serving sync never delays member gossip. Two request-response
//! protocols carry length-prefixed protobuf:
//!
//! - `/fedpeg/gossip/2`: a [`pb::GossipBatch`] answered by an empty ack.
//!   Only members of the epoch in force (and of an adopted next epoch) can
//!   open it: on any other connection the protocol
//!   is not offered ([`MembersOnly`]), so an outsider's request is refused
//!   during protocol negotiation, unread. Each request travels on its own
//!   substream, so batches to one peer may arrive out of order (consensus
//!   tolerates reordering).
//! - `/fedpeg/sync/2`: a [`pb::SyncRequest`] answered by a
//!   [`pb::SyncResponse`]. Anyone may ask; each peer has a few requests
//!   outstanding at most, non-members are also rate limited per peer (token
//!   bucket), and requests beyond either are dropped unanswered
//!   ([`SyncAdmission`]).
//! - libp2p identify, between members only: each states the fedpegd version
//!   it runs, shown in `GetFederation` ([`Network::member_versions`]; see
//!   `versions.rs`).
//!
//! Members and observers keep a connection to every other member (redialing
//! with exponential backoff) and to every address given to
//! [`Network::dial`]. Connections from non-members share a few slots that
//! nobody holds forever ([`ConnectionSlots`]); members never need one.
//!
//! The members are those of the epoch in force and of an adopted next
//! epoch: genesis at start ([`NetworkConfig::members`]), then whatever the
//! consensus task last gave [`Network::set_members`]. A change reaches every
//! place that tells members from observers (the gossip and identify gates,
//! the connection slots, this node's own index, whom it dials); connections
//! of peers whose role changed are closed, because what a connection offers
//! is fixed when it opens, and reopen under the new role (see `members.rs`).
//! Every message is bounded in size per protocol before it is read and in
//! element counts before it is decoded ([`WireChecked`]): a peer that sends
//! an oversize, overcount or undecodable message is disconnected. When the
//! consensus task falls behind on events the swarm task buffers a bounded
//! number and then drops gossip, unacknowledged, until there is room (it
//! never stops reading the network: that would stall sync and connection
//! handling too); sync requests never wait for that queue either: when the
//! sync server's queue is full they are dropped.
//!
//! This module does not validate what it carries (the driver checks
//! signatures, heights and transactions), does not decide who is a member
//! (the consensus task does), does not discover peers beyond the member
//! list and explicit dials, and does not relay gossip between members
//! (the mesh is full).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use either::Either;
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
/// Version 2: the ZIP-215 signature rule (a node of version 1 would refuse
/// blocks that version 2 accepts, so the two must not exchange them; the
/// change is made with a halt height, see deploy/README.md).
pub const GOSSIP_PROTOCOL: &str = "/fedpeg/gossip/2";
/// Protocol name of block sync.
pub const SYNC_PROTOCOL: &str = "/fedpeg/sync/2";
/// Default of [`NetworkConfig::max_observer_connections`].
pub const DEFAULT_MAX_OBSERVER_CONNECTIONS: usize = 32;
/// Default of [`NetworkConfig::max_message_bytes`] (16 MiB): a sync
/// response holds up to 8 MiB of blocks plus the block that crosses it.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default of [`NetworkConfig::max_gossip_bytes`] (8 MiB): more than twice
/// the largest block a proposer builds (10,000 transactions of at most ~300
/// bytes, plus federation transactions) with its votes.
pub const DEFAULT_MAX_GOSSIP_BYTES: usize = 8 * 1024 * 1024;
/// Default of [`NetworkConfig::max_block_txs`] (the genesis default).
pub const DEFAULT_MAX_BLOCK_TXS: usize = 10_000;
/// Most messages in one gossip batch (the driver sends at most 2,048
/// transactions per batch, and a handful of blocks and votes).
pub const MAX_GOSSIP_MESSAGES: usize = 4096;
/// Default of [`NetworkConfig::observer_sync_rate`].
pub const DEFAULT_OBSERVER_SYNC_RATE: u32 = 20;
/// Default of [`NetworkConfig::observer_slot_tenure`].
pub const DEFAULT_OBSERVER_SLOT_TENURE: Duration = Duration::from_secs(30);
/// Most blocks in one sync response.
pub const SYNC_MAX_BLOCKS: u32 = 64;
/// Sync requests queued for the sync server; beyond this (the admission
/// caps keep it far off) they are dropped, never waited for.
pub const SYNC_QUEUE: usize = 1024;
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
/// this the task drops gossip (unacknowledged) rather than stop reading the
/// network, so sync serving and connection handling never wait for the
/// consensus task.
const MAX_PENDING_EVENTS: usize = 1024;
/// Concurrent gossip substreams per connection (4-15 members push many
/// batches; the libp2p default of 100 would stall bursts). Members only.
const GOSSIP_MAX_STREAMS: usize = 256;
/// Concurrent sync substreams per connection (a member asks one at a time;
/// more than a peer may have outstanding are dropped anyway).
const SYNC_MAX_STREAMS: usize = 16;
/// How long `start` waits for the listener to report its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest interval between two warnings of one kind (floods of bad input
/// must not flood the log).
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// A federation member as the network sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPeer {
    /// Position of the member in the list in force (genesis, or the last
    /// [`Network::set_members`]); the index [`NetEvent`]s and
    /// [`Network::send_to`] use.
    pub index: usize,
    /// Its libp2p identity (from its consensus key).
    pub peer_id: PeerId,
    /// Its p2p address.
    pub addr: Multiaddr,
}

/// What [`Network::start`] needs.
#[derive(Clone)]
pub struct NetworkConfig {
    /// ed25519 secret key bytes of this node: a member's consensus key (so PeerId = member identity); None = observer (a random identity is generated). A key not in `members` runs as an observer until a [`Network::set_members`] includes it.
    pub secret_key: Option<[u8; 32]>,
    /// Address to listen on (a member uses its p2p_address from genesis or the change that added it; an observer e.g. /ip4/127.0.0.1/tcp/0).
    pub listen: Multiaddr,
    /// All members at start, i.e. genesis (including self if a member; skip dialing self); indexed 0..len. [`Network::set_members`] replaces them.
    pub members: Vec<MemberPeer>,
    /// Most simultaneous connections from non-members (observers). Default 32.
    pub max_observer_connections: usize,
    /// How long an observer keeps its slot before a newcomer may take it when all are full. Default 30 s.
    pub observer_slot_tenure: Duration,
    /// Largest accepted sync response in bytes. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Largest accepted gossip batch in bytes (members only). Default 8 MiB.
    pub max_gossip_bytes: usize,
    /// Most transactions in a block (genesis `max_block_txs`): caps what a gossiped or synced block may hold before it is decoded. Default 10,000.
    pub max_block_txs: usize,
    /// Sync requests served per second per non-member peer (token bucket). Default 20.
    pub observer_sync_rate: u32,
    /// What this node tells members it runs (identify's agent version). Default `fedpegd/<version>`.
    pub agent_version: String,
}

impl NetworkConfig {
    /// A configuration with the documented defaults for the limits.
    pub fn new(secret_key: Option<[u8; 32]>, listen: Multiaddr, members: Vec<MemberPeer>) -> Self {
        NetworkConfig {
            secret_key,
            listen,
            members,
            max_observer_connections: DEFAULT_MAX_OBSERVER_CONNECTIONS,
            observer_slot_tenure: DEFAULT_OBSERVER_SLOT_TENURE,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_gossip_bytes: DEFAULT_MAX_GOSSIP_BYTES,
            max_block_txs: DEFAULT_MAX_BLOCK_TXS,
            observer_sync_rate: DEFAULT_OBSERVER_SYNC_RATE,
            agent_version: crate::build_info::agent_version(),
        }
    }

    fn wire_limits(&self) -> WireLimits {
        WireLimits {
            max_block_txs: self.max_block_txs,
        }
    }

    /// The codec of `/fedpeg/gossip/2` under this configuration.
    fn gossip_codec(&self) -> GossipCodec {
        GossipCodec::new(self.max_gossip_bytes, MAX_ACK_BYTES, self.wire_limits())
    }

    /// The codec of `/fedpeg/sync/2` under this configuration.
    fn sync_codec(&self) -> SyncCodec {
        SyncCodec::new(
            MAX_SYNC_REQUEST_BYTES,
            self.max_message_bytes,
            self.wire_limits(),
        )
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
            .field("observer_slot_tenure", &self.observer_slot_tenure)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_gossip_bytes", &self.max_gossip_bytes)
            .field("max_block_txs", &self.max_block_txs)
            .field("observer_sync_rate", &self.observer_sync_rate)
            .field("agent_version", &self.agent_version)
            .finish()
    }
}

/// Converts a member's ed25519 consensus key to its libp2p PeerId.
pub fn peer_id_from_consensus_key(key: &[u8; 32]) -> Result<PeerId, NetworkError> {
    let public = identity::ed25519::PublicKey::try_from_bytes(key)
        .map_err(|e| NetworkError::InvalidConsensusKey(e.to_string()))?;
    Ok(identity::PublicKey::from(public).to_peer_id())
}

/// What the network reports to the consensus task. If that task falls
/// more than the buffer behind, further events are dropped (gossip
/// unacknowledged) until it catches up; see [`Network::events_dropped`].
///
/// Member indices are those of the member list in force when the swarm
/// task produced the event: after [`Network::set_members`], of the new list
/// (events already queued before the change keep the old indices).
#[derive(Debug)]
pub enum NetEvent {
    /// A gossip batch from a member (already decoded, size-checked). Never emitted for non-members.
    Gossip {
        /// Member index of the sender.
        from: usize,
        /// The batch.
        batch: pb::GossipBatch,
    },
    /// The first connection to a peer was established.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Its member index if it is a member.
        member: Option<usize>,
    },
    /// The last connection to a peer was closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
        /// Its member index if it is a member.
        member: Option<usize>,
    },
}

/// A peer asks for blocks (admitted: within its share and rate). Answer
/// through `respond`; dropping it sends nothing and closes the stream.
#[derive(Debug)]
pub struct InboundSync {
    /// Who asks.
    pub peer: PeerId,
    /// Its member index if it is a member.
    pub member: Option<usize>,
    /// What it asks for (not validated).
    pub request: pb::SyncRequest,
    /// Where the answer goes; must be answered within [`REQUEST_TIMEOUT`].
    pub respond: oneshot::Sender<pb::SyncResponse>,
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
    SetMembers(Vec<MemberPeer>),
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
    /// Events dropped because the consensus task lagged.
    events_dropped: AtomicU64,
    /// Version each member last stated (identify), by member index; kept
    /// after it disconnects (while it stays a member).
    member_versions: Mutex<HashMap<usize, String>>,
    /// The member list in force.
    members: Mutex<Vec<MemberPeer>>,
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
    /// Binds, spawns the swarm task on the current tokio runtime, starts
    /// dialing members. Gossip and peer events go to `events`, admitted sync
    /// requests to `sync_requests` (give it [`SYNC_QUEUE`] of room).
    pub async fn start(
        cfg: NetworkConfig,
        events: mpsc::Sender<NetEvent>,
        sync_requests: mpsc::Sender<InboundSync>,
    ) -> Result<Network, NetworkError> {
        for (name, value) in [
            ("max_message_bytes", cfg.max_message_bytes),
            ("max_gossip_bytes", cfg.max_gossip_bytes),
        ] {
            if value == 0 || u32::try_from(value).is_err() {
                return Err(NetworkError::InvalidConfig(format!(
                    "{name} is {value}; it must be between 1 and {}",
                    u32::MAX
                )));
            }
        }
        let members = MemberTable::new(&cfg.members)?;
        let secret = cfg.secret_key.unwrap_or_else(fedpeg_keys::random_32);
        // `ed25519_from_bytes` zeroizes the copy it is given.
        let keypair = identity::Keypair::ed25519_from_bytes(secret)
            .map_err(|e| NetworkError::InvalidSecretKey(e.to_string()))?;
        let local_peer_id = keypair.public().to_peer_id();
        let self_index = members.index_of(&local_peer_id);
        if cfg.secret_key.is_some() && self_index.is_none() {
            info!(peer_id = %local_peer_id, "p2p identity is not a member (yet); running as an observer until the member list includes it");
        }

        let member_ids: Vec<PeerId> = members.by_peer.keys().copied().collect();
        let behaviour = Behaviour {
            slots: ConnectionSlots::new(
                member_ids.iter().copied(),
                cfg.max_observer_connections,
                cfg.observer_slot_tenure,
            ),
            gossip: MembersOnly::new(
                request_response::Behaviour::with_codec(
                    cfg.gossip_codec(),
                    [(StreamProtocol::new(GOSSIP_PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(GOSSIP_MAX_STREAMS),
                ),
                member_ids,
            ),
            sync: request_response::Behaviour::with_codec(
                cfg.sync_codec(),
                [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(SYNC_MAX_STREAMS),
            ),
            identify: identify_behaviour(
                keypair.public(),
                cfg.agent_version.clone(),
                members.by_peer.keys().copied(),
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
        let shared = Arc::new(Shared {
            members: Mutex::new(cfg.members.clone()),
            ..Shared::default()
        });
        let now = Instant::now();
        let targets = members
            .by_index
            .iter()
            .filter(|(_, (peer, _))| *peer != local_peer_id)
            .map(|(_, (peer, addr))| {
                DialTarget::new(Some(*peer), addr.clone(), DialReason::Member, now)
            })
            .collect();
        let mut task = SwarmTask {
            swarm,
            commands: cmd_rx,
            events,
            sync_requests,
            events_closed: false,
            pending_events: VecDeque::new(),
            shared: shared.clone(),
            members,
            self_index,
            max_gossip_bytes: cfg.max_gossip_bytes,
            targets,
            connections: HashMap::new(),
            sync_admission: SyncAdmission::new(cfg.observer_sync_rate),
            pending_syncs: HashMap::new(),
            responders: FuturesUnordered::new(),
            sync_rotation: 0,
            warn_bad_message: LogLimiter::default(),
            warn_non_member_gossip: LogLimiter::default(),
            warn_observer_limit: LogLimiter::default(),
            warn_sync_rate: LogLimiter::default(),
            warn_sync_queue: LogLimiter::default(),
            warn_events_dropped: LogLimiter::default(),
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

    /// Inbound events (gossip, peer changes) dropped so far because the
    /// consensus task was more than the buffer behind.
    pub fn events_dropped(&self) -> u64 {
        self.shared.events_dropped.load(Ordering::Relaxed)
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
    /// forget). Does nothing on a node that is not a member: members
    /// would refuse it. Batches to one peer may arrive reordered.
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

    /// The version each member (by member index) last stated over
    /// identify, checked to be short printable ASCII; display only. Kept
    /// after a member disconnects while it stays a member; never this node's own.
    pub fn member_versions(&self) -> HashMap<usize, String> {
        lock(&self.shared.member_versions).clone()
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
    /// when the connection is lost, whatever the member list (used by
    /// observers to reach extra peers; members are dialed automatically).
    pub fn dial(&self, addr: Multiaddr) {
        self.enqueue(Command::Dial(addr));
    }

    /// Replaces the member list: the members of the epoch in force and of
    /// an adopted next epoch, `members[i].index == i` (the caller maps
    /// indices back to keys through the list it gave). Events produced
    /// after the swarm task applies it, [`Network::peers`] and
    /// [`Network::member_versions`] use the new indices, and so do
    /// [`Network::send_to`] calls made after this one (commands are applied
    /// in order). This node gossips only while it is in the list; new
    /// members are dialed, removed ones no longer (unless given to
    /// [`Network::dial`]); the connections of peers whose role changed are
    /// closed and reopen under the new role (an ex-member then needs an
    /// observer slot like anyone else).
    ///
    /// Fire and forget, but never dropped: it waits for room in the command
    /// queue. An invalid list (a peer listed twice, an address naming
    /// another peer, an `index` that is not its position) is logged and
    /// ignored: the old list stays in force.
    pub async fn set_members(&self, members: Vec<MemberPeer>) {
        if self
            .commands
            .send(Command::SetMembers(members))
            .await
            .is_err()
        {
            debug!("p2p task has stopped; member list not applied");
        }
    }

    /// The member list in force (genesis until [`Network::set_members`]
    /// applies a new one).
    pub fn members(&self) -> Vec<MemberPeer> {
        lock(&self.shared.members).clone()
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

mod codec;
mod gate;
mod members;
mod rate_limit;
mod redial;
mod slots;
mod swarm;
mod sync_admission;
#[cfg(test)]
mod tests;
mod versions;
mod wire_limits;

use codec::*;
use gate::*;
use members::*;
/// Rate-limited warnings, for the driver's floods of bad input too.
pub(crate) use rate_limit::{LogLimiter, TokenBucket};
use redial::*;
use slots::*;
use swarm::*;
use sync_admission::*;
pub use sync_admission::{MEMBER_SYNC_OUTSTANDING, OBSERVER_SYNC_OUTSTANDING};
use versions::*;
use wire_limits::*;
