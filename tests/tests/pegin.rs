//! Peg-in with a real `bitcoind -regtest` and four real member processes:
//! a deposit to a registered address is minted when it reaches the genesis
//! confirmation depth, exactly once, minus the cost of spending it later.

use ed25519_dalek::SigningKey;
use fedpeg_node::account::AccountId;
use fedpeg_node::genesis::Genesis;
use fedpeg_peg::bitcoin::{address::NetworkUnchecked, Address, Network};
use fedpeg_peg::testkit::{Bitcoind, RPC_PASSWORD, RPC_USER};
use fedpeg_proto::v1 as pb;
use fedpeg_tests::Federation;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn account(seed: u8) -> AccountId {
    AccountId(
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes(),
    )
}

async fn balance(ch: &Channel, a: &AccountId) -> u64 {
    pb::wallet_service_client::WalletServiceClient::new(ch.clone())
        .get_account(pb::GetAccountRequest {
            address: a.to_address("fprt"),
        })
        .await
        .unwrap()
        .into_inner()
        .balance
}

/// Waits until every member shows `want` for `a`; returns how long it took.
async fn wait_balance(fed: &Federation, chans: &[Channel], a: &AccountId, want: u64) -> Duration {
    let t0 = Instant::now();
    for ch in chans {
        loop {
            let got = balance(ch, a).await;
            if got == want {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "balance {got}, want {want}\n{}",
                fed.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    t0.elapsed()
}

/// Registers `a`'s deposit address through member 0 and waits until final.
async fn register(fed: &Federation, chans: &[Channel], a: &AccountId) -> Address {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut w = pb::wallet_service_client::WalletServiceClient::new(chans[0].clone());
    loop {
        let r = w
            .get_peg_in_address(pb::GetPegInAddressRequest {
                address: a.to_address("fprt"),
            })
            .await
            .unwrap()
            .into_inner();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_are_minted_once_at_depth_minus_spend_cost() {
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("bitcoind: {e}"));
    let member_args: Vec<String> = vec![
        "--bitcoin-rpc-url".into(),
        btc.rpc_url(),
        "--bitcoin-rpc-user".into(),
        RPC_USER.into(),
        "--bitcoin-rpc-password".into(),
        RPC_PASSWORD.into(),
    ];
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
    let cost = Genesis::load(&fed.genesis_path())
        .unwrap()
        .pegin_spend_cost();
    assert!(cost > 0);
    let (a, b) = (account(80), account(81));
    let addr_a = register(&fed, &chans, &a).await;
    let addr_b = register(&fed, &chans, &b).await;

    // Two confirmations: not yet.
    btc.send_to(&addr_a, 100_000).unwrap();
    btc.mine(2).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ch in &chans {
        assert_eq!(balance(ch, &a).await, 0, "minted before depth");
    }
    // The third confirmation: minted, minus the cost of spending it.
    btc.mine(1).unwrap();
    let took = wait_balance(&fed, &chans, &a, 100_000 - cost).await;
    eprintln!("deposit minted on all members {took:?} after the block that brought it to depth");
    // More blocks do not mint it again.
    btc.mine(3).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ch in &chans {
        assert_eq!(balance(ch, &a).await, 100_000 - cost, "minted twice");
    }

    // Two deposits to two accounts in one Bitcoin transaction.
    btc.send_many(&[(addr_a.clone(), 50_000), (addr_b.clone(), 70_000)])
        .unwrap();
    btc.mine(3).unwrap();
    wait_balance(&fed, &chans, &a, 100_000 - cost + 50_000 - cost).await;
    wait_balance(&fed, &chans, &b, 70_000 - cost).await;

    // A deposit worth less than spending it is not minted.
    btc.send_to(&addr_b, cost / 2 + 546).unwrap();
    btc.mine(4).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for ch in &chans {
        assert_eq!(balance(ch, &b).await, 70_000 - cost);
    }
}
