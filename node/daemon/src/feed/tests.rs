//! Tests of the feed over a real store: replay, follow, cut-offs, filters,
//! pages and cursors.

use super::history::Cursor;
use super::*;
use ed25519_dalek::SigningKey;
use fedpeg_ledger::genesis::DevBalance;
use fedpeg_ledger::testing::sats;
use tokio_stream::StreamExt;

fn faucet() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

fn account(seed: u8) -> AccountId {
    AccountId(
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes(),
    )
}

/// A one-member chain in a temp dir, faucet funded.
fn chain() -> (tempfile::TempDir, Arc<Chain>) {
    let d = tempfile::tempdir().unwrap();
    let spec = fedpeg_ledger::testing::sample_genesis(
        "regtest",
        vec![DevBalance {
            address: account(5).to_address("fprt"),
            amount: sats(1_000_000),
        }],
    )
    .validate()
    .unwrap();
    let chain = Arc::new(Chain::open(spec, d.path(), 1000).unwrap());
    (d, chain)
}

/// Commits a block with `transfers` faucet transfers to account(9).
fn commit(chain: &Chain, transfers: u64) {
    let nonce = chain.account(&account(5)).effective.nonce;
    for i in 0..transfers {
        let tx = Transaction::sign(
            chain.spec.chain_id,
            &faucet(),
            nonce + i,
            sats(1),
            TxKind::Transfer {
                to: account(9),
                amount: sats(10),
            },
        );
        chain.submit_tx(tx).unwrap();
    }
    let p = chain
        .propose(chain.height() + 10, 0, vec![], &Default::default())
        .unwrap();
    let cb = CommittedBlock {
        block: p.block,
        commit: vec![],
    };
    chain.commit(cb, p.outcome).unwrap();
}

fn feed(chain: &Arc<Chain>, cfg: ExplorerConfig) -> Arc<Feed> {
    Arc::new(Feed::new(chain.clone(), cfg))
}

fn from(h: i64) -> pb::SubscribeBlocksRequest {
    pb::SubscribeBlocksRequest {
        from_height: Some(h),
        include_raw: false,
    }
}

#[tokio::test]
async fn blocks_replay_then_follow_the_tip_with_their_events() {
    let (_d, chain) = chain();
    for _ in 0..3 {
        commit(&chain, 2);
    }
    let f = feed(&chain, ExplorerConfig::default());
    let mut s = f.subscribe_blocks(from(0)).unwrap();
    let mut heights = vec![];
    for _ in 0..3 {
        let b = s.next().await.unwrap().unwrap();
        assert_eq!(b.transactions.len(), 2);
        // transfer + fee per transaction
        assert_eq!(b.events.len(), 4);
        assert_eq!(b.transactions[1].event_indexes, vec![2, 3]);
        heights.push(b.height);
    }
    commit(&chain, 0);
    commit(&chain, 1);
    for _ in 0..2 {
        heights.push(s.next().await.unwrap().unwrap().height);
    }
    assert_eq!(heights, vec![1, 2, 3, 4, 5]);
    // Resuming from last + 1 continues exactly there.
    let mut r = f.subscribe_blocks(from(4)).unwrap();
    assert_eq!(r.next().await.unwrap().unwrap().height, 4);
    assert_eq!(f.stats().block_streams.load(Ordering::Relaxed), 2);
    drop(r);
    settle(|| f.stats().block_streams.load(Ordering::Relaxed) == 1).await;
}

/// Waits (up to 2 s) for a stream task to notice and end.
async fn settle(done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("stream task did not end");
}

