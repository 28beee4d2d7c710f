//! Federation transactions: state changes that only federation members may
//! make, each signed with the member's consensus key.
//!
//! Signing bytes: `"fedpeg/fedtx/v1" || chain_id[32] || member u32 || kind u8
//! || fields` (integers big-endian); `RegisterDepositAddress` (kind 1) is
//! `account[32]`; `PegInMint` (kind 2) is `txid[32] || vout u32 || amount u64
//! || account[32] || bitcoin_block[32] || epoch u32`, the epoch only when it
//! is not 0 (a mint of a genesis-descriptor deposit signs the bytes it did
//! before epochs had descriptors; the fields before it have fixed widths, so
//! the two forms cannot collide); `FeeRateVote` (kind 3) is
//! `sat_per_vbyte u64 || height u64`; `PegOutSignatures` (kind 4) is `batch
//! u64 || version u32 || count u32 || (len u32 || signature)*`; `PegOutBump`
//! (kind 5) is `batch u64 || version u32`; `PegOutConfirmed` (kind 6) is
//! `batch u64 || txid[32] || bitcoin_block[32]`; `FederationChange` (kind 7)
//! is `count u32 || (name_len u32 || name || consensus_key[32] ||
//! peg_key[33] || addr_len u32 || addr)* || peg_threshold u32 || activation
//! u64 || base_epoch u32` (the change's canonical bytes, see [`crate::epoch`]). The id is
//! `H_tag("fedpeg/fedtxid", signing bytes)`. Signatures are checked with
//! [`fedpeg_consensus::signature_rule`] (ZIP-215) against the consensus key
//! of `member` in the epoch in force at the block's height
//! ([`crate::State::epoch_at`]).

use crate::account::AccountId;
use crate::amount::Sats;
use crate::epoch::FederationChange;
use crate::hash::Hash32;
use crate::ids::{BatchId, FeeRate, MemberIndex};
use crate::tx::DecodeError;
use bitcoin::hashes::Hash as _;
use bitcoin::{BlockHash, Txid};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use fedpeg_consensus::Height;
use fedpeg_proto::v1 as pb;

const SIGN_DOMAIN: &[u8] = b"fedpeg/fedtx/v1";

pub use bitcoin::OutPoint;

/// What a federation transaction does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FedTxKind {
    /// Every member starts watching this account's deposit address.
    RegisterDepositAddress { account: AccountId },
    /// This member's Bitcoin fee-rate estimate as of sidechain `height`.
    FeeRateVote {
        sat_per_vbyte: FeeRate,
        height: Height,
    },
    /// Credits a deposit that reached the confirmation depth.
    PegInMint {
        outpoint: OutPoint,
        amount: Sats,
        account: AccountId,
        bitcoin_block: BlockHash,
        /// The epoch whose deposit address (descriptor) the output pays.
        epoch: u32,
    },
    /// This member's signatures of every input of a peg-out batch version.
    PegOutSignatures {
        batch: BatchId,
        version: u32,
        signatures: Vec<Vec<u8>>,
    },
    /// This member saw the batch version unconfirmed for too long.
    PegOutBump { batch: BatchId, version: u32 },
    /// The batch transaction `txid` is confirmed at depth in `bitcoin_block`.
    PegOutConfirmed {
        batch: BatchId,
        txid: Txid,
        bitcoin_block: BlockHash,
    },
    /// This member's vote to replace the member set by `change`.
    FederationChange { change: FederationChange },
}

/// Most signatures (inputs) one `PegOutSignatures` may carry.
pub const MAX_PEGOUT_SIGNATURES: usize = 1000;
/// Longest signature element (DER ECDSA + sighash byte).
pub const MAX_SIGNATURE_BYTES: usize = 73;

/// A member-signed federation transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederationTx {
    pub chain_id: Hash32,
    pub member: MemberIndex,
    pub kind: FedTxKind,
    pub signature: [u8; 64],
}

