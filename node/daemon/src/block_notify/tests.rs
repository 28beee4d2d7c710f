//! The subscriber against scripted peers on loopback: an honest PUB like
//! bitcoind's, a flooder, and peers that lie about what they are. The real
//! bitcoind is exercised by the peg-in end-to-end tests.

use super::*;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::net::TcpListener;

/// Counts the pokes the subscriber gives the watcher.
fn counter() -> (Arc<AtomicUsize>, Arc<dyn Fn() + Send + Sync>) {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    (
        n,
        Arc::new(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        }),
    )
}

/// A READY command with `socket_type`, as a PUB socket sends it.
fn ready(socket_type: &[u8]) -> Vec<u8> {
    let mut meta = vec![11u8];
    meta.extend_from_slice(b"Socket-Type");
    meta.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    meta.extend_from_slice(socket_type);
    command(b"READY", &meta)
}

/// bitcoind's message for one block: topic, hash, sequence number.
fn hashblock(seq: u32) -> Vec<u8> {
    let mut m = frame(0x01, TOPIC);
    m.extend(frame(0x01, &[0xab; 32]));
    m.extend(frame(0x00, &seq.to_le_bytes()));
    m
}

/// Accepts one subscriber, answers its handshake as a PUB (or as
/// `socket_type`), checks the subscription it sends, and returns the socket.
async fn accept_subscriber(l: &TcpListener, socket_type: &[u8]) -> TcpStream {
    let (mut s, _) = l.accept().await.unwrap();
    let mut g = [0u8; 64];
    s.read_exact(&mut g).await.unwrap();
    assert_eq!(g, greeting());
    s.write_all(&greeting()).await.unwrap();
    let (flags, body) = read_frame(&mut s).await.unwrap();
    assert_eq!(flags, 0x04);
    assert_eq!(&body[..6], b"\x05READY");
    assert_eq!(socket_type_of(&body[6..]), Some(&b"SUB"[..]));
    s.write_all(&ready(socket_type)).await.unwrap();
    if socket_type == b"PUB" {
        let (flags, body) = read_frame(&mut s).await.unwrap();
        assert_eq!(flags, 0);
        assert_eq!(body, b"\x01hashblock", "the subscription is 0x01 + topic");
    }
    s
}

fn socket_type_of(meta: &[u8]) -> Option<&[u8]> {
    socket_type(meta)
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap().to_string();
    (l, a)
}

