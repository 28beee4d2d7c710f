//! Amounts of pegged BTC in satoshis, with checked arithmetic only.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Satoshis of pegged BTC, never more than 21 million BTC ([`Sats::MAX`]):
/// the field is private, every constructor checks the cap, and arithmetic is
/// checked, so an overflow or an impossible amount is an error the caller
/// turns into a rejected transaction, never a wrap or a panic.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Sats(u64);

/// An amount above 21 million BTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} sats is more than 21 million BTC")]
pub struct AmountError(pub u64);

impl Sats {
    /// Zero sats.
    pub const ZERO: Sats = Sats(0);

    /// 21 million BTC: no amount of pegged BTC can exceed it.
    pub const MAX: Sats = Sats(21_000_000 * 100_000_000);

    /// `sats`, or an error above [`Sats::MAX`].
    pub const fn from_sat(sats: u64) -> Result<Sats, AmountError> {
        if sats <= Self::MAX.0 {
            Ok(Sats(sats))
        } else {
            Err(AmountError(sats))
        }
    }

    /// `sats` if it is at most [`Sats::MAX`].
    pub const fn checked(sats: u64) -> Option<Sats> {
        if sats <= Self::MAX.0 {
            Some(Sats(sats))
        } else {
            None
        }
    }

    /// The amount in satoshis.
    pub const fn to_sat(self) -> u64 {
        self.0
    }

    /// `self + rhs`, or `None` above [`Sats::MAX`].
    pub fn checked_add(self, rhs: Sats) -> Option<Sats> {
        self.0.checked_add(rhs.0).and_then(Sats::checked)
    }

    /// `self - rhs`, or `None` if it would go below zero.
    pub fn checked_sub(self, rhs: Sats) -> Option<Sats> {
        self.0.checked_sub(rhs.0).map(Sats)
    }

    /// `self - rhs`, or zero.
    pub fn saturating_sub(self, rhs: Sats) -> Sats {
        Sats(self.0.saturating_sub(rhs.0))
    }
}

impl TryFrom<u64> for Sats {
    type Error = AmountError;
    fn try_from(sats: u64) -> Result<Sats, AmountError> {
        Sats::from_sat(sats)
    }
}

impl From<Sats> for u64 {
    fn from(s: Sats) -> u64 {
        s.0
    }
}

impl<'de> Deserialize<'de> for Sats {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sats, D::Error> {
        Sats::from_sat(u64::deserialize(d)?).map_err(serde::de::Error::custom)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_cap_is_21_million_btc() {
        assert_eq!(Sats::MAX.to_sat(), 2_100_000_000_000_000);
        assert!(Sats::from_sat(2_100_000_000_000_000).is_ok());
        assert_eq!(
            Sats::from_sat(2_100_000_000_000_001),
            Err(AmountError(2_100_000_000_000_001))
        );
        assert_eq!(Sats::MAX.checked_add(Sats::from_sat(1).unwrap()), None);
        assert_eq!(Sats::ZERO.checked_sub(Sats::from_sat(1).unwrap()), None);
        assert!(serde_json::from_str::<Sats>("2100000000000001").is_err());
        assert_eq!(serde_json::from_str::<Sats>("5").unwrap().to_sat(), 5);
    }

    proptest! {
        #[test]
        fn arithmetic_never_leaves_the_cap(a in any::<u64>(), b in any::<u64>()) {
            let (x, y) = (Sats::checked(a), Sats::checked(b));
            prop_assert_eq!(x.is_some(), a <= Sats::MAX.to_sat());
            if let (Some(x), Some(y)) = (x, y) {
                match x.checked_add(y) {
                    Some(s) => prop_assert_eq!(s.to_sat(), a + b),
                    None => prop_assert!(a + b > Sats::MAX.to_sat()),
                }
                prop_assert_eq!(x.checked_sub(y).map(Sats::to_sat), a.checked_sub(b));
            }
        }
    }
}
