//! Peg-out with a real `bitcoind -regtest` and four real member processes
//! (3-of-4): burns become batched Bitcoin transactions, threshold-signed,
//! broadcast, confirmed, and fee-bumped when stuck. After every step the
//! reserves must cover supply plus unpaid peg-outs.

use ed25519_dalek::SigningKey;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::amount::Sats;
use fedpeg_ledger::testing::sats;
use fedpeg_ledger::tx::{Transaction, TxKind};
use fedpeg_peg::bitcoin::{address::NetworkUnchecked, Address, Amount, Network, ScriptBuf};
use fedpeg_peg::testkit::{Bitcoind, RPC_PASSWORD, RPC_USER};
use fedpeg_proto::v1 as pb;
use fedpeg_tests::accounts::key;
use fedpeg_tests::{Federation, FAUCET_SATS};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

type Wallet = pb::wallet_service_client::WalletServiceClient<Channel>;

fn wallet(ch: &Channel) -> Wallet {
    Wallet::new(ch.clone())
}

/// Reserves cover supply + queued + in-batch peg-outs. The faucet's genesis
/// dev balance (regtest only) is the one thing no Bitcoin backs.
async fn check_reserves(ch: &Channel, fed: &Federation) -> pb::GetReservesResponse {
    let r = wallet(ch)
        .get_reserves(pb::GetReservesRequest {})
        .await
        .unwrap()
        .into_inner();
    let backed_supply = r.supply.saturating_sub(FAUCET_SATS);
    assert!(
        r.available + r.locked >= backed_supply + r.queued + r.in_batches,
        "reserves do not cover supply + peg-outs: {r:?}\n{}",
        fed.logs()
    );
    r
}

struct Setup {
    btc: Bitcoind,
    fed: Federation,
    chans: Vec<Channel>,
    chain_id: fedpeg_ledger::hash::Hash32,
    /// Bitcoin confirmations of a peg-in (and of a batch).
    depth: u64,
}

async fn setup(genesis: &[&str], bad_signer: Option<usize>) -> Setup {
    setup_on(
        Bitcoind::start().unwrap_or_else(|e| panic!("bitcoind: {e}")),
        genesis,
        bad_signer,
    )
    .await
}

/// A federation of 4 on `btc`; `--pegin-confirmations 2` unless `genesis`
/// says otherwise.
async fn setup_on(btc: Bitcoind, genesis: &[&str], bad_signer: Option<usize>) -> Setup {
    let member_args = fedpeg_tests::member_bitcoind_args(&btc.rpc_url(), RPC_USER, RPC_PASSWORD);
    let depth = match genesis.iter().position(|a| *a == "--pegin-confirmations") {
        Some(i) => genesis[i + 1].parse().unwrap(),
        None => 2,
    };
    let mut g: Vec<String> = vec![];
    if !genesis.contains(&"--pegin-confirmations") {
        g.extend(["--pegin-confirmations".into(), "2".into()]);
    }
    g.extend(genesis.iter().map(|s| s.to_string()));
    let mut fed = Federation::start_with(4, false, 500, &g, &member_args).unwrap();
    if let Some(i) = bad_signer {
        let m = &mut fed.members[i];
        m.kill();
        m.extra_env
            .push(("FEDPEG_TEST_ONLY_BAD_PEGOUT_SIGS".into(), "1".into()));
        m.spawn().unwrap();
    }
    let mut chans = Vec::new();
    for m in &fed.members {
        chans.push(m.connect().await.unwrap());
    }
    let chain_id = fedpeg_tests::chain_id(&chans[0]).await.unwrap();
    Setup {
        btc,
        fed,
        chans,
        chain_id,
        depth,
    }
}

impl Setup {
    /// Pegs in `deposits` separate outputs of `sats` to `key`'s account.
    async fn fund(&self, key: &SigningKey, deposits: usize, sats: u64) {
        let a = AccountId(key.verifying_key().to_bytes());
        let addr = self.deposit_address(key).await;
        let before = self.balance(&a).await;
        for _ in 0..deposits {
            self.btc.send_to(&addr, sats).unwrap();
        }
        self.btc.mine(self.depth).unwrap();
        // Each deposit is credited minus its spend cost at 10 sat/vB: the
        // descriptor's normal-branch weight (3-of-4 with the 2-of-3
        // emergency branch of test genesis: 160 vB; 132 before the branch).
        let spec = fedpegd::config::load_genesis(&self.fed.genesis_path()).unwrap();
        let vbytes = spec.pegin_spend_vbytes();
        assert_eq!(vbytes, 160, "3-of-4 with a 2-of-3 emergency branch");
        let want = before + deposits as u64 * (sats - vbytes * 10);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.balance(&a).await == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "deposits not minted\n{}",
                self.fed.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        check_reserves(&self.chans[0], &self.fed).await;
    }

    async fn balance(&self, a: &AccountId) -> u64 {
        wallet(&self.chans[0])
            .get_account(pb::GetAccountRequest {
                address: a.to_address("fprt"),
            })
            .await
            .unwrap()
            .into_inner()
            .balance
    }

