//! `FeeRateVote`: a member's view of the Bitcoin fee rate, within the
//! genesis min/max; state uses the median of the latest votes of the
//! members of the epoch in force (an epoch's first block drops the rest).

use crate::error::FedTxError;
use crate::ids::{FeeRate, MemberIndex};
use crate::overlay::Overlay;
use crate::LedgerParams;
use fedpeg_consensus::Height;

pub(super) fn apply(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    member: MemberIndex,
    sat_per_vbyte: FeeRate,
    at: Height,
) -> Result<(), FedTxError> {
    let (min, max) = (params.min_fee_rate, params.max_fee_rate);
    if !(min..=max).contains(&sat_per_vbyte) {
        return Err(FedTxError::BadFeeRate {
            rate: sat_per_vbyte,
            min,
            max,
        });
    }
    let last = o
        .delta
        .new_fee_votes
        .iter()
        .rev()
        .find(|(m, _, _)| *m == member)
        .map(|(_, _, h)| *h)
        .or_else(|| {
            // The first block of an epoch starts from no votes.
            (!o.delta.epoch_start)
                .then(|| o.base.fee_votes.get(&member).map(|(_, h)| *h))
                .flatten()
        });
    // A vote for a height before the epoch in force was signed under an
    // older epoch (perhaps by another member at this index): after the
    // reset of an epoch's first block it could otherwise be replayed.
    let since = o.base.epoch_at(height).activation;
    if at > height || at < since || last.is_some_and(|l| at <= l) {
        return Err(FedTxError::StaleVote);
    }
    o.delta.new_fee_votes.push((member, sat_per_vbyte, at));
    Ok(())
}
