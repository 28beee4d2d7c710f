//! Vote bookkeeping for one round: who voted what, and how much power backs it.

use std::collections::{BTreeMap, BTreeSet};

use crate::message::SignedVote;
use crate::types::{ValidatorIndex, ValueId, VoteKind};
use crate::validator::ValidatorSet;

/// Most distinct votes kept per (validator, round, kind); more are equivocation spam.
pub const MAX_VOTES_PER_SLOT: usize = 3;

/// Result of adding a vote.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Added {
    /// First vote of this validator in this slot.
    New,
    /// Already known.
    Duplicate,
    /// The validator already voted differently; carries its first vote.
    /// `kept` says whether the new vote was stored too (see [`VoteSlots::add`]).
    Conflict { first: SignedVote, kept: bool },
}

/// Votes of one kind in one round.
///
/// Besides each validator's first vote, a conflicting vote of an equivocator
/// is kept (up to [`MAX_VOTES_PER_SLOT`] per validator) when another
/// validator or the round's proposal backs the same value. A signed vote is a
/// vote: counting it lets a proof-of-lock that includes an equivocator's vote
/// be recognised by everyone, and stays safe because two quorums for different
/// values in one round would need more than f equivocators. Unbacked extras
/// are dropped to bound memory; re-broadcasts deliver them again once backed.
#[derive(Clone, Debug, Default)]
pub(crate) struct VoteSlots {
    by_validator: BTreeMap<ValidatorIndex, Vec<SignedVote>>,
}

impl VoteSlots {
    /// Add a verified vote; `proposal` is the value proposed in this round, if known.
    pub(crate) fn add(&mut self, vote: SignedVote, proposal: Option<ValueId>) -> Added {
        let backed = (vote.value.is_some() && vote.value == proposal)
            || self
                .by_validator
                .iter()
                .any(|(i, vs)| *i != vote.validator && vs.iter().any(|x| x.value == vote.value));
        match self.by_validator.get_mut(&vote.validator) {
            None => {
                self.by_validator.insert(vote.validator, vec![vote]);
                Added::New
            }
            Some(vs) if vs.iter().any(|x| x.value == vote.value) => Added::Duplicate,
            Some(vs) => {
                let first = vs[0].clone();
                let kept = backed && vs.len() < MAX_VOTES_PER_SLOT;
                if kept {
                    vs.push(vote);
                }
                Added::Conflict { first, kept }
            }
        }
    }

    /// Whether exactly this vote is stored.
    pub(crate) fn contains(&self, vote: &SignedVote) -> bool {
        self.by_validator
            .get(&vote.validator)
            .is_some_and(|vs| vs.contains(vote))
    }

    /// Power of validators that voted for `value` (`None` = nil).
    pub(crate) fn power_for(&self, value: Option<ValueId>, set: &ValidatorSet) -> u64 {
        self.by_validator
            .iter()
            .filter(|(_, vs)| vs.iter().any(|v| v.value == value))
            .map(|(i, _)| set.power(*i))
            .sum()
    }

    /// Power of validators that voted at all, each counted once.
    pub(crate) fn power_any(&self, set: &ValidatorSet) -> u64 {
        self.by_validator.keys().map(|i| set.power(*i)).sum()
    }

    /// Non-nil values voted for.
    pub(crate) fn values(&self) -> BTreeSet<ValueId> {
        self.all().filter_map(|v| v.value).collect()
    }

    /// The first value in index order whose backing reaches `threshold`.
    pub(crate) fn value_with(&self, threshold: u64, set: &ValidatorSet) -> Option<ValueId> {
        self.values()
            .into_iter()
            .find(|v| self.power_for(Some(*v), set) >= threshold)
    }

    /// Votes for `value`.
    pub(crate) fn votes_for(&self, value: Option<ValueId>) -> impl Iterator<Item = &SignedVote> {
        self.all().filter(move |v| v.value == value)
    }

    /// All stored votes.
    pub(crate) fn all(&self) -> impl Iterator<Item = &SignedVote> {
        self.by_validator.values().flatten()
    }

    /// Validators with at least one vote.
    pub(crate) fn signers(&self) -> impl Iterator<Item = ValidatorIndex> + '_ {
        self.by_validator.keys().copied()
    }
}

/// Prevotes and precommits of one round.
#[derive(Clone, Debug, Default)]
pub(crate) struct RoundVotes {
    pub(crate) prevotes: VoteSlots,
    pub(crate) precommits: VoteSlots,
}

impl RoundVotes {
    pub(crate) fn of(&self, kind: VoteKind) -> &VoteSlots {
        match kind {
            VoteKind::Prevote => &self.prevotes,
            VoteKind::Precommit => &self.precommits,
        }
    }

    pub(crate) fn of_mut(&mut self, kind: VoteKind) -> &mut VoteSlots {
        match kind {
            VoteKind::Prevote => &mut self.prevotes,
            VoteKind::Precommit => &mut self.precommits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChainId, Height, Round};
    use ed25519_dalek::SigningKey;

    fn vote(keys: &[SigningKey], i: u32, value: Option<u8>) -> SignedVote {
        SignedVote::sign(
            &ChainId([0; 32]),
            &keys[i as usize],
            ValidatorIndex(i),
            VoteKind::Prevote,
            Height(1),
            Round(0),
            value.map(|b| ValueId([b; 32])),
        )
    }

    #[test]
    fn equivocator_vote_counts_only_when_backed_and_once_for_any() {
        let keys: Vec<SigningKey> = (1..=4u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let set =
            ValidatorSet::from_keys(keys.iter().map(|k| k.verifying_key()).collect()).unwrap();
        let mut s = VoteSlots::default();
        assert_eq!(s.add(vote(&keys, 0, Some(1)), None), Added::New);
        assert_eq!(s.add(vote(&keys, 0, Some(1)), None), Added::Duplicate);
        // Unbacked conflicting value: reported, not kept.
        assert!(matches!(
            s.add(vote(&keys, 0, Some(2)), None),
            Added::Conflict { kept: false, .. }
        ));
        assert_eq!(s.power_for(Some(ValueId([2; 32])), &set), 0);
        // Backed by validator 1: kept and counted for both values, once for "any".
        assert_eq!(s.add(vote(&keys, 1, Some(2)), None), Added::New);
        assert!(matches!(
            s.add(vote(&keys, 0, Some(2)), None),
            Added::Conflict { kept: true, .. }
        ));
        assert_eq!(s.power_for(Some(ValueId([2; 32])), &set), 2);
        assert_eq!(s.power_for(Some(ValueId([1; 32])), &set), 1);
        assert_eq!(s.power_any(&set), 2);
    }
}
