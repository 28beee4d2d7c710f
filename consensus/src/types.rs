//! Domain newtypes shared by every part of the engine.

use core::fmt;

/// A block height of the sidechain; the engine decides exactly one value per height.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl Height {
    /// The next height, saturating at `u64::MAX` (never reached in practice).
    pub fn next(self) -> Height {
        Height(self.0.saturating_add(1))
    }
}

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A round within a height; round 0 is the first attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Round(pub u32);

impl Round {
    /// The next round, saturating at `u32::MAX` so hostile input cannot overflow it.
    pub fn next(self) -> Round {
        Round(self.0.saturating_add(1))
    }
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifier of a proposed value (the block hash); the engine never sees block bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValueId(pub [u8; 32]);

impl fmt::Debug for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueId(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// Identifier of the chain (hash of the genesis file); every signature commits to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainId(pub [u8; 32]);

/// Position of a validator in the ordered [`crate::ValidatorSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidatorIndex(pub u32);

impl ValidatorIndex {
    /// The index as a `usize` for slice access.
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

/// The two kinds of votes in Tendermint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VoteKind {
    /// First voting step: "I saw this proposal and it is acceptable to me".
    Prevote,
    /// Second voting step: "I saw a polka (2f+1 prevotes) for this value".
    Precommit,
}

/// Step of a round, as in the paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Waiting for the proposal of the round.
    Propose,
    /// Own prevote sent; waiting for prevotes.
    Prevote,
    /// Own precommit sent; waiting for precommits.
    Precommit,
    /// The height is decided; waiting for `StartHeight` of the next one.
    Decided,
}

/// Which timer fired (or should be scheduled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeoutKind {
    /// `timeoutPropose`: no acceptable proposal arrived in time.
    Propose,
    /// `timeoutPrevote`: 2f+1 prevotes but no polka.
    Prevote,
    /// `timeoutPrecommit`: 2f+1 precommits but no decision.
    Precommit,
    /// Periodic re-broadcast of the messages that justify our round, so that
    /// progress survives lost messages once the network heals.
    Rebroadcast,
}
