//! An outsider on the p2p network, for the Byzantine tests: libp2p clients
//! with fresh identities (not genesis members) that connect to members and
//! flood them with the worst of what the wire allows.
//!
//! - Gossip: `/fedpeg/gossip/2` requests of the largest size a member ever
//!   accepted (16 MiB), made of empty repeated entries (two bytes each,
//!   hundreds of bytes each once decoded), on many streams at once.
//! - Sync: `/fedpeg/sync/2` requests for the most blocks, and long polls for
//!   blocks that do not exist yet, as fast as the streams allow.
//!
//! Messages are written as raw bytes (no prost on this side), so the flood
//! costs the attacker nothing but bandwidth. It talks only to the addresses
//! it is given (loopback in the tests).

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, OutboundFailure, ProtocolSupport};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Largest message a member accepted on any protocol before issue 13.
pub const OLD_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How hard to flood.
#[derive(Clone, Debug)]
pub struct Flood {
    /// Fresh identities (each a libp2p swarm of its own).
    pub identities: usize,
    /// Connections from each identity to each target.
    pub connections_per_target: usize,
    /// Gossip requests kept in flight per identity and target.
    pub gossip_in_flight: usize,
    /// Sync requests kept in flight per identity and target.
    pub sync_in_flight: usize,
    /// How long to flood.
    pub duration: Duration,
}

/// What the flood achieved, summed over identities.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FloodReport {
    /// Connections established.
    pub connections: u64,
    /// Gossip requests started.
    pub gossip_sent: u64,
    /// Gossip requests refused during protocol negotiation.
    pub gossip_refused: u64,
    /// Gossip requests acknowledged (the batch was read and accepted).
    pub gossip_acked: u64,
    /// Sync requests started.
    pub sync_sent: u64,
    /// Sync requests answered.
    pub sync_answered: u64,
    /// Bytes of sync answers received.
    pub sync_bytes: u64,
}

impl FloodReport {
    fn add(&mut self, o: &FloodReport) {
        self.connections += o.connections;
        self.gossip_sent += o.gossip_sent;
        self.gossip_refused += o.gossip_refused;
        self.gossip_acked += o.gossip_acked;
        self.sync_sent += o.sync_sent;
        self.sync_answered += o.sync_answered;
        self.sync_bytes += o.sync_bytes;
    }
}

/// Runs [`flood`] on a thread and runtime of its own, so that the attacker's
/// work does not slow the test's own clients (they share only the CPU).
pub fn flood_in_background(
    targets: Vec<(PeerId, Multiaddr)>,
    cfg: Flood,
) -> std::thread::JoinHandle<anyhow::Result<FloodReport>> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(flood(targets, cfg))
    })
}

/// Floods every `(peer, address)` target as `flood` says; returns when done.
pub async fn flood(targets: Vec<(PeerId, Multiaddr)>, flood: Flood) -> anyhow::Result<FloodReport> {
    let payloads = Payloads::new();
    let mut tasks = Vec::new();
    for _ in 0..flood.identities {
        let identity = Identity {
            swarm: client()?,
            targets: targets.clone(),
            flood: flood.clone(),
            payloads: payloads.clone(),
            state: HashMap::new(),
            sync_count: 0,
            report: FloodReport::default(),
        };
        tasks.push(tokio::spawn(identity.run()));
    }
    let mut total = FloodReport::default();
    for t in tasks {
        total.add(&t.await?);
    }
    Ok(total)
}

/// The bytes the outsider sends, framed (4-byte big-endian length + body).
#[derive(Clone)]
struct Payloads {
    gossip: Arc<Vec<u8>>,
    sync: Arc<Vec<u8>>,
    long_poll: Arc<Vec<u8>>,
}

impl Payloads {
    fn new() -> Payloads {
        // GossipBatch { messages: [GossipMessage {}; 8 Mi] }: 0x0a 0x00 each.
        let body = [0x0a_u8, 0x00].repeat(OLD_MAX_MESSAGE_BYTES / 2);
        // SyncRequest { from_height: 1, max_blocks: 64 } and
        // SyncRequest { from_height: 1_000_000, max_blocks: 64, wait_ms: 5000 }.
        let sync = vec![0x08, 0x01, 0x10, 0x40];
        let long_poll = vec![0x08, 0xc0, 0x84, 0x3d, 0x10, 0x40, 0x18, 0x88, 0x27];
        Payloads {
            gossip: Arc::new(framed(&body)),
            sync: Arc::new(framed(&sync)),
            long_poll: Arc::new(framed(&long_poll)),
        }
    }
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Writes pre-framed requests as they are; reads (and counts) responses.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Arc<Vec<u8>>;
    type Response = usize;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::Error::other("the outsider serves nothing"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<usize>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(OLD_MAX_MESSAGE_BYTES as u64 + 4)
            .read_to_end(&mut buf)
            .await?;
        if buf.is_empty() {
            // Closed without an answer: the request was dropped.
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(buf.len())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Self::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.flush().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, _: &mut T, _: usize) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Ok(())
    }
}

