//! `RpcChain` against a real `bitcoind -regtest` (testkit): every
//! `BitcoinChain` method, deposits found in mined blocks, reorgs, and a
//! node that goes away and comes back. Each test runs its own node.

use bitcoin::secp256k1::{rand, Secp256k1, SecretKey};
use bitcoin::{Address, Network, Transaction};
use fedpeg_peg::chain::{find_deposits, BitcoinChain, ChainError};
use fedpeg_peg::federation::Federation;
use fedpeg_peg::testkit::Bitcoind;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn start() -> Bitcoind {
    Bitcoind::start().unwrap_or_else(|e| panic!("{e}"))
}

/// A 2-of-3 federation of random keys on regtest.
fn federation() -> Federation {
    let secp = Secp256k1::new();
    let keys = (0..3)
        .map(|_| SecretKey::new(&mut rand::thread_rng()).public_key(&secp))
        .collect();
    Federation::new(keys, 2, Network::Regtest).unwrap()
}

/// A wallet transaction of the node, decoded.
fn wallet_tx(node: &Bitcoind, txid: &bitcoin::Txid) -> Transaction {
    let v: serde_json::Value = node
        .wallet_rpc("gettransaction", &[serde_json::json!(txid.to_string())])
        .unwrap();
    bitcoin::consensus::encode::deserialize_hex(v["hex"].as_str().unwrap()).unwrap()
}

#[test]
fn tip_block_hash_and_block_agree_after_mining() {
    let node = start();
    let chain = node.chain();
    let (h0, _) = chain.tip().unwrap();
    assert_eq!(h0, 101);
    let mined = node.mine(3).unwrap();
    let (height, hash) = chain.tip().unwrap();
    assert_eq!((height, hash), (104, mined[2]));
    for (i, h) in mined.iter().enumerate() {
        let height = 102 + i as u64;
        assert_eq!(chain.block_hash(height).unwrap(), *h);
        assert_eq!(chain.best_chain_height(h).unwrap(), Some(height));
        let block = chain.block(h).unwrap();
        assert_eq!(block.block_hash(), *h);
        assert_eq!(block.bip34_block_height().unwrap(), height);
    }
    assert_eq!(
        chain.block(&mined[1]).unwrap().header.prev_blockhash,
        mined[0]
    );
    // Above the tip and unknown blocks are NotFound, not Rpc.
    assert_eq!(chain.block_hash(105), Err(ChainError::NotFound));
    let unknown = bitcoin::BlockHash::from_raw_hash(bitcoin::hashes::Hash::all_zeros());
    assert_eq!(chain.block(&unknown), Err(ChainError::NotFound));
    assert_eq!(chain.best_chain_height(&unknown), Err(ChainError::NotFound));
}

#[test]
fn deposits_to_two_accounts_in_one_tx_are_found_and_follow_reorgs() {
    let node = start();
    let chain = node.chain();
    let fed = federation();
    let (a, b) = ([0x0a; 32], [0x0b; 32]);
    let addr = |acc: &[u8; 32]| -> Address { fed.deposit_address(acc).unwrap() };
    let watched: HashMap<_, _> = [a, b]
        .iter()
        .map(|acc| (fed.deposit_script_pubkey(acc).unwrap(), *acc))
        .collect();

    let txid = node
        .send_many(&[(addr(&a), 150_000), (addr(&b), 2_500_000)])
        .unwrap();
    // In the mempool: known, not in a block.
    let (tx, block) = chain.transaction(&txid, None).unwrap().unwrap();
    assert_eq!((tx.compute_txid(), block), (txid, None));

    let hash = node.mine(1).unwrap()[0];
    let block = chain.block(&hash).unwrap();
    let mut found = find_deposits(&block, &watched);
    found.sort_by_key(|d| d.account);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!((found[0].account, found[0].amount.to_sat()), (a, 150_000));
    assert_eq!((found[1].account, found[1].amount.to_sat()), (b, 2_500_000));
    for d in &found {
        assert_eq!(d.outpoint.txid, txid);
        assert_eq!(
            tx.output[d.outpoint.vout as usize].script_pubkey,
            d.script_pubkey
        );
    }
    assert_eq!(chain.best_chain_height(&hash).unwrap(), Some(102));
    // Found with -txindex and with the hint alike.
    for hint in [None, Some(&hash)] {
        let (_, in_block) = chain.transaction(&txid, hint).unwrap().unwrap();
        assert_eq!(in_block, Some(hash), "hint {hint:?}");
    }

    // Reorged out: the block is stale, the deposit back in the mempool.
    node.invalidate(&hash).unwrap();
    assert_eq!(chain.best_chain_height(&hash).unwrap(), None);
    assert_eq!(chain.tip().unwrap().0, 101);
    for hint in [None, Some(&hash)] {
        let (_, in_block) = chain.transaction(&txid, hint).unwrap().unwrap();
        assert_eq!(in_block, None, "hint {hint:?}");
    }

    node.reconsider(&hash).unwrap();
    assert_eq!(chain.best_chain_height(&hash).unwrap(), Some(102));
    assert_eq!(chain.tip().unwrap(), (102, hash));
    let (_, in_block) = chain.transaction(&txid, None).unwrap().unwrap();
    assert_eq!(in_block, Some(hash));

    // A txid nobody has.
    let unknown = bitcoin::Txid::from_raw_hash(bitcoin::hashes::Hash::all_zeros());
    assert_eq!(chain.transaction(&unknown, None).unwrap(), None);
    assert_eq!(chain.transaction(&unknown, Some(&hash)).unwrap(), None);
}

