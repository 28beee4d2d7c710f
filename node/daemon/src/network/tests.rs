//! Tests of the network over real loopback connections.

use super::*;

const WAIT: Duration = Duration::from_secs(5);

const LIMITS: WireLimits = WireLimits {
    max_block_txs: DEFAULT_MAX_BLOCK_TXS,
};

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

/// Starts a network whose sync requests are answered like [`serve_sync`]
/// with no blocks.
async fn start(cfg: NetworkConfig) -> (Network, mpsc::Receiver<NetEvent>) {
    let (net, rx, sync_rx) = start_node(cfg).await;
    serve_sync(sync_rx, vec![]);
    (net, rx)
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

/// Starts a network: its consensus events and its sync requests (two
/// queues, read by two tasks in a node: the driver and the sync server).
async fn start_node(
    cfg: NetworkConfig,
) -> (
    Network,
    mpsc::Receiver<NetEvent>,
    mpsc::Receiver<InboundSync>,
) {
    let (tx, rx) = mpsc::channel(256);
    let (sync_tx, sync_rx) = mpsc::channel(SYNC_QUEUE);
    (Network::start(cfg, tx, sync_tx).await.unwrap(), rx, sync_rx)
}

/// Answers sync requests one at a time, each after `delay`, with
/// `tip_height = from_height + 41`; returns how many were answered.
fn answer_syncs(mut rx: mpsc::Receiver<InboundSync>, delay: Duration) -> Arc<AtomicU64> {
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Some(InboundSync {
            request, respond, ..
        }) = rx.recv().await
        {
            tokio::time::sleep(delay).await;
            let _ = respond.send(pb::SyncResponse {
                blocks: vec![],
                tip_height: request.from_height + 41,
            });
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    answered
}

/// Asserts that `member` delivers no gossip for a while, and keeps its
/// observer connection to `outsider` (which may still sync).
async fn assert_outsider_ignored(
    member: &Network,
    rx: &mut mpsc::Receiver<NetEvent>,
    outsider: PeerId,
) {
    let delivered = next_matching(rx, Duration::from_millis(500), |ev| {
        matches!(ev, NetEvent::Gossip { .. }).then_some(())
    })
    .await;
    assert_eq!(delivered, None, "gossip from a non-member was delivered");
    assert!(
        member
            .peers()
            .iter()
            .any(|(p, _, m)| *p == outsider && m.is_none()),
        "the outsider lost its observer connection"
    );
}

/// A sync request for the block at `height`, answered at once.
fn one_block(height: u64) -> pb::SyncRequest {
    pb::SyncRequest {
        from_height: height,
        max_blocks: 1,
        wait_ms: 0,
    }
}

/// A sync request for as many blocks as allowed from `height`.
fn catch_up(height: u64) -> pb::SyncRequest {
    pb::SyncRequest {
        from_height: height,
        max_blocks: SYNC_MAX_BLOCKS,
        wait_ms: 0,
    }
}

/// Answers every sync request with `tip_height = from_height + 41` and `blocks`.
fn serve_sync(mut rx: mpsc::Receiver<InboundSync>, blocks: Vec<pb::CommittedBlock>) {
    tokio::spawn(async move {
        while let Some(InboundSync {
            request, respond, ..
        }) = rx.recv().await
        {
            let _ = respond.send(pb::SyncResponse {
                blocks: blocks.clone(),
                tip_height: request.from_height + 41,
            });
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
    let back: pb::GossipBatch = read_message(&mut Cursor::new(bytes.clone()), 1024, &LIMITS)
        .await
        .unwrap();
    assert_eq!(back, msg);

    // Announced length over the limit: rejected before reading the body.
    let err = read_message::<pb::GossipBatch, _>(&mut Cursor::new(bytes.clone()), 50, &LIMITS)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let huge = u32::MAX.to_be_bytes().to_vec();
    let err = read_message::<pb::GossipBatch, _>(
        &mut Cursor::new(huge),
        DEFAULT_MAX_MESSAGE_BYTES,
        &LIMITS,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);

    // Undecodable body.
    let mut garbage = 8u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 8]);
    let err = read_message::<pb::GossipBatch, _>(&mut Cursor::new(garbage), 1024, &LIMITS)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);

    // Stream ends early.
    let err =
        read_message::<pb::GossipBatch, _>(&mut Cursor::new(bytes[..20].to_vec()), 1024, &LIMITS)
            .await
            .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let err = read_message::<pb::GossipBatch, _>(&mut Cursor::new(vec![0u8; 2]), 1024, &LIMITS)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

    // Through the codec, invalid requests become values (so the swarm
    // task learns who sent them); a truncated one stays an I/O error.
    use request_response::Codec as _;
    let proto = StreamProtocol::new(GOSSIP_PROTOCOL);
    let mut codec = GossipCodec::new(50, MAX_ACK_BYTES, LIMITS);
    let req = codec
        .read_request(&proto, &mut Cursor::new(bytes.clone()))
        .await
        .unwrap();
    assert!(matches!(req, Checked::Invalid(_)), "{req:?}");
    let mut codec = GossipCodec::new(1024, MAX_ACK_BYTES, LIMITS);
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
    let (sync_tx, _sync_rx) = mpsc::channel(1);
    let err = Network::start(observer_config(&members), tx, sync_tx)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, NetworkError::InvalidConfig(_)), "{err}");
}

