//! The web app over a real chain (in-memory Bitcoin), spoken to over real
//! HTTP: pages render and link, the JSON is the gRPC answer, live streams
//! resume after Last-Event-ID and are bounded, and every kind of bad input
//! gets a clear 4xx, never a 500.

use super::*;
use crate::api::NodeIdentity;
use crate::peg_testing::{account, PegNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A node with a few blocks and one minted deposit, serving the web app.
struct Served {
    node: PegNode,
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn served(live_streams: usize) -> Served {
    let node = PegNode::new(4, 3);
    node.register(account(1));
    let d = node.deposit(account(1), 1_000_000);
    node.commit(vec![node.mint_tx(&d)]);
    node.commit(vec![]);
    let api = Api::new(
        node.chain.clone(),
        NodeIdentity::observer(),
        None,
        Arc::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let web = Web::new(api, live_streams);
    tokio::spawn(run(listener, web, 8, async {
        let _ = stopped.await;
    }));
    Served {
        node,
        addr,
        _stop: stop,
    }
}

/// Sends a raw request head; returns (status, head, body) once the server closes.
async fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

#[tokio::test]
async fn pages_render_link_and_match_the_grpc_answers() {
    let s = served(4).await;
    let tip = s.node.chain.height();
    let (st, head, home) = get(s.addr, "/").await;
    assert_eq!(st, 200, "{home}");
    assert!(head.contains("content-security-policy"), "{head}");
    assert!(home.contains(&format!("<strong id=\"tip-height\">{tip}</strong>")));
    assert!(home.contains("href=\"/block/1\""));
    assert!(home.contains("data-live=\"/live/blocks\""));
    let (st, _, block) = get(s.addr, "/block/2").await;
    assert_eq!(st, 200);
    assert!(
        block.contains("peg-in") && block.contains("minted to"),
        "{block}"
    );
    let hash = s
        .node
        .chain
        .block(2)
        .unwrap()
        .unwrap()
        .block
        .hash()
        .to_hex();
    assert_eq!(get(s.addr, &format!("/block/{hash}")).await.0, 200);
    let (st, _, audit) = get(s.addr, "/audit").await;
    assert_eq!(st, 200);
    let r = crate::pegout_api::reserves(&s.node.chain);
    assert!(r.supply > 0);
    assert!(audit.contains(&format!("id=\"r-supply\" data-sats=\"{}\"", r.supply)));
    assert!(audit.contains(&format!("id=\"r-available\" data-sats=\"{}\"", r.available)));
    assert!(
        audit.contains("wsh(sortedmulti(") || audit.contains("wsh(or_d(multi("),
        "UTXO descriptors are shown"
    );
    let addr = account(1).to_address("fprt");
    let (st, _, acct) = get(s.addr, &format!("/account/{addr}")).await;
    assert_eq!(st, 200);
    assert!(acct.contains("<svg"), "the deposit address has a QR code");
    assert!(acct.contains("data-stage=\"MINTED\""), "{acct}");
    let (st, _, fresh) = get(
        s.addr,
        &format!("/account/{}", account(9).to_address("fprt")),
    )
    .await;
    assert_eq!(st, 200, "an account with no history has a page: {fresh}");
    assert!(
        fresh.contains("No transfers or peg-outs yet") && fresh.contains("not yet: ask a member")
    );
    let outpoint = d_outpoint(&s);
    let (st, _, track) = get(s.addr, &format!("/track?q={outpoint}")).await;
    assert_eq!(st, 200);
    assert!(track.contains("data-stage=\"MINTED\""));
    let (st, head, _) = get(s.addr, &format!("/search?q={hash}")).await;
    assert_eq!(st, 303);
    assert!(head.contains("location: /block/2"), "{head}");
    let (st, _, json) = get(s.addr, "/api/v1/reserves").await;
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["supply"], r.supply);
    assert_eq!(v["utxos"][0]["kind"], "deposit");
    let (_, _, json) = get(s.addr, "/api/v1/blocks/2").await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["hash"], hash);
    let (_, _, json) = get(s.addr, &format!("/api/v1/track?q={outpoint}")).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["items"][0]["stage"], "MINTED");
    assert_eq!(v["items"][0]["peg_in"]["state"], "PEG_IN_STATE_MINTED");
    for asset in ["/static/app.js", "/static/app.css", "/api/v1/openapi.yaml"] {
        assert_eq!(get(s.addr, asset).await.0, 200, "{asset}");
    }
    let (st, head, body) = raw(
        s.addr,
        "HEAD /audit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((st, body.as_str()), (200, ""), "{head}");
}

fn d_outpoint(s: &Served) -> String {
    s.node
        .chain
        .with_state(|st| st.minted.keys().next().map(|o| o.to_string()))
        .unwrap()
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_never_a_500() {
    let s = served(4).await;
    let long_q = "x".repeat(300);
    let many = (0..20)
        .map(|i| format!("a{i}=1"))
        .collect::<Vec<_>>()
        .join("&");
    let long_uri = format!("/api/v1/blocks?page_token={}", "y".repeat(3000));
    let cases: Vec<(String, u16, &str)> = vec![
        (
            "/api/v1/blocks/999999".into(),
            404,
            "no block at height 999999",
        ),
        ("/api/v1/blocks/zz".into(), 400, "block hash"),
        ("/api/v1/blocks?page_size=101".into(), 400, "at most 100"),
        ("/api/v1/blocks?from_height=-1".into(), 400, "whole number"),
        (
            "/api/v1/blocks?from_height=99999".into(),
            400,
            "beyond the next block",
        ),
        ("/api/v1/blocks?page_token=garbage".into(), 400, "token"),
        ("/api/v1/transactions/xyz".into(), 400, "transaction id"),
        ("/api/v1/accounts/notanaddress".into(), 400, "address"),
        (
            "/api/v1/accounts/fprt1qqq/transactions".into(),
            400,
            "address",
        ),
        ("/api/v1/peg-ins/abc".into(), 400, "txid:vout"),
        ("/api/v1/peg-outs/999".into(), 404, "withdrawal"),
        ("/api/v1/peg-outs?limit=5000".into(), 400, "at most 100"),
        (
            "/api/v1/track?q=hello".into(),
            400,
            "not something this explorer can look up",
        ),
        (format!("/api/v1/track?q={long_q}"), 400, "too long"),
        (
            format!("/api/v1/track?q={}", "0".repeat(64)),
            404,
            "known to this node",
        ),
        ("/api/v1/nope".into(), 404, "openapi.yaml"),
        (
            "/api/v1/stream/blocks?from_height=99999".into(),
            400,
            "beyond",
        ),
        (
            "/api/v1/stream/track?q=%3Cb%3E".into(),
            400,
            "not something this explorer",
        ),
        (
            "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E".into(),
            400,
            "&quot;&lt;script&gt;alert(1)",
        ),
        ("/search?q=".into(), 400, "type a block height"),
        ("/search?q=99999".into(), 404, "no block at height 99999"),
        (
            format!("/search?q={}", "ab".repeat(32)),
            404,
            "nothing on this chain",
        ),
        ("/track?q=fprt1zzzz".into(), 400, "not a valid address"),
        ("/account/bc1qxyz".into(), 400, "address"),
        ("/tx/123".into(), 400, "transaction id"),
        ("/block/-5".into(), 400, "block hash"),
        ("/%FF%FE".into(), 400, "UTF-8"),
        ("/nothing/here".into(), 404, "no page at this address"),
        (format!("/?{many}"), 400, "too many query parameters"),
        (long_uri, 414, "at most 2048"),
    ];
    for (path, want, msg) in &cases {
        let (st, _, body) = get(s.addr, path).await;
        assert_eq!(st, *want, "{path}: {body}");
        assert!(body.contains(msg), "{path}: {body:?} lacks {msg:?}");
        assert!(!body.contains("<script>"), "{path}: input is escaped");
    }
    // The JSON API answers errors as JSON with the gRPC code name.
    let (_, _, body) = get(s.addr, "/api/v1/blocks/zz").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
    let (st, head, body) = raw(
        s.addr,
        "POST /api/v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    assert_eq!(st, 405, "{body}");
    assert!(head.contains("allow: GET, HEAD") && body.contains("read-only"));
    let (st, _, body) = raw(
        s.addr,
        "GET /api/v1/stream/blocks HTTP/1.1\r\nHost: x\r\nLast-Event-ID: abc\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(st, 400);
    assert!(body.contains("Last-Event-ID"));
    // A head larger than the limit is refused, not buffered.
    let (st, _, _) = raw(
        s.addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "z".repeat(MAX_HEAD_BYTES * 2)
        ),
    )
    .await;
    assert!(st == 431 || st == 400 || st == 0, "status {st}");
    // The node still serves.
    assert_eq!(get(s.addr, "/").await.0, 200);
}

/// Reads SSE text from `s` until `until` appears (or 10 s pass).
async fn read_until(s: &mut tokio::net::TcpStream, until: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&out).to_string();
        if text.contains(until) {
            return text;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return text,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn the_block_stream_resumes_after_last_event_id_and_streams_are_bounded() {
    let s = served(1).await;
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /api/v1/stream/blocks HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\n\r\n")
        .await
        .unwrap();
    let text = read_until(&mut c, "id: 3\n").await;
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    assert!(text.contains("retry: 2000"));
    let i2 = text
        .find("id: 2\nevent: block\ndata: {")
        .expect("block 2 first");
    assert!(text[i2..].contains("id: 3\n"));
    assert!(
        !text.contains("id: 1\n"),
        "nothing before Last-Event-ID + 1"
    );
    assert!(text.contains("\"signer_names\""), "FeedBlock JSON: {text}");
    // A block finalized now arrives live.
    s.node.commit(vec![]);
    let text = read_until(&mut c, "id: 4\n").await;
    assert!(text.contains("id: 4\n"), "{text}");
    // The only stream slot is taken: the next stream is refused with 429.
    let (st, _, body) = get(s.addr, "/live/track?q=1").await;
    assert_eq!(st, 429, "{body}");
    assert!(body.contains("live streams"));
    // Closing the first frees its slot.
    drop(c);
    let mut ok = false;
    for _ in 0..50 {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"GET /live/blocks?from_height=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let text = read_until(&mut c, "event: block").await;
        if text.starts_with("HTTP/1.1 200") {
            assert!(text.contains("<tr data-height=\"1\">"), "{text}");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the slot was freed");
}

#[tokio::test]
async fn the_tracker_stream_sends_the_state_when_it_changes() {
    let s = served(4).await;
    let outpoint = d_outpoint(&s);
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(
        format!("GET /api/v1/stream/track?q={outpoint} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let text = read_until(&mut c, "\"stage\":\"MINTED\"").await;
    assert!(text.contains("id: 1\nevent: track\n"), "{text}");
    // Nothing changes: no second event within two checks.
    let more =
        tokio::time::timeout(Duration::from_millis(2500), read_until(&mut c, "id: 2\n")).await;
    assert!(
        more.map_or(true, |t| !t.contains("id: 2")),
        "unchanged state is not re-sent"
    );
}

#[tokio::test]
async fn live_streams_end_cleanly_when_the_node_stops() {
    let s = served(4).await;
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /live/blocks?from_height=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = read_until(&mut c, "data-height=\"3\"").await;
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    drop(s._stop);
    // The body ends with the last chunk (a browser reconnects and resumes),
    // not with a cut connection.
    let text = read_until(&mut c, "0\r\n\r\n").await;
    assert!(text.ends_with("0\r\n\r\n"), "{text:?}");
}
