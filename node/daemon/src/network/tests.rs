//! Tests of the network over real loopback connections.

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
    let err = read_message::<pb::GossipBatch, _>(&mut Cursor::new(huge), DEFAULT_MAX_MESSAGE_BYTES)
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