    /// Signs and submits a peg-out with the quoted fee; returns its txid.
    async fn pegout(&self, key: &SigningKey, nonce: u64, to: &str, amount: u64) -> String {
        let quote = wallet(&self.chans[0])
            .estimate_peg_out_fee(pb::EstimatePegOutFeeRequest {
                bitcoin_address: to.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let tx = Transaction::sign(
            self.chain_id,
            key,
            nonce,
            sats(quote.fee),
            TxKind::PegOut {
                bitcoin_address: to.into(),
                amount: sats(amount),
            },
        );
        wallet(&self.chans[0])
            .submit_transaction(pb::SubmitTransactionRequest {
                transaction: tx.encode(),
            })
            .await
            .unwrap()
            .into_inner()
            .txid
    }

    async fn status(&self, txid: &str) -> Option<pb::PegOutInfo> {
        match wallet(&self.chans[0])
            .get_peg_out(pb::GetPegOutRequest {
                selector: Some(pb::get_peg_out_request::Selector::Txid(txid.into())),
            })
            .await
        {
            Ok(r) => r.into_inner().peg_out,
            Err(e) if e.code() == tonic::Code::NotFound => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// Waits until the peg-out reaches `state` (or later); returns its info.
    async fn wait_state(&self, txid: &str, state: pb::PegOutState, secs: u64) -> pb::PegOutInfo {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(p) = self.status(txid).await {
                if p.state >= state as i32 {
                    return p;
                }
            }
            assert!(
                Instant::now() < deadline,
                "peg-out {txid} not {state:?}: {:?}\n{}",
                self.status(txid).await,
                self.fed.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The Bitcoin transaction `txid` as bitcoind decodes it, once bitcoind
    /// has it (mempool or block).
    async fn bitcoin_tx(&self, txid: &str) -> Value {
        let t0 = Instant::now();
        loop {
            if let Ok(v) = self
                .btc
                .rpc::<Value>("getrawtransaction", &[json!(txid), json!(true)])
            {
                return v;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{txid} never reached bitcoind\n{}",
                self.fed.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One address of each type the peg pays, from bitcoind's wallet (P2WSH
/// made from a script: wallets do not hand those out).
fn addresses(btc: &Bitcoind, n: usize) -> Vec<String> {
    let kinds = ["legacy", "p2sh-segwit", "bech32", "bech32m"];
    (0..n)
        .map(|i| {
            if i % 5 == 4 {
                Address::p2wsh(
                    &ScriptBuf::from_bytes(vec![0x51, 0x01, i as u8, 0x75]),
                    Network::Regtest,
                )
                .to_string()
            } else {
                btc.wallet_rpc::<String>("getnewaddress", &[json!(""), json!(kinds[i % 5])])
                    .unwrap()
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_pegouts_of_every_address_type_are_paid_by_one_transaction() {
    let s = setup(&["--pegout-batch-interval-ms", "4000"], None).await;
    let alice = key(7);
    s.fund(&alice, 1, 10_000_000).await;
    let to = addresses(&s.btc, 50);
    let mut txids = Vec::new();
    for (i, a) in to.iter().enumerate() {
        txids.push(s.pegout(&alice, i as u64, a, 10_000 + i as u64).await);
    }
    // All queued within the interval: one batch, signed and broadcast.
    let mut batch = None;
    for t in &txids {
        let p = s.wait_state(t, pb::PegOutState::Broadcast, 60).await;
        assert!(
            batch.is_none() || batch == Some(p.batch),
            "peg-outs split over batches"
        );
        batch = Some(p.batch);
        assert_eq!(p.signatures_required, 3);
        assert!(p.signatures >= 3);
    }
    let r = check_reserves(&s.chans[0], &s.fed).await;
    assert_eq!(r.in_batches, (0..50).map(|i| 10_000 + i).sum::<u64>());
    let p = s.status(&txids[0]).await.unwrap();
    let tx = s.bitcoin_tx(&p.bitcoin_txid).await;
    let vouts = tx["vout"].as_array().unwrap();
    assert_eq!(vouts.len(), 51, "50 peg-outs + change");
    for (i, t) in txids.iter().enumerate() {
        let p = s.status(t).await.unwrap();
        let out = &vouts[p.vout as usize];
        assert_eq!(
            out["scriptPubKey"]["address"].as_str(),
            Some(to[i].as_str())
        );
        assert_eq!(
            Amount::from_btc(out["value"].as_f64().unwrap())
                .unwrap()
                .to_sat(),
            10_000 + i as u64
        );
    }
    let vsize = tx["vsize"].as_u64().unwrap();
    println!(
        "batch of 50 (3-of-4, mixed address types): {vsize} vB, {:.1} vB per peg-out",
        vsize as f64 / 50.0
    );
    // Fee maths against bitcoind: the weight the fee was computed from (the
    // descriptor's planned normal-branch spend per input) bounds the real,
    // signed transaction and is off only by signatures shorter than 72 bytes.
    let spec = fedpegd::config::load_genesis(&s.fed.genesis_path()).unwrap();
    let peg = spec.peg_federation().unwrap();
    assert!(
        peg.emergency().is_some(),
        "test genesis has the emergency branch"
    );
    let raw: fedpeg_peg::bitcoin::Transaction =
        fedpeg_peg::bitcoin::consensus::encode::deserialize_hex(tx["hex"].as_str().unwrap())
            .unwrap();
    let out_bytes: u64 = raw
        .output
        .iter()
        .map(|o| fedpeg_peg::pegout::output_bytes(&o.script_pubkey))
        .sum();
    let est = peg.batch_weight(raw.input.len(), raw.output.len(), out_bytes);
    let real = tx["weight"].as_u64().unwrap();
    assert!(real <= est.to_wu(), "real {real} WU > estimate {est}");
    let slack = 2 * 3 * raw.input.len() as u64;
    assert!(
        est.to_wu() - real <= slack,
        "estimate {est} far above real {real} WU"
    );
    for input in &raw.input {
        assert_eq!(
            input.witness.len(),
            5,
            "dummy, 3 signatures, script: the members' branch"
        );
    }
    // Confirmed at depth: every peg-out is final, change is spendable.
    s.btc.mine(2).unwrap();
    for t in &txids {
        s.wait_state(t, pb::PegOutState::Confirmed, 60).await;
    }
    let r = check_reserves(&s.chans[0], &s.fed).await;
    assert_eq!(r.in_batches + r.queued + r.locked, 0);
    assert!(r.utxos.iter().any(|u| u.kind == "change"));
    // Every member agrees.
    for ch in &s.chans {
        let r2 = check_reserves(ch, &s.fed).await;
        assert_eq!((r2.available, r2.supply), (r.available, r.supply));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_burned() {
    let s = setup(&[], None).await;
    let alice = key(9);
    s.fund(&alice, 1, 1_000_000).await;
    let a = AccountId(alice.verifying_key().to_bytes());
    let before = s.balance(&a).await;
    let good = s.btc.new_address().unwrap().to_string();
    let mut w = wallet(&s.chans[0]);
    for (addr, what) in [
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "mainnet"),
        ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "testnet"),
        ("not-an-address", "malformed"),
        ("", "empty"),
    ] {
        let e = w
            .estimate_peg_out_fee(pb::EstimatePegOutFeeRequest {
                bitcoin_address: addr.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e}");
    }
    let submit = |tx: Transaction| {
        let mut w = wallet(&s.chans[0]);
        async move {
            w.submit_transaction(pb::SubmitTransactionRequest {
                transaction: tx.encode(),
            })
            .await
            .unwrap_err()
        }
    };
    let po = |to: &str, amount: u64, fee: u64| {
        Transaction::sign(
            s.chain_id,
            &alice,
            0,
            sats(fee),
            TxKind::PegOut {
                bitcoin_address: to.into(),
                amount: sats(amount),
            },
        )
    };
    for (tx, needle) in [
        (
            po("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", 10_000, 1000),
            "regtest",
        ),
        (po("garbage", 10_000, 1000), "not a Bitcoin address"),
        (po(&good, 545, 1000), "dust"),
        (po(&good, before, 1000), "insufficient balance"),
        (po(&good, Sats::MAX.to_sat() - 10, 1000), "overflow"),
        (po(&good, 10_000, 999), "quote"),
    ] {
        let e = submit(tx).await;
        assert!(
            matches!(
                e.code(),
                tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
            ),
            "{e}"
        );
        assert!(e.message().contains(needle), "{needle}: {e}");
    }
    // Unknown ids and malformed txids.
    let e = w
        .get_peg_out(pb::GetPegOutRequest {
            selector: Some(pb::get_peg_out_request::Selector::WithdrawalId(99)),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = w
        .get_peg_out(pb::GetPegOutRequest {
            selector: Some(pb::get_peg_out_request::Selector::Txid("zz".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = w
        .get_peg_out(pb::GetPegOutRequest { selector: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Nothing burned.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.balance(&a).await, before);
    let r = check_reserves(&s.chans[0], &s.fed).await;
    assert_eq!(r.queued + r.in_batches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signer_and_offline_member_do_not_stop_batches_and_a_stuck_batch_is_replaced() {
    // Member 3 signs with a wrong key: state refuses its signatures, the
    // other three complete every batch.
    let mut s = setup(&["--pegout-bump-after-blocks", "2"], Some(3)).await;
    let bob = key(11);
    s.fund(&bob, 10, 200_000).await;
    let to = addresses(&s.btc, 8);
    // Burn final → broadcast latency, one peg-out at a time.
    let mut latencies = Vec::new();
    let mut txids = Vec::new();
    for (i, a) in to.iter().enumerate() {
        let txid = s.pegout(&bob, i as u64, a, 20_000).await;
        fedpeg_tests::wait_final(&s.chans[0], &txid, Duration::from_secs(20))
            .await
            .unwrap();
        let t0 = Instant::now();
        let p = s.wait_state(&txid, pb::PegOutState::Broadcast, 30).await;
        // Broadcast means in bitcoind's mempool (or a block).
        s.bitcoin_tx(&p.bitcoin_txid).await;
        latencies.push(t0.elapsed());
        check_reserves(&s.chans[0], &s.fed).await;
        txids.push(txid);
    }
    latencies.sort();
    println!(
        "burn final -> in bitcoind's mempool: p50 {:?}, max {:?} ({} peg-outs, debug build)",
        latencies[latencies.len() / 2],
        latencies.last().unwrap(),
        latencies.len()
    );
    assert!(s.fed.members[3]
        .log()
        .contains("FEDPEG_TEST_ONLY_BAD_PEGOUT_SIGS"));
    // Honest members refuse the bad signatures on arrival: they never
    // reach a proposer's pool.
    for i in [0, 1, 2] {
        let log = s.fed.members[i].log();
        assert!(
            log.contains("refused peg-out signatures from a member") && log.contains("member=3"),
            "member {i} did not refuse member 3's signatures:\n{log}"
        );
    }
    s.btc.mine(2).unwrap();
    for t in &txids {
        let p = s.wait_state(t, pb::PegOutState::Confirmed, 60).await;
        // Member 3 signed every batch too, long before it confirmed, but
        // state refused its signatures: only the three honest ones count.
        assert_eq!(p.signatures, 3, "{p:?}");
    }
    check_reserves(&s.chans[0], &s.fed).await;

    // n - m = 1 member offline (the honest member 2; member 3 turns honest).
    s.fed.members[2].kill();
    {
        let m = &mut s.fed.members[3];
        m.kill();
        m.extra_env.clear();
        m.spawn().unwrap();
    }
    let to = addresses(&s.btc, 1);
    let txid = s.pegout(&bob, 8, &to[0], 30_000).await;
    let p = s.wait_state(&txid, pb::PegOutState::Broadcast, 60).await;
    let v0 = p.bitcoin_txid.clone();
    assert_eq!(p.batch_version, 0);
    let old = s.bitcoin_tx(&v0).await;
    // Keep it out of blocks: mine blocks that list no transactions.
    let addr = s.btc.mining_address().to_string();
    for _ in 0..2 {
        s.btc
            .rpc::<Value>("generateblock", &[json!(addr), json!([])])
            .unwrap();
    }
    // Members vote to bump; the replacement spends the same inputs at a
    // higher rate and is broadcast.
    let deadline = Instant::now() + Duration::from_secs(60);
    let p1 = loop {
        let p = s.status(&txid).await.unwrap();
        if p.batch_version >= 1 && p.state >= pb::PegOutState::Broadcast as i32 {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no replacement: {p:?}\n{}",
            s.fed.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(p1.fee_rate_sat_vb > p.fee_rate_sat_vb);
    assert_ne!(p1.bitcoin_txid, v0);
    let new = s.bitcoin_tx(&p1.bitcoin_txid).await;
    let inputs = |t: &Value| -> Vec<(String, u64)> {
        t["vin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["txid"].as_str().unwrap().to_string(),
                    i["vout"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        inputs(&old),
        inputs(&new),
        "replacement must spend the same inputs"
    );
    s.btc.mine(2).unwrap();
    let done = s.wait_state(&txid, pb::PegOutState::Confirmed, 60).await;
    assert_eq!(
        done.bitcoin_txid, p1.bitcoin_txid,
        "state follows the version that confirmed"
    );
    let mempool: Vec<String> = s.btc.rpc("getrawmempool", &[]).unwrap();
    assert!(!mempool.contains(&v0));
    check_reserves(&s.chans[0], &s.fed).await;

    // The explorer feed tells the replaced batch's story to bob's filter:
    // formed, signatures, fully signed, replaced, signed again, confirmed
    // (the replacement's txid).
    let bob_addr = AccountId(bob.verifying_key().to_bytes()).to_address("fprt");
    let mut feed = pb::explorer_service_client::ExplorerServiceClient::new(s.chans[0].clone())
        .subscribe_events(pb::SubscribeEventsRequest {
            from_height: Some(0),
            from_index: 0,
            accounts: vec![bob_addr.clone()],
            kinds: vec![pb::EventKind::PegOutStateChanged as i32],
        })
        .await
        .unwrap()
        .into_inner();
    let mut story = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), feed.message())
            .await
            .expect("feed stalled")
            .unwrap()
            .unwrap();
        let Some(pb::chain_event::Event::PegOutStateChanged(c)) = e.event else {
            panic!("filter let through {e:?}");
        };
        assert!(c.accounts.contains(&bob_addr), "{c:?}");
        if c.batch != p.batch {
            continue;
        }
        assert_eq!(c.withdrawal_ids, vec![done.withdrawal_id]);
        let state = pb::PegOutState::try_from(c.state).unwrap();
        story.push((state, c.batch_version, c.bitcoin_txid.clone()));
        if state == pb::PegOutState::Confirmed {
            break;
        }
    }
    use pb::PegOutState::*;
    assert_eq!(story[0], (Signing, 0, v0.clone()), "{story:?}");
    for (_, version, txid) in &story {
        let want = if *txid == v0 { 0 } else { p1.batch_version };
        assert_eq!(*version, want, "{story:?}");
    }
    let at = |st: pb::PegOutState, txid: &str| {
        story
            .iter()
            .position(|(s, _, t)| *s == st && t == txid)
            .unwrap_or_else(|| panic!("no {st:?} of {txid}: {story:?}"))
    };
    let replaced = at(Replaced, &p1.bitcoin_txid);
    assert!(at(Broadcast, &v0) < replaced);
    assert!(replaced < at(Broadcast, &p1.bitcoin_txid));
    assert_eq!(
        story.last().unwrap(),
        &(Confirmed, p1.batch_version, p1.bitcoin_txid.clone())
    );

    // ListPegOuts: nothing of bob's pending, his nine peg-outs recently paid.
    let list = pb::federation_service_client::FederationServiceClient::new(s.chans[0].clone())
        .list_peg_outs(pb::ListPegOutsRequest {
            address: bob_addr,
            limit: 100,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.pending.is_empty(), "{:?}", list.pending);
    assert_eq!(list.recent.len(), 9);
    assert_eq!(
        list.recent[0].withdrawal_id, done.withdrawal_id,
        "newest first"
    );
    assert!(list
        .recent
        .iter()
        .all(|r| r.state == pb::PegOutState::Confirmed as i32 && r.signatures == 3));

    // Metrics of a member that saw every burn: burn → signed and burn →
    // confirmed latencies, and the confirmed count.
    let page = s.fed.members[0].metrics().unwrap();
    // Every fedpeg metric the operator alert rules and the dashboard read
    // is one this member really exports.
    let monitoring = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring");
    let rules = std::fs::read_to_string(monitoring.join("fedpeg-alerts.yml")).unwrap();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring.join("fedpeg-dashboard.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 14, "{exprs:?}");
    for (what, text) in [("alert rules", rules), ("dashboard", exprs.join("\n"))] {
        let used: std::collections::BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("fedpeg_"))
            .collect();
        assert!(used.len() >= 8, "{what}: {used:?}");
        for name in used {
            assert!(
                page.lines().any(|l| l
                    .strip_prefix(name)
                    .is_some_and(|r| r.starts_with([' ', '{']))),
                "the {what} read {name}, which the node does not export:\n{page}"
            );
        }
    }
    let value = |name: &str| -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{page}"))
    };
    assert_eq!(value("fedpeg_pegouts_confirmed_total "), 9.0);
    assert_eq!(value("fedpeg_pegout_latency_seconds_count "), 9.0);
    assert!(value("fedpeg_pegout_signed_latency_seconds_count ") >= 9.0);
    println!(
        "metrics: burn -> fully signed mean {:.3} s over {} signings",
        value("fedpeg_pegout_signed_latency_seconds_sum ")
            / value("fedpeg_pegout_signed_latency_seconds_count "),
        value("fedpeg_pegout_signed_latency_seconds_count ")
    );
}

/// With the default depth (6) and bump delay (3 blocks), a batch mined in
/// the next block is not replaced while it gets deep: exactly one version,
/// no replacement vote. (Before, every member voted to bump it 3 blocks
/// after broadcast while it was already mined, and it was REPLACED.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pegouts_confirm_in_one_version_with_default_depth_and_bump_delay() {
    let s = setup(
        &[
            "--pegin-confirmations",
            "6",
            "--pegout-batch-interval-ms",
            "3000",
        ],
        None,
    )
    .await;
    assert_eq!(s.depth, 6);
    let bob = key(12);
    s.fund(&bob, 2, 1_500_000).await;
    let to = addresses(&s.btc, 20);
    let mut txids = Vec::new();
    for (i, a) in to.iter().enumerate() {
        txids.push(s.pegout(&bob, i as u64, a, 20_000).await);
    }
    let mut first: Option<pb::PegOutInfo> = None;
    for t in &txids {
        let p = s.wait_state(t, pb::PegOutState::Broadcast, 60).await;
        if let Some(f) = &first {
            assert_eq!((p.batch, &p.bitcoin_txid), (f.batch, &f.bitcoin_txid));
        } else {
            first = Some(p);
        }
    }
    let first = first.unwrap();
    s.bitcoin_tx(&first.bitcoin_txid).await;
    // One block at a time, each seen by every member (they poll every
    // 500 ms): the batch is in the first, then it gets deep.
    for _ in 0..s.depth {
        s.btc.mine(1).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    for t in &txids {
        let p = s.wait_state(t, pb::PegOutState::Confirmed, 60).await;
        assert_eq!(p.batch_version, 0, "{p:?}");
        assert_eq!(p.bitcoin_txid, first.bitcoin_txid);
    }
    for m in &s.fed.members {
        let log = m.log();
        assert!(
            !log.contains("voting to replace it at a higher fee"),
            "{} voted to replace a mined batch:\n{log}",
            m.name
        );
    }
    check_reserves(&s.chans[0], &s.fed).await;
}

/// Every member's bitcoind is pruned (`-prune=550`) and has no
/// `-txindex`: peg-in, peg-out, confirmation and a restart of the whole
/// federation all work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_on_a_pruned_bitcoind_without_txindex_pegs_in_and_out_across_a_restart() {
    let btc = Bitcoind::start_pruned().unwrap_or_else(|e| panic!("bitcoind: {e}"));
    let info: Value = btc.rpc("getblockchaininfo", &[]).unwrap();
    assert_eq!(info["pruned"], json!(true), "{info}");
    let indexes: Value = btc.rpc("getindexinfo", &[]).unwrap();
    assert!(indexes.get("txindex").is_none(), "{indexes}");
    let mut s = setup_on(btc, &[], None).await;
    for m in &s.fed.members {
        let log = m.log();
        assert!(
            log.contains("bitcoind checked") && log.contains("pruned=true"),
            "{}:\n{log}",
            m.name
        );
    }
    let carol = key(13);
    let to = addresses(&s.btc, 2);
    for round in 0..2u64 {
        s.fund(&carol, 1, 400_000).await;
        let t = s.pegout(&carol, round, &to[round as usize], 50_000).await;
        let p = s.wait_state(&t, pb::PegOutState::Broadcast, 60).await;
        s.bitcoin_tx(&p.bitcoin_txid).await;
        s.btc.mine(s.depth).unwrap();
        let p = s.wait_state(&t, pb::PegOutState::Confirmed, 60).await;
        let paid: Value = s
            .btc
            .rpc("gettxout", &[json!(p.bitcoin_txid), json!(p.vout)])
            .unwrap();
        assert_eq!(
            paid["scriptPubKey"]["address"],
            json!(to[round as usize]),
            "{paid}"
        );
        check_reserves(&s.chans[0], &s.fed).await;
        if round == 0 {
            // The whole federation restarts (a crash, not a clean stop).
            for m in s.fed.members.iter_mut() {
                m.kill();
            }
            for m in s.fed.members.iter_mut() {
                m.spawn().unwrap();
            }
            for (i, m) in s.fed.members.iter().enumerate() {
                s.chans[i] = m.connect().await.unwrap();
            }
        }
    }
}

/// Measurement, not a check (run with `--ignored --nocapture`): time from
/// a peg-out's burn being final on member 0 until its batch is in
/// bitcoind's mempool, over 20 peg-outs, one batch each. Both ends are
/// polled every 2 ms, so each sample is within a few ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_pegout_latency_over_20_pegouts() {
    let s = setup(&[], None).await;
    let bob = key(13);
    // Enough deposits that the fee pool (their spend costs) pays 20 batches
    // (two rounds: bitcoind's wallet chains at most 25 unconfirmed sends).
    s.fund(&bob, 15, 100_000).await;
    s.fund(&bob, 15, 100_000).await;
    let to = addresses(&s.btc, 20);
    let (mut from_final, mut from_submit, mut signed) = (Vec::new(), Vec::new(), Vec::new());
    for (i, a) in to.iter().enumerate() {
        let pool = |s: &Setup| s.btc.rpc::<Vec<String>>("getrawmempool", &[]).unwrap();
        assert!(pool(&s).is_empty());
        let t_submit = Instant::now();
        let txid = s.pegout(&bob, i as u64, a, 20_000).await;
        let (mut t_final, mut t_signed) = (None, None);
        loop {
            let st = s.status(&txid).await;
            if t_final.is_none() && st.is_some() {
                t_final = Some(Instant::now());
            }
            if t_signed.is_none()
                && st.is_some_and(|p| p.state >= pb::PegOutState::Broadcast as i32)
            {
                t_signed = Some(Instant::now());
            }
            if t_final.is_some() && !pool(&s).is_empty() {
                break;
            }
            assert!(
                t_submit.elapsed() < Duration::from_secs(30),
                "peg-out {i} not in the mempool: {:?}\n{}",
                s.status(&txid).await,
                s.fed.logs()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let t_final = t_final.unwrap();
        signed.push(t_signed.map_or(f64::NAN, |t| (t - t_final).as_secs_f64() * 1000.0));
        from_final.push(t_final.elapsed().as_secs_f64() * 1000.0);
        from_submit.push(t_submit.elapsed().as_secs_f64() * 1000.0);
        // Confirmed, so its change can pay the next batch.
        s.btc.mine(s.depth).unwrap();
        s.wait_state(&txid, pb::PegOutState::Confirmed, 60).await;
    }
    for v in [&mut from_final, &mut from_submit, &mut signed] {
        v.sort_by(f64::total_cmp);
    }
    let n = from_final.len();
    println!(
        "{{\"pegouts\":{n},\"final_to_mempool_p50_ms\":{:.0},\"p90_ms\":{:.0},\"max_ms\":{:.0},\"submit_to_mempool_p50_ms\":{:.0},\"final_to_fully_signed_in_state_p50_ms\":{:.0}}}",
        from_final[n / 2],
        from_final[n * 9 / 10],
        from_final[n - 1],
        from_submit[n / 2],
        signed[n / 2],
    );
    check_reserves(&s.chans[0], &s.fed).await;
}

/// The federation as member `ch` shows it.
async fn federation(ch: &Channel) -> pb::GetFederationResponse {
    pb::federation_service_client::FederationServiceClient::new(ch.clone())
        .get_federation(pb::GetFederationRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// `fedpeg federation <args>` run by the operator of `node` (its admin
/// token); the output, or the error output if it failed.
fn federation_cli(node: &fedpeg_tests::NodeProc, args: &[&str]) -> (bool, String) {
    let out = fedpeg_tests::run_any(
        std::process::Command::new(fedpeg_tests::bin("fedpeg"))
            .arg("--node")
            .arg(node.url())
            .arg("federation")
            .args(args)
            .arg("--admin-token")
            .arg(node.data_dir.join("admin.token")),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

impl Setup {
    /// Member `proposer` proposes a change (`edits`: `fedpeg federation
    /// propose` flags), `approvers` approve it; returns the activation
    /// height once it is adopted.
    async fn change_federation(&self, nodes: &[&fedpeg_tests::NodeProc], edits: &[&str]) -> u64 {
        let epochs_before = federation(&self.chans[0]).await.epochs.len();
        let mut args = vec!["propose"];
        args.extend_from_slice(edits);
        let (ok, out) = federation_cli(nodes[0], &args);
        assert!(ok, "propose: {out}\n{}", self.fed.logs());
        let id = fedpeg_tests::wait::wait_until(
            "the proposal is pending",
            Duration::from_secs(30),
            || async {
                federation(&self.chans[0])
                    .await
                    .pending_changes
                    .first()
                    .map(|p| p.change_id.clone())
            },
        )
        .await
        .unwrap();
        for n in &nodes[1..] {
            let (ok, out) = federation_cli(n, &["approve", &id]);
            assert!(ok, "approve on {}: {out}", n.name);
        }
        let f = fedpeg_tests::wait::wait_until(
            "the change is adopted",
            Duration::from_secs(30),
            || async {
                let f = federation(&self.chans[0]).await;
                (f.epochs.len() > epochs_before).then_some(f)
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.fed.logs()));
        assert!(f.pending_changes.is_empty(), "{f:?}");
        f.epochs.last().unwrap().activation_height
    }

    /// `key`'s deposit address (registered) under the descriptor in force.
    async fn deposit_address(&self, key: &SigningKey) -> Address {
        self.peg_in_address(key).await.0
    }

    /// [`Self::deposit_address`] with the least deposit minted there (one
    /// more than what spending it costs).
    async fn peg_in_address(&self, key: &SigningKey) -> (Address, u64) {
        let a = AccountId(key.verifying_key().to_bytes());
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            match wallet(&self.chans[0])
                .get_peg_in_address(pb::GetPegInAddressRequest {
                    address: a.to_address("fprt"),
                })
                .await
            {
                Ok(r) if r.get_ref().registered => break r.into_inner(),
                Ok(_) => {}
                Err(e) if e.code() == tonic::Code::Unavailable => {}
                Err(e) => panic!("{e}"),
            }
            assert!(
                Instant::now() < deadline,
                "no registration\n{}",
                self.fed.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let address = addr
            .deposit_address
            .parse::<Address<NetworkUnchecked>>()
            .unwrap()
            .require_network(Network::Regtest)
            .unwrap();
        (address, addr.min_deposit_sats)
    }

    /// Waits until `key`'s account has at least `sats`.
    async fn wait_balance(&self, key: &SigningKey, sats: u64) -> u64 {
        let a = AccountId(key.verifying_key().to_bytes());
        fedpeg_tests::wait::wait_until("the deposit is minted", Duration::from_secs(60), || async {
            let b = self.balance(&a).await;
            (b >= sats).then_some(b)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.fed.logs()))
    }

    /// One deposit of `sats` to `key`'s address under the descriptor in
    /// force, credited minus what spending it costs there.
    async fn fund_current(&self, key: &SigningKey, sats: u64) {
        let a = AccountId(key.verifying_key().to_bytes());
        let (addr, min_deposit) = self.peg_in_address(key).await;
        let cost = min_deposit - 1;
        let before = self.balance(&a).await;
        self.btc.send_to(&addr, sats).unwrap();
        self.btc.mine(self.depth).unwrap();
        let after = self.wait_balance(key, before + 1).await;
        assert_eq!(after, before + sats - cost, "credited minus the spend cost");
        check_reserves(&self.chans[0], &self.fed).await;
    }

    /// Mines until every federation coin pays the descriptor of `epoch`
    /// (the sweep of older ones confirmed) and no batch is in flight.
    async fn wait_swept(&self, epoch: u32) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = wallet(&self.chans[0])
                .get_reserves(pb::GetReservesRequest {})
                .await
                .unwrap()
                .into_inner();
            if !r.utxos.is_empty()
                && r.utxos.iter().all(|u| u.epoch == epoch)
                && r.in_batches == 0
                && r.locked == 0
            {
                check_reserves(&self.chans[0], &self.fed).await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "coins not swept to epoch {epoch}: {r:?}\n{}",
                self.fed.logs()
            );
            self.btc.mine(1).unwrap();
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }

    /// One peg-out of `amount` by `key` (nonce `nonce`), paid and confirmed.
    async fn pegout_confirmed(&self, key: &SigningKey, nonce: u64, amount: u64) {
        let to = addresses(&self.btc, 1).remove(0);
        let txid = self.pegout(key, nonce, &to, amount).await;
        let p = self.wait_state(&txid, pb::PegOutState::Broadcast, 60).await;
        self.bitcoin_tx(&p.bitcoin_txid).await;
        self.btc.mine(self.depth).unwrap();
        self.wait_state(&txid, pb::PegOutState::Confirmed, 60).await;
        check_reserves(&self.chans[0], &self.fed).await;
    }
}

/// Member-set changes through consensus (issue #17): four members add a
/// fifth, remove one, then rotate one member's peg key. Each change is
/// proposed and approved by a quorum of the members in force with `fedpeg
/// federation`, and takes effect at its activation height without a
/// restart: the new member, started before it with genesis and its own key,
/// syncs, then signs certificates; the removed member keeps following as an
/// observer. Each epoch has its own peg descriptor: new deposits pay it, a
/// deposit to the previous one's address during the grace period is still
/// credited, the old coins are swept to the new descriptor by an ordinary
/// batch, and peg-outs are paid from the new descriptor (signed by members
/// at their new indices). Transfers work throughout, reserves cover
/// supply after each step, observers follow (one started late syncs from
/// genesis), and every node holds the same chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_federation_adds_a_member_removes_one_and_rotates_a_peg_key_while_pegging_in_and_out() {
    let s = setup(&[], None).await;
    let member_args = fedpeg_tests::member_bitcoind_args(&s.btc.rpc_url(), RPC_USER, RPC_PASSWORD);
    let mut observer = s.fed.new_node("observer", false, &[]).unwrap();
    observer.spawn().unwrap();
    let mut m4 = s.fed.new_node("m4", true, &member_args).unwrap();
    m4.spawn().unwrap();
    let bob = key(31);
    s.fund(&bob, 2, 1_500_000).await;
    // Fee income for the federation's fee pool, which pays the sweeps of
    // old coins (transfers here pay 1 sat): Bob tips 40,000 sats.
    let tip_tx = Transaction::sign(
        s.chain_id,
        &bob,
        0,
        sats(40_000),
        TxKind::Transfer {
            to: fedpeg_tests::accounts::account(69),
            amount: sats(1_000),
        },
    );
    let txid = fedpeg_tests::accounts::submit(&s.chans[0], &tip_tx)
        .await
        .unwrap();
    fedpeg_tests::wait_final(&s.chans[0], &txid, Duration::from_secs(30))
        .await
        .unwrap();
    let mut nonce = 1;
    // Carol's deposit address under the genesis descriptor, paid only
    // after the first change is in force (the grace period).
    let carol = key(32);
    let carol_old = s.deposit_address(&carol).await;

    // 1. Add m4: proposed by m0, approved by m1 and m2 (3 of 4).
    let add = format!("{}", s.fed.dir.path().join("m4.json").display());
    let m = &s.fed.members;
    let activation = s
        .change_federation(&[&m[0], &m[1], &m[2]], &["--add-member", &add])
        .await;
    fedpeg_tests::wait_height(&m4, activation + 2, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", m4.log()));
    let f = federation(&s.chans[0]).await;
    assert_eq!((f.epoch, f.members.len()), (1, 5), "{f:?}");
    assert_eq!((f.consensus_quorum, f.peg_threshold), (4, 3));
    // m4 (index 4 of the new set) signs certificates from the activation on.
    let m4_signs = fedpeg_tests::wait::wait_until(
        "m4 signs a certificate",
        Duration::from_secs(30),
        || async {
            let h = fedpeg_tests::wait_height(&s.fed.members[0], 0, Duration::from_secs(1))
                .await
                .ok()?;
            let cb = fedpeg_tests::committed_block(&s.chans[0], h).await.ok()?;
            let cert = fedpeg_consensus::CommitCertificate::decode(&cb.commit).ok()?;
            cert.precommits.iter().any(|(i, _)| i.0 == 4).then_some(h)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", s.fed.logs(), m4.log()));
    assert!(m4_signs >= activation);
    eprintln!("m4 added: active from height {activation}, signed the certificate of {m4_signs}");
    // Carol pays her old (epoch 0) address: credited during the grace.
    s.btc.send_to(&carol_old, 700_000).unwrap();
    s.btc.mine(s.depth).unwrap();
    s.wait_balance(&carol, 1).await;
    // The genesis coins (Bob's and Carol's deposits) move to the new
    // descriptor; then a peg-out is paid from it.
    s.wait_swept(1).await;
    s.pegout_confirmed(&bob, nonce, 100_000).await;
    nonce += 1;
    s.fund_current(&bob, 600_000).await;

    // 2. Remove m3: proposed by m0, approved by m1, m2 and m4 (4 of 5).
    let m4_ch = m4.connect().await.unwrap();
    let m = &s.fed.members;
    let activation2 = s
        .change_federation(&[&m[0], &m[1], &m[2], &m4], &["--remove-member", "m3"])
        .await;
    fedpeg_tests::wait_height(&m[0], activation2 + 2, Duration::from_secs(60))
        .await
        .unwrap();
    let f = federation(&s.chans[0]).await;
    assert_eq!((f.epoch, f.members.len()), (2, 4), "{f:?}");
    assert!(f.members.iter().all(|x| x.name != "m3"), "{f:?}");
    eprintln!("m3 removed: active from height {activation2}");
    s.wait_swept(2).await;
    s.pegout_confirmed(&bob, nonce, 100_000).await;
    nonce += 1;
    // Transfers through the new member.
    for i in 0..3 {
        let tx = fedpeg_tests::accounts::transfer(
            s.chain_id,
            &bob,
            fedpeg_tests::accounts::account(70 + i),
            nonce,
            1000,
        );
        let txid = fedpeg_tests::accounts::submit(&m4_ch, &tx).await.unwrap();
        fedpeg_tests::wait_final(&m4_ch, &txid, Duration::from_secs(30))
            .await
            .unwrap();
        nonce += 1;
    }
    // The removed member follows as an observer.
    assert!(s.fed.members[3]
        .log()
        .contains("not a member of the epoch in force"));

    // 3. Rotate m0's peg key. Rotating two at once would leave two of
    // epoch 2's four peg keys with the new set, fewer than its threshold
    // (3), so its coins could not be swept: refused, nothing pending.
    let new_key = |seed: u8| {
        fedpeg_peg::bitcoin::secp256k1::PublicKey::from_secret_key(
            &fedpeg_peg::bitcoin::secp256k1::Secp256k1::new(),
            &fedpeg_peg::bitcoin::secp256k1::SecretKey::from_slice(&[seed; 32]).unwrap(),
        )
    };
    let (ok, out) = federation_cli(
        &s.fed.members[0],
        &[
            "propose",
            "--set-peg-key",
            &format!("m0={}", new_key(7)),
            "--set-peg-key",
            &format!("m1={}", new_key(8)),
        ],
    );
    assert!(!ok && out.contains("peg key"), "{out}");
    assert!(federation(&s.chans[0]).await.pending_changes.is_empty());
    let m = &s.fed.members;
    let activation3 = s
        .change_federation(
            &[&m[0], &m[1], &m4],
            &["--set-peg-key", &format!("m0={}", new_key(7))],
        )
        .await;
    fedpeg_tests::wait_height(&m[0], activation3 + 2, Duration::from_secs(60))
        .await
        .unwrap();
    let f = federation(&s.chans[0]).await;
    assert_eq!(f.epoch, 3, "{f:?}");
    assert_eq!(f.members[0].peg_key, new_key(7).to_string());
    eprintln!("m0's peg key rotated: active from height {activation3}");
    // m0's node still holds its old peg key: it signs the sweep of epoch
    // 2's coins; epoch 3's batches are signed by m1, m2 and m4.
    s.wait_swept(3).await;
    s.pegout_confirmed(&bob, nonce, 100_000).await;
    nonce += 1;
    s.fund_current(&bob, 600_000).await;

    // A member restarted after the changes resumes from its store (the
    // epochs are kept there), and an observer started now syncs from
    // genesis, checking each certificate against the set of its height.
    let mut late = s.fed.new_node("late-observer", false, &[]).unwrap();
    late.spawn().unwrap();
    m4.kill();
    m4.spawn().unwrap();
    let m4_ch = m4.connect().await.unwrap();
    let tx = fedpeg_tests::accounts::transfer(
        s.chain_id,
        &bob,
        fedpeg_tests::accounts::account(80),
        nonce,
        1000,
    );
    let txid = fedpeg_tests::accounts::submit(&s.chans[1], &tx)
        .await
        .unwrap();
    fedpeg_tests::wait_final(&s.chans[1], &txid, Duration::from_secs(30))
        .await
        .unwrap();

    // Every node, the removed member and the observers included, holds the
    // same chain.
    let tip = fedpeg_tests::wait_height(&s.fed.members[0], 0, Duration::from_secs(1))
        .await
        .unwrap();
    let mut all = s.chans.clone();
    all.push(m4_ch);
    all.push(observer.connect().await.unwrap());
    all.push(late.connect().await.unwrap());
    for ch in &all {
        let n = ch.clone();
        fedpeg_tests::wait::wait_until(
            "every node reaches the tip",
            Duration::from_secs(60),
            || async {
                let h = pb::node_service_client::NodeServiceClient::new(n.clone())
                    .get_status(pb::GetStatusRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .height;
                (h >= tip).then_some(())
            },
        )
        .await
        .unwrap();
    }
    for h in [activation - 1, activation, activation2, activation3, tip] {
        let first = fedpeg_tests::block_hash(&all[0], h).await.unwrap();
        for ch in &all[1..] {
            assert_eq!(
                fedpeg_tests::block_hash(ch, h).await.unwrap(),
                first,
                "fork at {h}"
            );
        }
    }
    let r = check_reserves(&s.chans[0], &s.fed).await;
    assert!(r.utxos.iter().all(|u| u.epoch == 3), "{r:?}");

    // Recovery with the backup keys: every coin now pays epoch 3's
    // descriptor, which genesis alone cannot rebuild; with the epochs as
    // `fedpeg federation show --json` wrote them, `fedpeg recover` finds
    // them all (and says when they can be swept).
    let fedpeg = |args: &[&str]| {
        let o = fedpeg_tests::run_any(
            std::process::Command::new(fedpeg_tests::bin("fedpeg"))
                .env_remove("FEDPEG_NODE")
                .env_remove("FEDPEG_KEY")
                .current_dir(s.fed.dir.path())
                .arg("--json")
                .args(["--node", &s.fed.members[0].url()])
                .args(args),
        );
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };
    std::fs::write(
        s.fed.dir.path().join("epochs.json"),
        fedpeg(&["federation", "show"]),
    )
    .unwrap();
    let genesis = s.fed.genesis_path().display().to_string();
    let recover = |extra: &[&str]| -> Vec<u64> {
        let mut args = vec!["recover", "--genesis", &genesis, "--bitcoind-url"];
        let url = s.btc.rpc_url();
        args.push(&url);
        args.extend([
            "--bitcoind-user",
            RPC_USER,
            "--bitcoind-password",
            RPC_PASSWORD,
            "--accounts-from-node",
        ]);
        args.extend_from_slice(extra);
        let out = fedpeg(&args);
        let report: Value = serde_json::from_slice(&out).unwrap();
        let mut amounts: Vec<u64> = report["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["amount"].as_u64().unwrap())
            .collect();
        amounts.sort_unstable();
        amounts
    };
    let mut held: Vec<u64> = r.utxos.iter().map(|u| u.amount).collect();
    held.sort_unstable();
    assert_eq!(recover(&["--epochs", "epochs.json"]), held);
    assert!(
        recover(&[]).is_empty(),
        "no coin pays the genesis descriptor any more"
    );
    eprintln!(
        "same chain on 5 members and 2 observers up to {tip}; reserves {} + {} locked for supply {}",
        r.available, r.locked, r.supply
    );
}
