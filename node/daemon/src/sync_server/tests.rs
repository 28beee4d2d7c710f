//! Tests of the sync server over a real chain (RocksDB in a temp dir).

use super::*;
use crate::network::PeerId;
use crate::peg_testing::PegNode;
use fedpeg_ledger::block::CommittedBlock;
use tokio::sync::oneshot;

/// Commits `n` empty blocks whose certificates are `commit_bytes` long.
fn grow(node: &PegNode, n: usize, commit_bytes: usize) {
    for _ in 0..n {
        let time = 1_000 * (node.chain.height() + 1);
        let p = node
            .chain
            .propose(time, 0, vec![], &Default::default())
            .unwrap();
        let cb = CommittedBlock {
            block: p.block,
            commit: vec![7; commit_bytes],
        };
        node.chain.commit(cb, p.outcome).unwrap();
    }
}

fn request(from_height: u64, wait_ms: u32) -> pb::SyncRequest {
    pb::SyncRequest {
        from_height,
        max_blocks: SYNC_MAX_BLOCKS,
        wait_ms,
    }
}

/// Hands `req` to `server` as from a member (or not); the answer's receiver.
fn ask(
    server: &SyncServer,
    member: bool,
    req: pb::SyncRequest,
) -> oneshot::Receiver<pb::SyncResponse> {
    let (respond, answer) = oneshot::channel();
    let inbound = InboundSync {
        peer: PeerId::random(),
        member: member.then_some(1),
        request: req,
        respond,
    };
    tokio::spawn(server.clone().serve(inbound));
    answer
}

async fn answer_within(
    rx: oneshot::Receiver<pb::SyncResponse>,
    within: Duration,
) -> Option<pb::SyncResponse> {
    tokio::time::timeout(within, rx)
        .await
        .ok()
        .and_then(Result::ok)
}

#[tokio::test]
async fn observers_get_at_most_a_mebibyte_of_blocks_per_response_and_members_more() {
    let node = PegNode::new(1, 1);
    grow(&node, 10, 300 * 1024);
    let server = SyncServer::new(node.chain.clone(), &SyncServerConfig::default());
    let to_observer = answer_within(ask(&server, false, request(1, 0)), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        to_observer.blocks.len(),
        3,
        "3 x 300 KiB fit in 1 MiB, 4 do not"
    );
    assert_eq!(to_observer.tip_height, 10);
    assert!(prost::Message::encoded_len(&to_observer) <= OBSERVER_SYNC_MAX_BYTES + 64);
    let to_member = answer_within(ask(&server, true, request(1, 0)), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(to_member.blocks.len(), 10);
    let heights: Vec<u64> = to_member
        .blocks
        .iter()
        .filter_map(|b| b.block.as_ref()?.header.as_ref().map(|h| h.height))
        .collect();
    assert_eq!(heights, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_block_larger_than_the_byte_cap_is_still_served_alone() {
    let node = PegNode::new(1, 1);
    grow(&node, 2, 2 * 1024 * 1024);
    let server = SyncServer::new(node.chain.clone(), &SyncServerConfig::default());
    let resp = answer_within(ask(&server, false, request(1, 0)), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(resp.blocks.len(), 1);
}

#[tokio::test]
async fn a_long_poll_is_answered_as_soon_as_the_block_is_final() {
    let node = PegNode::new(1, 1);
    grow(&node, 2, 0);
    let server = SyncServer::new(node.chain.clone(), &SyncServerConfig::default());
    let answer = ask(&server, false, request(3, 5_000));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    grow(&node, 1, 0);
    let resp = answer_within(answer, Duration::from_secs(2)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(resp.tip_height, 3);
    assert_eq!(resp.blocks.len(), 1);
}

#[tokio::test]
async fn a_long_poll_that_runs_out_is_answered_with_the_tip() {
    let node = PegNode::new(1, 1);
    grow(&node, 1, 0);
    let server = SyncServer::new(node.chain.clone(), &SyncServerConfig::default());
    let resp = answer_within(ask(&server, false, request(2, 100)), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!((resp.tip_height, resp.blocks.len()), (1, 0));
}

#[tokio::test]
async fn a_request_whose_requester_left_is_given_up() {
    let node = PegNode::new(1, 1);
    let server = SyncServer::new(node.chain.clone(), &SyncServerConfig::default());
    let (respond, answer) = oneshot::channel();
    drop(answer);
    let inbound = InboundSync {
        peer: PeerId::random(),
        member: None,
        request: request(5, 5_000),
        respond,
    };
    let served = tokio::time::timeout(Duration::from_secs(1), server.serve(inbound)).await;
    assert!(
        served.is_ok(),
        "a long poll nobody waits for must end at once"
    );
}

#[tokio::test]
async fn members_are_served_while_observers_wait_for_their_byte_budget() {
    let node = PegNode::new(1, 1);
    grow(&node, 3, 100 * 1024);
    let cfg = SyncServerConfig {
        observer_bytes_per_sec: 1024,
        ..SyncServerConfig::default()
    };
    let server = SyncServer::new(node.chain.clone(), &cfg);
    // The first observer answer overdraws the budget by ~300 KiB: at 1 KiB/s
    // the next observer waits for minutes.
    answer_within(ask(&server, false, request(1, 0)), Duration::from_secs(5))
        .await
        .unwrap();
    let waiting = ask(&server, false, request(1, 0));
    let member = answer_within(ask(&server, true, request(1, 0)), Duration::from_secs(1)).await;
    assert_eq!(member.map(|r| r.blocks.len()), Some(3));
    assert!(answer_within(waiting, Duration::from_millis(300))
        .await
        .is_none());
}

#[test]
fn the_byte_pacer_refills_at_its_rate_and_banks_at_most_a_second() {
    let t0 = Instant::now();
    let mut p = BytePacer::new(1000, t0);
    assert_eq!(p.delay(t0), Duration::ZERO);
    p.charge(3000, t0);
    assert_eq!(p.delay(t0), Duration::from_secs(2));
    assert_eq!(p.delay(t0 + Duration::from_secs(1)), Duration::from_secs(1));
    assert_eq!(p.delay(t0 + Duration::from_secs(2)), Duration::ZERO);
    // A long idle period banks one second's worth, not more.
    let later = t0 + Duration::from_secs(100);
    p.charge(1000, later);
    assert_eq!(p.delay(later), Duration::ZERO);
    p.charge(1, later);
    assert!(p.delay(later) > Duration::ZERO);
}
