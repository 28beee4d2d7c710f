//! Equivocation evidence: two conflicting messages signed by the same validator.

use crate::message::{MessageError, SignedProposal, SignedVote};
use crate::types::{ChainId, ValidatorIndex};
use crate::validator::ValidatorSet;

/// Proof that a validator signed two different values for one (height, round, step).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Equivocation {
    /// Two votes of the same kind, height and round for different values.
    Votes {
        /// The vote seen first.
        first: SignedVote,
        /// The conflicting vote.
        second: SignedVote,
    },
    /// Two proposals for the same height and round with different values.
    Proposals {
        /// The proposal seen first.
        first: SignedProposal,
        /// The conflicting proposal.
        second: SignedProposal,
    },
}

/// Why evidence is not a valid proof of equivocation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvidenceError {
    /// The two messages are not for the same slot, signer, or do not differ.
    #[error("the two messages do not conflict (different slot or signer, or same content)")]
    NotConflicting,
    /// One of the signatures is invalid.
    #[error("evidence message is not authentic: {0}")]
    Message(#[from] MessageError),
}

impl Equivocation {
    /// The validator that equivocated.
    pub fn offender(&self) -> ValidatorIndex {
        match self {
            Equivocation::Votes { first, .. } => first.validator,
            Equivocation::Proposals { first, .. } => first.proposer,
        }
    }

    /// Check that both messages are authentic and really conflict.
    pub fn verify(
        &self,
        chain_id: &ChainId,
        validators: &ValidatorSet,
    ) -> Result<(), EvidenceError> {
        match self {
            Equivocation::Votes { first, second } => {
                let same_slot = first.validator == second.validator
                    && first.kind == second.kind
                    && first.height == second.height
                    && first.round == second.round;
                if !same_slot || first.value == second.value {
                    return Err(EvidenceError::NotConflicting);
                }
                first.verify(chain_id, validators)?;
                second.verify(chain_id, validators)?;
            }
            Equivocation::Proposals { first, second } => {
                let same_slot = first.proposer == second.proposer
                    && first.height == second.height
                    && first.round == second.round;
                if !same_slot
                    || (first.value_id == second.value_id && first.pol_round == second.pol_round)
                {
                    return Err(EvidenceError::NotConflicting);
                }
                first.verify(chain_id, validators)?;
                second.verify(chain_id, validators)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Height, Round, ValueId, VoteKind};
    use ed25519_dalek::SigningKey;

    #[test]
    fn double_vote_is_valid_evidence_and_same_vote_is_not() {
        let keys: Vec<SigningKey> = (1..=4u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let set =
            ValidatorSet::from_keys(keys.iter().map(|k| k.verifying_key()).collect()).unwrap();
        let c = ChainId([3; 32]);
        let a = SignedVote::sign(
            &c,
            &keys[2],
            ValidatorIndex(2),
            VoteKind::Prevote,
            Height(1),
            Round(0),
            Some(ValueId([1; 32])),
        );
        let b = SignedVote::sign(
            &c,
            &keys[2],
            ValidatorIndex(2),
            VoteKind::Prevote,
            Height(1),
            Round(0),
            None,
        );
        let e = Equivocation::Votes {
            first: a.clone(),
            second: b,
        };
        assert_eq!(e.verify(&c, &set), Ok(()));
        assert_eq!(e.offender(), ValidatorIndex(2));
        let same = Equivocation::Votes {
            first: a.clone(),
            second: a.clone(),
        };
        assert_eq!(same.verify(&c, &set), Err(EvidenceError::NotConflicting));
        let other_round = SignedVote::sign(
            &c,
            &keys[2],
            ValidatorIndex(2),
            VoteKind::Prevote,
            Height(1),
            Round(1),
            None,
        );
        let e2 = Equivocation::Votes {
            first: a,
            second: other_round,
        };
        assert_eq!(e2.verify(&c, &set), Err(EvidenceError::NotConflicting));
    }
}
