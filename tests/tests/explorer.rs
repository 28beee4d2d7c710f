//! The explorer feed on an observer: a stock Python grpcio client resumes
//! the block feed without gaps or duplicates while transfers land; a slow
//! consumer is cut off while a fast one keeps up; bad input gets clear
//! statuses; the feed survives a restart; the metrics port shows the
//! operator metrics. The web app (`--http-listen`): driven in headless
//! Chromium against four members and a real regtest bitcoind (live blocks,
//! also across a restart of the node, a peg-in followed from CONFIRMING to
//! MINTED, the audit against
//! GetReserves, a bad search, screenshots of every page); its API refuses
//! bad input with 4xx and its live stream resumes across a node restart.

use ed25519_dalek::SigningKey;
use fedpeg_ledger::hash::Hash32;
use fedpeg_peg::bitcoin::{address::NetworkUnchecked, Address, Network};
use fedpeg_peg::testkit::{Bitcoind, RPC_PASSWORD, RPC_USER};
use fedpeg_proto::v1 as pb;
use fedpeg_tests::accounts::{account, address, balance, submit, transfer};
use fedpeg_tests::{chain_id, run_ok, wait_final, wait_height, wait_until, Federation, NodeProc};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

type Explorer = pb::explorer_service_client::ExplorerServiceClient<Channel>;

/// Submits a faucet transfer of `1000 + nonce` to test account `to`; returns its id.
async fn send(ch: &Channel, chain: Hash32, faucet: &SigningKey, nonce: u64, to: u8) -> String {
    let tx = transfer(chain, faucet, account(to), nonce, 1000 + nonce);
    submit(ch, &tx)
        .await
        .unwrap_or_else(|e| panic!("submit {nonce}: {e}"))
}

fn subscribe_from(h: i64) -> pb::SubscribeBlocksRequest {
    pb::SubscribeBlocksRequest {
        from_height: Some(h),
        include_raw: false,
    }
}

fn python_has_grpcio() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_grpcio_client_resumes_the_feed_without_gaps_or_duplicates() {
    assert!(
        python_has_grpcio(),
        "python3 with grpcio and grpcio-tools is needed: `python3 -m pip install grpcio grpcio-tools` (deploy/test.sh installs them)"
    );
    let fed = Federation::start(4, true, 200).unwrap();
    let observer = fed.observer.as_ref().unwrap();
    let member = fed.members[0].connect().await.unwrap();
    observer.connect().await.unwrap();
    let chain = chain_id(&member).await.unwrap();

    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let until = fed.dir.path().join("until-height");
    let python = tokio::process::Command::new("python3")
        .arg(here.join("python/feed_resume.py"))
        .arg("--target")
        .arg(format!("127.0.0.1:{}", observer.api_port))
        .arg("--proto-dir")
        .arg(here.join("../proto"))
        .arg("--until-file")
        .arg(&until)
        .arg("--reconnect-every")
        .arg("5")
        .kill_on_drop(true)
        .output();
    let python = tokio::spawn(python);

    // Transfers land while the client subscribes, drops and resumes.
    let mut ids = Vec::new();
    for nonce in 0..40 {
        ids.push(send(&member, chain, &fed.faucet, nonce, 40 + (nonce % 3) as u8).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut last = 0;
    for id in &ids {
        last = wait_final(&member, id, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    }
    // A few more blocks after the last transfer, so the client is mid-stream.
    let target = last + 5;
    wait_height(observer, target, Duration::from_secs(60))
        .await
        .unwrap();
    std::fs::write(&until, target.to_string()).unwrap();

    let out = tokio::time::timeout(Duration::from_secs(240), python)
        .await
        .expect("python client timed out")
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr),
        fed.logs()
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!(
        "python grpcio client: blocks {}..={} over {} reconnects, {} transfers",
        r["first"],
        r["last"],
        r["reconnects"],
        r["transfers"].as_array().map_or(0, |a| a.len())
    );
    assert_eq!(r["first"], 1);
    assert!(r["last"].as_u64().unwrap() >= target, "{r}");
    assert_eq!(r["blocks"], r["last"], "{r}");
    assert!(r["reconnects"].as_u64().unwrap() >= 3, "{r}");
    let seen: Vec<&str> = r["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for id in &ids {
        assert_eq!(
            seen.iter().filter(|s| *s == id).count(),
            1,
            "transfer {id} not seen exactly once in the feed"
        );
    }
}

/// Reads a stream until it ends with a status; returns the heights read.
async fn read_until_error(
    s: &mut tonic::Streaming<pb::FeedBlock>,
    timeout: Duration,
) -> (Vec<u64>, tonic::Status) {
    let mut heights = Vec::new();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.message()).await {
            Err(_) => panic!("stream not ended within {timeout:?}; read {heights:?}"),
            Ok(Ok(Some(b))) => heights.push(b.height),
            Ok(Ok(None)) => panic!("stream ended without a status"),
            Ok(Err(status)) => return (heights, status),
        }
    }
}

