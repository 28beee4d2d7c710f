//! Timelock rollover: the federation moves its coins before the emergency
//! branch of their address opens (`k` of the backup keys may spend an
//! output `N` Bitcoin blocks after it confirmed), so the backup keys never
//! can while the federation runs.
//!
//! The rule must be a function of committed state, the same for every
//! member. State holds no Bitcoin heights (mints and confirmations name
//! Bitcoin blocks by hash only), so a UTXO's age goes by sidechain block
//! time: each UTXO records the time of the block that added it
//! ([`Utxo::created_ms`], stamped by [`stamp_new_utxos`]), and a UTXO is
//! rolled once
//!
//! `now - created_ms >= (N - N/4 - pegin_confirmations) x 7.5 min`
//!
//! 7.5 minutes is Bitcoin's 10-minute target with blocks a quarter faster,
//! and `N/4` blocks are kept in hand on top (for N = 8064: rolled after
//! about 31 days, when about 4,500 blocks have passed at the normal rate,
//! against 8,064 for the branch to open). Deposits are minted
//! `pegin_confirmations` blocks after they confirmed, hence that term.
//! What this does not see: a deposit minted long after it confirmed (a late
//! claim of an old output); exact Bitcoin heights in mints and confirmations
//! plus an agreed Bitcoin tip would close that, at the price of a consensus
//! change of those transactions.
//!
//! When a UTXO is due, a batch may form (fewer than `max_unconfirmed` in
//! flight) and no other rollover batch is unconfirmed (a backlog must not
//! take every slot from the peg-outs), the block forms a *rollover batch*
//! before any peg-out batch:
//! the due UTXOs, oldest first, up to `max_inputs`, paid back to the change
//! address, its fee from the fee pool (every mint pre-paid its deposit's
//! spend cost into it). A separate batch rather than inputs forced into the
//! next peg-out batch: it happens even when no peg-out is queued (an idle
//! federation is exactly the one whose coins age), and it leaves the
//! peg-out planner alone; the queued peg-outs form their batch at the next
//! block. Reserves must keep covering supply, so the fee comes only from
//! the pool: each mint pre-paid its own input's spend cost, but not the
//! transaction's header and change output (about 54 vB), which other fee
//! income pays. When the pool cannot pay for even one due UTXO at the
//! agreed rate (a new federation with one deposit and no other fees, or a
//! rate far above the one the mints paid at), one UTXO is rolled at the
//! highest rate the pool pays, at least 1 sat/vB; below that the rollover
//! waits for fee income and the audit shows it overdue
//! (`oldest_utxo_rollover_in_ms` 0).
//!
//! The same change-only batch sweeps the descriptor of a past epoch (see
//! [`crate::epoch`]): while any free UTXO pays the descriptor of an epoch
//! before the one in force (the old coins after an activation, deposits to
//! the old addresses during the deposit grace, the change of a batch formed
//! before the activation), the rollover batch takes those of the oldest
//! such epoch ([`sweep`]), oldest first, before any UTXO due for the
//! timelock: a batch never mixes epochs, its change pays the descriptor in
//! force, and members holding that past epoch's peg keys sign it.

use crate::amount::Sats;
use crate::fedtx::OutPoint;
use crate::overlay::Overlay;
use crate::pegout_batch::{fee_and_change, Utxo};
use crate::LedgerParams;
use fedpeg_peg::federation::Federation;

/// The block interval the rollover assumes: 7.5 minutes, Bitcoin's target
/// with blocks coming a quarter faster.
pub const ASSUMED_FAST_BLOCK_MS: u64 = 450_000;

/// The age (ms of sidechain block time) at which a UTXO is rolled, for an
/// emergency timelock of `csv_blocks` and deposits minted after
/// `confirmations`; at least one block's worth.
pub fn rollover_after_ms(csv_blocks: u16, confirmations: u32) -> u64 {
    let n = u64::from(csv_blocks);
    let blocks = (n - n / 4).saturating_sub(u64::from(confirmations)).max(1);
    blocks * ASSUMED_FAST_BLOCK_MS
}

/// Stamps every UTXO the block adds with the block's time.
pub(crate) fn stamp_new_utxos(o: &mut Overlay<'_>, time_ms: u64) {
    for (_, u) in o.delta.new_utxos.iter_mut() {
        u.created_ms = time_ms;
    }
}