#[derive(NetworkBehaviour)]
struct Outsider {
    gossip: request_response::Behaviour<RawCodec>,
    sync: request_response::Behaviour<RawCodec>,
}

fn behaviour(protocol: &'static str) -> request_response::Behaviour<RawCodec> {
    request_response::Behaviour::with_codec(
        RawCodec,
        [(StreamProtocol::new(protocol), ProtocolSupport::Outbound)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(10))
            .with_max_concurrent_streams(512),
    )
}

fn client() -> anyhow::Result<Swarm<Outsider>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| Outsider {
            gossip: behaviour("/fedpeg/gossip/2"),
            sync: behaviour("/fedpeg/sync/2"),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// How often an identity tops its requests up and redials lost connections.
const TICK: Duration = Duration::from_millis(100);

/// One fresh identity flooding every target.
struct Identity {
    swarm: Swarm<Outsider>,
    targets: Vec<(PeerId, Multiaddr)>,
    flood: Flood,
    payloads: Payloads,
    /// Per target: connections established, dials pending, requests in
    /// flight (gossip, sync).
    state: HashMap<PeerId, TargetState>,
    sync_count: u64,
    report: FloodReport,
}

#[derive(Default)]
struct TargetState {
    established: usize,
    dialing: usize,
    gossip: usize,
    sync: usize,
}

impl Identity {
    /// Floods until the time is up.
    async fn run(mut self) -> FloodReport {
        let deadline = tokio::time::Instant::now() + self.flood.duration;
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_event(ev),
                _ = tick.tick() => {
                    self.dial_missing();
                    self.top_up();
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.report
    }

    /// Dials every target this identity has fewer connections to than
    /// asked (refused or replaced ones come back: an outsider does).
    fn dial_missing(&mut self) {
        for (peer, addr) in &self.targets {
            let st = self.state.entry(*peer).or_default();
            while st.established + st.dialing < self.flood.connections_per_target {
                let opts = DialOpts::peer_id(*peer)
                    .addresses(vec![addr.clone()])
                    .condition(PeerCondition::Always)
                    .build();
                if self.swarm.dial(opts).is_err() {
                    break;
                }
                st.dialing += 1;
            }
        }
    }

    /// Keeps the requests in flight to every connected target.
    fn top_up(&mut self) {
        let behaviour = self.swarm.behaviour_mut();
        for (peer, st) in self.state.iter_mut().filter(|(_, st)| st.established > 0) {
            while st.gossip < self.flood.gossip_in_flight {
                behaviour
                    .gossip
                    .send_request(peer, self.payloads.gossip.clone());
                self.report.gossip_sent += 1;
                st.gossip += 1;
            }
            while st.sync < self.flood.sync_in_flight {
                // Every fourth one a long poll for a future block.
                self.sync_count += 1;
                let req = if self.sync_count.is_multiple_of(4) {
                    &self.payloads.long_poll
                } else {
                    &self.payloads.sync
                };
                behaviour.sync.send_request(peer, req.clone());
                self.report.sync_sent += 1;
                st.sync += 1;
            }
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<OutsiderEvent>) {
        match ev {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.report.connections += 1;
                let st = self.state.entry(peer_id).or_default();
                st.established += 1;
                st.dialing = st.dialing.saturating_sub(1);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                ..
            } => {
                let st = self.state.entry(peer).or_default();
                st.dialing = st.dialing.saturating_sub(1);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                let st = self.state.entry(peer_id).or_default();
                st.established = num_established as usize;
                if num_established == 0 {
                    // Their requests fail with the connection.
                    (st.gossip, st.sync) = (0, 0);
                }
            }
            SwarmEvent::Behaviour(OutsiderEvent::Gossip(ev)) => {
                let Some((peer, outcome)) = outcome(ev) else {
                    return;
                };
                match outcome {
                    Ok(_) => self.report.gossip_acked += 1,
                    Err(OutboundFailure::UnsupportedProtocols) => self.report.gossip_refused += 1,
                    Err(_) => {}
                }
                let st = self.state.entry(peer).or_default();
                st.gossip = st.gossip.saturating_sub(1);
            }
            SwarmEvent::Behaviour(OutsiderEvent::Sync(ev)) => {
                let Some((peer, outcome)) = outcome(ev) else {
                    return;
                };
                if let Ok(bytes) = outcome {
                    self.report.sync_answered += 1;
                    self.report.sync_bytes += bytes as u64;
                }
                let st = self.state.entry(peer).or_default();
                st.sync = st.sync.saturating_sub(1);
            }
            _ => {}
        }
    }
}

/// The end of an outbound request: the peer and the response or failure.
fn outcome(
    ev: request_response::Event<Arc<Vec<u8>>, usize>,
) -> Option<(PeerId, Result<usize, OutboundFailure>)> {
    use request_response::{Event, Message};
    match ev {
        Event::Message {
            peer,
            message: Message::Response { response, .. },
            ..
        } => Some((peer, Ok(response))),
        Event::OutboundFailure { peer, error, .. } => Some((peer, Err(error))),
        _ => None,
    }
}
