use super::*;
use crate::peg_testing::{consensus_key, PegNode};
use crate::wal::Wal;
use fedpeg_consensus::{SignedVote, VoteKind};
use fedpeg_ledger::genesis::ConsensusParams;
use proptest::prelude::*;

/// Commits `node`'s next block with a certificate of `signers` (ascending)
/// and returns it as block sync sends it.
fn certified(node: &PegNode, signers: &[u32]) -> pb::CommittedBlock {
    let block = node.proposal(vec![]);
    let id = ValueId(block.hash().0);
    let chain_id = ChainId(node.chain.spec.chain_id.0);
    let height = block.header.height;
    let precommits = signers
        .iter()
        .map(|i| {
            let v = SignedVote::sign(
                &chain_id,
                &consensus_key(*i),
                ValidatorIndex(*i),
                VoteKind::Precommit,
                height,
                Round(0),
                Some(id),
            );
            (ValidatorIndex(*i), v.signature)
        })
        .collect();
    let cert = CommitCertificate {
        height,
        round: Round(0),
        value_id: id,
        precommits,
    };
    let cb = CommittedBlock {
        block: block.clone(),
        commit: cert.encode(),
    };
    let outcome = node.chain.validate(&block).unwrap();
    node.chain.commit(cb.clone(), outcome).unwrap();
    pb::CommittedBlock {
        block: Some(block.to_proto()),
        commit: cb.commit,
    }
}

fn answer(blocks: Vec<pb::CommittedBlock>, tip: u64) -> Result<pb::SyncResponse, String> {
    Ok(pb::SyncResponse {
        blocks,
        tip_height: tip,
    })
}

fn mark(node: &PegNode, phase: RejoinPhase) {
    let r = RejoinRecord {
        phase,
        backup_height: 0,
        restored_unix_ms: 1,
    };
    node.chain
        .put_local_records(&[(REJOIN_RECORD, r.encode())])
        .unwrap();
}

fn phase(node: &PegNode) -> RejoinPhase {
    let bytes = node.chain.local_record(REJOIN_RECORD).unwrap().unwrap();
    RejoinRecord::decode(&bytes).unwrap().phase
}

