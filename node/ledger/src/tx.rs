//! User transactions: the signed `Transfer` and `PegOut`, their explicit
//! signing encoding, ids, and conversion from/to the wire format.
//!
//! Signing bytes (all integers big-endian):
//! `"fedpeg/tx/v1" || chain_id[32] || sender[32] || nonce u64 || fee u64 ||
//!  kind u8 || fields`, where Transfer (kind 1) is `to[32] || amount u64` and
//! PegOut (kind 2) is `len u16 || bitcoin_address utf8 || amount u64`.
//! The transaction id is `H_tag("fedpeg/txid", signing bytes)`. ed25519
//! signatures are checked with the ZIP-215 rule of
//! [`fedpeg_consensus::signature_rule`], alone or in batches with the same
//! verdicts, so every node agrees on which signatures are valid.

use crate::account::{AccountId, AddressError};
use crate::amount::{AmountError, Sats};
use crate::hash::Hash32;
use ed25519_dalek::{Signer, SigningKey};
use fedpeg_proto::v1 as pb;
use prost::Message;

/// Longest Bitcoin address accepted (bech32 P2WSH/P2TR are 62 characters).
pub const MAX_BITCOIN_ADDRESS_LEN: usize = 90;
/// Largest encoded transaction accepted.
pub const MAX_TX_BYTES: usize = 1024;

const SIGN_DOMAIN: &[u8] = b"fedpeg/tx/v1";

/// A transaction id.
pub type TxId = Hash32;

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxKind {
    /// Moves `amount` to `to`.
    Transfer { to: AccountId, amount: Sats },
    /// Burns `amount` (plus the peg-out fee) and queues a Bitcoin payment.
    PegOut {
        bitcoin_address: String,
        amount: Sats,
    },
}

/// A signed user transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub chain_id: Hash32,
    pub sender: AccountId,
    pub nonce: u64,
    pub fee: Sats,
    pub kind: TxKind,
    pub signature: [u8; 64],
}

/// Why a transaction is structurally unusable (before looking at state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("transaction bytes do not decode as fedpeg.v1.Transaction: {0}")]
    Protobuf(String),
    #[error("transaction is {0} bytes; the limit is {MAX_TX_BYTES}")]
    TooLarge(usize),
    #[error("transaction field '{0}' must be {1} bytes")]
    FieldLength(&'static str, usize),
    #[error("transaction has no kind (set transfer or peg_out)")]
    MissingKind,
    #[error("sender: {0}")]
    Sender(AddressError),
    #[error("recipient: {0}")]
    Recipient(AddressError),
    #[error("bitcoin address is longer than {MAX_BITCOIN_ADDRESS_LEN} characters")]
    AddressTooLong,
    #[error("amount: {0}")]
    Amount(#[from] AmountError),
    #[error("federation change: {0}")]
    FederationChange(String),
}

/// An amount from the wire: at most 21 million BTC.
pub(crate) fn amount(sats: u64) -> Result<Sats, DecodeError> {
    Ok(Sats::from_sat(sats)?)
}

/// Verdicts on the signatures of `txs`, in order: equal to
/// [`Transaction::verify_signature`] on each, computed as one batch check
/// (single checks only when the batch fails). `rng` must be unpredictable to
/// the senders.
pub fn verify_batch<'a, R: rand_core::CryptoRng>(
    txs: impl IntoIterator<Item = &'a Transaction>,
    rng: &mut R,
) -> Vec<bool> {
    let mut batch = fedpeg_consensus::signature_rule::Batch::default();
    for tx in txs {
        tx.queue_signature(&mut batch);
    }
    batch.verdicts(rng)
}

impl Transaction {
    /// Builds and signs a transaction with `key`.
    pub fn sign(
        chain_id: Hash32,
        key: &SigningKey,
        nonce: u64,
        fee: Sats,
        kind: TxKind,
    ) -> Transaction {
        let mut tx = Transaction {
            chain_id,
            sender: AccountId(key.verifying_key().to_bytes()),
            nonce,
            fee,
            kind,
            signature: [0u8; 64],
        };
        tx.signature = key.sign(&tx.signing_bytes()).to_bytes();
        tx
    }