fn contiguous(h: &[u64]) -> bool {
    h.windows(2).all(|w| w[1] == w[0] + 1)
}

/// Restarts a node with extra run arguments.
fn restart_with(node: &mut NodeProc, args: &[&str]) {
    assert!(node.terminate(), "clean shutdown\n{}", node.log());
    node.extra_args = args.iter().map(|s| s.to_string()).collect();
    node.spawn().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_while_a_fast_one_keeps_up() {
    let mut fed = Federation::start(1, true, 30).unwrap();
    let member = fed.members[0].connect().await.unwrap();
    let chain = chain_id(&member).await.unwrap();
    let txid = send(&member, chain, &fed.faucet, 0, 61).await;
    let h_tx = wait_final(&member, &txid, Duration::from_secs(30))
        .await
        .unwrap();
    let observer = fed.observer.as_mut().unwrap();
    wait_height(observer, h_tx, Duration::from_secs(30))
        .await
        .unwrap();
    // Tight limits, and a restart: the feed must serve what was stored before.
    restart_with(
        observer,
        &[
            "--stream-buffer",
            "4",
            "--max-lag-blocks",
            "10",
            "--max-streams",
            "3",
        ],
    );
    let ch = observer.connect().await.unwrap();
    let mut explorer = Explorer::new(ch.clone());

    // Events stored before the restart are replayed, filtered by account.
    let mut ev = explorer
        .subscribe_events(pb::SubscribeEventsRequest {
            from_height: Some(0),
            from_index: 0,
            accounts: vec![address(61)],
            kinds: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let e = ev.message().await.unwrap().unwrap();
    assert_eq!((e.height, e.txid.as_str()), (h_tx, txid.as_str()));
    assert_eq!(e.kind, pb::EventKind::Transfer as i32);
    drop(ev);

    let tip = observer.status().await.unwrap().height;
    // A consumer with a tiny HTTP/2 window that stops reading...
    let slow_ch = Endpoint::from_shared(observer.url())
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut slow = Explorer::new(slow_ch)
        .subscribe_blocks(subscribe_from(tip as i64 + 1))
        .await
        .unwrap()
        .into_inner();
    let first_slow = slow.message().await.unwrap().unwrap().height;
    // ...and one that keeps up, on the same node.
    let mut fast = explorer
        .subscribe_blocks(subscribe_from(tip as i64 + 1))
        .await
        .unwrap()
        .into_inner();
    let mut heights = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while heights.len() < 150 {
        assert!(
            Instant::now() < deadline,
            "fast consumer stalled at {heights:?}"
        );
        match tokio::time::timeout(Duration::from_secs(20), fast.message()).await {
            Ok(Ok(Some(b))) => heights.push(b.height),
            other => panic!("fast consumer stream ended: {other:?}\n{}", fed.logs()),
        }
    }
    assert_eq!(heights[0], tip + 1);
    assert!(contiguous(&heights));

    let (slow_heights, status) = read_until_error(&mut slow, Duration::from_secs(30)).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("from_height"),
        "{}",
        status.message()
    );
    let mut all = vec![first_slow];
    all.extend(slow_heights);
    assert!(contiguous(&all), "{all:?}");
    // Resuming where it stopped continues with no gap.
    let resume = *all.last().unwrap() + 1;
    let mut again = explorer
        .subscribe_blocks(subscribe_from(resume as i64))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.message().await.unwrap().unwrap().height, resume);
    // The fast consumer was not disturbed.
    let next = fast.message().await.unwrap().unwrap().height;
    assert_eq!(next, heights.last().unwrap() + 1);
    drop(again);
    drop(fast);
    drop(slow);

    // Bad input: a clear status each, no effect on the node.
    let code = |r: Result<tonic::Response<tonic::Streaming<pb::FeedBlock>>, tonic::Status>| {
        r.err().map(|s| s.code())
    };
    assert_eq!(
        code(
            explorer
                .subscribe_blocks(pb::SubscribeBlocksRequest::default())
                .await
        ),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        code(explorer.subscribe_blocks(subscribe_from(-5)).await),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        code(explorer.subscribe_blocks(subscribe_from(i64::MAX)).await),
        Some(tonic::Code::OutOfRange)
    );
    let e = explorer
        .subscribe_events(pb::SubscribeEventsRequest {
            from_height: Some(0),
            accounts: vec!["fprt1notanaddress".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = explorer
        .list_account_transactions(pb::ListAccountTransactionsRequest {
            address: address(99),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = explorer
        .list_blocks(pb::ListBlocksRequest {
            page_token: "not-a-cursor".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let history = explorer
        .list_account_transactions(pb::ListAccountTransactionsRequest {
            address: address(61),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.transactions.len(), 1);
    assert_eq!(history.transactions[0].height, h_tx);

    // Too many streams: the fourth is refused, the others keep working.
    // (Streams dropped above release their slot once the server sees the
    // reset, so wait for the count to settle.)
    let open = observer.status().await.unwrap().height as i64 + 1;
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < 3 {
        match explorer.subscribe_blocks(subscribe_from(open)).await {
            Ok(s) => held.push(s.into_inner()),
            Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "slots not released: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    let e = explorer
        .subscribe_blocks(subscribe_from(open))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("max_streams"), "{}", e.message());
    for s in held.iter_mut() {
        assert!(s.message().await.unwrap().is_some());
    }

    // Operator surface on the observer: federation service, health, metrics.
    let fedview = pb::federation_service_client::FederationServiceClient::new(ch.clone())
        .get_federation(pb::GetFederationRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fedview.members.len(), 1);
    assert!(fedview.members[0].online && !fedview.members[0].is_self);
    assert!(fedview.members[0].last_seen_ms > 0);
    assert_eq!((fedview.consensus_quorum, fedview.peg_threshold), (1, 1));
    assert!(
        fedview.peg_descriptor.starts_with("wsh(or_d(multi(1,"),
        "{}",
        fedview.peg_descriptor
    );
    let reserves = fedview.reserves.unwrap();
    assert_eq!(
        reserves.supply + reserves.fee_pool,
        fedpeg_tests::FAUCET_SATS
    );
    let status = tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "fedpeg.v1.FederationService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let out = std::process::Command::new("curl")
        .arg("-sf")
        .arg(format!(
            "http://127.0.0.1:{}/metrics",
            observer.metrics_port
        ))
        .output()
        .expect("curl");
    let page = String::from_utf8_lossy(&out.stdout);
    for name in [
        "fedpeg_height ",
        "fedpeg_consensus_round ",
        "fedpeg_block_commit_latency_seconds_bucket{le=\"0.5\"}",
        "fedpeg_block_commit_latency_seconds_count ",
        "fedpeg_mempool_transactions ",
        "fedpeg_peers ",
        "fedpeg_p2p_events_dropped_total ",
        "fedpeg_supply_sats ",
        "fedpeg_pegins_minted_total ",
        "fedpeg_pegin_latency_seconds_count ",
        "fedpeg_pegouts_queued_total ",
        "fedpeg_pegout_latency_seconds_count ",
        "fedpeg_reserves_confirmed_sats ",
        "fedpeg_queued_withdrawals_sats ",
        "fedpeg_feed_block_subscribers 3",
        "fedpeg_feed_streams_cut_off_total 1",
        "fedpeg_feed_streams_refused_total ",
    ] {
        assert!(page.contains(name), "metrics page lacks {name}:\n{page}");
    }
    let commits: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("fedpeg_block_commit_latency_seconds_count "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(commits > 100, "{commits}");
    let e = pb::federation_service_client::FederationServiceClient::new(ch.clone())
        .list_peg_outs(pb::ListPegOutsRequest {
            address: "fprt1bad".into(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // The CLI tails the feed and shows status at a glance.
    drop(held);
    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(fedpeg_tests::bin("fedpeg"));
        c.arg("--node").arg(observer.url()).args(args);
        c
    };
    let out = run_ok(&mut cli(&[
        "--json", "watch", "--from", "0", "--count", "3",
    ]))
    .unwrap();
    let heights: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["height"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(heights, vec![1, 2, 3]);
    let account = address(61);
    let out = run_ok(&mut cli(&[
        "watch",
        "--from",
        "0",
        "--account",
        &account,
        "--count",
        "1",
    ]))
    .unwrap();
    assert!(
        out.contains(&format!("{h_tx}.")) && out.contains("transfer"),
        "{out}"
    );
    let bad = fedpeg_tests::run_any(&mut cli(&["watch", "--account", "nope"]));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid"));
    let out = run_ok(&mut cli(&["status"])).unwrap();
    for part in ["quorum", "m0", "bitcoin", "reserves", "supply"] {
        assert!(out.contains(part), "status lacks {part}:\n{out}");
    }
}

/// A regtest bitcoind and four members watching it (3 confirmations);
/// member 0 serves the web app.
async fn federation_with_web() -> (Bitcoind, Federation, Vec<Channel>) {
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("bitcoind: {e}"));
    let member_args = fedpeg_tests::member_bitcoind_args(&btc.rpc_url(), RPC_USER, RPC_PASSWORD);
    let mut fed = Federation::start_with(
        4,
        false,
        500,
        &["--pegin-confirmations".into(), "3".into()],
        &member_args,
    )
    .unwrap();
    // Member 0 is restarted at once with the web app (killed: it just started).
    fed.members[0].kill();
    fed.members[0].http_port = Some(fedpeg_tests::free_port());
    fed.members[0].spawn().unwrap();
    let mut chans = Vec::new();
    for m in &fed.members {
        chans.push(m.connect().await.unwrap());
    }
    (btc, fed, chans)
}

/// Gets `a`'s deposit address registered through member 0.
async fn registered_deposit_address(ch: &Channel, a: &str) -> Address {
    let w = pb::wallet_service_client::WalletServiceClient::new(ch.clone());
    wait_until(
        "deposit address registered",
        Duration::from_secs(30),
        || {
            let mut w = w.clone();
            async move {
                let r = w
                    .get_peg_in_address(pb::GetPegInAddressRequest { address: a.into() })
                    .await
                    .ok()?
                    .into_inner();
                r.registered.then_some(r.deposit_address)
            }
        },
    )
    .await
    .unwrap()
    .parse::<Address<NetworkUnchecked>>()
    .unwrap()
    .require_network(Network::Regtest)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_app_in_headless_chromium_follows_a_real_federation_live() {
    let web_dir = fedpeg_tests::web::prepare_browser_test().unwrap_or_else(|e| panic!("{e}"));
    let (btc, mut fed, chans) = federation_with_web().await;
    let ch = &chans[0];
    let port = fed.members[0].http_port.unwrap();
    let base = fed.members[0].web_url().unwrap();
    let chain = chain_id(ch).await.unwrap();

    // A finalized transfer for the transaction page.
    let txid = send(ch, chain, &fed.faucet, 0, 70).await;
    wait_final(ch, &txid, Duration::from_secs(60))
        .await
        .unwrap();
    // A deposit that has one of its three confirmations.
    let owner = address(71);
    let deposit = registered_deposit_address(ch, &owner).await;
    btc.send_to(&deposit, 2_000_000).unwrap();
    btc.mine(1).unwrap();
    let wallet = pb::wallet_service_client::WalletServiceClient::new(ch.clone());
    let outpoint = wait_until("deposit seen confirming", Duration::from_secs(30), || {
        let mut w = wallet.clone();
        let owner = owner.clone();
        async move {
            let r = w
                .get_peg_ins(pb::GetPegInsRequest {
                    selector: Some(pb::get_peg_ins_request::Selector::Address(owner)),
                })
                .await
                .ok()?
                .into_inner();
            r.peg_ins
                .into_iter()
                .find(|p| p.state == pb::PegInState::Confirming as i32)
                .map(|p| p.outpoint)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    // The JSON API tells the same.
    let r = fedpeg_tests::web::http_get(port, &format!("/api/v1/peg-ins/{outpoint}"), &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("PEG_IN_STATE_CONFIRMING"), "{}", r.body);

    let shots = fedpeg_tests::web::screenshot_dir();
    let mut node = tokio::process::Command::new("node")
        .arg(web_dir.join("e2e.mjs"))
        .current_dir(&web_dir)
        .env("FEDPEG_WEB", &base)
        .env("FEDPEG_OUTPOINT", &outpoint)
        .env("FEDPEG_ACCOUNT", &owner)
        .env("FEDPEG_TXID", &txid)
        .env("FEDPEG_SHOTS", &shots)
        .env("CHROMIUM", fedpeg_tests::web::chromium())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node (Node.js 18+) runs tests/web/e2e.mjs");
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(node.stdout.take().unwrap()).lines();
    let mut screenshots = Vec::new();
    let mut done = false;
    let started = Instant::now();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(180), lines.next_line()).await
    {
        eprintln!("browser: {line}");
        if let Some(path) = line.strip_prefix("SHOT ") {
            screenshots.push(path.to_string());
        } else if line == "WAIT restart" {
            // The page's live stream drops; blocks go on without member 0.
            assert!(fed.members[0].terminate(), "{}", fed.members[0].log());
            tokio::time::sleep(Duration::from_secs(2)).await;
            fed.members[0].spawn().unwrap();
            fed.members[0].connect().await.unwrap();
            stdin.write_all(b"ok\n").await.unwrap();
        } else if line == "WAIT mine" {
            // The remaining two confirmations, one block at a time, while
            // the page watches.
            stdin.write_all(b"ok\n").await.unwrap();
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                btc.mine(1).unwrap();
            }
        } else if let Some(json) = line.strip_prefix("WAIT audit ") {
            let shown: serde_json::Value = serde_json::from_str(json).unwrap();
            let r = pb::wallet_service_client::WalletServiceClient::new(ch.clone())
                .get_reserves(pb::GetReservesRequest {})
                .await
                .unwrap()
                .into_inner();
            for (id, want) in [
                ("available", r.available),
                ("locked", r.locked),
                ("pending-change", r.pending_change),
                ("supply", r.supply),
                ("queued", r.queued),
                ("in-batches", r.in_batches),
                ("fee-pool", r.fee_pool),
            ] {
                assert_eq!(shown[id], want, "audit page {id} vs GetReserves: {r:?}");
            }
            assert!(
                r.available >= 2_000_000 - 10_000,
                "the deposit is in the reserves: {r:?}"
            );
            let mut utxos: Vec<String> = r.utxos.iter().map(|u| u.outpoint.clone()).collect();
            let mut shown_utxos: Vec<String> = shown["utxos"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            utxos.sort();
            shown_utxos.sort();
            assert_eq!(shown_utxos, utxos);
            stdin.write_all(b"ok\n").await.unwrap();
        } else if line == "DONE" {
            done = true;
        }
    }
    let out = node.wait_with_output().await.unwrap();
    assert!(
        done && out.status.success(),
        "browser test failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        fed.logs()
    );
    eprintln!(
        "browser test passed in {:.1} s; screenshots:\n  {}",
        started.elapsed().as_secs_f64(),
        screenshots.join("\n  ")
    );
    assert_eq!(screenshots.len(), 8, "{screenshots:?}");
    // Minted for the owner: the page and the node agree.
    assert!(balance(ch, &account(71)).await.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_api_refuses_bad_input_with_4xx_and_resumes_after_a_restart() {
    let mut fed = Federation::start(4, true, 200).unwrap();
    {
        // Restarted at once with the web app (killed: it just started).
        let o = fed.observer.as_mut().unwrap();
        o.kill();
        o.http_port = Some(fedpeg_tests::free_port());
        o.spawn().unwrap_or_else(|e| panic!("{e}"));
    }
    let observer = fed.observer.as_ref().unwrap();
    observer.connect().await.unwrap();
    wait_height(observer, 3, Duration::from_secs(60))
        .await
        .unwrap();
    let port = observer.http_port.unwrap();
    let get = |path: &str| fedpeg_tests::web::http_get(port, path, &[]).unwrap();
    for (path, status, says) in [
        ("/api/v1/blocks/zz", 400, "block hash"),
        ("/api/v1/blocks?page_size=100000", 400, "at most 100"),
        ("/api/v1/accounts/fprt1nope", 400, "address"),
        (
            "/api/v1/track?q=%3Cscript%3E",
            400,
            "not something this explorer",
        ),
        (
            "/track?q=%3Cscript%3E",
            400,
            "&quot;&lt;script&gt;&quot; is not",
        ),
        (
            "/search?q=%27%22%3E%3Cimg%20src%3Dx%3E",
            400,
            "&#39;&quot;&gt;&lt;img",
        ),
        ("/block/99999999", 404, "no block at height 99999999"),
        ("/api/v1/unknown", 404, "openapi.yaml"),
    ] {
        let r = get(path);
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(r.body.contains(says), "{path}: {}", r.body);
        if !path.starts_with("/api/") {
            assert!(!r.body.contains("<img src=x>") && !r.body.contains("<script>"));
        }
    }
    let status: serde_json::Value = serde_json::from_str(&get("/api/v1/status").body).unwrap();
    assert_eq!(status["role"], "NODE_ROLE_OBSERVER");
    // A live block stream resumes after Last-Event-ID across a restart of
    // the node: the next block, no gap, no repeat.
    let last = status["height"].as_u64().unwrap();
    let o = fed.observer.as_mut().unwrap();
    assert!(o.terminate());
    o.spawn().unwrap();
    o.connect().await.unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET /api/v1/stream/blocks HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {last}\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    while !text.contains(&format!("id: {}\n", last + 2)) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let first = text.find("id: ").unwrap();
    assert!(
        text[first..].starts_with(&format!("id: {}\n", last + 1)),
        "{text}"
    );
}
