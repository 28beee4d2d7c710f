//! Node-level Byzantine tests with real `fedpegd` processes: attackers the
//! federation must survive with its memory bounded and its latency intact.
//!
//! Run one: `cargo build --workspace --bins && FEDPEG_BIN_DIR=$CARGO_TARGET_DIR/debug
//! cargo test -p fedpeg-tests --test byzantine -- --nocapture`.

use ed25519_dalek::SigningKey;
use fedpeg_ledger::hash::Hash32;
use fedpeg_tests::accounts::{account, account_of, next_nonce, submit, transfer};
use fedpeg_tests::outsider::{flood_in_background, Flood, FloodReport};
use fedpeg_tests::{chain_id, rss_bytes, wait_final, wait_height, Federation, NodeProc};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Resident memory no member may exceed under the flood (a debug build
/// idles at ~30 MB; before the fix one connection took a member past 1 GB).
const RSS_BOUND: u64 = 200 * 1024 * 1024;
/// Empty blocks come this often without transactions.
const HEARTBEAT_MS: u64 = 300;
/// Transfers timed for each latency sample.
const LATENCY_SAMPLES: usize = 8;
/// How long the outsider floods.
const ATTACK: Duration = Duration::from_secs(20);
/// Polling granularity of `wait_final`, allowed on top of 2x the baseline.
const POLL_SLACK: Duration = Duration::from_millis(40);

/// Submits `n` transfers one after the other, each to the next member, and
/// returns the median time from submission to final on that member.
async fn median_commit_latency(
    chans: &[Channel],
    chain: Hash32,
    faucet: &SigningKey,
    n: usize,
) -> Duration {
    let mut nonce = next_nonce(&chans[0], &account_of(faucet)).await.unwrap();
    let mut samples = Vec::new();
    for i in 0..n {
        let ch = &chans[i % chans.len()];
        // The previous transfer is final where it was sent; this member
        // may commit that block a moment later (else: "nonce skips ahead").
        let from = account_of(faucet);
        let deadline = Instant::now() + Duration::from_secs(10);
        while next_nonce(ch, &from).await.unwrap() < nonce {
            assert!(Instant::now() < deadline, "member {i} never caught up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let tx = transfer(chain, faucet, account(60), nonce, 1_000);
        let started = Instant::now();
        let txid = submit(ch, &tx).await.unwrap();
        wait_final(ch, &txid, Duration::from_secs(20))
            .await
            .unwrap();
        samples.push(started.elapsed());
        nonce += 1;
    }
    samples.sort();
    samples[samples.len() / 2]
}

/// Heights of every member.
async fn heights(members: &[NodeProc]) -> Vec<u64> {
    let mut out = Vec::new();
    for m in members {
        out.push(m.status().await.map(|s| s.height).unwrap_or(0));
    }
    out
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_flooding_gossip_and_sync_neither_exhausts_members_nor_slows_consensus() {
    let mut fed = Federation::start(4, false, HEARTBEAT_MS).unwrap();
    let mut chans = Vec::new();
    for m in &fed.members {
        chans.push(m.connect().await.unwrap());
    }
    let chain = chain_id(&chans[0]).await.unwrap();
    let faucet = fed.faucet.clone();
    wait_height(&fed.members[0], 2, Duration::from_secs(20))
        .await
        .unwrap();

    // 1. No attack: the baseline.
    let baseline = median_commit_latency(&chans, chain, &faucet, LATENCY_SAMPLES).await;
    let idle_rss: Vec<u64> = fed.members.iter().filter_map(NodeProc::rss_bytes).collect();

    // 2. An outsider (fresh identities, not in genesis) floods every member:
    // 16 MiB gossip batches of empty entries on many streams, and sync
    // requests (catch-up and long polls) far beyond its share.
    let spec = fedpegd::config::load_genesis(&fed.genesis_path()).unwrap();
    let targets = fedpegd::daemon::member_peers(&spec)
        .unwrap()
        .into_iter()
        .map(|m| (m.peer_id, m.addr))
        .collect();
    let attack = flood_in_background(
        targets,
        Flood {
            identities: 8,
            connections_per_target: 2,
            gossip_in_flight: 4,
            sync_in_flight: 8,
            duration: ATTACK,
        },
    );
    let before = heights(&fed.members).await;
    let attack_started = Instant::now();
    let watch_rss = {
        let pids: Vec<Option<u32>> = fed.members.iter().map(NodeProc::pid).collect();
        tokio::spawn(async move {
            let mut peak = vec![0u64; pids.len()];
            while attack_started.elapsed() < ATTACK {
                for (i, pid) in pids.iter().enumerate() {
                    let rss = pid.and_then(rss_bytes).unwrap_or(0);
                    peak[i] = peak[i].max(rss);
                    if rss > RSS_BOUND {
                        // Stop before the machine runs out of memory.
                        return Err((i, rss, peak));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(peak)
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let under_attack = median_commit_latency(&chans, chain, &faucet, LATENCY_SAMPLES).await;
    let peak = match watch_rss.await.unwrap() {
        Ok(peak) => peak,
        Err((i, rss, peak)) => {
            // (The flood thread ends with the process.)
            for m in &mut fed.members {
                m.kill();
            }
            panic!(
                "member {i} reached {:.0} MiB under the flood (bound {:.0} MiB); peaks {:?} MiB",
                mib(rss),
                mib(RSS_BOUND),
                peak.iter().map(|b| mib(*b).round()).collect::<Vec<_>>()
            );
        }
    };
    let report: FloodReport = attack.join().unwrap().unwrap();
    let after = heights(&fed.members).await;
    println!(
        "baseline latency {baseline:?}, under attack {under_attack:?}; RSS idle {:?} MiB, peak {:?} MiB (bound {:.0}); heights {before:?} -> {after:?}; {report:?}",
        idle_rss.iter().map(|b| mib(*b).round()).collect::<Vec<_>>(),
        peak.iter().map(|b| mib(*b).round()).collect::<Vec<_>>(),
        mib(RSS_BOUND),
    );

    // 3. Nobody exited, the chain kept finalizing at normal latency, and the
    // outsider got nothing through the gossip protocol.
    let exited: Vec<String> = fed
        .members
        .iter_mut()
        .filter_map(|m| (!m.is_running()).then(|| m.name.clone()))
        .collect();
    assert!(exited.is_empty(), "{exited:?} exited:\n{}", fed.logs());
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(a > b, "member {i} stuck at height {a}:\n{}", fed.logs());
    }
    assert!(
        under_attack <= 2 * baseline + POLL_SLACK,
        "commit latency {under_attack:?} under attack vs {baseline:?} without"
    );
    assert_eq!(report.gossip_acked, 0, "{report:?}");
    assert!(report.gossip_refused > 1_000, "{report:?}");
    assert!(report.sync_sent > 5_000, "{report:?}");
    assert!(report.sync_answered > 0, "{report:?}");
}