/// Heights of the own messages in the member's WAL.
fn signed_heights(node: &PegNode) -> Vec<u64> {
    let (_, contents) = Wal::open(&node.dir.path().join("consensus.wal")).unwrap();
    contents
        .entries
        .iter()
        .filter(|e| e.is_own())
        .map(|e| e.height().0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_member_follows_without_voting_fixes_its_floor_and_votes_from_it() {
    let nodes = PegNode::federation(4, 3, ConsensusParams::default());
    let (me, others) = (&nodes[0], &nodes[1]);
    mark(me, RejoinPhase::Following);
    let mut drv = me.driver(None).await;
    assert!(drv.engine.is_none() && drv.probing());
    assert!(drv.status.rejoining.load(Ordering::Relaxed));
    let peer = PeerId::random();
    let first: Vec<_> = (0..3).map(|_| certified(others, &[1, 2, 3])).collect();
    let stale = first[0].clone();
    // Two of the three others (f + 1) answer: they may lag or lie.
    drv.on_probe_round(vec![
        (peer, 1, answer(first, 3)),
        (peer, 2, answer(vec![], 3)),
    ])
    .unwrap();
    assert_eq!(me.chain.height(), 3);
    assert_eq!(phase(me), RejoinPhase::Following);
    // One shows a block above the others' tip: keep following; one that
    // claims more without a block is no answer either way.
    let b4 = certified(others, &[1, 2, 3]);
    drv.on_probe_round(vec![
        (peer, 1, answer(vec![], 3)),
        (peer, 2, answer(vec![], 1_000_000)),
        (peer, 3, answer(vec![b4], 5)),
    ])
    .unwrap();
    assert_eq!((me.chain.height(), phase(me)), (4, RejoinPhase::Following));
    // A claim above with a block it already holds (or junk) brings nothing:
    // ignored, neither counted nor waited for.
    drv.on_probe_round(vec![
        (peer, 1, answer(vec![], 4)),
        (peer, 2, answer(vec![stale], u64::MAX)),
        (peer, 3, answer(vec![], 4)),
    ])
    .unwrap();
    assert_eq!((me.chain.height(), phase(me)), (4, RejoinPhase::Following));
    // Everyone at or below its tip: floor = 4 + 3, persisted.
    drv.on_probe_round(vec![
        (peer, 1, answer(vec![], 4)),
        (peer, 2, answer(vec![], 4)),
        (peer, 3, answer(vec![], 3)),
        (peer, 0, Err("timeout".into())),
    ])
    .unwrap();
    assert_eq!(phase(me), RejoinPhase::Floor(7));
    assert_eq!(drv.status.vote_floor.load(Ordering::Relaxed), 7);
    assert!(drv.engine.is_none() && !drv.probing());
    // Following by sync until floor - 1, silent.
    let b5 = certified(others, &[1, 2, 3]);
    drv.on_sync(Ok((peer, answer(vec![b5], 5).unwrap())))
        .unwrap();
    assert!(drv.engine.is_none());
    let b6 = certified(others, &[1, 2, 3]);
    drv.on_sync(Ok((peer, answer(vec![b6], 6).unwrap())))
        .unwrap();
    // At 6 = floor - 1: the engine runs, at the floor.
    assert_eq!(
        drv.engine.as_ref().and_then(|e| e.height()),
        Some(Height(7))
    );
    assert_eq!(phase(me), RejoinPhase::Rejoined);
    assert!(!drv.status.rejoining.load(Ordering::Relaxed));
    assert!(signed_heights(me).iter().all(|h| *h >= 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_survives_a_restart_and_an_old_own_precommit_raises_it() {
    let nodes = PegNode::federation(4, 3, ConsensusParams::default());
    let (me, others) = (&nodes[0], &nodes[1]);
    mark(me, RejoinPhase::Floor(4));
    let mut drv = me.driver(None).await;
    assert!(drv.engine.is_none() && !drv.probing());
    assert_eq!(drv.status.vote_floor.load(Ordering::Relaxed), 4);
    let peer = PeerId::random();
    // Block 3's certificate holds member 0's precommit, signed by its lost
    // self: it may have signed at 4 too.
    let blocks = vec![
        certified(others, &[1, 2, 3]),
        certified(others, &[1, 2, 3]),
        certified(others, &[0, 1, 2]),
    ];
    drv.on_sync(Ok((peer, answer(blocks, 3).unwrap()))).unwrap();
    assert_eq!(phase(me), RejoinPhase::Floor(5));
    assert!(
        drv.engine.is_none(),
        "at 3 it must wait for 4 before voting at 5"
    );
    drop(drv);
    // A restart keeps the raised floor.
    let mut drv = me.driver(None).await;
    assert_eq!(drv.status.vote_floor.load(Ordering::Relaxed), 5);
    assert!(drv.engine.is_none());
    let b4 = certified(others, &[1, 2, 3]);
    drv.on_sync(Ok((peer, answer(vec![b4], 4).unwrap())))
        .unwrap();
    assert_eq!(
        drv.engine.as_ref().and_then(|e| e.height()),
        Some(Height(5))
    );
    assert_eq!(phase(me), RejoinPhase::Rejoined);
    drop(drv);
    // Rejoined: a restart votes at once.
    let drv = me.driver(None).await;
    assert!(drv.engine.is_some() && drv.rejoin.is_none());
    assert!(signed_heights(me).iter().all(|h| *h >= 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_the_marker_or_with_an_unreadable_one_is_not_silently_restored() {
    let nodes = PegNode::federation(4, 3, ConsensusParams::default());
    let me = &nodes[0];
    let mut drv = me.driver(None).await;
    assert!(drv.engine.is_some() && drv.rejoin.is_none());
    me.chain
        .put_local_records(&[(REJOIN_RECORD, vec![1, 9, 9])])
        .unwrap();
    let e = drv.hold_engine_if_restored().unwrap_err().to_string();
    assert!(e.contains("refusing to start"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_lone_member_never_votes_again() {
    let nodes = PegNode::federation(1, 1, ConsensusParams::default());
    let me = &nodes[0];
    mark(me, RejoinPhase::Following);
    let mut drv = me.driver(None).await;
    drv.on_probe_round(vec![]).unwrap();
    assert!(drv.engine.is_none() && drv.probing());
    assert_eq!(phase(me), RejoinPhase::Following);
}

#[test]
fn the_record_round_trips_and_damage_is_an_error() {
    for phase in [
        RejoinPhase::Following,
        RejoinPhase::Floor(u64::MAX),
        RejoinPhase::Rejoined,
    ] {
        let r = RejoinRecord {
            phase,
            backup_height: 7,
            restored_unix_ms: 99,
        };
        assert_eq!(RejoinRecord::decode(&r.encode()), Ok(r));
    }
    let mut bad = RejoinRecord::restored(1, 2).encode();
    bad[1] = 3;
    assert!(RejoinRecord::decode(&bad).is_err());
    bad[0] = 2;
    assert!(RejoinRecord::decode(&bad).is_err());
}

proptest! {
    #[test]
    fn decoding_any_bytes_as_a_record_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = RejoinRecord::decode(&b);
    }
}
