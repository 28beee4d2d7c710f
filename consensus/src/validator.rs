//! The validator set and its quorum maths.

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::types::{Height, Round, ValidatorIndex};

/// Upper bound on the number of validators, so encoded certificates stay small.
pub const MAX_VALIDATORS: usize = 1024;

/// One member of the validator set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// The ed25519 consensus key.
    pub key: VerifyingKey,
    /// Voting power (default 1).
    pub power: u64,
}

/// Why a validator set was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidatorSetError {
    /// The set has no members.
    #[error("validator set is empty; genesis must list at least one member")]
    Empty,
    /// The set has more than [`MAX_VALIDATORS`] members.
    #[error("validator set has {0} members, more than the supported {MAX_VALIDATORS}")]
    TooMany(usize),
    /// A member has zero voting power.
    #[error("validator {0} has zero voting power; give every member power >= 1")]
    ZeroPower(usize),
    /// The same key appears twice.
    #[error("validator {0} repeats the key of an earlier member; keys must be unique")]
    DuplicateKey(usize),
    /// Total power does not fit the quorum maths.
    #[error("total voting power overflows; keep the sum below 2^62")]
    PowerOverflow,
}

/// Ordered list of validators with voting power; index order is consensus-critical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total: u64,
    id: [u8; 32],
}

impl ValidatorSet {
    /// Build a set from members in their canonical (genesis) order.
    pub fn new(validators: Vec<Validator>) -> Result<Self, ValidatorSetError> {
        if validators.is_empty() {
            return Err(ValidatorSetError::Empty);
        }
        if validators.len() > MAX_VALIDATORS {
            return Err(ValidatorSetError::TooMany(validators.len()));
        }
        let mut total: u64 = 0;
        for (i, v) in validators.iter().enumerate() {
            if v.power == 0 {
                return Err(ValidatorSetError::ZeroPower(i));
            }
            if validators[..i].iter().any(|w| w.key == v.key) {
                return Err(ValidatorSetError::DuplicateKey(i));
            }
            total = total
                .checked_add(v.power)
                .filter(|t| *t < (1u64 << 62))
                .ok_or(ValidatorSetError::PowerOverflow)?;
        }
        // A fingerprint of the set lets pre-verified messages be matched to it.
        let mut h = Sha256::new();
        h.update(b"fedpeg/consensus/v1/validator-set");
        for v in &validators {
            h.update(v.key.as_bytes());
            h.update(v.power.to_be_bytes());
        }
        let id: [u8; 32] = h.finalize().into();
        Ok(ValidatorSet {
            validators,
            total,
            id,
        })
    }

    /// Build a set where every key has voting power 1.
    pub fn from_keys(keys: Vec<VerifyingKey>) -> Result<Self, ValidatorSetError> {
        Self::new(
            keys.into_iter()
                .map(|key| Validator { key, power: 1 })
                .collect(),
        )
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// Always false: an empty set cannot be constructed.
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// The validator at `index`, if any.
    pub fn get(&self, index: ValidatorIndex) -> Option<&Validator> {
        self.validators.get(index.as_usize())
    }

    /// Index of the validator with this key, if it is a member.
    pub fn index_of(&self, key: &VerifyingKey) -> Option<ValidatorIndex> {
        self.validators
            .iter()
            .position(|v| &v.key == key)
            .map(|i| ValidatorIndex(i as u32))
    }

    /// Iterate over members in index order.
    pub fn iter(&self) -> impl Iterator<Item = (ValidatorIndex, &Validator)> {
        self.validators
            .iter()
            .enumerate()
            .map(|(i, v)| (ValidatorIndex(i as u32), v))
    }

    /// Voting power of `index` (0 for non-members).
    pub fn power(&self, index: ValidatorIndex) -> u64 {
        self.get(index).map_or(0, |v| v.power)
    }

    /// Sum of all voting power.
    pub fn total_power(&self) -> u64 {
        self.total
    }

    /// Quorum: floor(2*total/3) + 1 (more than two thirds).
    pub fn quorum(&self) -> u64 {
        2 * self.total / 3 + 1
    }

    /// f+1 threshold: floor((total-1)/3) + 1 (at least one honest member).
    pub fn f_plus_one(&self) -> u64 {
        (self.total - 1) / 3 + 1
    }

    /// Round-robin proposer: index (height + round) mod n (power is ignored).
    pub fn proposer(&self, height: Height, round: Round) -> ValidatorIndex {
        let n = self.validators.len() as u128;
        let i = (u128::from(height.0) + u128::from(round.0)) % n;
        ValidatorIndex(i as u32)
    }

    /// SHA-256 fingerprint of the ordered keys and powers.
    pub fn id(&self) -> [u8; 32] {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn keys(n: u8) -> Vec<VerifyingKey> {
        (0..n)
            .map(|i| SigningKey::from_bytes(&[i + 1; 32]).verifying_key())
            .collect()
    }

    #[test]
    fn quorum_and_f_plus_one_follow_3f_plus_1() {
        for (n, q, f1) in [(1, 1, 1), (4, 3, 2), (7, 5, 3), (10, 7, 4), (6, 5, 2)] {
            let set = ValidatorSet::from_keys(keys(n)).unwrap();
            assert_eq!(set.quorum(), q, "quorum n={n}");
            assert_eq!(set.f_plus_one(), f1, "f+1 n={n}");
        }
    }

    #[test]
    fn proposer_rotates_round_robin_over_height_and_round() {
        let set = ValidatorSet::from_keys(keys(4)).unwrap();
        assert_eq!(set.proposer(Height(1), Round(0)), ValidatorIndex(1));
        assert_eq!(set.proposer(Height(1), Round(3)), ValidatorIndex(0));
        assert_eq!(
            set.proposer(Height(u64::MAX), Round(u32::MAX)),
            ValidatorIndex(((u128::from(u64::MAX) + u128::from(u32::MAX)) % 4) as u32)
        );
    }

    #[test]
    fn bad_validator_sets_are_rejected() {
        assert_eq!(ValidatorSet::new(vec![]), Err(ValidatorSetError::Empty));
        let k = keys(2);
        assert_eq!(
            ValidatorSet::from_keys(vec![k[0], k[1], k[0]]),
            Err(ValidatorSetError::DuplicateKey(2))
        );
        assert_eq!(
            ValidatorSet::new(vec![Validator {
                key: k[0],
                power: 0
            }]),
            Err(ValidatorSetError::ZeroPower(0))
        );
        assert_eq!(
            ValidatorSet::new(vec![
                Validator {
                    key: k[0],
                    power: u64::MAX
                },
                Validator {
                    key: k[1],
                    power: 1
                }
            ]),
            Err(ValidatorSetError::PowerOverflow)
        );
    }
}
