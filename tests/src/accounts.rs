//! Test accounts and transactions: deterministic keys from a seed byte, their
//! regtest addresses, signed transfers, and the wallet calls every test makes.

use ed25519_dalek::SigningKey;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::hash::Hash32;
use fedpeg_ledger::testing::sats;
use fedpeg_ledger::tx::{Transaction, TxKind};
use fedpeg_proto::v1 as pb;
use tonic::transport::Channel;

/// Human-readable part of regtest account addresses.
pub const HRP: &str = "fprt";

/// The signing key of test account `seed`.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The account of a key.
pub fn account_of(k: &SigningKey) -> AccountId {
    AccountId(k.verifying_key().to_bytes())
}

/// The account of test key `seed`.
pub fn account(seed: u8) -> AccountId {
    account_of(&key(seed))
}

/// The regtest address of a key.
pub fn address_of(k: &SigningKey) -> String {
    account_of(k).to_address(HRP)
}

/// The regtest address of test key `seed`.
pub fn address(seed: u8) -> String {
    account(seed).to_address(HRP)
}

/// A signed transfer of `amount` sats (fee 1) from `from` to `to`.
pub fn transfer(
    chain: Hash32,
    from: &SigningKey,
    to: AccountId,
    nonce: u64,
    amount: u64,
) -> Transaction {
    Transaction::sign(
        chain,
        from,
        nonce,
        sats(1),
        TxKind::Transfer {
            to,
            amount: sats(amount),
        },
    )
}

fn wallet(ch: &Channel) -> pb::wallet_service_client::WalletServiceClient<Channel> {
    pb::wallet_service_client::WalletServiceClient::new(ch.clone())
}

/// Submits `tx` to a node; returns its id.
pub async fn submit(ch: &Channel, tx: &Transaction) -> Result<String, tonic::Status> {
    wallet(ch)
        .submit_transaction(pb::SubmitTransactionRequest {
            transaction: tx.encode(),
        })
        .await
        .map(|r| r.into_inner().txid)
}

/// An account as a node sees it.
pub async fn get_account(
    ch: &Channel,
    a: &AccountId,
) -> Result<pb::GetAccountResponse, tonic::Status> {
    wallet(ch)
        .get_account(pb::GetAccountRequest {
            address: a.to_address(HRP),
        })
        .await
        .map(|r| r.into_inner())
}

/// The account's next nonce on a node.
pub async fn next_nonce(ch: &Channel, a: &AccountId) -> anyhow::Result<u64> {
    Ok(get_account(ch, a).await?.next_nonce)
}

/// The account's balance on a node.
pub async fn balance(ch: &Channel, a: &AccountId) -> anyhow::Result<u64> {
    Ok(get_account(ch, a).await?.balance)
}
