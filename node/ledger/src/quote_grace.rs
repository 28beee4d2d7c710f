//! Peg-out quote grace: a user asks `EstimatePegOutFee`, signs a PegOut
//! with that fee and submits it; if the agreed fee rate rises meanwhile, the
//! fee still counts as enough for `fees.quote_validity_ms` of block time.
//!
//! Rule: in a block at time `t`, a peg-out's fee must cover the quote at the
//! lowest agreed rate that was in force at some time in `(t - validity, t]`.
//! State keeps what that needs: when a block's fee votes raise the agreed
//! rate from `r`, the rate `r` is remembered until the block's time plus the
//! validity. Remembered rates that expired or that are not below `r` are
//! dropped then (`r`, quotable longer, makes them useless), so the list is
//! ascending in rate and in expiry, and shorter than the number of distinct
//! rates between the genesis min and max. It changes only in blocks that
//! raise the rate, and then the whole new list is part of the block's delta
//! (hashed into the state root, see [`crate::state_root`]).
//!
//! Block time, not a clock: every member computes the same list. The fee
//! pool pays the difference between the quote and the batch's real cost.

use crate::ids::FeeRate;
use crate::overlay::Overlay;
use crate::state::agreed_rate;
use crate::LedgerParams;

/// An agreed rate a rise replaced, still good for peg-out quotes in blocks
/// whose time is before `until_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuoteGrace {
    pub rate: FeeRate,
    /// Block time (ms) from which the rate no longer counts.
    pub until_ms: u64,
}

/// The lowest remembered rate still good at block time `time_ms`.
pub(crate) fn lowest_valid(grace: &[QuoteGrace], time_ms: u64) -> Option<FeeRate> {
    grace
        .iter()
        .filter(|g| time_ms < g.until_ms)
        .map(|g| g.rate)
        .min()
}

/// After a block's federation transactions: if its fee votes raised the
/// agreed rate, remembers the rate before for `quote_validity_ms` from the
/// block's time `time_ms`.
pub(crate) fn after_fee_votes(o: &mut Overlay<'_>, params: &LedgerParams, time_ms: u64) {
    if (o.delta.new_fee_votes.is_empty() && !o.delta.epoch_start) || params.quote_validity_ms == 0 {
        return;
    }
    let before = o.base.fee_rate(params);
    // An epoch's first block starts from no votes (see `fed::start_block`).
    let mut votes = if o.delta.epoch_start {
        Default::default()
    } else {
        o.base.fee_votes.clone()
    };
    for (m, rate, at) in &o.delta.new_fee_votes {
        votes.insert(*m, (*rate, *at));
    }
    let after = agreed_rate(votes.values().map(|(r, _)| *r), params);
    if after <= before {
        return;
    }
    let mut grace: Vec<QuoteGrace> = o
        .base
        .quote_grace
        .iter()
        .filter(|g| time_ms < g.until_ms && g.rate < before)
        .copied()
        .collect();
    grace.push(QuoteGrace {
        rate: before,
        until_ms: time_ms.saturating_add(params.quote_validity_ms),
    });
    o.delta.quote_grace = Some(grace);
}
