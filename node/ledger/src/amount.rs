//! Amounts of pegged BTC in satoshis, with checked arithmetic only.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Satoshis of pegged BTC. Arithmetic is checked: overflow is an error the
/// caller turns into a rejected transaction, never a wrap or a panic.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sats(pub u64);

impl Sats {
    /// Zero sats.
    pub const ZERO: Sats = Sats(0);

    /// 21 million BTC: no amount of pegged BTC can exceed it.
    pub const MAX: Sats = Sats(21_000_000 * 100_000_000);

    /// `sats` if it is at most [`Sats::MAX`].
    pub fn checked(sats: u64) -> Option<Sats> {
        (sats <= Self::MAX.0).then_some(Sats(sats))
    }

    /// The amount in satoshis.
    pub fn to_sat(self) -> u64 {
        self.0
    }

    /// `self + rhs`, or `None` on overflow.
    pub fn checked_add(self, rhs: Sats) -> Option<Sats> {
        self.0.checked_add(rhs.0).map(Sats)
    }

    /// `self - rhs`, or `None` if it would go below zero.
    pub fn checked_sub(self, rhs: Sats) -> Option<Sats> {
        self.0.checked_sub(rhs.0).map(Sats)
    }
}

impl fmt::Display for Sats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sats", self.0)
    }
}

impl fmt::Debug for Sats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}sat", self.0)
    }
}