#[tokio::test]
async fn a_tip_seen_while_waiting_for_room_is_still_sent() {
    let (_d, chain) = chain();
    let f = feed(
        &chain,
        ExplorerConfig {
            stream_buffer: 1,
            ..ExplorerConfig::default()
        },
    );
    let mut s = f.subscribe_blocks(from(1)).unwrap();
    // Block 1 fills the buffer; the task waits for room to send block 2
    // and sees block 3 arrive meanwhile. No block 4 ever comes.
    for _ in 0..3 {
        commit(&chain, 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut heights = vec![];
    for _ in 0..3 {
        let b = tokio::time::timeout(Duration::from_secs(2), s.next())
            .await
            .expect("a finalized block was held back")
            .unwrap()
            .unwrap();
        heights.push(b.height);
    }
    assert_eq!(heights, vec![1, 2, 3]);
}

#[tokio::test]
async fn a_consumer_that_never_reads_gives_its_slot_back_when_cut_off() {
    let (_d, chain) = chain();
    let f = feed(
        &chain,
        ExplorerConfig {
            max_streams: 1,
            stream_buffer: 1,
            stall_timeout_ms: 50,
            ..ExplorerConfig::default()
        },
    );
    // Never polled (as when the transport stops reading), never dropped.
    let _idle = f.subscribe_blocks(from(1)).unwrap();
    for _ in 0..3 {
        commit(&chain, 0);
    }
    settle(|| f.stats().cut_off.load(Ordering::Relaxed) == 1).await;
    settle(|| f.stats().block_streams.load(Ordering::Relaxed) == 0).await;
    assert!(f.subscribe_blocks(from(1)).is_ok(), "slot not released");
}

#[tokio::test]
async fn a_dropped_replay_that_finds_nothing_stops() {
    let (_d, chain) = chain();
    for _ in 0..300 {
        commit(&chain, 1);
    }
    let f = feed(&chain, ExplorerConfig::default());
    // A filter no event matches: the replay sends nothing for 300 heights.
    let s = f
        .subscribe_events(pb::SubscribeEventsRequest {
            from_height: Some(0),
            accounts: vec![account(200).to_address("fprt")],
            ..Default::default()
        })
        .unwrap();
    drop(s);
    settle(|| f.stats().event_streams.load(Ordering::Relaxed) == 0).await;
}

#[tokio::test]
async fn events_filter_by_account_and_kind_and_resume_by_index() {
    let (_d, chain) = chain();
    commit(&chain, 3);
    commit(&chain, 1);
    let f = feed(&chain, ExplorerConfig::default());
    let req = |h, index, kinds: Vec<pb::EventKind>| pb::SubscribeEventsRequest {
        from_height: Some(h),
        from_index: index,
        accounts: vec![account(9).to_address("fprt")],
        kinds: kinds.into_iter().map(|k| k as i32).collect(),
    };
    let mut s = f
        .subscribe_events(req(0, 0, vec![pb::EventKind::Transfer]))
        .unwrap();
    let mut got = vec![];
    for _ in 0..4 {
        let e = s.next().await.unwrap().unwrap();
        got.push((e.height, e.index));
    }
    // Each transaction pays its fee (even index), then transfers.
    assert_eq!(got, vec![(1, 1), (1, 3), (1, 5), (2, 1)]);
    let mut r = f.subscribe_events(req(1, 4, vec![])).unwrap();
    let e = r.next().await.unwrap().unwrap();
    assert_eq!(
        (e.height, e.index, e.kind),
        (1, 5, pb::EventKind::Transfer as i32)
    );
    // The fee events name only the faucet: filtered out for account(9).
    let e = r.next().await.unwrap().unwrap();
    assert_eq!((e.height, e.index), (2, 1));
}

#[tokio::test]
async fn bad_subscriptions_get_clear_statuses() {
    let (_d, chain) = chain();
    commit(&chain, 0);
    let f = feed(
        &chain,
        ExplorerConfig {
            max_streams: 1,
            ..ExplorerConfig::default()
        },
    );
    let code = |r: Result<FeedStream<pb::FeedBlock>, Status>| r.err().map(|s| s.code());
    let none = pb::SubscribeBlocksRequest::default();
    assert_eq!(
        code(f.subscribe_blocks(none)),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        code(f.subscribe_blocks(from(-1))),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        code(f.subscribe_blocks(from(3))),
        Some(tonic::Code::OutOfRange)
    );
    assert_eq!(
        code(f.subscribe_blocks(from(i64::MAX))),
        Some(tonic::Code::OutOfRange)
    );
    let held = f.subscribe_blocks(from(2)).unwrap();
    assert_eq!(
        code(f.subscribe_blocks(from(1))),
        Some(tonic::Code::ResourceExhausted)
    );
    drop(held);
    settle(|| f.stats().block_streams.load(Ordering::Relaxed) == 0).await;
    assert!(f.subscribe_blocks(from(1)).is_ok());
    let ev = |accounts: Vec<String>, kinds: Vec<i32>| {
        f.subscribe_events(pb::SubscribeEventsRequest {
            from_height: Some(0),
            from_index: 0,
            accounts,
            kinds,
        })
        .err()
        .map(|s| s.code())
    };
    assert_eq!(
        ev(vec!["fprt1nope".into()], vec![]),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(ev(vec![], vec![99]), Some(tonic::Code::InvalidArgument));
    assert_eq!(ev(vec![], vec![0]), Some(tonic::Code::InvalidArgument));
}

#[tokio::test]
async fn slow_consumer_is_cut_off_while_a_fast_one_keeps_up() {
    let (_d, chain) = chain();
    let f = feed(
        &chain,
        ExplorerConfig {
            stream_buffer: 2,
            max_lag_blocks: 3,
            ..ExplorerConfig::default()
        },
    );
    let mut slow = f.subscribe_blocks(from(1)).unwrap();
    let mut fast = f.subscribe_blocks(from(1)).unwrap();
    let reader = tokio::spawn(async move {
        let mut heights = vec![];
        while let Some(Ok(b)) = fast.next().await {
            heights.push(b.height);
            if b.height == 30 {
                break;
            }
        }
        heights
    });
    for _ in 0..30 {
        commit(&chain, 0);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(reader.await.unwrap(), (1..=30).collect::<Vec<u64>>());
    let err = slow.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("from_height"), "{}", err.message());
    assert!(slow.next().await.is_none());
    assert_eq!(f.stats().cut_off.load(Ordering::Relaxed), 1);
}

#[test]
fn pages_of_blocks_and_account_history() {
    let (_d, chain) = chain();
    for _ in 0..5 {
        commit(&chain, 1);
    }
    let f = feed(&chain, ExplorerConfig::default());
    let mut req = pb::ListBlocksRequest {
        page_size: 2,
        ..Default::default()
    };
    let mut heights = vec![];
    loop {
        let page = f.list_blocks(&req).unwrap();
        heights.extend(page.blocks.iter().map(|b| b.height));
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    assert_eq!(heights, vec![1, 2, 3, 4, 5]);
    let code = |r: pb::ListBlocksRequest| f.list_blocks(&r).unwrap_err().code();
    assert_eq!(
        code(pb::ListBlocksRequest {
            to_height: 6,
            ..Default::default()
        }),
        tonic::Code::OutOfRange
    );
    // Polling from last + 1 with nothing new: an empty page; beyond it,
    // OUT_OF_RANGE; a range upside down, INVALID_ARGUMENT.
    let next = f
        .list_blocks(&pb::ListBlocksRequest {
            from_height: 6,
            ..Default::default()
        })
        .unwrap();
    assert!(next.blocks.is_empty() && next.next_page_token.is_empty());
    for from_height in [7, u64::MAX] {
        assert_eq!(
            code(pb::ListBlocksRequest {
                from_height,
                ..Default::default()
            }),
            tonic::Code::OutOfRange
        );
    }
    assert_eq!(
        code(pb::ListBlocksRequest {
            from_height: 4,
            to_height: 2,
            ..Default::default()
        }),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(pb::ListBlocksRequest {
            page_token: "garbage".into(),
            ..Default::default()
        }),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(pb::ListBlocksRequest {
            page_size: 100_000,
            ..Default::default()
        }),
        tonic::Code::InvalidArgument
    );
    let mut req = pb::ListAccountTransactionsRequest {
        address: account(9).to_address("fprt"),
        page_size: 3,
        page_token: String::new(),
    };
    let first = f.list_account_transactions(&req).unwrap();
    let hs: Vec<u64> = first.transactions.iter().map(|t| t.height).collect();
    assert_eq!(hs, vec![5, 4, 3]);
    // The faucet's own history refuses account(9)'s cursor.
    let other = pb::ListAccountTransactionsRequest {
        address: account(5).to_address("fprt"),
        page_size: 3,
        page_token: first.next_page_token.clone(),
    };
    assert_eq!(
        f.list_account_transactions(&other).unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    req.page_token = first.next_page_token;
    let second = f.list_account_transactions(&req).unwrap();
    let hs: Vec<u64> = second.transactions.iter().map(|t| t.height).collect();
    assert_eq!(hs, vec![2, 1]);
    assert!(second.next_page_token.is_empty());
    let unknown = pb::ListAccountTransactionsRequest {
        address: account(77).to_address("fprt"),
        ..Default::default()
    };
    assert_eq!(
        f.list_account_transactions(&unknown).unwrap_err().code(),
        tonic::Code::NotFound
    );
}

#[test]
fn cursors_round_trip_and_garbage_is_refused() {
    for c in [
        Cursor::Blocks(7),
        Cursor::AccountTxs(
            TxLocation {
                height: 9,
                index: 3,
            },
            [1, 2, 3, 4],
        ),
    ] {
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
    }
    for bad in ["", "zz", "01", "0162", "0262000000000000000001", "016200"] {
        assert_eq!(
            Cursor::decode(bad).unwrap_err().code(),
            tonic::Code::InvalidArgument,
            "{bad}"
        );
    }
}