async fn wait_count(n: &AtomicUsize, want: usize) {
    for _ in 0..200 {
        if n.load(Ordering::SeqCst) >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} pokes, wanted {want}", n.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_block_notification_pokes_the_watcher() {
    let (l, addr) = listener().await;
    let (n, poke) = counter();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(addr, poke, Arc::default(), stop));
    let mut s = accept_subscriber(&l, b"PUB").await;
    // One poke on connecting (blocks may have come while away).
    wait_count(&n, 1).await;
    tokio::time::sleep(MIN_POLL_GAP * 2).await;
    s.write_all(&hashblock(1)).await.unwrap();
    wait_count(&n, 2).await;
    // Other topics are not blocks.
    tokio::time::sleep(MIN_POLL_GAP * 2).await;
    let mut other = frame(0x01, b"hashtx");
    other.extend(frame(0x00, &[0u8; 32]));
    s.write_all(&other).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(n.load(Ordering::SeqCst), 2);
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// A flood of notifications (a liar, or a burst of blocks) is read in full
/// and becomes spaced pokes.
#[tokio::test]
async fn a_flood_of_notifications_is_coalesced_into_spaced_polls() {
    let (l, addr) = listener().await;
    let (n, poke) = counter();
    let seen = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(addr, poke, seen.clone(), stop));
    let mut s = accept_subscriber(&l, b"PUB").await;
    let t0 = std::time::Instant::now();
    let mut burst = Vec::new();
    for i in 0..20_000 {
        burst.extend(hashblock(i));
    }
    s.write_all(&burst).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pokes = n.load(Ordering::SeqCst);
    let bound = (t0.elapsed().as_millis() / MIN_POLL_GAP.as_millis()) as usize + 2;
    assert!(pokes >= 2, "the burst must poke at least once: {pokes}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        20_000,
        "every notification read"
    );
    assert!(
        pokes <= bound,
        "{pokes} pokes for 20,000 notifications in {:?}; at most {bound}",
        t0.elapsed()
    );
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// A frame over the limit ends the connection before its body is read;
/// the subscriber reconnects and works again.
#[tokio::test]
async fn an_oversized_frame_drops_the_connection_and_it_reconnects() {
    let (l, addr) = listener().await;
    let (n, poke) = counter();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(addr, poke, Arc::default(), stop));
    let mut s = accept_subscriber(&l, b"PUB").await;
    let mut huge = vec![0x02u8];
    huge.extend_from_slice(&(u64::MAX).to_be_bytes());
    s.write_all(&huge).await.unwrap();
    // The subscriber hangs up.
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    let mut s2 = accept_subscriber(&l, b"PUB").await;
    let before = n.load(Ordering::SeqCst);
    tokio::time::sleep(MIN_POLL_GAP * 2).await;
    s2.write_all(&hashblock(7)).await.unwrap();
    wait_count(&n, before + 1).await;
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// Too many frames in one message end the connection as well.
#[tokio::test]
async fn a_message_of_too_many_frames_drops_the_connection() {
    let (l, addr) = listener().await;
    let (_n, poke) = counter();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(addr, poke, Arc::default(), stop));
    let mut s = accept_subscriber(&l, b"PUB").await;
    let mut m = Vec::new();
    for _ in 0..=MAX_PARTS {
        m.extend(frame(0x01, TOPIC));
    }
    s.write_all(&m).await.unwrap();
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// A peer that is not a PUB socket, or not ZMTP at all, never pokes.
#[tokio::test]
async fn peers_that_are_not_a_pub_socket_are_refused() {
    for who in ["REQ", "http"] {
        let (l, addr) = listener().await;
        let (n, poke) = counter();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(addr.clone(), poke, Arc::default(), stop));
        if who == "http" {
            let (mut s, _) = l.accept().await.unwrap();
            let mut g = [0u8; 64];
            s.read_exact(&mut g).await.unwrap();
            let mut reply = b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec();
            reply.resize(64, b' ');
            s.write_all(&reply).await.unwrap();
        } else {
            let mut s = accept_subscriber(&l, who.as_bytes()).await;
            // The subscriber may have hung up already.
            let _ = s.write_all(&hashblock(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            n.load(Ordering::SeqCst),
            0,
            "{who}: no poke from a refused peer"
        );
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}

#[test]
fn endpoints_are_tcp_host_and_port() {
    assert_eq!(
        parse_endpoint("tcp://127.0.0.1:28332").unwrap(),
        "127.0.0.1:28332"
    );
    assert_eq!(
        parse_endpoint("tcp://bitcoind:28332").unwrap(),
        "bitcoind:28332"
    );
    for bad in [
        "127.0.0.1:28332",
        "ipc:///tmp/x",
        "tcp://127.0.0.1",
        "tcp://:28332",
        "tcp://127.0.0.1:0",
        "tcp://127.0.0.1:99999",
        "tcp://*:28332",
        "tcp://h:1/x",
        "",
    ] {
        let e = parse_endpoint(bad).unwrap_err();
        assert!(e.contains("bitcoin.zmq_block"), "{bad}: {e}");
    }
}

/// The real thing: bitcoind's `-zmqpubhashblock` publisher (Knots, from
/// `deploy/bitcoind.sh`) pokes the subscriber for each block it mines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitcoind_block_notifications_reach_the_subscriber() {
    let btc = tokio::task::spawn_blocking(fedpeg_peg::testkit::Bitcoind::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("bitcoind: {e}"));
    let endpoint = parse_endpoint(&btc.zmq_block_url()).unwrap();
    let (n, poke) = counter();
    let seen = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(endpoint, poke, seen.clone(), stop));
    wait_count(&n, 1).await;
    // bitcoind takes the subscription in asynchronously: mine until a
    // block's notification is parsed, then check that each block is.
    let parsed = || seen.load(Ordering::SeqCst);
    for _ in 0..20 {
        btc.mine(1).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if parsed() > 0 {
            break;
        }
    }
    assert!(
        parsed() > 0,
        "no notification from bitcoind:\n{}",
        btc.log_tail()
    );
    let connects = n.load(Ordering::SeqCst);
    for _ in 0..3 {
        let before = (parsed(), n.load(Ordering::SeqCst));
        btc.mine(1).unwrap();
        for _ in 0..200 {
            if parsed() > before.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(parsed(), before.0 + 1, "one notification per block");
        wait_count(&n, before.1 + 1).await;
        tokio::time::sleep(MIN_POLL_GAP * 2).await;
    }
    assert!(n.load(Ordering::SeqCst) <= connects + 3, "no reconnects");
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}
