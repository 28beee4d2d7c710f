//! End-to-end tests of a one-member chain: real `fedpegd` and `fedpeg`
//! processes on loopback.

use ed25519_dalek::SigningKey;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::amount::Sats;
use fedpeg_ledger::hash::Hash32;
use fedpeg_ledger::testing::sats;
use fedpeg_ledger::tx::{Transaction, TxKind};
use fedpeg_ledger::{apply_block, VerifyAll};
use fedpeg_proto::v1 as pb;
use fedpeg_tests::accounts::{account_of, address_of, key, transfer};
use fedpeg_tests::{
    chain_id, committed_block, run_any, run_ok, wait_final, Federation, FAUCET_SATS,
};
use std::time::Duration;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_walkthrough_sends_and_refuses_bad_nonce_and_overspend() {
    let node = Federation::start(1, false, 1000).unwrap();
    node.members[0].connect().await.unwrap();
    let d = node.dir.path();
    let alice = run_ok(node.cli().args(["--key", "alice.key", "keygen"]))
        .unwrap()
        .trim()
        .to_string();
    let bob = run_ok(node.cli().args(["--key", "bob.key", "keygen"]))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        alice.starts_with("fprt1") && bob.starts_with("fprt1"),
        "{alice} {bob}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.join("alice.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Fund alice from the faucet; the CLI waits for finality and prints the height.
    let out = run_ok(node.cli().args([
        "--key",
        "faucet.key",
        "send",
        "--to",
        &alice,
        "--amount",
        "50000",
    ]))
    .unwrap();
    assert!(out.contains("final in block"), "{out}");
    let out = run_ok(node.cli().args([
        "--key",
        "alice.key",
        "--json",
        "send",
        "--to",
        &bob,
        "--amount",
        "20000",
        "--fee",
        "5",
    ]))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], "FINALIZED");
    assert!(v["height"].as_u64().unwrap() >= 1);
    let txid = v["txid"].as_str().unwrap().to_string();

    let bal = |k: &str| -> serde_json::Value {
        serde_json::from_str(
            run_ok(node.cli().args(["--key", k, "--json", "balance"]))
                .unwrap()
                .trim(),
        )
        .unwrap()
    };
    assert_eq!(bal("alice.key")["balance"], 50000 - 20000 - 5);
    assert_eq!(bal("bob.key")["balance"], 20000);
    assert_eq!(bal("faucet.key")["balance"], FAUCET_SATS - 50000 - 1);

    // A replayed nonce is refused with a message naming the right nonce.
    let o = run_any(node.cli().args([
        "--key",
        "alice.key",
        "send",
        "--to",
        &bob,
        "--amount",
        "1",
        "--nonce",
        "0",
    ]));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nonce 0 was already used") && err.contains("next nonce is 1"),
        "{err}"
    );
    // Too little balance.
    let o = run_any(node.cli().args([
        "--key", "bob.key", "send", "--to", &alice, "--amount", "20000",
    ]));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("insufficient balance") && err.contains("20001"),
        "{err}"
    );
    // Malformed recipient.
    let o = run_any(node.cli().args([
        "--key",
        "bob.key",
        "send",
        "--to",
        "fprt1nope",
        "--amount",
        "1",
    ]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--to"));
    // Nothing changed.
    assert_eq!(bal("alice.key")["balance"], 50000 - 20000 - 5);
    assert_eq!(bal("bob.key")["balance"], 20000);

    // The peg-in address of a wallet, registered through consensus.
    let out = run_ok(node.cli().args(["--key", "alice.key", "pegin"])).unwrap();
    assert!(out.contains("send bitcoin to   bcrt1q"), "{out}");
    assert!(
        out.contains(&alice) && out.contains("minimum deposit"),
        "{out}"
    );
    let pegin: serde_json::Value = serde_json::from_str(
        run_ok(node.cli().args(["--key", "alice.key", "--json", "pegin"]))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(pegin["registered"], true);
    assert!(out.contains(pegin["deposit_address"].as_str().unwrap()));

    // tx and block lookups.
    let out = run_ok(node.cli().args(["tx", &txid])).unwrap();
    assert!(
        out.contains(&bob) && out.contains("final in block"),
        "{out}"
    );
    let h = v["height"].as_u64().unwrap().to_string();
    let out = run_ok(node.cli().args(["--json", "block", &h])).unwrap();
    let b: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(b["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["txid"] == txid.as_str()));
    let o = run_any(node.cli().args(["block", "999999"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bad_input_gets_clear_status_and_changes_nothing() {
    // Long heartbeat: the height only moves when a transaction is accepted.
    let node = Federation::start(1, false, 3_600_000).unwrap();
    let ch = node.members[0].connect().await.unwrap();
    let chain = chain_id(&ch).await.unwrap();
    let mut wallet = pb::wallet_service_client::WalletServiceClient::new(ch.clone());
    let mut explorer = pb::explorer_service_client::ExplorerServiceClient::new(ch.clone());
    let mut status = pb::node_service_client::NodeServiceClient::new(ch.clone());
    let faucet = node.faucet.clone();
    let to = key(9);

    // One good transfer so nonce 0 is used.
    let good = transfer(chain, &faucet, account_of(&to), 0, 1000);
    let r = wallet
        .submit_transaction(pb::SubmitTransactionRequest {
            transaction: good.encode(),
        })
        .await
        .unwrap();
    wait_final(&ch, &r.into_inner().txid, Duration::from_secs(20))
        .await
        .unwrap();
    let before_height = status
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .height;
    let account =
        |w: &mut pb::wallet_service_client::WalletServiceClient<tonic::transport::Channel>,
         a: String| {
            let mut w = w.clone();
            async move {
                w.get_account(pb::GetAccountRequest { address: a })
                    .await
                    .unwrap()
                    .into_inner()
            }
        };
    let before = account(&mut wallet, address_of(&faucet)).await;

    let submit = |tx: Vec<u8>| {
        let mut w = wallet.clone();
        async move {
            w.submit_transaction(pb::SubmitTransactionRequest { transaction: tx })
                .await
                .unwrap_err()
        }
    };
    let expect = |s: tonic::Status, code: Code, text: &str| {
        assert_eq!(s.code(), code, "{s:?}");
        assert!(
            s.message().contains(text),
            "message {:?} lacks {text:?}",
            s.message()
        );
    };

    expect(
        submit(vec![0xff, 0x01, 0x02]).await,
        Code::InvalidArgument,
        "do not decode",
    );
    expect(submit(vec![]).await, Code::InvalidArgument, "chain_id");
    let mut bad_sig = transfer(chain, &faucet, account_of(&to), 1, 10);
    bad_sig.signature[3] ^= 1;
    expect(
        submit(bad_sig.encode()).await,
        Code::InvalidArgument,
        "signature",
    );
    // Weak key: the identity point as sender.
    let mut weak = transfer(chain, &faucet, account_of(&to), 1, 10).to_proto();
    weak.sender = {
        let mut k = vec![0u8; 32];
        k[0] = 1;
        k
    };
    expect(
        submit(prost::Message::encode_to_vec(&weak)).await,
        Code::InvalidArgument,
        "weak",
    );
    expect(
        submit(
            transfer(
                Hash32::tagged("other", &[]),
                &faucet,
                account_of(&to),
                1,
                10,
            )
            .encode(),
        )
        .await,
        Code::InvalidArgument,
        "chain",
    );
    expect(
        submit(transfer(chain, &faucet, account_of(&to), 0, 10).encode()).await,
        Code::FailedPrecondition,
        "already used",
    );
    expect(
        submit(transfer(chain, &faucet, account_of(&to), 5, 10).encode()).await,
        Code::FailedPrecondition,
        "skips ahead",
    );
    expect(
        submit(transfer(chain, &faucet, account_of(&to), 1, Sats::MAX.to_sat()).encode()).await,
        Code::InvalidArgument,
        "overflows",
    );
    // An amount no valid transaction can carry is refused when decoded.
    let mut huge = transfer(chain, &faucet, account_of(&to), 1, 10).to_proto();
    if let Some(pb::transaction::Kind::Transfer(t)) = &mut huge.kind {
        t.amount = u64::MAX;
    }
    expect(
        submit(prost::Message::encode_to_vec(&huge)).await,
        Code::InvalidArgument,
        "more than 21 million BTC",
    );
    expect(
        submit(transfer(chain, &faucet, account_of(&to), 1, 0).encode()).await,
        Code::InvalidArgument,
        "greater than zero",
    );
    expect(
        submit(transfer(chain, &faucet, account_of(&to), 1, FAUCET_SATS).encode()).await,
        Code::FailedPrecondition,
        "insufficient balance",
    );
    expect(
        submit(transfer(chain, &key(3), account_of(&to), 0, 10).encode()).await,
        Code::FailedPrecondition,
        "insufficient balance",
    );
    let pegout_bad = Transaction::sign(
        chain,
        &faucet,
        1,
        sats(1),
        TxKind::PegOut {
            bitcoin_address: "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4".into(),
            amount: sats(10_000),
        },
    );
    expect(
        submit(pegout_bad.encode()).await,
        Code::InvalidArgument,
        "regtest",
    );

    // Reads with bad or unknown input.
    let e = wallet
        .get_account(pb::GetAccountRequest {
            address: "nonsense".into(),
        })
        .await
        .unwrap_err();
    expect(e, Code::InvalidArgument, "not a fedpeg address");
    let e = wallet
        .get_account(pb::GetAccountRequest {
            address: AccountId(to.verifying_key().to_bytes()).to_address("fp"),
        })
        .await
        .unwrap_err();
    expect(e, Code::InvalidArgument, "another network");
    let e = explorer
        .get_block(pb::GetBlockRequest {
            selector: Some(pb::get_block_request::Selector::Height(1_000_000)),
        })
        .await
        .unwrap_err();
    expect(e, Code::NotFound, "no block at height 1000000");
    let e = explorer
        .get_block(pb::GetBlockRequest {
            selector: Some(pb::get_block_request::Selector::Hash("xyz".into())),
        })
        .await
        .unwrap_err();
    expect(e, Code::InvalidArgument, "not hex");
    let e = explorer
        .get_block(pb::GetBlockRequest {
            selector: Some(pb::get_block_request::Selector::Hash(Hash32::ZERO.to_hex())),
        })
        .await
        .unwrap_err();
    expect(e, Code::NotFound, "no finalized block");
    let e = explorer
        .get_block(pb::GetBlockRequest { selector: None })
        .await
        .unwrap_err();
    expect(e, Code::InvalidArgument, "height or hash");
    let e = explorer
        .get_transaction(pb::GetTransactionRequest {
            txid: Hash32::tagged("x", &[]).to_hex(),
        })
        .await
        .unwrap_err();
    expect(e, Code::NotFound, "unknown");
    let e = explorer
        .get_transaction(pb::GetTransactionRequest { txid: "12".into() })
        .await
        .unwrap_err();
    expect(e, Code::InvalidArgument, "expected 32");

    // Nothing changed: same height, same account, empty mempool.
    let st = status
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.height, before_height);
    assert_eq!(st.mempool_size, 0);
    assert_eq!(account(&mut wallet, address_of(&faucet)).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_transactions_answers_each_transaction_and_refuses_abuse() {
    let node = Federation::start(1, false, 3_600_000).unwrap();
    let ch = node.members[0].connect().await.unwrap();
    let chain = chain_id(&ch).await.unwrap();
    let wallet = pb::wallet_service_client::WalletServiceClient::new(ch.clone());
    let faucet = node.faucet.clone();
    let to = account_of(&key(9));
    let call = |transactions: Vec<Vec<u8>>| {
        let mut w = wallet.clone();
        async move {
            w.submit_transactions(pb::SubmitTransactionsRequest { transactions })
                .await
        }
    };

    // Whole-call refusals: nothing to do, too many, too many bytes.
    let s = call(vec![]).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let one = transfer(chain, &faucet, to, 0, 10).encode();
    let s = call(vec![one.clone(); 1001]).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("1000"), "{s:?}");
    let s = call(vec![vec![0u8; 1100]; 1000]).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");

    // Per-transaction results: consecutive nonces of one sender in one call,
    // garbage, a bad signature and a repeat; the bad ones fail alone.
    let t0 = transfer(chain, &faucet, to, 0, 10);
    let t1 = transfer(chain, &faucet, to, 1, 10);
    let mut bad = transfer(chain, &faucet, to, 2, 10);
    bad.signature[7] ^= 1;
    let t2 = transfer(chain, &faucet, to, 2, 10);
    let r = call(vec![
        t0.encode(),
        vec![0xff, 0x01, 0x02],
        t1.encode(),
        bad.encode(),
        t0.encode(),
        t2.encode(),
    ])
    .await
    .unwrap()
    .into_inner()
    .results;
    assert_eq!(r.len(), 6);
    let codes: Vec<i32> = r.iter().map(|x| x.code).collect();
    assert_eq!(codes, vec![0, 3, 0, 3, 0, 0], "{r:?}");
    assert_eq!(r[0].txid, t0.id().to_hex());
    assert_eq!(
        r[4].txid,
        t0.id().to_hex(),
        "a repeat gets the first copy's result"
    );
    assert!(r[1].error.contains("do not decode"), "{r:?}");
    assert!(r[3].error.contains("signature"), "{r:?}");
    assert!(r[3].txid.is_empty());
    wait_final(&ch, &t2.id().to_hex(), Duration::from_secs(20))
        .await
        .unwrap();
    // Resubmitting what is final: refused per transaction (stale nonce).
    let r = call(vec![t1.encode()]).await.unwrap().into_inner().results;
    assert_eq!(r[0].code, Code::FailedPrecondition as i32, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    let mut node = Federation::start(1, false, 1000).unwrap();
    // Restarted with JSON logs: every new log line is a JSON object.
    let m = &mut node.members[0];
    m.connect().await.unwrap();
    m.kill();
    let text_len = m.log().len();
    m.extra_args = vec!["--log-format".into(), "json".into()];
    m.spawn().unwrap();
    let ch = m.connect().await.unwrap();
    let log = m.log();
    let json_lines: Vec<&str> = log[text_len..].lines().collect();
    assert!(!json_lines.is_empty());
    for l in &json_lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for svc in [
        "fedpeg.v1.WalletService",
        "fedpeg.v1.ExplorerService",
        "fedpeg.v1.NodeService",
        "fedpeg.v1.FederationService",
        "",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: svc.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{svc}"
        );
    }
    let e = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut refl = ServerReflectionClient::new(ch.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream_once(req))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected {resp:?}")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.clone()).collect();
    for want in [
        "fedpeg.v1.WalletService",
        "fedpeg.v1.ExplorerService",
        "fedpeg.v1.NodeService",
        "fedpeg.v1.FederationService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    // v1alpha too.
    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaReq,
        ServerReflectionRequest as AlphaRequest,
    };
    let mut alpha = AlphaClient::new(ch);
    let req = AlphaRequest {
        host: String::new(),
        message_request: Some(AlphaReq::FileContainingSymbol(
            "fedpeg.v1.WalletService".into(),
        )),
    };
    let mut stream = alpha
        .server_reflection_info(tokio_stream_once(req))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
}

fn tokio_stream_once<T: Send + 'static>(item: T) -> impl tonic::IntoStreamingRequest<Message = T> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.try_send(item);
    // Keep the request stream open until the test ends so the server answers.
    std::mem::forget(tx);
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Replays every stored block from genesis with the ledger and checks that
/// the node's accounts and state root equal the replay.
async fn assert_store_consistent(
    node: &Federation,
    ch: &tonic::transport::Channel,
    accounts: &[SigningKey],
) -> u64 {
    let spec = fedpegd::config::load_genesis(&node.genesis_path()).unwrap();
    let params = spec.ledger_params();
    let mut state = spec.genesis_state();
    let mut explorer = pb::explorer_service_client::ExplorerServiceClient::new(ch.clone());
    let mut status = pb::node_service_client::NodeServiceClient::new(ch.clone());
    let mut wallet = pb::wallet_service_client::WalletServiceClient::new(ch.clone());
    let mut replayed = 0u64;
    // The node keeps committing (heartbeats, and the block its WAL preserved
    // across the kill): read the accounts between two tips and accept the
    // snapshot only if no block in between carried transactions.
    for _ in 0..50 {
        let before = status
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .height;
        let mut read = Vec::new();
        for k in accounts {
            read.push(
                wallet
                    .get_account(pb::GetAccountRequest {
                        address: address_of(k),
                    })
                    .await
                    .unwrap()
                    .into_inner(),
            );
        }
        let after = status
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        let mut quiet = true;
        for h in replayed + 1..=after.height {
            let cb = committed_block(ch, h).await.unwrap();
            if h > before && !cb.block.txs.is_empty() {
                quiet = false;
            }
            let outcome = apply_block(&state, &cb.block, &params, &VerifyAll)
                .unwrap_or_else(|e| panic!("block {h} does not replay: {e}"));
            state.commit(&cb.block.header, &outcome);
            replayed = h;
        }
        if !quiet {
            continue;
        }
        // Every stored block replays from genesis to the node's own tip hash...
        let tip = explorer
            .get_block(pb::GetBlockRequest {
                selector: Some(pb::get_block_request::Selector::Height(after.height)),
            })
            .await
            .unwrap()
            .into_inner()
            .block
            .unwrap();
        assert_eq!(state.tip.to_hex(), tip.hash);
        // ...and the node's accounts equal the replay.
        for (k, a) in accounts.iter().zip(read) {
            let s = state.account(&AccountId(k.verifying_key().to_bytes()));
            assert_eq!((a.balance, a.nonce), (s.balance.to_sat(), s.nonce));
        }
        return after.height;
    }
    panic!("node never quiet enough to compare accounts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_committing_reopens_with_a_consistent_store() {
    let mut node = Federation::start(1, false, 50).unwrap();
    let mut keys = vec![node.faucet.clone()];
    keys.extend((10..20).map(key));
    let mut last_height = 0;
    for round in 0..3u64 {
        let ch = node.members[0].connect().await.unwrap();
        let chain = chain_id(&ch).await.unwrap();
        let mut wallet = pb::wallet_service_client::WalletServiceClient::new(ch.clone());
        let mut nonce = wallet
            .get_account(pb::GetAccountRequest {
                address: address_of(&node.faucet),
            })
            .await
            .unwrap()
            .into_inner()
            .next_nonce;
        // Stream transfers, then kill mid-stream while blocks are being committed.
        let kill_after = 150 + 70 * round;
        for i in 0..400u64 {
            let tx = transfer(
                chain,
                &node.faucet,
                account_of(&keys[1 + (i % 10) as usize]),
                nonce,
                100 + i,
            );
            if wallet
                .submit_transaction(pb::SubmitTransactionRequest {
                    transaction: tx.encode(),
                })
                .await
                .is_ok()
            {
                nonce += 1;
            }
            if i == kill_after {
                node.members[0].kill();
                break;
            }
        }
        node.members[0].spawn().unwrap();
        let ch = node.members[0].connect().await.unwrap();
        let h = assert_store_consistent(&node, &ch, &keys).await;
        assert!(
            h >= last_height,
            "height went back from {last_height} to {h}"
        );
        last_height = h;
    }
    // And the chain still moves after the last restart.
    let ch = node.members[0].connect().await.unwrap();
    let chain = chain_id(&ch).await.unwrap();
    let mut wallet = pb::wallet_service_client::WalletServiceClient::new(ch.clone());
    let nonce = wallet
        .get_account(pb::GetAccountRequest {
            address: address_of(&node.faucet),
        })
        .await
        .unwrap()
        .into_inner()
        .next_nonce;
    let r = wallet
        .submit_transaction(pb::SubmitTransactionRequest {
            transaction: transfer(chain, &node.faucet, account_of(&keys[1]), nonce, 7).encode(),
        })
        .await
        .unwrap();
    wait_final(&ch, &r.into_inner().txid, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", node.logs()));
    assert!(
        node.members[0].terminate(),
        "clean shutdown on SIGTERM failed; log:\n{}",
        node.logs()
    );
}

/// The key ceremony's check: members who agree on the genesis time can each
/// rerun `fedpegd genesis` on the same public files and get the same bytes
/// and chain id; another time gives another chain.
#[test]
fn genesis_with_an_agreed_time_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut members = Vec::new();
    for name in ["a", "b", "c", "d"] {
        run_ok(
            std::process::Command::new(fedpeg_tests::bin("fedpegd"))
                .args([
                    "keygen",
                    "--name",
                    name,
                    "--p2p-address",
                    "/ip4/10.0.0.1/tcp/7000",
                ])
                .arg("--out")
                .arg(d.join(format!("{name}.key")))
                .arg("--public-out")
                .arg(d.join(format!("{name}.json"))),
        )
        .unwrap();
        members.push("--member".to_string());
        members.push(d.join(format!("{name}.json")).display().to_string());
    }
    let genesis = |out: &str, time: &str| {
        let printed = run_ok(
            std::process::Command::new(fedpeg_tests::bin("fedpegd"))
                .args([
                    "genesis",
                    "--network",
                    "regtest",
                    "--pegin-confirmations",
                    "3",
                ])
                .args(&members)
                .args(["--genesis-time-ms", time, "--out"])
                .arg(d.join(out)),
        )
        .unwrap();
        (std::fs::read(d.join(out)).unwrap(), printed)
    };
    let (first, said) = genesis("g1.json", "1767225600000");
    let (second, said_again) = genesis("g2.json", "1767225600000");
    assert_eq!(first, second, "same inputs, same genesis.json");
    assert_eq!(
        said.replace("g1.json", ""),
        said_again.replace("g2.json", "")
    );
    assert!(said.contains("chain id "), "{said}");
    let (other, said_other) = genesis("g3.json", "1767225600001");
    assert_ne!(first, other);
    assert_ne!(
        said.replace("g1.json", ""),
        said_other.replace("g3.json", "")
    );
    let o = std::process::Command::new(fedpeg_tests::bin("fedpegd"))
        .args([
            "genesis",
            "--genesis-time-ms",
            "yesterday",
            "--out",
            "x.json",
        ])
        .args(&members)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("invalid value 'yesterday' for '--genesis-time-ms <MS>'"));
}

/// Backup keys for the emergency branch: `fedpegd backup-keygen` writes a
/// 0600 key file and prints its public key, refuses to overwrite it; `fedpegd
/// genesis --backup-key` puts the keys in genesis (the descriptor gets the
/// branch) and refuses bad ones with a reason.
#[test]
fn backup_keys_are_made_offline_and_go_into_genesis_or_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fedpegd = || std::process::Command::new(fedpeg_tests::bin("fedpegd"));
    let mut backups = Vec::new();
    for i in 0..3 {
        let key = d.join(format!("backup{i}.key"));
        let public = run_ok(fedpegd().arg("backup-keygen").arg("--out").arg(&key)).unwrap();
        assert_eq!(public.trim().len(), 66, "{public}");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        backups.push(public.trim().to_string());
    }
    let o = fedpegd()
        .arg("backup-keygen")
        .arg("--out")
        .arg(d.join("backup0.key"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    run_ok(
        fedpegd()
            .args(["keygen", "--name", "a", "--out"])
            .arg(d.join("a.key"))
            .arg("--public-out")
            .arg(d.join("a.json")),
    )
    .unwrap();
    let genesis = |extra: &[&str]| {
        fedpegd()
            .args(["genesis", "--network", "regtest", "--member"])
            .arg(d.join("a.json"))
            .arg("--out")
            .arg(d.join("g.json"))
            .args(extra)
            .output()
            .unwrap()
    };
    let o = genesis(&[
        "--backup-key",
        &backups[0],
        "--backup-key",
        &backups[1],
        "--backup-key",
        &backups[2],
        "--emergency-csv-blocks",
        "144",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let spec = fedpegd::config::load_genesis(&d.join("g.json")).unwrap();
    let e = spec.genesis.emergency.as_ref().unwrap();
    assert_eq!(
        (e.threshold, e.csv_blocks, e.backup_keys.len()),
        (2, 144, 3),
        "default k: a majority"
    );
    let descriptor = spec.peg_federation().unwrap().change_descriptor().unwrap();
    assert!(descriptor.contains("older(144)"), "{descriptor}");
    for (extra, want) in [
        (
            vec!["--backup-key", "02abcd"],
            "emergency.backup_keys[0] '02abcd' is not a compressed",
        ),
        (
            vec!["--backup-key", &backups[0], "--backup-threshold", "2"],
            "backup threshold 2 is invalid for 1",
        ),
        (
            vec!["--backup-key", &backups[0], "--emergency-csv-blocks", "0"],
            "csv_blocks 0 must be between 1 and 65535",
        ),
        (
            vec![
                "--backup-key",
                &backups[0],
                "--emergency-csv-blocks",
                "70000",
            ],
            "csv_blocks 70000 must be between",
        ),
        (
            vec!["--backup-key", &backups[0], "--backup-key", &backups[0]],
            "is repeated",
        ),
        (vec!["--backup-threshold", "1"], "--backup-key"),
    ] {
        let o = genesis(&extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?} accepted");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
}

/// `fedpeg health` (the container health check) is SERVING on a member that
/// finalizes blocks, and NOT_SERVING on one whose bitcoind does not answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_not_serving_while_the_members_bitcoind_is_unreachable() {
    let health = |fed: &Federation| {
        let mut c = fed.cli();
        c.args(["health", "--timeout-secs", "5"]);
        c.output().unwrap()
    };
    let wait_for = |fed: &Federation, code: i32| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let o = health(fed);
            if o.status.code() == Some(code) {
                return o;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "health never exited {code}: {o:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let good = Federation::start(1, false, 200).unwrap();
    good.members[0].connect().await.unwrap();
    let o = wait_for(&good, 0);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("is SERVING"),
        "{o:?}"
    );
    drop(good);

    let args = [
        "--bitcoin-rpc-url",
        "http://127.0.0.1:1",
        "--bitcoin-rpc-user",
        "u",
        "--bitcoin-rpc-password",
        "p",
    ]
    .map(String::from);
    let blind = Federation::start_with(1, false, 200, &[], &args).unwrap();
    blind.members[0].connect().await.unwrap();
    let o = wait_for(&blind, 1);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is NOT_SERVING"),
        "{o:?}"
    );
    // Blocks still finalize: the API answers, only the health says no.
    run_ok(blind.cli().arg("status")).unwrap();
}