#[test]
fn fee_estimate_and_idempotent_broadcast() {
    let node = start();
    let chain = node.chain();
    // Fresh regtest has no fee history: None, or a sane rate, never a panic.
    for blocks in [1, 6, 144, 1008] {
        match chain.estimate_fee_rate(blocks) {
            Ok(None) => {}
            Ok(Some(r)) => assert!(r >= 1, "{blocks}: {r}"),
            Err(e) => panic!("estimate_fee_rate({blocks}): {e}"),
        }
    }
    assert!(matches!(
        chain.estimate_fee_rate(0),
        Err(ChainError::Rpc(_))
    ));

    // A signed wallet transaction we broadcast ourselves.
    let to = node.new_address().unwrap();
    let hex: String = {
        let raw: String = node
            .rpc(
                "createrawtransaction",
                &[
                    serde_json::json!([]),
                    serde_json::json!([{ to.to_string(): 0.5 }]),
                ],
            )
            .unwrap();
        let funded: serde_json::Value = node
            .wallet_rpc("fundrawtransaction", &[serde_json::json!(raw)])
            .unwrap();
        let signed: serde_json::Value = node
            .wallet_rpc("signrawtransactionwithwallet", &[funded["hex"].clone()])
            .unwrap();
        assert_eq!(signed["complete"], true, "{signed}");
        signed["hex"].as_str().unwrap().to_string()
    };
    let tx: Transaction = bitcoin::consensus::encode::deserialize_hex(&hex).unwrap();
    chain.test_accept(&tx).unwrap();
    let tip = chain.tip().unwrap().0;
    assert_eq!(
        chain.mempool_entry_height(&tx.compute_txid()).unwrap(),
        None
    );
    let txid = chain.broadcast(&tx).unwrap();
    assert_eq!(txid, tx.compute_txid());
    // Where it entered the mempool: what a restarted signer times bumps from.
    let miner = node.mining_address().to_string();
    for _ in 0..2 {
        let _: serde_json::Value = node
            .rpc(
                "generateblock",
                &[serde_json::json!(miner), serde_json::json!([])],
            )
            .unwrap();
    }
    assert_eq!(chain.tip().unwrap().0, tip + 2);
    assert_eq!(chain.mempool_entry_height(&txid).unwrap(), Some(tip));
    // In the mempool: again Ok, and test_accept now says why not.
    assert_eq!(chain.broadcast(&tx).unwrap(), txid);
    let e = chain.test_accept(&tx).unwrap_err();
    assert!(
        matches!(e, ChainError::Rpc(ref m) if m.contains("already")),
        "{e}"
    );
    // Confirmed: still Ok.
    node.mine(1).unwrap();
    assert_eq!(chain.broadcast(&tx).unwrap(), txid);

    // A conflicting spend of the same inputs is refused with a reason.
    let mut double = tx.clone();
    double.output[0].value = bitcoin::Amount::from_sat(1_000);
    let e = chain.test_accept(&double).unwrap_err();
    assert!(matches!(e, ChainError::Rpc(_)), "{e}");
    assert!(matches!(chain.broadcast(&double), Err(ChainError::Rpc(_))));

    // A wallet payment: the wallet's copy and ours agree.
    let paid = node.send_to(&to, 12_345).unwrap();
    assert_eq!(wallet_tx(&node, &paid).compute_txid(), paid);
}

#[test]
fn stopped_node_is_unavailable_quickly_and_works_after_restart() {
    let mut node = start();
    let chain = node.chain();
    let before = chain.tip().unwrap();

    node.stop_process().unwrap();
    let t = Instant::now();
    let checks: [(&str, Result<(), ChainError>); 4] = [
        ("tip", chain.tip().map(drop)),
        ("block_hash", chain.block_hash(1).map(drop)),
        (
            "best_chain_height",
            chain.best_chain_height(&before.1).map(drop),
        ),
        ("estimate_fee_rate", chain.estimate_fee_rate(6).map(drop)),
    ];
    let elapsed = t.elapsed();
    for (name, r) in checks {
        assert!(
            matches!(r, Err(ChainError::Unavailable(_))),
            "{name}: {r:?}"
        );
    }
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");

    node.restart().unwrap();
    assert_eq!(chain.tip().unwrap(), before);
    // The wallet came back too.
    node.send_to(&node.new_address().unwrap(), 10_000).unwrap();
    let hash = node.mine(1).unwrap()[0];
    assert_eq!(chain.tip().unwrap(), (before.0 + 1, hash));
}

#[test]
fn hung_node_is_unavailable_after_the_rpc_timeout() {
    let node = start();
    let chain = node.chain().with_timeout(Duration::from_secs(2));
    let pid = node.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let st = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig} {pid}: {st}");
    };
    // Stopped, the kernel still accepts connections to its socket, but
    // nothing answers: only the timeout ends the call.
    signal("-STOP");
    // kill returns once the signal is queued; on a busy machine bitcoind may
    // still answer a request before it stops. Wait until the kernel shows it
    // stopped (state T).
    let stopped = Instant::now();
    while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .rsplit(')')
        .next()
        .is_some_and(|rest| rest.trim_start().starts_with('T'))
    {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "bitcoind never stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let r = chain.tip();
    let elapsed = t.elapsed();
    signal("-CONT");
    assert!(matches!(r, Err(ChainError::Unavailable(_))), "{r:?}");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(4),
        "took {elapsed:?}"
    );
    assert_eq!(chain.tip().unwrap().0, 101);
}