    /// The exact bytes the sender signs (see module docs).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(160);
        b.extend_from_slice(SIGN_DOMAIN);
        b.extend_from_slice(&self.chain_id.0);
        b.extend_from_slice(&self.sender.0);
        b.extend_from_slice(&self.nonce.to_be_bytes());
        b.extend_from_slice(&self.fee.to_sat().to_be_bytes());
        match &self.kind {
            TxKind::Transfer { to, amount } => {
                b.push(1);
                b.extend_from_slice(&to.0);
                b.extend_from_slice(&amount.to_sat().to_be_bytes());
            }
            TxKind::PegOut {
                bitcoin_address,
                amount,
            } => {
                b.push(2);
                // Length is bounded by MAX_BITCOIN_ADDRESS_LEN at decode time.
                b.extend_from_slice(&(bitcoin_address.len() as u16).to_be_bytes());
                b.extend_from_slice(bitcoin_address.as_bytes());
                b.extend_from_slice(&amount.to_sat().to_be_bytes());
            }
        }
        b
    }

    /// Transaction id: tagged hash of the signing bytes.
    pub fn id(&self) -> TxId {
        Hash32::tagged("fedpeg/txid", &[&self.signing_bytes()])
    }

    /// Checks the signature ([`fedpeg_consensus::signature_rule`], ZIP-215).
    /// A sender must also be a usable account key (decodable, not small
    /// order): [`AccountId::from_slice`] holds that at decode time.
    pub fn verify_signature(&self) -> bool {
        fedpeg_consensus::signature_rule::verify(
            &self.sender.0,
            &self.signing_bytes(),
            &self.signature,
        )
    }

    /// Queues the signature in `batch` (see [`verify_batch`]).
    pub fn queue_signature(&self, batch: &mut fedpeg_consensus::signature_rule::Batch) {
        batch.push(&self.sender.0, &self.signing_bytes(), &self.signature);
    }

    /// Amount leaving the sender besides the fee.
    pub fn amount(&self) -> Sats {
        match &self.kind {
            TxKind::Transfer { amount, .. } | TxKind::PegOut { amount, .. } => *amount,
        }
    }

    /// Decodes and structurally validates protobuf bytes (no signature or
    /// state check). Never panics on arbitrary input.
    pub fn decode(bytes: &[u8]) -> Result<Transaction, DecodeError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let p = pb::Transaction::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
        Transaction::from_proto(&p)
    }

    /// Structural validation of a decoded protobuf transaction.
    pub fn from_proto(p: &pb::Transaction) -> Result<Transaction, DecodeError> {
        let chain_id = Hash32::from_slice(&p.chain_id)
            .map_err(|_| DecodeError::FieldLength("chain_id", 32))?;
        if p.sender.len() != 32 {
            return Err(DecodeError::FieldLength("sender", 32));
        }
        let sender = AccountId::from_slice(&p.sender).map_err(DecodeError::Sender)?;
        let signature = <[u8; 64]>::try_from(p.signature.as_slice())
            .map_err(|_| DecodeError::FieldLength("signature", 64))?;
        let kind = match &p.kind {
            Some(pb::transaction::Kind::Transfer(t)) => {
                if t.to.len() != 32 {
                    return Err(DecodeError::FieldLength("transfer.to", 32));
                }
                TxKind::Transfer {
                    to: AccountId::from_slice(&t.to).map_err(DecodeError::Recipient)?,
                    amount: amount(t.amount)?,
                }
            }
            Some(pb::transaction::Kind::PegOut(po)) => {
                if po.bitcoin_address.len() > MAX_BITCOIN_ADDRESS_LEN {
                    return Err(DecodeError::AddressTooLong);
                }
                TxKind::PegOut {
                    bitcoin_address: po.bitcoin_address.clone(),
                    amount: amount(po.amount)?,
                }
            }
            None => return Err(DecodeError::MissingKind),
        };
        Ok(Transaction {
            chain_id,
            sender,
            nonce: p.nonce,
            fee: amount(p.fee)?,
            kind,
            signature,
        })
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::Transaction {
        let kind = match &self.kind {
            TxKind::Transfer { to, amount } => pb::transaction::Kind::Transfer(pb::Transfer {
                to: to.0.to_vec(),
                amount: amount.to_sat(),
            }),
            TxKind::PegOut {
                bitcoin_address,
                amount,
            } => pb::transaction::Kind::PegOut(pb::PegOut {
                bitcoin_address: bitcoin_address.clone(),
                amount: amount.to_sat(),
            }),
        };
        pb::Transaction {
            chain_id: self.chain_id.0.to_vec(),
            sender: self.sender.0.to_vec(),
            nonce: self.nonce,
            fee: self.fee.to_sat(),
            kind: Some(kind),
            signature: self.signature.to_vec(),
        }
    }

    /// Protobuf bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sats;
    use proptest::prelude::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// A transfer whose signature only the ZIP-215 rule accepts (torsion
    /// in R) verifies, single and batched: the mempool, the block check and
    /// gossip all use the one rule (verify_strict would refuse it).
    #[test]
    fn a_zip215_only_signature_is_valid_single_and_batched() {
        let mut tx = transfer(Hash32::ZERO, 0, 100);
        tx.signature =
            fedpeg_consensus::signature_rule::sign_with_torsion(&key(1), &tx.signing_bytes());
        assert!(tx.verify_signature());
        let honest = transfer(Hash32::ZERO, 1, 100);
        assert_eq!(
            verify_batch([&tx, &honest], &mut rand010::rng()),
            vec![true, true]
        );
        let strict = key(1).verifying_key().verify_strict(
            &tx.signing_bytes(),
            &ed25519_dalek::Signature::from_bytes(&tx.signature),
        );
        assert!(strict.is_err(), "the case verify_strict refuses");
    }

    fn transfer(chain: Hash32, nonce: u64, amount: u64) -> Transaction {
        let to = AccountId(key(2).verifying_key().to_bytes());
        Transaction::sign(
            chain,
            &key(1),
            nonce,
            sats(10),
            TxKind::Transfer {
                to,
                amount: sats(amount),
            },
        )
    }

    #[test]
    fn signature_covers_every_field() {
        let chain = Hash32::tagged("c", &[]);
        let tx = transfer(chain, 3, 500);
        assert!(tx.verify_signature());
        let mut t = tx.clone();
        t.nonce += 1;
        assert!(!t.verify_signature());
        let mut t = tx.clone();
        t.fee = sats(11);
        assert!(!t.verify_signature());
        let mut t = tx.clone();
        t.chain_id = Hash32::tagged("other", &[]);
        assert!(!t.verify_signature());
        let mut t = tx.clone();
        if let TxKind::Transfer { amount, .. } = &mut t.kind {
            *amount = sats(501);
        }
        assert!(!t.verify_signature());
        let mut t = tx;
        t.signature[0] ^= 1;
        assert!(!t.verify_signature());
    }

    #[test]
    fn batch_verdicts_equal_single_verdicts_with_a_bad_signature_inside() {
        let mut txs: Vec<_> = (0..6).map(|n| transfer(Hash32::ZERO, n, 1)).collect();
        assert_eq!(verify_batch(&txs, &mut rand010::rng()), vec![true; 6]);
        txs[2].signature[5] ^= 1;
        txs[4].signature[32..].copy_from_slice(&[0xff; 32]);
        let singles: Vec<bool> = txs.iter().map(|t| t.verify_signature()).collect();
        assert_eq!(singles, vec![true, true, false, true, false, true]);
        assert_eq!(verify_batch(&txs, &mut rand010::rng()), singles);
        assert!(verify_batch([], &mut rand010::rng()).is_empty());
    }

    #[test]
    fn non_canonical_signature_is_rejected() {
        // s >= group order: the ZIP-215 rule refuses it.
        let mut tx = transfer(Hash32::ZERO, 0, 1);
        tx.signature[32..].copy_from_slice(&[0xff; 32]);
        assert!(!tx.verify_signature());
    }

    #[test]
    fn structural_errors_are_reported() {
        let tx = transfer(Hash32::ZERO, 0, 1);
        let mut p = tx.to_proto();
        p.signature.pop();
        assert_eq!(
            Transaction::from_proto(&p),
            Err(DecodeError::FieldLength("signature", 64))
        );
        let mut p = tx.to_proto();
        p.kind = None;
        assert_eq!(Transaction::from_proto(&p), Err(DecodeError::MissingKind));
        assert!(matches!(
            Transaction::decode(&[0xff, 0xff, 0xff]),
            Err(DecodeError::Protobuf(_))
        ));
        assert!(matches!(
            Transaction::decode(&[0u8; 2000]),
            Err(DecodeError::TooLarge(2000))
        ));
    }

    #[test]
    fn amounts_above_21_million_btc_are_refused_when_decoded() {
        let tx = Transaction::sign(
            Hash32::ZERO,
            &key(1),
            0,
            sats(1),
            TxKind::Transfer {
                to: AccountId(key(9).verifying_key().to_bytes()),
                amount: sats(5),
            },
        );
        let mut p = tx.to_proto();
        if let Some(pb::transaction::Kind::Transfer(t)) = &mut p.kind {
            t.amount = Sats::MAX.to_sat() + 1;
        }
        let e = Transaction::from_proto(&p).unwrap_err();
        assert!(e.to_string().contains("more than 21 million BTC"), "{e}");
        let mut p = tx.to_proto();
        p.fee = u64::MAX;
        assert!(matches!(
            Transaction::from_proto(&p),
            Err(DecodeError::Amount(_))
        ));
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(nonce: u64, fee in 0..=Sats::MAX.to_sat(), amount in 0..=Sats::MAX.to_sat(), addr in "[a-z0-9]{0,90}", peg: bool) {
            let kind = if peg {
                TxKind::PegOut { bitcoin_address: addr, amount: sats(amount) }
            } else {
                TxKind::Transfer { to: AccountId(key(9).verifying_key().to_bytes()), amount: sats(amount) }
            };
            let tx = Transaction::sign(Hash32::ZERO, &key(1), nonce, sats(fee), kind);
            let back = Transaction::decode(&tx.encode()).unwrap();
            prop_assert!(back.verify_signature());
            prop_assert_eq!(back.id(), tx.id());
            prop_assert_eq!(back, tx);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Transaction::decode(&bytes);
        }
    }
}