impl FederationTx {
    /// Builds and signs a federation transaction as `member`.
    pub fn sign(
        chain_id: Hash32,
        member: MemberIndex,
        key: &SigningKey,
        kind: FedTxKind,
    ) -> FederationTx {
        let mut tx = FederationTx {
            chain_id,
            member,
            kind,
            signature: [0u8; 64],
        };
        tx.signature = key.sign(&tx.signing_bytes()).to_bytes();
        tx
    }

    /// The exact bytes the member signs.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(96);
        b.extend_from_slice(SIGN_DOMAIN);
        b.extend_from_slice(&self.chain_id.0);
        b.extend_from_slice(&self.member.0.to_be_bytes());
        match &self.kind {
            FedTxKind::RegisterDepositAddress { account } => {
                b.push(1);
                b.extend_from_slice(&account.0);
            }
            FedTxKind::FeeRateVote {
                sat_per_vbyte,
                height,
            } => {
                b.push(3);
                b.extend_from_slice(&sat_per_vbyte.0.to_be_bytes());
                b.extend_from_slice(&height.0.to_be_bytes());
            }
            FedTxKind::PegInMint {
                outpoint,
                amount,
                account,
                bitcoin_block,
                epoch,
            } => {
                b.push(2);
                b.extend_from_slice(outpoint.txid.as_byte_array());
                b.extend_from_slice(&outpoint.vout.to_be_bytes());
                b.extend_from_slice(&amount.to_sat().to_be_bytes());
                b.extend_from_slice(&account.0);
                b.extend_from_slice(bitcoin_block.as_byte_array());
                if *epoch != 0 {
                    b.extend_from_slice(&epoch.to_be_bytes());
                }
            }
            FedTxKind::PegOutSignatures {
                batch,
                version,
                signatures,
            } => {
                b.push(4);
                b.extend_from_slice(&batch.0.to_be_bytes());
                b.extend_from_slice(&version.to_be_bytes());
                b.extend_from_slice(&(signatures.len() as u32).to_be_bytes());
                for sig in signatures {
                    b.extend_from_slice(&(sig.len() as u32).to_be_bytes());
                    b.extend_from_slice(sig);
                }
            }
            FedTxKind::PegOutBump { batch, version } => {
                b.push(5);
                b.extend_from_slice(&batch.0.to_be_bytes());
                b.extend_from_slice(&version.to_be_bytes());
            }
            FedTxKind::PegOutConfirmed {
                batch,
                txid,
                bitcoin_block,
            } => {
                b.push(6);
                b.extend_from_slice(&batch.0.to_be_bytes());
                b.extend_from_slice(txid.as_byte_array());
                b.extend_from_slice(bitcoin_block.as_byte_array());
            }
            FedTxKind::FederationChange { change } => {
                b.push(7);
                b.extend_from_slice(&change.canonical_bytes());
            }
        }
        b
    }

    /// Id: tagged hash of the signing bytes.
    pub fn id(&self) -> Hash32 {
        Hash32::tagged("fedpeg/fedtxid", &[&self.signing_bytes()])
    }

    /// True if signed by `members[self.member]`, the consensus keys of the
    /// epoch in force ([`fedpeg_consensus::signature_rule`], ZIP-215).
    pub fn verify(&self, members: &[VerifyingKey]) -> bool {
        let Some(key) = members.get(self.member.index()) else {
            return false;
        };
        fedpeg_consensus::signature_rule::verify(
            key.as_bytes(),
            &self.signing_bytes(),
            &self.signature,
        )
    }

    /// Structural validation of the wire form.
    pub fn from_proto(p: &pb::FederationTx) -> Result<FederationTx, DecodeError> {
        let chain_id = Hash32::from_slice(&p.chain_id)
            .map_err(|_| DecodeError::FieldLength("chain_id", 32))?;
        let signature = <[u8; 64]>::try_from(p.signature.as_slice())
            .map_err(|_| DecodeError::FieldLength("signature", 64))?;
        let kind = match &p.kind {
            Some(pb::federation_tx::Kind::RegisterDepositAddress(r)) => {
                if r.account.len() != 32 {
                    return Err(DecodeError::FieldLength("account", 32));
                }
                FedTxKind::RegisterDepositAddress {
                    account: AccountId::from_slice(&r.account).map_err(DecodeError::Recipient)?,
                }
            }
            Some(pb::federation_tx::Kind::PegInMint(m)) => {
                let b32 = |v: &[u8], name| {
                    <[u8; 32]>::try_from(v).map_err(|_| DecodeError::FieldLength(name, 32))
                };
                FedTxKind::PegInMint {
                    outpoint: OutPoint {
                        txid: Txid::from_byte_array(b32(&m.txid, "txid")?),
                        vout: m.vout,
                    },
                    amount: crate::tx::amount(m.amount)?,
                    account: AccountId::from_slice(&b32(&m.account, "account")?)
                        .map_err(DecodeError::Recipient)?,
                    bitcoin_block: BlockHash::from_byte_array(b32(
                        &m.bitcoin_block,
                        "bitcoin_block",
                    )?),
                    epoch: m.epoch,
                }
            }
            Some(pb::federation_tx::Kind::FeeRateVote(v)) => FedTxKind::FeeRateVote {
                sat_per_vbyte: FeeRate(v.sat_per_vbyte),
                height: Height(v.height),
            },
            Some(pb::federation_tx::Kind::PegOutSignatures(p)) => {
                if p.signatures.len() > MAX_PEGOUT_SIGNATURES {
                    return Err(DecodeError::FieldLength(
                        "signatures",
                        MAX_PEGOUT_SIGNATURES,
                    ));
                }
                if p.signatures.iter().any(|s| s.len() > MAX_SIGNATURE_BYTES) {
                    return Err(DecodeError::FieldLength("signature", MAX_SIGNATURE_BYTES));
                }
                FedTxKind::PegOutSignatures {
                    batch: BatchId(p.batch),
                    version: p.version,
                    signatures: p.signatures.clone(),
                }
            }
            Some(pb::federation_tx::Kind::PegOutBump(p)) => FedTxKind::PegOutBump {
                batch: BatchId(p.batch),
                version: p.version,
            },
            Some(pb::federation_tx::Kind::PegOutConfirmed(p)) => {
                let b32 = |v: &[u8], name| {
                    <[u8; 32]>::try_from(v).map_err(|_| DecodeError::FieldLength(name, 32))
                };
                FedTxKind::PegOutConfirmed {
                    batch: BatchId(p.batch),
                    txid: Txid::from_byte_array(b32(&p.txid, "txid")?),
                    bitcoin_block: BlockHash::from_byte_array(b32(
                        &p.bitcoin_block,
                        "bitcoin_block",
                    )?),
                }
            }
            Some(pb::federation_tx::Kind::FederationChange(c)) => FedTxKind::FederationChange {
                change: FederationChange::from_proto(c)?,
            },
            None => return Err(DecodeError::MissingKind),
        };
        Ok(FederationTx {
            chain_id,
            member: MemberIndex(p.member),
            kind,
            signature,
        })
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::FederationTx {
        let kind = match &self.kind {
            FedTxKind::RegisterDepositAddress { account } => {
                pb::federation_tx::Kind::RegisterDepositAddress(pb::RegisterDepositAddress {
                    account: account.0.to_vec(),
                })
            }
            FedTxKind::FeeRateVote {
                sat_per_vbyte,
                height,
            } => pb::federation_tx::Kind::FeeRateVote(pb::FeeRateVote {
                sat_per_vbyte: sat_per_vbyte.0,
                height: height.0,
            }),
            FedTxKind::PegInMint {
                outpoint,
                amount,
                account,
                bitcoin_block,
                epoch,
            } => pb::federation_tx::Kind::PegInMint(pb::PegInMint {
                txid: outpoint.txid.to_byte_array().to_vec(),
                vout: outpoint.vout,
                amount: amount.to_sat(),
                account: account.0.to_vec(),
                bitcoin_block: bitcoin_block.to_byte_array().to_vec(),
                epoch: *epoch,
            }),
            FedTxKind::PegOutSignatures {
                batch,
                version,
                signatures,
            } => pb::federation_tx::Kind::PegOutSignatures(pb::PegOutSignatures {
                batch: batch.0,
                version: *version,
                signatures: signatures.clone(),
            }),
            FedTxKind::PegOutBump { batch, version } => {
                pb::federation_tx::Kind::PegOutBump(pb::PegOutBump {
                    batch: batch.0,
                    version: *version,
                })
            }
            FedTxKind::PegOutConfirmed {
                batch,
                txid,
                bitcoin_block,
            } => pb::federation_tx::Kind::PegOutConfirmed(pb::PegOutConfirmed {
                batch: batch.0,
                txid: txid.to_byte_array().to_vec(),
                bitcoin_block: bitcoin_block.to_byte_array().to_vec(),
            }),
            FedTxKind::FederationChange { change } => {
                pb::federation_tx::Kind::FederationChange(change.to_proto())
            }
        };
        pb::FederationTx {
            chain_id: self.chain_id.0.to_vec(),
            member: self.member.0,
            kind: Some(kind),
            signature: self.signature.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i + 40; 32])
    }

    fn account(i: u8) -> AccountId {
        AccountId(
            SigningKey::from_bytes(&[i + 1; 32])
                .verifying_key()
                .to_bytes(),
        )
    }

    /// A member's federation transaction with a signature only the ZIP-215
    /// rule accepts verifies (one rule for every signature).
    #[test]
    fn a_zip215_only_member_signature_is_valid() {
        let keys: Vec<_> = (0..3).map(|i| member(i).verifying_key()).collect();
        let mut tx = FederationTx::sign(
            Hash32::ZERO,
            MemberIndex(1),
            &member(1),
            FedTxKind::RegisterDepositAddress {
                account: account(1),
            },
        );
        tx.signature =
            fedpeg_consensus::signature_rule::sign_with_torsion(&member(1), &tx.signing_bytes());
        assert!(tx.verify(&keys));
    }

    #[test]
    fn signature_binds_member_chain_and_account() {
        let keys: Vec<_> = (0..3).map(|i| member(i).verifying_key()).collect();
        let tx = FederationTx::sign(
            Hash32::ZERO,
            MemberIndex(1),
            &member(1),
            FedTxKind::RegisterDepositAddress {
                account: account(5),
            },
        );
        assert!(tx.verify(&keys));
        // Claiming to be another member, or signing with a non-member key, fails.
        let mut t = tx.clone();
        t.member = MemberIndex(2);
        assert!(!t.verify(&keys));
        let t = FederationTx::sign(
            Hash32::ZERO,
            MemberIndex(1),
            &member(9),
            FedTxKind::RegisterDepositAddress {
                account: account(5),
            },
        );
        assert!(!t.verify(&keys));
        let mut t = tx.clone();
        t.chain_id = Hash32::tagged("x", &[]);
        assert!(!t.verify(&keys));
        let mut t = tx.clone();
        t.kind = FedTxKind::RegisterDepositAddress {
            account: account(6),
        };
        assert!(!t.verify(&keys));
        let mut t = tx;
        t.member = MemberIndex(7);
        assert!(!t.verify(&keys), "unknown member index");
    }

    #[test]
    fn a_mint_signs_its_epoch_and_a_genesis_epoch_mint_signs_the_old_bytes() {
        let mint = |epoch| {
            FederationTx::sign(
                Hash32::ZERO,
                MemberIndex(1),
                &member(1),
                FedTxKind::PegInMint {
                    outpoint: OutPoint {
                        txid: Txid::from_byte_array([7; 32]),
                        vout: 2,
                    },
                    amount: crate::testing::sats(5_000),
                    account: account(3),
                    bitcoin_block: BlockHash::from_byte_array([8; 32]),
                    epoch,
                },
            )
        };
        // Domain, chain id, member, kind, txid, vout, amount, account, block.
        let old_len = SIGN_DOMAIN.len() + 32 + 4 + 1 + 32 + 4 + 8 + 32 + 32;
        assert_eq!(mint(0).signing_bytes().len(), old_len);
        let later = mint(3).signing_bytes();
        assert_eq!(later.len(), old_len + 4);
        assert_eq!(&later[old_len..], &3u32.to_be_bytes());
        assert_eq!(&later[..old_len], &mint(0).signing_bytes()[..]);
        assert_ne!(mint(3).id(), mint(0).id());
        for epoch in [0, 3] {
            let tx = mint(epoch);
            assert_eq!(FederationTx::from_proto(&tx.to_proto()).unwrap(), tx);
        }
        // The epoch is signed: changing it breaks the signature.
        let mut forged = mint(3);
        if let FedTxKind::PegInMint { epoch, .. } = &mut forged.kind {
            *epoch = 4;
        }
        assert!(!forged.verify(&[member(0).verifying_key(), member(1).verifying_key()]));
    }

    #[test]
    fn a_federation_change_vote_signs_kind_7_and_round_trips() {
        let change = crate::epoch::tests::change(3);
        let tx = FederationTx::sign(
            Hash32::ZERO,
            MemberIndex(2),
            &member(2),
            FedTxKind::FederationChange {
                change: change.clone(),
            },
        );
        let b = tx.signing_bytes();
        let head = SIGN_DOMAIN.len() + 32 + 4;
        assert_eq!(b[head], 7);
        assert_eq!(&b[head + 1..], change.canonical_bytes().as_slice());
        assert_eq!(FederationTx::from_proto(&tx.to_proto()).unwrap(), tx);
        let keys: Vec<_> = (0..3).map(|i| member(i).verifying_key()).collect();
        assert!(tx.verify(&keys));
        // A vote for another change is another signature.
        let mut other = tx.clone();
        if let FedTxKind::FederationChange { change } = &mut other.kind {
            change.peg_threshold += 1;
        }
        assert!(!other.verify(&keys));
        // A bad key in the change is a decode error, not a panic.
        let mut p = tx.to_proto();
        if let Some(pb::federation_tx::Kind::FederationChange(c)) = &mut p.kind {
            c.members[1].peg_key = vec![0; 33];
        }
        assert!(matches!(
            FederationTx::from_proto(&p),
            Err(DecodeError::FederationChange(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_federation_changes_are_refused_not_panicked(
            key in proptest::collection::vec(any::<u8>(), 0..40),
            peg in proptest::collection::vec(any::<u8>(), 0..40),
            name in ".{0,80}",
        ) {
            let p = pb::FederationTx {
                chain_id: vec![0; 32],
                member: 0,
                kind: Some(pb::federation_tx::Kind::FederationChange(pb::FederationChange {
                    members: vec![pb::EpochMember { name, consensus_key: key, peg_key: peg, p2p_address: "/x".into() }],
                    peg_threshold: 1,
                    activation_height: 5,
                    base_epoch: 0,
                })),
                signature: vec![0; 64],
            };
            let _ = FederationTx::from_proto(&p);
        }

        #[test]
        fn wire_round_trip(m in 0u32..4, a in 0u8..50) {
            let tx = FederationTx::sign(Hash32::ZERO, MemberIndex(m), &member(m as u8), FedTxKind::RegisterDepositAddress { account: account(a) });
            prop_assert_eq!(FederationTx::from_proto(&tx.to_proto()).unwrap(), tx);
        }

        #[test]
        fn garbage_fields_are_refused_not_panicked(chain in proptest::collection::vec(any::<u8>(), 0..40), acct in proptest::collection::vec(any::<u8>(), 0..40), sig in proptest::collection::vec(any::<u8>(), 0..70)) {
            let p = pb::FederationTx {
                chain_id: chain,
                member: 0,
                kind: Some(pb::federation_tx::Kind::RegisterDepositAddress(pb::RegisterDepositAddress { account: acct })),
                signature: sig,
            };
            let _ = FederationTx::from_proto(&p);
        }
    }
}
