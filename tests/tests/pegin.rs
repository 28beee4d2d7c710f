//! Peg-in with a real `bitcoind -regtest` and four real member processes:
//! a deposit to a registered address is minted when it reaches the genesis
//! confirmation depth, exactly once, minus the cost of spending it later.

use ed25519_dalek::SigningKey;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::testing::sats;
use fedpeg_peg::bitcoin::{address::NetworkUnchecked, Address, Network};
use fedpeg_peg::chain::BitcoinChain;
use fedpeg_peg::testkit::{Bitcoind, RPC_PASSWORD, RPC_USER};
use fedpeg_proto::v1 as pb;
use fedpeg_tests::accounts::{account, balance};
use fedpeg_tests::{wait_until, Federation};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

async fn peg_ins(
    ch: &Channel,
    selector: pb::get_peg_ins_request::Selector,
) -> Result<Vec<pb::PegInInfo>, tonic::Status> {
    pb::wallet_service_client::WalletServiceClient::new(ch.clone())
        .get_peg_ins(pb::GetPegInsRequest {
            selector: Some(selector),
        })
        .await
        .map(|r| r.into_inner().peg_ins)
}

/// Each member's latest recorded fee-rate vote (sat/vB), from the blocks.
async fn latest_fee_votes(
    ch: &Channel,
) -> Result<std::collections::BTreeMap<u32, u64>, tonic::Status> {
    let mut explorer = pb::explorer_service_client::ExplorerServiceClient::new(ch.clone());
    let mut votes = std::collections::BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = explorer
            .list_blocks(pb::ListBlocksRequest {
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        for f in page.blocks.iter().flat_map(|b| &b.federation_transactions) {
            // The summary reads "<rate> sat/vB at height <h>".
            if f.kind == "fee_rate_vote" {
                if let Some(rate) = f.summary.split(' ').next().and_then(|r| r.parse().ok()) {
                    votes.insert(f.member, rate);
                }
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(votes);
        }
        page_token = page.next_page_token;
    }
}

/// Waits until every member shows `want` for `a`; returns how long it took.
async fn wait_balance(fed: &Federation, chans: &[Channel], a: &AccountId, want: u64) -> Duration {
    let t0 = Instant::now();
    for ch in chans {
        wait_until(
            &format!("balance {want}"),
            Duration::from_secs(30),
            || async { (balance(ch, a).await.ok()? == want).then_some(()) },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
        // Every mint keeps reserves >= supply + unpaid peg-outs (the
        // faucet's genesis dev balance, regtest only, is the one unbacked sum).
        let r = pb::wallet_service_client::WalletServiceClient::new(ch.clone())
            .get_reserves(pb::GetReservesRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(
            r.available + r.locked
                >= r.supply.saturating_sub(fedpeg_tests::FAUCET_SATS) + r.queued + r.in_batches,
            "{r:?}"
        );
    }
    t0.elapsed()
}

/// Registers `a`'s deposit address through member 0 and waits until final.
async fn register(fed: &Federation, chans: &[Channel], a: &AccountId) -> Address {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut w = pb::wallet_service_client::WalletServiceClient::new(chans[0].clone());
    loop {
        let r = match w
            .get_peg_in_address(pb::GetPegInAddressRequest {
                address: a.to_address("fprt"),
            })
            .await
        {
            Ok(r) => r.into_inner(),
            // The member's watcher has not reached bitcoind yet.
            Err(e) if e.code() == tonic::Code::Unavailable => {
                assert!(Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        if r.registered {
            return r
                .deposit_address
                .parse::<Address<NetworkUnchecked>>()
                .unwrap()
                .require_network(Network::Regtest)
                .unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "registration not final\n{}",
            fed.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A regtest bitcoind and four members watching it (3 confirmations).
async fn setup() -> (Bitcoind, Federation, Vec<Channel>) {
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("bitcoind: {e}"));
    // Block notifications drive the watchers; the slow poll is the fallback.
    // (The fee rate stays the last argument: a test changes it.)
    let mut member_args = vec![
        "--bitcoin-zmq-block".into(),
        btc.zmq_block_url(),
        "--bitcoin-poll-ms".into(),
        "2000".into(),
    ];
    member_args.extend(fedpeg_tests::member_bitcoind_args(
        &btc.rpc_url(),
        RPC_USER,
        RPC_PASSWORD,
    ));
    let fed = Federation::start_with(
        4,
        false,
        500,
        &["--pegin-confirmations".into(), "3".into()],
        &member_args,
    )
    .unwrap();
    let mut chans = Vec::new();
    for m in &fed.members {
        chans.push(m.connect().await.unwrap());
    }
    (btc, fed, chans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_are_minted_once_at_depth_minus_spend_cost() {
    let (btc, mut fed, mut chans) = setup().await;
    let cost = fedpegd::config::load_genesis(&fed.genesis_path())
        .unwrap()
        .pegin_spend_cost();
    assert!(cost > 0);
    let (a, b) = (account(80), account(81));
    let addr_a = register(&fed, &chans, &a).await;
    let addr_b = register(&fed, &chans, &b).await;

    // `fedpeg pegin --wait` follows the deposit until it is minted.
    let waiter = std::process::Command::new(fedpeg_tests::bin("fedpeg"))
        .args([
            "--node",
            &fed.members[0].url(),
            "pegin",
            "--account",
            &a.to_address("fprt"),
            "--wait",
            "--wait-secs",
            "60",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Two confirmations: not yet, and the status says so.
    let txid = btc.send_to(&addr_a, 100_000).unwrap();
    btc.mine(2).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ch in &chans {
        assert_eq!(balance(ch, &a).await.unwrap(), 0, "minted before depth");
    }
    use pb::get_peg_ins_request::Selector;
    let st = peg_ins(&chans[0], Selector::Address(a.to_address("fprt")))
        .await
        .unwrap();
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(
        (
            st[0].state,
            st[0].confirmations,
            st[0].confirmations_required
        ),
        (pb::PegInState::Confirming as i32, 2, 3)
    );
    assert_eq!((st[0].amount, st[0].eta_seconds), (100_000, 600));
    let outpoint = st[0].outpoint.clone();
    assert!(outpoint.starts_with(&txid.to_string()));
    // The third confirmation: minted, minus the cost of spending it.
    btc.mine(1).unwrap();
    let took = wait_balance(&fed, &chans, &a, 100_000 - cost).await;
    eprintln!("deposit minted on all members {took:?} after the block that brought it to depth");
    // Every member's watcher hears of bitcoind's blocks over ZMQ.
    for m in &fed.members {
        assert!(
            m.log()
                .contains("subscribed to bitcoind block notifications"),
            "{} did not subscribe:\n{}",
            m.name,
            m.log()
        );
        let heard = m.metric_value("fedpeg_bitcoin_block_notifications_total");
        assert!(
            heard >= Some(3),
            "{}: {heard:?} block notifications",
            m.name
        );
    }
    let st = peg_ins(&chans[2], Selector::Outpoint(outpoint.clone()))
        .await
        .unwrap();
    assert_eq!(
        (st[0].state, st[0].minted_amount),
        (pb::PegInState::Minted as i32, 100_000 - cost)
    );
    assert!(st[0].minted_height > 0);
    assert_eq!(st[0].amount, 100_000);
    let out = waiter.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("2/3 confirmations") && text.contains("minted: ") && text.contains(&outpoint),
        "{text}"
    );
    // Bad status queries.
    let e = peg_ins(&chans[0], Selector::Outpoint("nope".into()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = peg_ins(
        &chans[0],
        Selector::Outpoint(format!("{}:0", "11".repeat(32))),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    // More blocks do not mint it again.
    btc.mine(3).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ch in &chans {
        assert_eq!(
            balance(ch, &a).await.unwrap(),
            100_000 - cost,
            "minted twice"
        );
    }

    // Two deposits to two accounts in one Bitcoin transaction.
    btc.send_many(&[(addr_a.clone(), 50_000), (addr_b.clone(), 70_000)])
        .unwrap();
    btc.mine(3).unwrap();
    wait_balance(&fed, &chans, &a, 100_000 - cost + 50_000 - cost).await;
    wait_balance(&fed, &chans, &b, 70_000 - cost).await;

    // A deposit worth less than spending it is not minted, and says why.
    btc.send_to(&addr_b, cost / 2 + 546).unwrap();
    btc.mine(4).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ch in &chans {
        assert_eq!(balance(ch, &b).await.unwrap(), 70_000 - cost);
    }
    let st = peg_ins(&chans[0], Selector::Address(b.to_address("fprt")))
        .await
        .unwrap();
    assert!(
        st.iter()
            .any(|p| p.state == pb::PegInState::BelowCost as i32 && p.amount == cost / 2 + 546),
        "{st:?}"
    );

    // A reorg deeper than the confirmation depth, under a minted deposit, is
    // detected and shown in node status.
    let st = fed.members[0].status().await.unwrap();
    assert!(
        st.bitcoind_reachable && st.deep_reorg_alerts.is_empty(),
        "{st:?}"
    );
    let (_, block) = btc.chain().transaction(&txid, None).unwrap().unwrap();
    btc.invalidate(&block.unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = fed.members[0].status().await.unwrap();
        if st.deep_reorg_alerts.contains(&outpoint) {
            break;
        }
        assert!(Instant::now() < deadline, "deep reorg not reported: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fed.members[0]
        .log()
        .contains("ALERT: a minted deposit left the best chain"));
    // Exported as a metric; peg-outs halt on this member until an operator acknowledges.
    let metrics = fed.members[0].metrics().unwrap();
    // Every later block went too: all three minted deposits are flagged.
    assert!(
        metrics.contains("fedpeg_deep_reorg_alerts 3")
            && metrics.contains("fedpeg_pegins_minted_total 3"),
        "{metrics}"
    );
    let chain_id = fedpeg_tests::chain_id(&chans[0]).await.unwrap();
    let peg_out = |nonce: u64| {
        fedpeg_ledger::tx::Transaction::sign(
            chain_id,
            &SigningKey::from_bytes(&[80; 32]),
            nonce,
            sats(1000),
            fedpeg_ledger::tx::TxKind::PegOut {
                bitcoin_address: btc.new_address().unwrap().to_string(),
                amount: sats(10_000),
            },
        )
    };
    let pegout0 = peg_out(0).encode();
    // Member 0 refuses the peg-out while an alert is open.
    let halted = |w: &mut pb::wallet_service_client::WalletServiceClient<Channel>,
                  why: &'static str| {
        let tx = pegout0.clone();
        let mut w = w.clone();
        async move {
            let e = w
                .submit_transaction(pb::SubmitTransactionRequest { transaction: tx })
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{why}: {e}");
            assert!(e.message().contains("halted"), "{why}: {e}");
        }
    };
    let mut w0 = pb::wallet_service_client::WalletServiceClient::new(chans[0].clone());
    halted(&mut w0, "an alert is open").await;
    let mut node0 = pb::node_service_client::NodeServiceClient::new(chans[0].clone());
    // Admin calls need the member's admin token, even from its own host.
    let ack = |outpoints: Vec<String>, token: Option<&str>| {
        let mut req = tonic::Request::new(pb::AcknowledgeAlertsRequest { outpoints });
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    };
    let e = node0
        .acknowledge_alerts(ack(vec![outpoint.clone()], None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let e = node0
        .acknowledge_alerts(ack(vec![outpoint.clone()], Some(&"0".repeat(64))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    let token_file = fed.members[0].data_dir.join("admin.token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let out = fedpeg_tests::run_ok(
        fed.cli()
            .args(["--json", "acknowledge-alerts"])
            .arg("--admin-token")
            .arg(&token_file)
            .arg(&outpoint),
    )
    .unwrap();
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["remaining"].as_array().unwrap().len(), 2, "{out}");
    halted(&mut w0, "still halted while any alert is open").await;
    // A restart (even a crash) neither clears the open alerts nor resumes
    // peg-outs: they come back from the store.
    fed.members[0].kill();
    fed.members[0].spawn().unwrap();
    chans[0] = fed.members[0].connect().await.unwrap();
    let st = fed.members[0].status().await.unwrap();
    assert_eq!(st.deep_reorg_alerts.len(), 2, "{st:?}");
    assert!(!st.deep_reorg_alerts.contains(&outpoint), "{st:?}");
    assert!(fed.members[0]
        .log()
        .contains("deep-reorg alerts from before the restart are still open"));
    let mut w0 = pb::wallet_service_client::WalletServiceClient::new(chans[0].clone());
    halted(&mut w0, "halted again after the restart").await;
    let mut node0 = pb::node_service_client::NodeServiceClient::new(chans[0].clone());
    let remaining: Vec<String> = r["remaining"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    let r = node0
        .acknowledge_alerts(ack(remaining, Some(&token)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.remaining.is_empty());
    let e = node0
        .acknowledge_alerts(ack(vec!["nope".into()], Some(&token)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(fed.members[0]
        .status()
        .await
        .unwrap()
        .deep_reorg_alerts
        .is_empty());
    let id = w0
        .submit_transaction(pb::SubmitTransactionRequest {
            transaction: peg_out(0).encode(),
        })
        .await
        .unwrap()
        .into_inner()
        .txid;
    fedpeg_tests::wait_final(&chans[0], &id, Duration::from_secs(20))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_reorgs_and_a_bitcoind_outage() {
    let (mut btc, fed, chans) = setup().await;
    let spec = fedpegd::config::load_genesis(&fed.genesis_path()).unwrap();
    let cost = spec.pegin_spend_cost();
    let peg = spec.peg_federation().unwrap();
    let mut w1 = pb::wallet_service_client::WalletServiceClient::new(chans[1].clone());

    // 1. A deposit to a derived address nobody registered is not minted...
    let c = account(90);
    let addr_c = peg.deposit_address(&c.0).unwrap();
    let txid = btc.send_to(&addr_c, 80_000).unwrap();
    btc.mine(3).unwrap();
    // bitcoind's txindex catches up with new blocks in the background.
    let chain = btc.chain();
    let tx = wait_until(
        "the deposit in bitcoind's txindex",
        Duration::from_secs(10),
        || async {
            chain
                .transaction(&txid, None)
                .ok()
                .flatten()
                .map(|(tx, _)| tx)
        },
    )
    .await
    .unwrap();
    let vout = tx
        .output
        .iter()
        .position(|o| o.script_pubkey == addr_c.script_pubkey())
        .unwrap() as u32;
    register(&fed, &chans, &account(91)).await; // also waits until the watchers are up
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(balance(&chans[0], &c).await.unwrap(), 0);
    // ...until claimed; then it is minted (it is already past depth).
    let claim = |txid: String, vout: u32, address: String| {
        let mut w = w1.clone();
        async move {
            w.claim_peg_in(pb::ClaimPegInRequest {
                txid,
                vout,
                address,
            })
            .await
        }
    };
    let r = claim(txid.to_string(), vout, c.to_address("fprt"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.amount, r.deposit_address), (80_000, addr_c.to_string()));
    wait_balance(&fed, &chans, &c, 80_000 - cost).await;
    // A second claim of the same deposit is refused; so are wrong claims.
    let e = claim(txid.to_string(), vout, c.to_address("fprt"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    let elsewhere = btc.send_to(&btc.new_address().unwrap(), 10_000).unwrap();
    let e = claim(elsewhere.to_string(), 0, c.to_address("fprt"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("does not pay"), "{e}");
    let e = claim("00".repeat(32), 0, c.to_address("fprt"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    let e = claim("xyz".into(), 0, c.to_address("fprt"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");

    // 2. A deposit reorged out below depth is not minted; mined again, it is minted once.
    let d = account(93);
    let addr_d = register(&fed, &chans, &d).await;
    btc.send_to(&addr_d, 60_000).unwrap();
    let first = btc.mine(1).unwrap()[0];
    // Let the watchers see it at one confirmation, then reorg it out.
    tokio::time::sleep(Duration::from_secs(1)).await;
    btc.invalidate(&first).unwrap();
    let miner = btc.mining_address().to_string();
    for _ in 0..3 {
        // Blocks without the deposit (it waits in the mempool).
        let _: serde_json::Value = btc
            .rpc(
                "generateblock",
                &[miner.clone().into(), serde_json::json!([])],
            )
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ch in &chans {
        assert_eq!(
            balance(ch, &d).await.unwrap(),
            0,
            "minted a deposit that is not on the best chain"
        );
    }
    let st = peg_ins(
        &chans[0],
        pb::get_peg_ins_request::Selector::Address(d.to_address("fprt")),
    )
    .await
    .unwrap();
    assert!(
        st.iter()
            .any(|p| p.state == pb::PegInState::ReorgedOut as i32),
        "{st:?}"
    );
    btc.mine(3).unwrap();
    wait_balance(&fed, &chans, &d, 60_000 - cost).await;
    btc.mine(3).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        balance(&chans[0], &d).await.unwrap(),
        60_000 - cost,
        "minted twice after the reorg"
    );

    // 3. bitcoind down: peg calls say UNAVAILABLE, transfers continue; back up, peg-in resumes.
    btc.stop_process().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match w1
            .get_peg_in_address(pb::GetPegInAddressRequest {
                address: account(94).to_address("fprt"),
            })
            .await
        {
            Err(e) if e.code() == tonic::Code::Unavailable => break,
            other => assert!(
                Instant::now() < deadline,
                "peg call while bitcoind is down: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let chain_id = fedpeg_tests::chain_id(&chans[0]).await.unwrap();
    let faucet = AccountId(fed.faucet.verifying_key().to_bytes()).to_address("fprt");
    let nonce = w1
        .get_account(pb::GetAccountRequest { address: faucet })
        .await
        .unwrap()
        .into_inner()
        .next_nonce;
    let tx = fedpeg_ledger::tx::Transaction::sign(
        chain_id,
        &fed.faucet,
        nonce,
        sats(1),
        fedpeg_ledger::tx::TxKind::Transfer {
            to: account(95),
            amount: sats(777),
        },
    );
    let id = w1
        .submit_transaction(pb::SubmitTransactionRequest {
            transaction: tx.encode(),
        })
        .await
        .unwrap()
        .into_inner()
        .txid;
    fedpeg_tests::wait_final(&chans[0], &id, Duration::from_secs(20))
        .await
        .unwrap();
    btc.restart().unwrap();
    btc.send_to(&addr_d, 40_000).unwrap();
    btc.mine(3).unwrap();
    wait_balance(&fed, &chans, &d, 60_000 - cost + 40_000 - cost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_of_a_deposit_that_does_not_exist_gets_no_quorum() {
    let (btc, mut fed, mut chans) = setup().await;
    let cost = fedpegd::config::load_genesis(&fed.genesis_path())
        .unwrap()
        .pegin_spend_cost();
    let a = account(100);
    let addr = register(&fed, &chans, &a).await;
    // Member 0 turns Byzantine: every block it proposes mints a fake deposit.
    fed.members[0].kill();
    fed.members[0]
        .extra_env
        .push(("FEDPEG_TEST_ONLY_PROPOSE_FAKE_MINTS".into(), "1".into()));
    fed.members[0].spawn().unwrap();
    chans[0] = fed.members[0].connect().await.unwrap();
    let h0 = fed.members[1].status().await.unwrap().height;
    // The chain goes on (other proposers) and a real deposit is minted...
    btc.send_to(&addr, 30_000).unwrap();
    btc.mine(3).unwrap();
    wait_balance(&fed, &chans, &a, 30_000 - cost).await;
    // ...across several of member 0's turns, and the fake one never is.
    let h = fed.members[1].status().await.unwrap().height;
    fedpeg_tests::wait_height(&fed.members[1], h.max(h0 + 8), Duration::from_secs(30))
        .await
        .unwrap();
    for ch in &chans {
        assert_eq!(
            balance(ch, &a).await.unwrap(),
            30_000 - cost,
            "a fake mint got a quorum"
        );
    }
    assert!(fed.members[0].log().contains("test-only Byzantine"));
}

/// Measurement, not a check (run with `--ignored --nocapture`): time from
/// mining the block that brings a deposit to depth until the mint is final
/// on member 0, over 20 deposits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_pegin_latency_over_20_deposits() {
    let (btc, fed, chans) = setup().await;
    let cost = fedpegd::config::load_genesis(&fed.genesis_path())
        .unwrap()
        .pegin_spend_cost();
    let a = account(110);
    let addr = register(&fed, &chans, &a).await;
    let mut expected = 0;
    let mut ms = Vec::new();
    for i in 0..20u64 {
        let amount = 20_000 + i;
        btc.send_to(&addr, amount).unwrap();
        btc.mine(2).unwrap();
        let t0 = Instant::now();
        btc.mine(1).unwrap();
        expected += amount - cost;
        wait_balance(&fed, &chans[0..1], &a, expected).await;
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{{\"deposits\":{},\"depth_to_mint_p50_ms\":{:.0},\"p90_ms\":{:.0},\"max_ms\":{:.0}}}",
        ms.len(),
        ms[ms.len() / 2],
        ms[ms.len() * 9 / 10],
        ms[ms.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fee_rate_is_the_median_of_member_votes() {
    let (btc, mut fed, mut chans) = setup().await;
    let spec = fedpegd::config::load_genesis(&fed.genesis_path()).unwrap();
    let vbytes = spec.pegin_spend_vbytes();
    // Members vote 10, 20, 30 and 40 sat/vB: the agreed rate is the median, 20.
    let rates = [10u64, 20, 30, 40];
    for (i, rate) in rates.into_iter().enumerate() {
        let m = &mut fed.members[i];
        m.kill();
        let n = m.extra_args.len();
        m.extra_args[n - 1] = rate.to_string();
        m.spawn().unwrap();
        chans[i] = m.connect().await.unwrap();
    }
    // Every member's new vote recorded, then the rate: a partial set of
    // votes can have the same median (member 1's 20 alone), and a deposit
    // minted before the last vote lands pays the rate of that moment.
    wait_until(
        "every member's fee vote recorded",
        Duration::from_secs(30),
        || async {
            let latest = latest_fee_votes(&chans[0]).await.ok()?;
            (0..rates.len())
                .all(|i| latest.get(&(i as u32)) == Some(&rates[i]))
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", fed.logs()));
    let a = account(120);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut w = pb::wallet_service_client::WalletServiceClient::new(chans[0].clone());
    loop {
        if let Ok(r) = w
            .get_peg_in_address(pb::GetPegInAddressRequest {
                address: a.to_address("fprt"),
            })
            .await
        {
            if r.get_ref().min_deposit_sats == vbytes * 20 + 1 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "agreed fee rate never became 20\n{}",
            fed.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let addr = register(&fed, &chans, &a).await;
    btc.send_to(&addr, 50_000).unwrap();
    btc.mine(3).unwrap();
    wait_balance(&fed, &chans, &a, 50_000 - vbytes * 20).await;
}

/// Mean time between commits on member 0 over `span`.
async fn commit_interval(fed: &Federation, span: Duration) -> Duration {
    let h0 = fed.members[0].status().await.unwrap().height;
    let t0 = Instant::now();
    tokio::time::sleep(span).await;
    let h1 = fed.members[0].status().await.unwrap().height;
    t0.elapsed() / u32::try_from(h1.saturating_sub(h0).max(1)).unwrap_or(u32::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_deposit_address_requests_are_refused_or_absorbed_without_slowing_consensus() {
    let (_btc, fed, chans) = setup().await;
    // The member's watcher must be up before it answers peg calls.
    register(&fed, &chans, &account(200)).await;
    let baseline = commit_interval(&fed, Duration::from_secs(4)).await;

    let started = Instant::now();
    let flood = {
        let ch = chans[0].clone();
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for worker in 0..50u64 {
                let ch = ch.clone();
                tasks.spawn(async move {
                    let mut w = pb::wallet_service_client::WalletServiceClient::new(ch);
                    let (mut ok, mut busy) = (0u32, 0u32);
                    for i in 0..200u64 {
                        // A fresh random-looking account per call.
                        let seed = (worker * 200 + i).to_be_bytes();
                        let mut bytes = [7u8; 32];
                        bytes[..8].copy_from_slice(&seed);
                        let address =
                            AccountId(SigningKey::from_bytes(&bytes).verifying_key().to_bytes())
                                .to_address("fprt");
                        match w
                            .get_peg_in_address(pb::GetPegInAddressRequest { address })
                            .await
                        {
                            Ok(_) => ok += 1,
                            Err(e) if e.code() == tonic::Code::ResourceExhausted => busy += 1,
                            Err(e) => panic!("unexpected refusal: {e}"),
                        }
                    }
                    (ok, busy)
                });
            }
            let (mut ok, mut busy) = (0, 0);
            while let Some(r) = tasks.join_next().await {
                let (o, b) = r.unwrap();
                ok += o;
                busy += b;
            }
            (ok, busy)
        })
    };
    let during = commit_interval(&fed, Duration::from_secs(4)).await;
    let (ok, busy) = flood.await.unwrap();
    let took = started.elapsed();
    println!(
        "10,000 GetPegInAddress in {took:?}: {ok} registered, {busy} refused; commit interval {baseline:?} before, {during:?} during"
    );
    assert_eq!(ok + busy, 10_000);
    // One client (127.0.0.1): its burst plus its rate over the flood.
    let allowed =
        fedpeg_tests::REGISTRATIONS_PER_CLIENT_PER_SEC as f64 * (took.as_secs_f64() + 1.0);
    assert!(
        f64::from(ok) <= allowed,
        "{ok} registrations admitted, at most {allowed} expected"
    );
    assert!(
        during <= baseline * 2,
        "consensus slowed from {baseline:?} to {during:?} per block during the flood\n{}",
        fed.logs()
    );
    // The member still registers an honest user's address afterwards.
    tokio::time::sleep(Duration::from_secs(1)).await;
    register(&fed, &chans, &account(201)).await;
}

/// Gives `to` every block of `from`'s best chain (the testkit's nodes do
/// not listen for peers, so blocks are handed over by RPC).
fn relay_blocks(from: &Bitcoind, to: &Bitcoind) {
    use serde_json::{json, Value};
    let tip: u64 = from.rpc("getblockcount", &[]).unwrap();
    for h in 1..=tip {
        let hash: String = from.rpc("getblockhash", &[json!(h)]).unwrap();
        let hex: String = from.rpc("getblock", &[json!(hash), json!(0)]).unwrap();
        let _: Value = to.rpc("submitblock", &[json!(hex)]).unwrap();
    }
}

/// Relays `from`'s last `n` blocks to `to` (known ones are duplicates).
fn relay_tip(from: &Bitcoind, to: &Bitcoind, n: u64) {
    use serde_json::{json, Value};
    let tip: u64 = from.rpc("getblockcount", &[]).unwrap();
    for h in tip.saturating_sub(n - 1).max(1)..=tip {
        let hash: String = from.rpc("getblockhash", &[json!(h)]).unwrap();
        let hex: String = from.rpc("getblock", &[json!(hash), json!(0)]).unwrap();
        let _: Value = to.rpc("submitblock", &[json!(hex)]).unwrap();
    }
}

/// Points member `i` at its own bitcoind (RPC and block notifications).
async fn use_own_bitcoind(fed: &mut Federation, chans: &mut [Channel], i: usize, own: &Bitcoind) {
    let m = &mut fed.members[i];
    m.kill();
    for (flag, value) in [
        ("--bitcoin-rpc-url", own.rpc_url()),
        ("--bitcoin-zmq-block", own.zmq_block_url()),
    ] {
        let at = m.extra_args.iter().position(|a| a == flag).unwrap();
        m.extra_args[at + 1] = value;
    }
    m.spawn().unwrap();
    chans[i] = m.connect().await.unwrap();
}

/// Members run their own bitcoinds, and blocks reach two of them 300 ms
/// after the others (as between separate nodes on the Internet, only
/// slower). A proposer that sees a deposit reach its depth proposes the
/// mint at once; the late members do not refuse it for want of the block
/// but poll again and wait for their node's next block (within
/// timeout_propose), so every mint is decided in round 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_whose_bitcoind_gets_blocks_late_still_mint_in_round_zero() {
    let (btc, mut fed, mut chans) = setup().await;
    let late: Vec<Bitcoind> = (0..2)
        .map(|_| Bitcoind::start().unwrap_or_else(|e| panic!("bitcoind: {e}")))
        .collect();
    btc.mine(1).unwrap();
    for (i, own) in [2, 3].into_iter().zip(&late) {
        relay_blocks(&btc, own);
        use_own_bitcoind(&mut fed, &mut chans, i, own).await;
    }
    let a = account(140);
    let addr = register(&fed, &chans, &a).await;
    let cost = fedpegd::config::load_genesis(&fed.genesis_path())
        .unwrap()
        .pegin_spend_cost();
    let mut expected = 0;
    for k in 0..4u64 {
        let amount = 30_000 + k;
        btc.send_to(&addr, amount).unwrap();
        btc.mine(2).unwrap();
        for own in &late {
            relay_tip(&btc, own, 2);
        }
        // The block that brings the deposit to depth, late for members 2, 3.
        btc.mine(1).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        for own in &late {
            relay_tip(&btc, own, 1);
        }
        expected += amount - cost;
        wait_balance(&fed, &chans, &a, expected).await;
    }
    let minted = peg_ins(
        &chans[0],
        pb::get_peg_ins_request::Selector::Address(a.to_address("fprt")),
    )
    .await
    .unwrap();
    assert_eq!(minted.len(), 4);
    let mut explorer = pb::explorer_service_client::ExplorerServiceClient::new(chans[0].clone());
    for p in &minted {
        let h = p.minted_height;
        let b = explorer
            .list_blocks(pb::ListBlocksRequest {
                from_height: h,
                to_height: h,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let round = b.blocks[0].commit.as_ref().unwrap().round;
        let proposer = &b.blocks[0].proposer_name;
        assert_eq!(
            round,
            0,
            "the mint at height {h} (proposed by {proposer}) took round {round}\n{}",
            fed.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_own_bitcoind_hangs_does_not_stall_the_federation() {
    let (btc, mut fed, mut chans) = setup().await;
    // Member 3 follows its own bitcoind, fed with the shared node's chain.
    let own = Bitcoind::start().unwrap_or_else(|e| panic!("bitcoind: {e}"));
    btc.mine(1).unwrap();
    relay_blocks(&btc, &own);
    // Its block notifications come from its own node too, and hang with it.
    use_own_bitcoind(&mut fed, &mut chans, 3, &own).await;
    let a = account(130);
    let addr = register(&fed, &chans, &a).await;
    let baseline = commit_interval(&fed, Duration::from_secs(4)).await;

    // Member 3's bitcoind hangs (SIGSTOP): its RPCs neither answer nor fail.
    let pid = own.pid().unwrap();
    assert!(fedpeg_tests::signal(pid, "-STOP"));
    btc.send_to(&addr, 60_000).unwrap();
    btc.mine(3).unwrap();
    let cost = fedpegd::config::load_genesis(&fed.genesis_path())
        .unwrap()
        .pegin_spend_cost();
    let during = commit_interval(&fed, Duration::from_secs(4)).await;
    // The others mint without it (3 of 4 is a quorum).
    wait_balance(&fed, &chans[..3], &a, 60_000 - cost).await;
    let m3 = &mut fed.members[3];
    assert!(m3.is_running(), "member 3 exited\n{}", m3.log());
    let rss = fedpeg_tests::rss_bytes(m3.pid().unwrap()).unwrap();
    println!(
        "member 3's bitcoind hung: commit interval {baseline:?} before, {during:?} during; member 3 RSS {} MiB",
        rss >> 20
    );
    assert!(rss < 200 << 20, "member 3 uses {} MiB", rss >> 20);
    assert!(
        during <= baseline * 2,
        "consensus slowed from {baseline:?} to {during:?} per block\n{}",
        fed.logs()
    );
    // Its bitcoind back, member 3 follows the chain (the mint included).
    assert!(fedpeg_tests::signal(pid, "-CONT"));
    relay_blocks(&btc, &own);
    wait_balance(&fed, &chans[3..], &a, 60_000 - cost).await;
}

/// `fedpeg recover` with real processes: a deposit minted by a live
/// federation; `recover` finds it (accounts from a surviving node) and says
/// how many blocks remain; then the federation is gone, and two backup-key
/// holders sweep it one after the other (`--psbt-out`, `--psbt-in`) once
/// the timelock has passed, not a block before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_federation_is_gone_two_backup_holders_sweep_its_coins_with_fedpeg_recover() {
    let (btc, mut fed, chans) = setup().await;
    let spec = fedpegd::config::load_genesis(&fed.genesis_path()).unwrap();
    let cost = spec.pegin_spend_cost();
    let a = account(90);
    let addr = register(&fed, &chans, &a).await;
    btc.send_to(&addr, 1_000_000).unwrap();
    btc.mine(3).unwrap();
    wait_balance(&fed, &chans, &a, 1_000_000 - cost).await;

    let dir = fed.dir.path().to_path_buf();
    let (node_url, genesis) = (fed.members[0].url(), fed.genesis_path());
    let recover = |extra: &[&str]| {
        let mut c = std::process::Command::new(fedpeg_tests::bin("fedpeg"));
        c.env_remove("FEDPEG_NODE")
            .env_remove("FEDPEG_KEY")
            .current_dir(&dir)
            .arg("--json")
            .args(["--node", &node_url, "recover", "--genesis"])
            .arg(&genesis)
            .args(["--bitcoind-url", &btc.rpc_url()])
            .args([
                "--bitcoind-user",
                RPC_USER,
                "--bitcoind-password",
                RPC_PASSWORD,
            ])
            .args(extra);
        c.output().unwrap()
    };
    let said = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    // A deposit of another account still confirming (never minted: the
    // federation dies first) is found too, through the node's history of
    // registrations, not only its UTXOs.
    let b = account(151);
    let addr_b = register(&fed, &chans, &b).await;
    btc.send_to(&addr_b, 50_000).unwrap();
    btc.mine(1).unwrap();
    // While the federation lives: found through the node, not sweepable.
    let out = recover(&["--accounts-from-node"]);
    assert!(out.status.success(), "{}", said(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outputs = report["outputs"].as_array().unwrap();
    let amounts: std::collections::BTreeSet<u64> = outputs
        .iter()
        .map(|o| o["amount"].as_u64().unwrap())
        .collect();
    assert_eq!(amounts, [50_000, 1_000_000].into(), "{report}");
    assert!(
        said(&out).contains("account(s) registered on the node"),
        "{}",
        said(&out)
    );
    let minted = outputs.iter().find(|o| o["amount"] == 1_000_000).unwrap();
    let remaining = minted["blocks_remaining"].as_u64().unwrap();
    let csv = u64::from(fedpeg_tests::TEST_EMERGENCY_CSV_BLOCKS);
    assert_eq!(remaining, csv - 4, "confirmed 4 blocks ago: {report}");

    // The federation is gone; only the account list survives (a file).
    for m in fed.members.iter_mut() {
        m.kill();
    }
    std::fs::write(
        dir.join("accounts.txt"),
        format!("# known accounts\n{}\n", a.to_address("fprt")),
    )
    .unwrap();
    let dest = btc.new_address().unwrap().to_string();
    let sweep0 = [
        "--accounts",
        "accounts.txt",
        "--backup-key",
        "backup0.key",
        "--to",
        &dest,
        "--fee-rate",
        "2",
        "--psbt-out",
        "sweep.psbt",
    ];
    btc.mine(remaining - 1).unwrap();
    let out = recover(&sweep0);
    assert!(!out.status.success());
    // With --json the error is a JSON line on stdout, after the scan report.
    let err = said(&out);
    assert!(err.contains("first timelock opens in 1 block(s)"), "{err}");
    btc.mine(1).unwrap();
    let out = recover(&sweep0);
    assert!(out.status.success(), "{}", said(&out));
    // One signature of two: the second holder signs and broadcasts.
    // The second holder names the address it expects: a PSBT paying
    // anyone else is refused.
    let other = btc.new_address().unwrap().to_string();
    let out = recover(&[
        "--psbt-in",
        "sweep.psbt",
        "--backup-key",
        "backup2.key",
        "--to",
        &other,
    ]);
    assert!(!out.status.success());
    assert!(
        said(&out).contains("does not pay only the --to address"),
        "{}",
        said(&out)
    );
    let out = recover(&[
        "--psbt-in",
        "sweep.psbt",
        "--backup-key",
        "backup2.key",
        "--to",
        &dest,
    ]);
    assert!(out.status.success(), "{}", said(&out));
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let sent: serde_json::Value = serde_json::from_str(&last).unwrap();
    let txid = sent["txid"].as_str().unwrap().to_string();
    btc.mine(1).unwrap();
    let utxo: serde_json::Value = btc
        .rpc("gettxout", &[serde_json::json!(txid), serde_json::json!(0)])
        .unwrap();
    assert_eq!(utxo["scriptPubKey"]["address"], dest, "{utxo}");
    let got = fedpeg_peg::bitcoin::Amount::from_btc(utxo["value"].as_f64().unwrap()).unwrap();
    assert!(
        got.to_sat() > 1_000_000 - 2_000 && got.to_sat() < 1_000_000,
        "{got}"
    );
}
