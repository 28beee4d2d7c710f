//! Fixtures for tests of this and other crates (feature `testing`, and this
//! crate's own tests): never part of a normal build.

use crate::amount::Sats;
use crate::genesis::{ConsensusParams, DevBalance, FeeParams, Genesis, MemberInfo};
use ed25519_dalek::SigningKey;

/// A one-member genesis on `network` with `dev` balances (not yet validated).
pub fn sample_genesis(network: &str, dev: Vec<DevBalance>) -> Genesis {
    let ck = SigningKey::from_bytes(&[3; 32]).verifying_key();
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let sk = bitcoin::secp256k1::SecretKey::from_slice(&[4; 32]).unwrap();
    Genesis {
        chain_name: "test".into(),
        genesis_time_ms: 1,
        network: network.into(),
        members: vec![MemberInfo {
            name: "alpha".into(),
            consensus_key: hex::encode(ck.to_bytes()),
            peg_key: sk.public_key(&secp).to_string(),
            p2p_address: "/ip4/127.0.0.1/tcp/1".into(),
        }],
        peg_threshold: 1,
        allow_unsafe_peg_threshold: false,
        pegin_confirmations: 2,
        consensus: ConsensusParams::default(),
        fees: FeeParams::default(),
        dev_balances: dev,
        pegout: Default::default(),
        emergency: None,
    }
}

/// `v` sats, for test literals (panics above 21M BTC: a broken test).
pub fn sats(v: u64) -> Sats {
    match Sats::checked(v) {
        Some(s) => s,
        None => panic!("test amount {v} is above 21M BTC"),
    }
}

/// A Bitcoin txid made of byte `b`.
pub fn txid(b: u8) -> bitcoin::Txid {
    use bitcoin::hashes::Hash as _;
    bitcoin::Txid::from_byte_array([b; 32])
}

/// A Bitcoin block hash made of byte `b`.
pub fn block_hash(b: u8) -> bitcoin::BlockHash {
    use bitcoin::hashes::Hash as _;
    bitcoin::BlockHash::from_byte_array([b; 32])
}

/// Ledger parameters for this crate's unit tests: chain "test-chain" on
/// regtest with the 3-of-4 [`test_federation`](crate::pegout_batch::test_federation)
/// and small fees (1 sat minimum, 1000 sats
/// peg-out fee, 10 sat/vB default rate, 50 vB per deposit spend). Tests
/// override what they need with `..ledger_params(...)`.
#[cfg(test)]
pub(crate) fn ledger_params() -> crate::LedgerParams {
    use crate::ids::FeeRate;
    crate::LedgerParams {
        chain_id: crate::hash::Hash32::tagged("test-chain", &[]),
        network: bitcoin::Network::Regtest,
        min_tx_fee: sats(1),
        pegout_fee: sats(1000),
        max_block_txs: 1000,
        pegin_spend_vbytes: 50,
        default_fee_rate: FeeRate(10),
        min_fee_rate: FeeRate(1),
        max_fee_rate: crate::MAX_FEE_RATE,
        quote_validity_ms: 600_000,
        federation: crate::pegout_batch::test_federation(),
        epoch_federations: Default::default(),
        allow_unsafe_peg_threshold: false,
        pegout: Default::default(),
        confirmations: 1,
        rollover_after_ms: None,
    }
}

/// An empty state whose genesis epoch has these consensus keys; member `i`
/// holds peg key `i` of the [`test_federation`](crate::pegout_batch::test_federation)
/// (its secret is `[i + 1; 32]`), beyond the fourth a key of no federation.
#[cfg(test)]
pub(crate) fn state_with_members(members: &[ed25519_dalek::VerifyingKey]) -> crate::State {
    crate::State {
        epochs: vec![crate::epoch::Epoch {
            number: 0,
            activation: fedpeg_consensus::Height(0),
            adopted: fedpeg_consensus::Height(0),
            members: members
                .iter()
                .enumerate()
                .map(|(i, k)| epoch_member(i as u8, *k))
                .collect(),
            peg_threshold: 3,
        }],
        ..crate::State::default()
    }
}

/// Member "m`i`" with consensus key `key` and the peg key of secret `[i + 1; 32]`.
pub fn epoch_member(i: u8, key: ed25519_dalek::VerifyingKey) -> crate::epoch::EpochMember {
    let secp = bitcoin::secp256k1::Secp256k1::signing_only();
    let sk = bitcoin::secp256k1::SecretKey::from_slice(&[i + 1; 32]).expect("non-zero key");
    crate::epoch::EpochMember {
        name: format!("m{i}"),
        consensus_key: key,
        peg_key: sk.public_key(&secp),
        p2p_address: format!("/ip4/10.0.0.{i}/tcp/40001"),
    }
}