/// The oldest free UTXO of `s` (ties by outpoint) and the block time (ms)
/// at which the rollover takes it; None without an emergency branch or
/// without UTXOs.
pub fn oldest(s: &crate::State, params: &LedgerParams) -> Option<(OutPoint, u64)> {
    let after = params.rollover_after_ms?;
    let (o, u) = s.utxos.iter().min_by_key(|(o, u)| (u.created_ms, **o))?;
    Some((*o, u.created_ms.saturating_add(after)))
}

/// The available UTXOs due for rollover at `time_ms`, oldest first (ties by
/// outpoint); empty without an emergency branch.
pub(crate) fn due(
    utxos: &[(OutPoint, Utxo)],
    params: &LedgerParams,
    time_ms: u64,
) -> Vec<(OutPoint, Utxo)> {
    let Some(after) = params.rollover_after_ms else {
        return Vec::new();
    };
    let mut v: Vec<(OutPoint, Utxo)> = utxos
        .iter()
        .filter(|(_, u)| u.created_ms.saturating_add(after) <= time_ms)
        .copied()
        .collect();
    v.sort_by(|a, b| a.1.created_ms.cmp(&b.1.created_ms).then(a.0.cmp(&b.0)));
    v
}

/// The free UTXOs of the oldest epoch before `current` in `utxos`, with
/// that epoch, oldest first (ties by outpoint); None when every UTXO pays
/// the descriptor in force.
pub(crate) fn sweep(
    utxos: &[(OutPoint, Utxo)],
    current: u32,
) -> Option<(u32, Vec<(OutPoint, Utxo)>)> {
    let epoch = utxos
        .iter()
        .map(|(_, u)| u.epoch)
        .filter(|e| *e < current)
        .min()?;
    let mut v: Vec<(OutPoint, Utxo)> = utxos
        .iter()
        .filter(|(_, u)| u.epoch == epoch)
        .copied()
        .collect();
    v.sort_by(|a, b| a.1.created_ms.cmp(&b.1.created_ms).then(a.0.cmp(&b.0)));
    Some((epoch, v))
}

/// The rollover batch's inputs (a prefix of `due`, at most `max_inputs`),
/// rate, fee and change, with the fee within `fee_pool`: at `rate` with as
/// many inputs as the pool pays for; when it cannot pay even one at
/// `rate`, one input at the highest rate (at least 1 sat/vB) it can pay
/// (the mint pre-paid the input but not the transaction's header and
/// change output; the batch is bumped like any other if it gets stuck).
/// None when not even that. `fed` is the federation whose descriptor the
/// inputs pay (their weight).
pub(crate) fn plan(
    due: &[(OutPoint, Utxo)],
    fed: &Federation,
    params: &LedgerParams,
    rate: u64,
    fee_pool: Sats,
) -> Option<(usize, u64, u64, u64)> {
    let total = |n: usize| {
        due[..n]
            .iter()
            .fold(0u64, |t, (_, u)| t.saturating_add(u.amount.to_sat()))
    };
    let at = |n: usize, r: u64| {
        let (fee, change) = fee_and_change(fed, n, total(n), 0, 0, 0, r, 0)?;
        (fee <= fee_pool.to_sat() && change > 0).then_some((n, r, fee, change))
    };
    let most = due.len().min(params.pegout.max_inputs as usize);
    // Fewer inputs when the pool cannot pay for them all.
    (1..=most).rev().find_map(|n| at(n, rate)).or_else(|| {
        if most == 0 {
            return None;
        }
        let (per_rate, _) = fee_and_change(fed, 1, total(1), 0, 0, 0, 1, 0)?;
        let affordable = (fee_pool.to_sat() / per_rate.max(1)).min(rate);
        (affordable >= 1).then(|| at(1, affordable)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_timelock_rolls_after_about_31_days_with_room_to_spare() {
        let ms = rollover_after_ms(8064, 6);
        assert_eq!(ms, (8064 - 2016 - 6) * 450_000);
        let days = ms as f64 / 86_400_000.0;
        assert!((31.0..32.0).contains(&days), "{days}");
        // Even if every Bitcoin block came in 6 minutes, the UTXO is younger
        // than the timelock when it is rolled.
        assert!(ms / 360_000 + 6 < 8064);
        // Tiny timelocks still give at least one block.
        assert_eq!(rollover_after_ms(1, 6), 450_000);
        assert_eq!(rollover_after_ms(10, 0), 8 * 450_000);
    }
}
