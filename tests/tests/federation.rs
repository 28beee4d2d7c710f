//! A real federation: four `fedpegd` member processes and an observer on
//! loopback, reaching BFT consensus over libp2p.

use ed25519_dalek::SigningKey;
use fedpeg_ledger::hash::Hash32;
use fedpeg_proto::v1 as pb;
use fedpeg_tests::accounts::{account, account_of, address, next_nonce, submit, transfer};
use fedpeg_tests::{
    block_hash, chain_id, wait_final, wait_height, wait_until, Federation, NodeProc,
};
use std::time::Duration;
use tonic::transport::Channel;

/// Submits `count` transfers from the faucet, spreading them over `via`
/// (each to a different member), and returns their ids.
async fn send_transfers(
    via: &[Channel],
    chain: Hash32,
    faucet: &SigningKey,
    count: u64,
) -> Vec<String> {
    let mut nonce = next_nonce(&via[0], &account_of(faucet)).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..count {
        let tx = transfer(chain, faucet, account(50 + (i % 5) as u8), nonce, 1000 + i);
        // Nonces must arrive in order at one mempool; gossip spreads them.
        let txid = submit(&via[0], &tx)
            .await
            .unwrap_or_else(|e| panic!("submit {i}: {e}"));
        ids.push(txid);
        nonce += 1;
    }
    ids
}

