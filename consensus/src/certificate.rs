//! Commit certificates: a quorum of precommits that proves a height was decided.

use ed25519_dalek::Signature;

use crate::message::{check_len_at_least, Reader, SignedVote, Writer};
use crate::types::{ChainId, Height, Round, ValidatorIndex, ValueId, VoteKind};
use crate::validator::{ValidatorSet, MAX_VALIDATORS};

/// A quorum of precommits for `value_id` at (`height`, `round`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitCertificate {
    /// Decided height.
    pub height: Height,
    /// Round in which the precommits were cast.
    pub round: Round,
    /// Decided value.
    pub value_id: ValueId,
    /// Precommit signatures, sorted by validator index.
    pub precommits: Vec<(ValidatorIndex, Signature)>,
}

/// Why a certificate was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    /// A signer index is not in the validator set.
    #[error("certificate signer {0} is not in the validator set")]
    UnknownSigner(u32),
    /// A signer appears twice.
    #[error("certificate lists signer {0} more than once")]
    DuplicateSigner(u32),
    /// A signature does not verify.
    #[error("certificate signature of validator {0} does not verify")]
    BadSignature(u32),
    /// Signers hold less than a quorum of voting power.
    #[error("certificate carries {got} voting power, a quorum needs {needed}")]
    InsufficientPower {
        /// Power present.
        got: u64,
        /// Quorum.
        needed: u64,
    },
    /// The encoding is malformed.
    #[error("malformed certificate encoding: {0}")]
    Malformed(&'static str),
}

const CERT_HEADER_LEN: usize = 8 + 4 + 32 + 4;
const CERT_ENTRY_LEN: usize = 4 + 64;

impl CommitCertificate {
    /// Check every signature ([`crate::signature_rule`]), reject duplicates and
    /// unknown signers, and require a quorum of voting power.
    pub fn verify(&self, chain_id: &ChainId, validators: &ValidatorSet) -> Result<(), CertError> {
        let mut seen = vec![false; validators.len()];
        let mut power: u64 = 0;
        let msg = SignedVote::sign_bytes(
            chain_id,
            VoteKind::Precommit,
            self.height,
            self.round,
            Some(self.value_id),
        );
        for (idx, sig) in &self.precommits {
            let v = validators
                .get(*idx)
                .ok_or(CertError::UnknownSigner(idx.0))?;
            let slot = seen
                .get_mut(idx.as_usize())
                .ok_or(CertError::UnknownSigner(idx.0))?;
            if *slot {
                return Err(CertError::DuplicateSigner(idx.0));
            }
            *slot = true;
            if !crate::signature_rule::verify(v.key.as_bytes(), &msg, &sig.to_bytes()) {
                return Err(CertError::BadSignature(idx.0));
            }
            power = power.saturating_add(v.power);
        }
        let needed = validators.quorum();
        if power < needed {
            return Err(CertError::InsufficientPower { got: power, needed });
        }
        Ok(())
    }

    /// Encode: height u64 | round u32 | value 32 | count u32 | count × (index u32 | sig 64), big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; CERT_HEADER_LEN + CERT_ENTRY_LEN * self.precommits.len()];
        let mut w = Writer::new(&mut b);
        w.put(&self.height.0.to_be_bytes());
        w.put(&self.round.0.to_be_bytes());
        w.put(&self.value_id.0);
        w.put(&(self.precommits.len() as u32).to_be_bytes());
        for (idx, sig) in &self.precommits {
            w.put(&idx.0.to_be_bytes());
            w.put(&sig.to_bytes());
        }
        b
    }

    /// Decode untrusted bytes with exact length checks; never panics. Does not verify.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertError> {
        check_len_at_least(bytes, CERT_HEADER_LEN)
            .map_err(|_| CertError::Malformed("too short"))?;
        let mut r = Reader::new(bytes);
        let height = Height(r.u64());
        let round = Round(r.u32());
        let value_id = ValueId(r.array32());
        let count = r.u32() as usize;
        if count > MAX_VALIDATORS {
            return Err(CertError::Malformed("too many signatures"));
        }
        if bytes.len() != CERT_HEADER_LEN + count * CERT_ENTRY_LEN {
            return Err(CertError::Malformed(
                "length does not match signature count",
            ));
        }
        let precommits = (0..count)
            .map(|_| (ValidatorIndex(r.u32()), Signature::from_bytes(&r.array64())))
            .collect();
        Ok(CommitCertificate {
            height,
            round,
            value_id,
            precommits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn setup(n: u8) -> (ChainId, Vec<SigningKey>, ValidatorSet) {
        let keys: Vec<SigningKey> = (1..=n).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
        let set =
            ValidatorSet::from_keys(keys.iter().map(|k| k.verifying_key()).collect()).unwrap();
        (ChainId([1; 32]), keys, set)
    }

    fn cert(c: &ChainId, keys: &[SigningKey], signers: &[u32]) -> CommitCertificate {
        let v = ValueId([5; 32]);
        CommitCertificate {
            height: Height(4),
            round: Round(1),
            value_id: v,
            precommits: signers
                .iter()
                .map(|i| {
                    let vote = SignedVote::sign(
                        c,
                        &keys[*i as usize],
                        ValidatorIndex(*i),
                        VoteKind::Precommit,
                        Height(4),
                        Round(1),
                        Some(v),
                    );
                    (ValidatorIndex(*i), vote.signature)
                })
                .collect(),
        }
    }

    #[test]
    fn quorum_certificate_verifies() {
        let (c, keys, set) = setup(4);
        assert_eq!(cert(&c, &keys, &[0, 1, 3]).verify(&c, &set), Ok(()));
    }

    #[test]
    fn certificate_below_quorum_is_rejected() {
        let (c, keys, set) = setup(4);
        assert_eq!(
            cert(&c, &keys, &[0, 1]).verify(&c, &set),
            Err(CertError::InsufficientPower { got: 2, needed: 3 })
        );
    }

    #[test]
    fn certificate_with_duplicate_signer_is_rejected() {
        let (c, keys, set) = setup(4);
        assert_eq!(
            cert(&c, &keys, &[0, 1, 1]).verify(&c, &set),
            Err(CertError::DuplicateSigner(1))
        );
    }

    #[test]
    fn certificate_with_unknown_signer_or_bad_signature_is_rejected() {
        let (c, keys, set) = setup(4);
        let mut x = cert(&c, &keys, &[0, 1, 2]);
        x.precommits[2].0 = ValidatorIndex(7);
        assert_eq!(x.verify(&c, &set), Err(CertError::UnknownSigner(7)));
        let mut y = cert(&c, &keys, &[0, 1, 2]);
        y.precommits[2].0 = ValidatorIndex(3);
        assert_eq!(y.verify(&c, &set), Err(CertError::BadSignature(3)));
        let mut z = cert(&c, &keys, &[0, 1, 2]);
        z.value_id = ValueId([6; 32]);
        assert_eq!(z.verify(&c, &set), Err(CertError::BadSignature(0)));
    }

    #[test]
    fn certificate_round_trips_and_rejects_bad_lengths() {
        let (c, keys, _) = setup(4);
        let x = cert(&c, &keys, &[0, 1, 2]);
        let b = x.encode();
        assert_eq!(CommitCertificate::decode(&b), Ok(x));
        assert!(CommitCertificate::decode(&b[..b.len() - 1]).is_err());
        assert!(CommitCertificate::decode(&[]).is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_certificate_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(c) = CommitCertificate::decode(&bytes) {
                prop_assert_eq!(c.encode(), bytes);
            }
        }
    }
}