#[tokio::test]
async fn zero_max_message_or_gossip_bytes_is_rejected() {
    for zero_gossip in [false, true] {
        let mut cfg = observer_config(&[]);
        if zero_gossip {
            cfg.max_gossip_bytes = 0;
        } else {
            cfg.max_message_bytes = 0;
        }
        let (tx, _rx) = mpsc::channel(1);
        let (sync_tx, _sync_rx) = mpsc::channel(1);
        let err = Network::start(cfg, tx, sync_tx).await.err().unwrap();
        assert!(matches!(err, NetworkError::InvalidConfig(_)), "{err}");
    }
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

/// Polls `f` every 20 ms until it holds, for at most [`WAIT`].
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let ok = tokio::time::timeout(WAIT, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "{what} did not happen in time");
}

#[tokio::test]
async fn members_learn_each_others_versions_and_an_observer_learns_none() {
    let (secrets, members) = federation(3);
    let mut cfgs: Vec<NetworkConfig> = (0..3)
        .map(|i| member_config(&secrets, &members, i))
        .collect();
    cfgs[0].agent_version = "fedpegd/9.9.9+0123456789ab".into();
    // Member 2 states a version with a forged log line in it.
    cfgs[2].agent_version = "fedpegd/1.0.0\nERROR forged".into();
    let mut nets = Vec::new();
    for cfg in cfgs {
        nets.push(start(cfg).await.0);
    }
    let (observer, _rx) = start(observer_config(&members)).await;
    let ids: Vec<PeerId> = members.iter().map(|m| m.peer_id).collect();
    wait_connected(&observer, &ids).await;
    let version_of = |net: &Network, i: usize| net.member_versions().get(&i).cloned();
    eventually("member 1 learns member 0's version", || {
        version_of(&nets[1], 0).as_deref() == Some("9.9.9+0123456789ab")
    })
    .await;
    eventually("member 0 learns member 1's version", || {
        version_of(&nets[0], 1).as_deref() == Some(crate::build_info::VERSION)
    })
    .await;
    // Member 2 heard from both: the others heard from it too, and kept nothing.
    eventually("member 2 learns the others' versions", || {
        nets[2].member_versions().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(version_of(&nets[0], 2), None);
    assert_eq!(version_of(&nets[1], 2), None);
    // Members do not answer identify for an outsider: it learns nothing.
    assert!(observer.member_versions().is_empty());
}

#[tokio::test]
async fn observer_sync_gets_the_answer_of_the_member_event_handler() {
    let (secrets, members) = federation(1);
    let (m0, _m0_rx) = start(member_config(&secrets, &members, 0)).await;
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
        .sync(Some(m0.local_peer_id()), one_block(1))
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
    let (m0, _m0_rx) = start(cfg).await;
    let (obs, _obs_rx) = start(observer_config(&members)).await;
    wait_connected(&obs, &[m0.local_peer_id()]).await;

    // One at a time (never more than one outstanding): only the rate bites.
    let mut results = Vec::new();
    for h in 0..6 {
        let req = one_block(h);
        results.push(obs.sync(None, req).await);
    }
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!((2..=3).contains(&ok), "{ok} of 6 served: {results:?}");
    assert!(results
        .iter()
        .all(|r| !matches!(r, Err(NetworkError::Timeout { .. }))));
}

#[tokio::test]
async fn an_observer_has_at_most_two_sync_requests_outstanding() {
    let (secrets, members) = federation(1);
    let (m0, _m0_rx, sync_rx) = start_node(member_config(&secrets, &members, 0)).await;
    let answered = answer_syncs(sync_rx, Duration::from_millis(300));
    let (obs, _obs_rx) = start(observer_config(&members)).await;
    wait_connected(&obs, &[m0.local_peer_id()]).await;
    let results = futures::future::join_all((0..6).map(|h| obs.sync(None, one_block(h)))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, OBSERVER_SYNC_OUTSTANDING, "{results:?}");
    assert_eq!(answered.load(Ordering::Relaxed), 2);
    // The refused ones fail at once rather than time out.
    assert!(results
        .iter()
        .all(|r| !matches!(r, Err(NetworkError::Timeout { .. }))));
}

#[tokio::test]
async fn gossip_from_a_non_member_is_never_delivered_and_it_may_still_sync() {
    let (secrets, members) = federation(1);
    let (m0, mut m0_rx) = start(member_config(&secrets, &members, 0)).await;
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

    for i in 0..20 {
        rogue.broadcast(batch(i, 10));
    }
    assert_outsider_ignored(&m0, &mut m0_rx, rogue_peer).await;
    let (_, resp) = rogue
        .sync(Some(m0.local_peer_id()), one_block(1))
        .await
        .unwrap();
    assert_eq!(resp.tip_height, 42);
}

#[tokio::test]
async fn oversize_gossip_is_rejected_and_the_sender_disconnected() {
    let (secrets, members) = federation(2);
    let mut cfg0 = member_config(&secrets, &members, 0);
    cfg0.max_gossip_bytes = 1024;
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
    let (m0, _m0_rx, m0_sync) = start_node(member_config(&secrets, &members, 0)).await;
    serve_sync(
        m0_sync,
        vec![pb::CommittedBlock {
            block: None,
            commit: vec![5; 4096],
        }],
    );
    let mut cfg = observer_config(&members);
    cfg.max_message_bytes = 1024;
    let (obs, _obs_rx) = start(cfg).await;
    wait_connected(&obs, &[m0.local_peer_id()]).await;
    let err = obs.sync(None, one_block(1)).await.unwrap_err();
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
    let (sync_tx, _m1_sync) = mpsc::channel(SYNC_QUEUE);
    let m1 = tokio::time::timeout(WAIT, async {
        loop {
            match Network::start(
                member_config(&secrets, &members, 1),
                tx.clone(),
                sync_tx.clone(),
            )
            .await
            {
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

/// A bare libp2p client with a random identity (a non-member), speaking
/// `/fedpeg/gossip/2` outbound only.
fn gossip_client() -> Swarm<request_response::Behaviour<GossipCodec>> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                NetworkConfig::new(None, local_addr(0), vec![]).gossip_codec(),
                [(
                    StreamProtocol::new(GOSSIP_PROTOCOL),
                    ProtocolSupport::Outbound,
                )],
                request_response::Config::default().with_request_timeout(WAIT),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

#[tokio::test]
async fn non_member_cannot_open_the_gossip_protocol() {
    let (secrets, members) = federation(1);
    let (m0, mut m0_rx) = start(member_config(&secrets, &members, 0)).await;
    let mut client = gossip_client();
    let client_peer = *client.local_peer_id();
    client.dial(members[0].addr.clone()).unwrap();
    let outcome = tokio::time::timeout(WAIT, async {
        use request_response::{Event, Message};
        loop {
            match client.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    client
                        .behaviour_mut()
                        .send_request(&peer_id, Checked::Valid(batch(1, 10)));
                }
                SwarmEvent::Behaviour(Event::OutboundFailure { error, .. }) => {
                    return Err(error.to_string())
                }
                SwarmEvent::Behaviour(Event::Message {
                    message: Message::Response { .. },
                    ..
                }) => return Ok(()),
                _ => {}
            }
        }
    })
    .await
    .expect("the gossip request neither failed nor succeeded");
    // Refused at protocol negotiation: the member never read a byte of it.
    assert_eq!(
        outcome,
        Err(OutboundFailure::UnsupportedProtocols.to_string()),
        "a non-member's gossip stream must be refused, not read"
    );
    assert_outsider_ignored(&m0, &mut m0_rx, client_peer).await;
}

/// A length-prefixed message of `body`.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// `n` empty entries of field 1 (a repeated message field): 2 bytes each.
fn empty_entries(n: usize) -> Vec<u8> {
    [0x0a, 0x00].repeat(n)
}

async fn read_gossip(bytes: Vec<u8>) -> Checked<pb::GossipBatch> {
    use request_response::Codec as _;
    let mut codec = NetworkConfig::new(None, local_addr(0), vec![]).gossip_codec();
    codec
        .read_request(
            &StreamProtocol::new(GOSSIP_PROTOCOL),
            &mut futures::io::Cursor::new(bytes),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn gossip_batch_of_more_messages_than_the_cap_is_refused_before_decoding() {
    // Just over the cap: refused though each entry is 2 bytes (this is the
    // shape that took a member to 1.28 GB: millions of empty entries).
    let over = framed(&empty_entries(MAX_GOSSIP_MESSAGES + 1));
    assert!(matches!(read_gossip(over).await, Checked::Invalid(_)));
    let millions = framed(&empty_entries(4_000_000));
    match read_gossip(millions).await {
        Checked::Invalid(why) => assert!(why.contains("message"), "{why}"),
        Checked::Valid(b) => panic!("decoded {} empty messages", b.messages.len()),
    }
}

#[tokio::test]
async fn gossip_batch_over_the_gossip_size_limit_is_refused_unread() {
    // Under the sync response limit but over the gossip limit.
    let mut bytes = (u32::try_from(DEFAULT_MAX_GOSSIP_BYTES).unwrap() + 1)
        .to_be_bytes()
        .to_vec();
    bytes.extend_from_slice(&[0u8; 16]);
    const { assert!(DEFAULT_MAX_GOSSIP_BYTES < DEFAULT_MAX_MESSAGE_BYTES) };
    assert!(matches!(read_gossip(bytes).await, Checked::Invalid(_)));
}

#[tokio::test]
async fn proposed_block_with_more_transactions_than_a_block_may_hold_is_refused() {
    // GossipMessage { proposed_block (3): Block { transactions (2): empty x N } }
    let txs: Vec<u8> = [0x12, 0x00].repeat(DEFAULT_MAX_BLOCK_TXS + 1);
    let mut block = vec![0x1a];
    prost::encoding::encode_varint(txs.len() as u64, &mut block);
    block.extend_from_slice(&txs);
    let mut msg = vec![0x0a];
    prost::encoding::encode_varint(block.len() as u64, &mut msg);
    msg.extend_from_slice(&block);
    assert!(matches!(
        read_gossip(framed(&msg)).await,
        Checked::Invalid(_)
    ));
}

#[tokio::test]
async fn sync_response_with_more_blocks_than_asked_for_is_refused() {
    use request_response::Codec as _;
    let mut codec = NetworkConfig::new(None, local_addr(0), vec![]).sync_codec();
    let bytes = framed(&empty_entries(1_000_000));
    let res = codec
        .read_response(
            &StreamProtocol::new(SYNC_PROTOCOL),
            &mut futures::io::Cursor::new(bytes),
        )
        .await;
    assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn sync_is_served_while_the_consensus_side_is_blocked() {
    let (secrets, members) = federation(2);
    // Member 0's consensus task is stuck: nobody reads its gossip.
    let (m0, _stuck, sync_rx) = start_node(member_config(&secrets, &members, 0)).await;
    answer_syncs(sync_rx, Duration::ZERO);
    let (m1, _m1_rx) = start(member_config(&secrets, &members, 1)).await;
    wait_connected(&m1, &[m0.local_peer_id()]).await;
    // Member 1 keeps gossiping until member 0's consensus side is overrun.
    let overrun = tokio::time::timeout(Duration::from_secs(20), async {
        let mut i = 0u32;
        while m0.events_dropped() == 0 {
            for _ in 0..256 {
                m1.send_to(0, batch((i % 200) as u8, 64));
                i += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(overrun.is_ok(), "member 0 never fell behind");
    let (obs, _obs_rx) = start(observer_config(&members)).await;
    obs.dial(members[0].addr.clone());
    wait_connected(&obs, &[m0.local_peer_id()]).await;
    let request = one_block(7);
    let res = obs.sync(Some(m0.local_peer_id()), request).await;
    assert_eq!(
        res.map(|(_, r)| r.tip_height).map_err(|e| e.to_string()),
        Ok(48)
    );
}

#[tokio::test]
async fn member_gossip_flows_while_an_observer_floods_sync() {
    let (secrets, members) = federation(2);
    let (m0, mut gossip_rx, sync_rx) = start_node(member_config(&secrets, &members, 0)).await;
    // Serving sync is slow (a big read from disk per request).
    answer_syncs(sync_rx, Duration::from_millis(500));
    let (m1, _m1_rx) = start(member_config(&secrets, &members, 1)).await;
    wait_connected(&m0, &[members[1].peer_id]).await;
    let mut observers = Vec::new();
    for _ in 0..4 {
        let (obs, obs_rx) = start(observer_config(&members)).await;
        obs.dial(members[0].addr.clone());
        wait_connected(&obs, &[m0.local_peer_id()]).await;
        for h in 0..40 {
            let obs = obs.clone();
            tokio::spawn(async move {
                let req = catch_up(h);
                let _ = obs.sync(None, req).await;
            });
        }
        observers.push((obs, obs_rx));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = batch(77, 100);
    let started = Instant::now();
    m1.send_to(0, sent.clone());
    let got = next_matching(&mut gossip_rx, WAIT, |ev| match ev {
        NetEvent::Gossip { from, batch } => Some((from, batch)),
        _ => None,
    })
    .await;
    assert_eq!(got, Some((1, sent)));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "member gossip waited {:?} behind observer sync",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_observer_flooding_sync_does_not_starve_another() {
    let (secrets, members) = federation(1);
    let (m0, _gossip_rx, sync_rx) = start_node(member_config(&secrets, &members, 0)).await;
    answer_syncs(sync_rx, Duration::from_millis(100));
    let (flooder, _f_rx) = start(observer_config(&members)).await;
    let (polite, _p_rx) = start(observer_config(&members)).await;
    wait_connected(&flooder, &[m0.local_peer_id()]).await;
    wait_connected(&polite, &[m0.local_peer_id()]).await;
    for h in 0..40 {
        let f = flooder.clone();
        tokio::spawn(async move {
            let req = catch_up(h);
            let _ = f.sync(None, req).await;
        });
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let req = one_block(1);
    let res = polite.sync(None, req).await;
    assert!(res.is_ok(), "{res:?}");
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "the polite observer waited {:?} behind the flooder",
        started.elapsed()
    );
}

#[tokio::test]
async fn members_are_never_refused_for_observer_slots() {
    let (secrets, members) = federation(2);
    let mut cfg = member_config(&secrets, &members, 0);
    cfg.max_observer_connections = 1;
    let (m0, _m0_rx) = start(cfg).await;
    let (a, _a_rx) = start(observer_config(&members)).await;
    wait_connected(&m0, &[a.local_peer_id()]).await;
    let (m1, _m1_rx) = start(member_config(&secrets, &members, 1)).await;
    wait_connected(&m1, &[m0.local_peer_id()]).await;
    wait_connected(&m0, &[a.local_peer_id(), m1.local_peer_id()]).await;
}

/// A real (prost-encoded) transaction of ~130 bytes, as in a block.
fn tx_proto(i: u64) -> pb::Transaction {
    pb::Transaction {
        chain_id: vec![1; 32],
        sender: vec![2; 32],
        nonce: i,
        fee: 1,
        kind: None,
        signature: vec![3; 64],
    }
}

fn block_proto(txs: usize) -> pb::Block {
    pb::Block {
        header: None,
        transactions: (0..txs as u64).map(tx_proto).collect(),
        federation_txs: vec![],
    }
}

fn signatures_fed_tx(signatures: usize) -> pb::FederationTx {
    pb::FederationTx {
        chain_id: vec![1; 32],
        member: 0,
        kind: Some(pb::federation_tx::Kind::PegOutSignatures(
            pb::PegOutSignatures {
                batch: 1,
                version: 0,
                signatures: vec![vec![0x30; 72]; signatures],
            },
        )),
        signature: vec![4; 64],
    }
}

fn check_gossip(batch: &pb::GossipBatch, limits: &WireLimits) -> Result<(), WireError> {
    pb::GossipBatch::check(&batch.encode_to_vec(), limits)
}

fn in_gossip(kind: pb::gossip_message::Kind) -> pb::GossipBatch {
    pb::GossipBatch {
        messages: vec![pb::GossipMessage { kind: Some(kind) }],
    }
}

#[test]
fn real_messages_at_every_cap_pass_and_one_more_is_refused() {
    let limits = WireLimits { max_block_txs: 50 };
    // Transactions in a proposed block (field numbers from types.proto).
    let block = |n| in_gossip(pb::gossip_message::Kind::ProposedBlock(block_proto(n)));
    assert_eq!(check_gossip(&block(50), &limits), Ok(()));
    assert!(matches!(
        check_gossip(&block(51), &limits),
        Err(WireError::TooMany { max: 50, .. })
    ));
    // Messages in a batch.
    let votes = |n| pb::GossipBatch {
        messages: vec![batch(1, 100).messages[0].clone(); n],
    };
    assert_eq!(check_gossip(&votes(MAX_GOSSIP_MESSAGES), &limits), Ok(()));
    assert!(matches!(
        check_gossip(&votes(MAX_GOSSIP_MESSAGES + 1), &limits),
        Err(WireError::TooMany { .. })
    ));
    // Signatures in a federation transaction, gossiped or in a block.
    let max_sigs = fedpeg_ledger::fedtx::MAX_PEGOUT_SIGNATURES;
    let fed = |n| in_gossip(pb::gossip_message::Kind::FederationTx(signatures_fed_tx(n)));
    assert_eq!(check_gossip(&fed(max_sigs), &limits), Ok(()));
    assert!(matches!(
        check_gossip(&fed(max_sigs + 1), &limits),
        Err(WireError::TooMany { .. })
    ));
    let mut in_block = block_proto(0);
    in_block.federation_txs = vec![signatures_fed_tx(max_sigs + 1)];
    assert!(check_gossip(
        &in_gossip(pb::gossip_message::Kind::ProposedBlock(in_block)),
        &limits
    )
    .is_err());
    // Federation transactions in a block.
    let mut fed_block = block_proto(0);
    fed_block.federation_txs = vec![signatures_fed_tx(1); fedpeg_ledger::MAX_BLOCK_FED_TXS + 1];
    assert!(matches!(
        check_gossip(
            &in_gossip(pb::gossip_message::Kind::ProposedBlock(fed_block)),
            &limits
        ),
        Err(WireError::TooMany { .. })
    ));
    // Blocks in a sync response, and transactions in each.
    let response = |blocks, txs| pb::SyncResponse {
        blocks: vec![
            pb::CommittedBlock {
                block: Some(block_proto(txs)),
                commit: vec![5; 100],
            };
            blocks
        ],
        tip_height: 1,
    };
    let check = |r: &pb::SyncResponse| pb::SyncResponse::check(&r.encode_to_vec(), &limits);
    assert_eq!(check(&response(SYNC_MAX_BLOCKS as usize, 50)), Ok(()));
    assert!(check(&response(SYNC_MAX_BLOCKS as usize + 1, 0)).is_err());
    assert!(check(&response(1, 51)).is_err());
}

#[test]
fn entries_denser_than_real_messages_are_refused() {
    // 1,000 empty transactions in a block: under every count cap, but two
    // bytes each (a real one is ~130).
    let block = pb::Block {
        header: None,
        transactions: vec![pb::Transaction::default(); 1000],
        federation_txs: vec![],
    };
    let batch = in_gossip(pb::gossip_message::Kind::ProposedBlock(block));
    assert!(matches!(
        check_gossip(&batch, &LIMITS),
        Err(WireError::TooDense { .. })
    ));
    // Garbage framing is refused too (prost would refuse it later anyway).
    assert!(matches!(
        pb::GossipBatch::check(&[0x0a, 0x05, 0x00], &LIMITS),
        Err(WireError::Malformed(_))
    ));
    assert!(pb::GossipBatch::check(&[0x0b], &LIMITS).is_err());
    assert_eq!(pb::GossipBatch::check(&[], &LIMITS), Ok(()));
}

#[test]
fn federation_changes_are_counted_before_decoding() {
    let change = |members: Vec<pb::EpochMember>| {
        in_gossip(pb::gossip_message::Kind::FederationTx(pb::FederationTx {
            chain_id: vec![0; 32],
            member: 0,
            kind: Some(pb::federation_tx::Kind::FederationChange(
                pb::FederationChange {
                    members,
                    peg_threshold: 3,
                    activation_height: 100,
                    base_epoch: 0,
                },
            )),
            signature: vec![0; 64],
        }))
    };
    let real = pb::EpochMember {
        name: "member-name".into(),
        consensus_key: vec![1; 32],
        peg_key: vec![2; 33],
        p2p_address: "/ip4/10.0.0.1/tcp/40001".into(),
    };
    let max = fedpeg_ledger::epoch::MAX_EPOCH_MEMBERS;
    assert_eq!(
        check_gossip(&change(vec![real.clone(); max]), &LIMITS),
        Ok(())
    );
    assert!(matches!(
        check_gossip(&change(vec![real; max + 1]), &LIMITS),
        Err(WireError::TooMany { .. })
    ));
    // Empty entries: two bytes each on the wire, ~100 decoded.
    assert!(matches!(
        check_gossip(&change(vec![pb::EpochMember::default(); 60]), &LIMITS),
        Err(WireError::TooDense { .. })
    ));
}

#[test]
fn a_decoded_entry_costs_a_few_hundred_bytes_at_most() {
    // The memory bound in the module docs relies on these.
    use std::mem::size_of;
    for (name, size) in [
        ("GossipMessage", size_of::<pb::GossipMessage>()),
        ("Transaction", size_of::<pb::Transaction>()),
        ("FederationTx", size_of::<pb::FederationTx>()),
        ("CommittedBlock", size_of::<pb::CommittedBlock>()),
        ("signature", size_of::<Vec<u8>>()),
    ] {
        assert!(size <= 6 * MIN_ENTRY_BYTES, "{name}: {size} bytes");
    }
}

fn conn(n: usize) -> ConnectionId {
    ConnectionId::new_unchecked(n)
}

#[test]
fn observer_slots_go_to_newcomers_only_after_the_tenure() {
    let tenure = Duration::from_secs(30);
    let mut slots = SlotTable::new(2, tenure);
    let t0 = Instant::now();
    let (a, b, c, d) = (
        peer_of([11; 32]),
        peer_of([12; 32]),
        peer_of([13; 32]),
        peer_of([14; 32]),
    );
    assert_eq!(slots.admit_observer(a, conn(1), t0), Admission::Accept);
    assert_eq!(
        slots.admit_observer(b, conn(2), t0 + Duration::from_secs(5)),
        Admission::Accept
    );
    // Full, nobody past the tenure: refused.
    assert_eq!(
        slots.admit_observer(c, conn(3), t0 + Duration::from_secs(10)),
        Admission::Refuse(Refusal::ObserverSlotsFull(2))
    );
    // a has held its slot 30 s: c takes it; then b's is next, not c's.
    assert_eq!(
        slots.admit_observer(c, conn(3), t0 + tenure),
        Admission::Replace(a, conn(1))
    );
    assert_eq!(
        slots.admit_observer(d, conn(4), t0 + tenure + Duration::from_secs(5)),
        Admission::Replace(b, conn(2))
    );
    assert_eq!(slots.observers(), 2);
    // A closed slot is free again.
    slots.closed(c, conn(3));
    assert_eq!(
        slots.admit_observer(a, conn(5), t0 + tenure + Duration::from_secs(6)),
        Admission::Accept
    );
}

#[test]
fn one_identity_holds_at_most_its_share_and_members_take_no_slot() {
    let mut slots = SlotTable::new(8, Duration::from_secs(30));
    let now = Instant::now();
    let a = peer_of([11; 32]);
    for i in 0..MAX_CONNECTIONS_PER_OBSERVER {
        assert_eq!(slots.admit_observer(a, conn(i), now), Admission::Accept);
    }
    assert_eq!(
        slots.admit_observer(a, conn(99), now),
        Admission::Refuse(Refusal::PeerLimit(MAX_CONNECTIONS_PER_OBSERVER))
    );
    let m = peer_of([1; 32]);
    for i in 0..MAX_CONNECTIONS_PER_MEMBER {
        assert_eq!(slots.admit_member(m, conn(100 + i)), Admission::Accept);
    }
    assert!(matches!(
        slots.admit_member(m, conn(200)),
        Admission::Refuse(_)
    ));
    assert_eq!(slots.observers(), MAX_CONNECTIONS_PER_OBSERVER);
    // With no observer slots at all, members still get in.
    let mut none = SlotTable::new(0, Duration::from_secs(30));
    assert_eq!(none.admit_member(m, conn(1)), Admission::Accept);
    assert!(matches!(
        none.admit_observer(a, conn(2), now),
        Admission::Refuse(_)
    ));
}

#[test]
fn sync_admission_releases_a_place_when_the_request_ends() {
    let mut adm = SyncAdmission::<u64>::new(1000);
    let now = Instant::now();
    let a = peer_of([11; 32]);
    let ids: Vec<u64> = (0..3).collect();
    assert_eq!(adm.admit(a, false, ids[0], now), Ok(()));
    assert_eq!(adm.admit(a, false, ids[1], now), Ok(()));
    assert_eq!(
        adm.admit(a, false, ids[2], now),
        Err(SyncRefusal::Outstanding(OBSERVER_SYNC_OUTSTANDING))
    );
    adm.done(ids[0]);
    adm.done(ids[0]); // twice (sent, then failed) is harmless
    assert_eq!(adm.admit(a, false, ids[2], now), Ok(()));
    assert_eq!(adm.outstanding(), 2);
    // Members have a larger share and no rate.
    let m = peer_of([1; 32]);
    let mut rate_zero = SyncAdmission::<u64>::new(0);
    assert_eq!(
        rate_zero.admit(a, false, 10, now),
        Err(SyncRefusal::OverRate)
    );
    for i in 0..MEMBER_SYNC_OUTSTANDING as u64 {
        assert_eq!(rate_zero.admit(m, true, 20 + i, now), Ok(()));
    }
    assert!(rate_zero.admit(m, true, 99, now).is_err());
}

#[tokio::test]
async fn an_observer_past_its_tenure_gives_its_slot_to_a_newcomer() {
    let (secrets, members) = federation(1);
    let mut cfg = member_config(&secrets, &members, 0);
    cfg.max_observer_connections = 1;
    cfg.observer_slot_tenure = Duration::from_millis(300);
    let (m0, _m0_rx) = start(cfg).await;
    let (a, _a_rx) = start(observer_config(&members)).await;
    wait_connected(&m0, &[a.local_peer_id()]).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (b, _b_rx) = start(observer_config(&members)).await;
    wait_connected(&m0, &[b.local_peer_id()]).await;
    let peers: Vec<PeerId> = m0.peers().into_iter().map(|(p, _, _)| p).collect();
    assert_eq!(peers, vec![b.local_peer_id()]);
}

/// Returns once `net`'s swarm task has applied every command sent before
/// (commands are applied in order; a sync with an unknown peer fails at once).
async fn commands_applied(net: &Network) {
    let r = net.sync(Some(PeerId::random()), one_block(1)).await;
    assert!(matches!(r, Err(NetworkError::NotConnected(_))), "{r:?}");
}

/// Broadcasts a batch tagged `tag` from `sender` until `rx` delivers it,
/// and asserts that it came from member `from`.
async fn gossip_reaches(sender: &Network, rx: &mut mpsc::Receiver<NetEvent>, from: usize, tag: u8) {
    let sent = batch(tag, 32);
    let got = tokio::time::timeout(WAIT, async {
        loop {
            sender.broadcast(sent.clone());
            let got = next_matching(rx, Duration::from_millis(200), |ev| match ev {
                NetEvent::Gossip { from, batch } if batch == sent => Some(from),
                _ => None,
            })
            .await;
            if let Some(got) = got {
                return got;
            }
        }
    })
    .await;
    assert_eq!(
        got.ok(),
        Some(from),
        "gossip {tag} from {} not delivered as member {from}",
        sender.local_peer_id()
    );
}

/// Waits until the events in `rx` say the connection to `peer` was closed
/// and opened again.
async fn reconnected(rx: &mut mpsc::Receiver<NetEvent>, peer: PeerId) {
    let closed = next_matching(rx, WAIT, |ev| {
        matches!(ev, NetEvent::PeerDisconnected { peer: p, .. } if p == peer).then_some(())
    })
    .await;
    assert_eq!(closed, Some(()), "the connection to {peer} was not closed");
    let opened = next_matching(rx, WAIT, |ev| {
        matches!(ev, NetEvent::PeerConnected { peer: p, .. } if p == peer).then_some(())
    })
    .await;
    assert_eq!(
        opened,
        Some(()),
        "the connection to {peer} was not reopened"
    );
}

/// `sender`, connected to `member` and believing it a member, gossips to
/// it; `member` delivers none of it and keeps `sender` as an observer.
async fn assert_gossip_refused(
    sender: &Network,
    member: &Network,
    rx: &mut mpsc::Receiver<NetEvent>,
) {
    assert!(
        sender
            .peers()
            .iter()
            .any(|(p, _, m)| *p == member.local_peer_id() && m.is_some()),
        "the sender does not see the receiver as a connected member"
    );
    while rx.try_recv().is_ok() {}
    for i in 0..20 {
        sender.broadcast(batch(i, 10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_outsider_ignored(member, rx, sender.local_peer_id()).await;
}

#[tokio::test]
async fn a_new_member_list_admits_a_new_member_and_demotes_a_removed_one() {
    // A = 0 and B = 1 are members; C has a member's key but is in no list yet.
    let (secrets, all) = federation(3);
    let peer = |i: usize| all[i].peer_id;
    // Two observer slots at A: C holds one until it becomes a member.
    let mut a_cfg = member_config(&secrets, &all[..2], 0);
    a_cfg.max_observer_connections = 2;
    let (a, mut a_rx) = start(a_cfg).await;
    let (b, mut b_rx) = start(member_config(&secrets, &all[..2], 1)).await;
    let (c, mut c_rx) = start(NetworkConfig::new(
        Some(secrets[2]),
        all[2].addr.clone(),
        vec![],
    ))
    .await;
    c.dial(all[0].addr.clone());
    wait_connected(&a, &[peer(1), peer(2)]).await;
    assert!(!b.peers().iter().any(|(p, _, _)| *p == peer(2)));

    // B learns C is a member and dials it: C, which dials no one but A,
    // never dialed B.
    b.set_members(all.clone()).await;
    eventually("B connects to C", || {
        b.peers()
            .iter()
            .any(|(p, _, m)| *p == peer(2) && *m == Some(2))
    })
    .await;

    // C learns it is a member and gossips; A, still on the old list, refuses it.
    // (C closes its observer connection to A, now a member, and reopens it.)
    c.set_members(all.clone()).await;
    reconnected(&mut c_rx, peer(0)).await;
    assert_gossip_refused(&c, &a, &mut a_rx).await;

    a.set_members(all.clone()).await;
    gossip_reaches(&c, &mut a_rx, 2, 100).await;
    gossip_reaches(&c, &mut b_rx, 2, 101).await;
    gossip_reaches(&a, &mut c_rx, 0, 102).await;
    assert_eq!(a.members(), all);
    eventually("A learns C's version over identify", || {
        a.member_versions().contains_key(&2)
    })
    .await;
    // C, a member now, holds no slot: two observers get in; one leaves.
    let observer = || start(observer_config(&all[..1]));
    let (o1, o2) = (observer().await, observer().await);
    wait_connected(&o1.0, &[peer(0)]).await;
    wait_connected(&o2.0, &[peer(0)]).await;
    let o2_peer = o2.0.local_peer_id();
    drop(o2);
    eventually("the second observer leaves", || {
        !a.peers().iter().any(|(p, _, _)| *p == o2_peer)
    })
    .await;

    // B is removed (A and C are told, B is not): A closes its connection,
    // B comes back as an observer and its gossip is refused.
    let ac = vec![
        all[0].clone(),
        MemberPeer {
            index: 1,
            ..all[2].clone()
        },
    ];
    a.set_members(ac.clone()).await;
    c.set_members(ac.clone()).await;
    gossip_reaches(&c, &mut a_rx, 1, 103).await;
    reconnected(&mut b_rx, peer(0)).await;
    assert_gossip_refused(&b, &a, &mut a_rx).await;
    // B holds the last slot: a newcomer is refused.
    let (o3, _o3_rx) = observer().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !a.peers().iter().any(|(p, _, _)| *p == o3.local_peer_id()),
        "the removed member took no observer slot"
    );
    drop(o1);

    // B stops; restarted without dialing anyone, A no longer dials it.
    drop((b, b_rx));
    let b_gone = next_matching(&mut a_rx, WAIT, |ev| match ev {
        NetEvent::PeerDisconnected { peer: p, member } if p == peer(1) => Some(member),
        _ => None,
    })
    .await;
    assert_eq!(b_gone, Some(None), "B did not disconnect as an observer");
    let (tx, _b_rx) = mpsc::channel(256);
    let (sync_tx, _b_sync) = mpsc::channel(SYNC_QUEUE);
    let _b = tokio::time::timeout(WAIT, async {
        loop {
            let cfg = NetworkConfig::new(Some(secrets[1]), all[1].addr.clone(), vec![]);
            match Network::start(cfg, tx.clone(), sync_tx.clone()).await {
                Ok(net) => return net,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !a.peers().iter().any(|(p, _, _)| *p == peer(1)),
        "A redialed a removed member"
    );
}

#[tokio::test]
async fn an_invalid_member_list_leaves_the_old_one_in_force() {
    let (secrets, members) = federation(2);
    let (a, mut a_rx) = start(member_config(&secrets, &members, 0)).await;
    let (b, _b_rx) = start(member_config(&secrets, &members, 1)).await;
    wait_connected(&a, &[members[1].peer_id]).await;
    let peer_twice = vec![
        members[0].clone(),
        members[1].clone(),
        MemberPeer {
            index: 2,
            ..members[1].clone()
        },
    ];
    let index_not_position = vec![
        MemberPeer {
            index: 1,
            ..members[0].clone()
        },
        MemberPeer {
            index: 0,
            ..members[1].clone()
        },
    ];
    for (tag, bad) in [peer_twice, index_not_position].into_iter().enumerate() {
        a.set_members(bad).await;
        commands_applied(&a).await;
        assert_eq!(a.members(), members);
        gossip_reaches(&b, &mut a_rx, 1, u8::try_from(tag).unwrap()).await;
    }
}