/// Block hashes of heights 1..=tip agree across nodes.
async fn assert_same_chain(nodes: &[Channel], tip: u64) {
    for h in 1..=tip {
        let first = block_hash(&nodes[0], h).await.unwrap();
        for (i, ch) in nodes.iter().enumerate().skip(1) {
            assert_eq!(
                block_hash(ch, h).await.unwrap(),
                first,
                "node {i} differs at height {h}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_members_finalize_survive_crashes_and_never_fork() {
    let mut fed = Federation::start(4, true, 500).unwrap();
    let mut chans = Vec::new();
    for m in &fed.members {
        chans.push(m.connect().await.unwrap());
    }
    let chain = chain_id(&chans[0]).await.unwrap();
    let faucet = fed.faucet.clone();

    // 1. Transfers submitted to one member are finalized by all four.
    let ids = send_transfers(&chans[1..2], chain, &faucet, 20).await;
    for id in &ids {
        wait_final(&chans[0], id, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    }
    let h1 = fed.members[0].status().await.unwrap().height;
    for m in &fed.members {
        wait_height(m, h1, Duration::from_secs(20)).await.unwrap();
    }
    assert_same_chain(&chans, h1).await;

    // 1b. A deposit address requested from one member is registered through
    // consensus: every member (and later the observer) reports it.
    let acct = account(70);
    let spec = fedpegd::config::load_genesis(&fed.genesis_path()).unwrap();
    let expected = spec
        .peg_federation()
        .unwrap()
        .deposit_address(&acct.0)
        .unwrap()
        .to_string();
    let peg_in = |ch: &Channel, address: String| {
        let mut w = pb::wallet_service_client::WalletServiceClient::new(ch.clone());
        async move {
            w.get_peg_in_address(pb::GetPegInAddressRequest { address })
                .await
        }
    };
    let r = peg_in(&chans[1], acct.to_address("fprt"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.deposit_address, expected);
    assert!(
        r.descriptor.starts_with("wsh(sortedmulti(3,"),
        "{}",
        r.descriptor
    );
    assert!(r.min_deposit_sats > 0 && r.confirmations_required > 0);
    for ch in &chans {
        wait_until(
            "registration final everywhere",
            Duration::from_secs(20),
            || async {
                let r = peg_in(ch, acct.to_address("fprt"))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.deposit_address, expected);
                r.registered.then_some(())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    }
    let e = peg_in(&chans[0], "fprt1nope".into()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // 2. SIGKILL one member: the other three (a quorum) keep finalizing.
    fed.members[3].kill();
    let ids = send_transfers(&chans[0..1], chain, &faucet, 10).await;
    for id in &ids {
        wait_final(&chans[1], id, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    }
    let h2 = fed.members[0].status().await.unwrap().height;
    assert!(h2 > h1);

    // 3. Restart it: it catches up (block sync) and takes part again.
    fed.members[3].spawn().unwrap();
    chans[3] = fed.members[3].connect().await.unwrap();
    wait_height(&fed.members[3], h2, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    assert_same_chain(&chans, h2).await;

    // 4. Stop two of four: no quorum, so no progress and no fork.
    fed.members[2].kill();
    fed.members[3].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled = fed.members[0].status().await.unwrap().height;
    let pending = send_transfers(&chans[0..1], chain, &faucet, 3).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for m in &fed.members[0..2] {
        let h = m.status().await.unwrap().height;
        assert!(
            h <= stalled + 1,
            "{} advanced from {stalled} to {h} without a quorum",
            m.name
        );
    }

    // 5. One returns: quorum again, the pending transfers finalize.
    fed.members[3].spawn().unwrap();
    chans[3] = fed.members[3].connect().await.unwrap();
    for id in &pending {
        wait_final(&chans[0], id, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    }
    fed.members[2].spawn().unwrap();
    chans[2] = fed.members[2].connect().await.unwrap();
    let tip = fed.members[0].status().await.unwrap().height;
    for m in &fed.members {
        wait_height(m, tip, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    }
    assert_same_chain(&chans, tip).await;

    // 6. The observer (no key) followed and verified the same chain.
    let observer = fed.observer.as_ref().unwrap();
    // Observers long-poll block sync: they follow the tip within moments.
    wait_height(observer, tip, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    let obs = observer.connect().await.unwrap();
    let st = observer.status().await.unwrap();
    assert_eq!(st.role, pb::NodeRole::Observer as i32);
    assert_same_chain(&[chans[0].clone(), obs.clone()], tip).await;
    // It knows the registered deposit address, but cannot register new ones.
    let r = peg_in(&obs, acct.to_address("fprt"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.registered && r.deposit_address == expected);
    let other = address(71);
    assert_eq!(
        peg_in(&obs, other).await.unwrap_err().code(),
        tonic::Code::FailedPrecondition
    );
    // An observer cannot relay transactions: it says so instead of pooling them.
    let nonce = next_nonce(&chans[0], &account_of(&faucet)).await.unwrap();
    let tx = transfer(chain, &faucet, account(60), nonce, 5);
    let e = submit(&obs, &tx).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("observer"), "{}", e.message());

    // Prometheus metrics on their own port.
    let m = fed.members[0].metrics().unwrap();
    assert!(
        m.starts_with("HTTP/1.1 200 OK") && m.contains("\nfedpeg_height "),
        "{m}"
    );
    assert!(
        m.contains("# TYPE fedpeg_peers gauge") && !m.contains("fedpeg_bitcoind_reachable"),
        "{m}"
    );
    // Which members' precommits reach the commit certificates.
    let signed: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("fedpeg_member_last_signed_height{member="))
        .collect();
    println!("last signed: {signed:?}");
    assert!(signed.len() >= 3, "a quorum signs every block:\n{m}");
    // 7. Nobody double-signed, across all the restarts.
    for m in &fed.members {
        let s = m.status().await.unwrap();
        assert_eq!(
            s.equivocations_detected, 0,
            "{} saw an equivocation",
            m.name
        );
    }
    for m in fed.members.iter_mut() {
        assert!(m.terminate(), "{} did not shut down cleanly", m.name);
    }
}

/// `fedpegd run` arguments for a halt at `height`.
fn halt_at(height: u64) -> Vec<String> {
    vec!["--halt-height".into(), height.to_string()]
}

/// Waits for `node` to exit by itself, successfully or not as `success`
/// says, having logged `says`.
fn assert_exits(node: &mut NodeProc, success: bool, says: &str) {
    let status = node.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success() == success),
        "{} exited with {status:?}:\n{}",
        node.name,
        node.log()
    );
    assert!(
        node.log().contains(says),
        "{} never said {says:?}:\n{}",
        node.name,
        node.log()
    );
}

/// Each member's version as `node` reports it in GetFederation.
async fn member_versions(node: &Channel) -> Vec<String> {
    pb::federation_service_client::FederationServiceClient::new(node.clone())
        .get_federation(pb::GetFederationRequest {})
        .await
        .map(|r| {
            r.into_inner()
                .members
                .into_iter()
                .map(|m| m.version)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_members_halt_at_one_height_and_the_next_binary_carries_on() {
    const HALT: u64 = 30;
    let t0 = std::time::Instant::now();
    let mut fed = Federation::start_with(4, true, 500, &[], &halt_at(HALT)).unwrap();
    let observer = fed.observer.as_mut().unwrap();
    observer.kill();
    observer.extra_args = halt_at(HALT);
    observer.spawn().unwrap();
    let mut chans = Vec::new();
    for m in &fed.members {
        chans.push(m.connect().await.unwrap());
    }
    let chain = chain_id(&chans[0]).await.unwrap();
    let faucet = fed.faucet.clone();

    for m in &fed.members {
        assert_eq!(m.status().await.unwrap().halt_height, HALT);
    }

    // Transfers flow into member 0 until it stops taking them (halted).
    let mut nonce = next_nonce(&chans[0], &account_of(&faucet)).await.unwrap();
    let mut accepted = Vec::new();
    for i in 0u64.. {
        let tx = transfer(chain, &faucet, account(50 + (i % 5) as u8), nonce, 1000 + i);
        match submit(&chans[0], &tx).await {
            Ok(txid) => {
                accepted.push(txid);
                nonce += 1;
            }
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    println!("{} transfers accepted before the halt", accepted.len());
    assert!(accepted.len() >= 10, "{}", fed.logs());

    // Every node stops by itself, successfully, at the halt height.
    let halted = format!("halted at height {HALT} (--halt-height): block {HALT} is committed");
    for m in fed.members.iter_mut().chain(fed.observer.as_mut()) {
        assert_exits(m, true, &halted);
    }
    // Nothing was signed for the next height: each WAL is empty (reset at
    // the commit of the halt height, never written again).
    for m in &fed.members {
        let (_, wal) = fedpegd::wal::Wal::open(&m.data_dir.join("consensus.wal")).unwrap();
        assert!(
            wal.entries.iter().all(|e| e.height().0 <= HALT),
            "{} signed above the halt height: {:?}",
            m.name,
            wal.entries
        );
    }
    // Started again with the same halt height, each node is at exactly
    // that height: it says so and exits at once, without joining consensus.
    let said =
        format!("halted at height {HALT} (--halt-height): the chain is already at this height");
    for m in fed.members.iter_mut().chain(fed.observer.as_mut()) {
        m.spawn().unwrap();
        assert_exits(m, true, &said);
    }

    // "The next binary": the same one, without the halt height. The chain
    // goes on from the halt height with no fork, and the transfers taken
    // before the halt are all finalized (those still pooled then were
    // saved and re-admitted).
    for m in fed.members.iter_mut().chain(fed.observer.as_mut()) {
        m.extra_args.clear();
        m.spawn().unwrap();
    }
    for (i, m) in fed.members.iter().enumerate() {
        chans[i] = m.connect().await.unwrap();
    }
    for id in &accepted {
        wait_final(&chans[1], id, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    }
    for m in &fed.members {
        wait_height(m, HALT + 3, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    }
    let tip = fed.members[0].status().await.unwrap().height;
    let observer = fed.observer.as_ref().unwrap();
    wait_height(observer, tip, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    let mut nodes = chans.clone();
    nodes.push(observer.connect().await.unwrap());
    assert_same_chain(&nodes, tip).await;
    // Each member knows the version every member runs (the others' as
    // they state it over p2p) and exports its own as a metric.
    let version = fed.members[0].status().await.unwrap().version;
    assert!(version.starts_with(env!("CARGO_PKG_VERSION")), "{version}");
    for ch in &chans {
        let seen = wait_until(
            "every member's version",
            Duration::from_secs(20),
            || async { (member_versions(ch).await == vec![version.clone(); 4]).then_some(()) },
        )
        .await;
        if let Err(e) = seen {
            panic!("{e}: {:?}\n{}", member_versions(ch).await, fed.logs());
        }
    }
    let metrics = fed.members[1].metrics().unwrap();
    assert!(
        metrics.contains(&format!("\nfedpeg_build_info{{version=\"{version}\"}} 1\n")),
        "{metrics}"
    );
    for m in &fed.members {
        let s = m.status().await.unwrap();
        assert_eq!(
            (s.equivocations_detected, s.halt_height),
            (0, 0),
            "{}",
            m.name
        );
        assert!(!m.log().contains("equivocation detected"), "{}", m.name);
    }

    // A member restarted with the old halt height, now passed, refuses to
    // start and says what to do; without it, it rejoins.
    let m = &mut fed.members[3];
    assert!(m.terminate());
    m.extra_args = halt_at(HALT);
    m.spawn().unwrap();
    assert_exits(
        m,
        false,
        &format!("past the halt height {HALT} (--halt-height / halt_height)"),
    );
    assert!(m.log().contains("raise it above"), "{}", m.log());
    m.extra_args.clear();
    m.spawn().unwrap();
    let tip = fed.members[0].status().await.unwrap().height;
    wait_height(&fed.members[3], tip, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    for m in fed.members.iter_mut() {
        assert!(m.terminate(), "{} did not shut down cleanly", m.name);
    }
    println!("halt and upgrade test took {:?}", t0.elapsed());
}

#[test]
fn a_bad_halt_height_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = fedpeg_tests::run_any(
            std::process::Command::new(fedpeg_tests::bin("fedpegd"))
                .arg("run")
                .args(args),
        );
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let config = dir.path().join("fedpeg.toml");
    for (text, says) in [
        ("halt_height = \"soon\"", "expected u64"),
        ("halt_height = -1", "expected u64"),
        ("halt_height = 0", "must be at least 1"),
    ] {
        std::fs::write(&config, text).unwrap();
        let (ok, err) = run(&["--config", config.to_str().unwrap()]);
        assert!(
            !ok && err.contains("halt_height") && err.contains(says),
            "{text}: {err}"
        );
    }
    let (ok, err) = run(&["--halt-height", "0"]);
    assert!(
        !ok && err.contains("halt_height (--halt-height) must be at least 1"),
        "{err}"
    );
    let (ok, err) = run(&["--halt-height", "soon"]);
    assert!(!ok && err.contains("--halt-height"), "{err}");
    // The environment (the compose files pass FEDPEG_HALT_HEIGHT, empty when
    // unset): empty means none; anything else must be a height.
    let env_run = |value: &str| {
        let o = fedpeg_tests::run_any(
            std::process::Command::new(fedpeg_tests::bin("fedpegd"))
                .env("FEDPEG_HALT_HEIGHT", value)
                .args(["run", "--genesis"])
                .arg(dir.path().join("missing-genesis.json")),
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = env_run("soon");
    assert!(
        err.contains("FEDPEG_HALT_HEIGHT 'soon' is not a block height"),
        "{err}"
    );
    assert!(env_run("0").contains("must be at least 1"));
    let err = env_run("");
    assert!(
        !err.contains("HALT") && err.contains("missing-genesis.json"),
        "{err}"
    );
}
