//! `PegInMint`: credits a confirmed deposit to its account, minus what it
//! will cost the federation to spend it; the deposit joins the UTXO set.
//!
//! A deposit pays the descriptor of one epoch: the epoch in force, or the
//! one before it during its deposit grace ([`crate::State::deposit_epochs`]).
//! The UTXO carries that epoch, and the spend cost is its descriptor's.

use crate::account::AccountId;
use crate::amount::Sats;
use crate::error::FedTxError;
use crate::events::Event;
use crate::fedtx::OutPoint;
use crate::overlay::Overlay;
use crate::pegout_batch::{Owner, Utxo};
use crate::LedgerParams;
use fedpeg_consensus::Height;

/// A deposit: where it is and what it pays.
pub(super) struct Deposit<'a> {
    pub outpoint: &'a OutPoint,
    pub amount: Sats,
    pub account: &'a AccountId,
    pub epoch: u32,
}

pub(super) fn apply(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    d: Deposit<'_>,
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    let Deposit {
        outpoint,
        amount,
        account,
        epoch,
    } = d;
    if !o.is_registered(account) {
        return Err(FedTxError::NotRegistered);
    }
    if o.is_minted(outpoint) {
        return Err(FedTxError::AlreadyMinted(*outpoint));
    }
    // A change adopted earlier in this block ends the grace of the
    // previous epoch as one adopted in an earlier block does: its coins
    // must be signable by the set that will sweep them.
    let adopted_now = o.delta.adopted.is_some();
    let current = o.base.epoch_at(height).number;
    let Some(e) = o
        .base
        .deposit_epochs(height)
        .into_iter()
        .find(|e| e.number == epoch && (e.number == current || !adopted_now))
    else {
        return Err(FedTxError::MintEpoch {
            epoch,
            current: o.base.epoch_at(height).number,
            height,
        });
    };
    let fed = params
        .federation_of(e)
        .map_err(|_| FedTxError::NoEpochDescriptor(epoch))?;
    let cost = o.base.pegin_spend_cost_of(params, &fed);
    let credit = match amount.checked_sub(cost) {
        Some(c) if c > Sats::ZERO => c,
        _ => return Err(FedTxError::BelowCost { amount, cost }),
    };
    let mut a = o.account(account);
    a.balance = a.balance.checked_add(credit).ok_or(FedTxError::Overflow)?;
    let supply = o
        .delta
        .supply
        .checked_add(credit)
        .ok_or(FedTxError::Overflow)?;
    // The spend cost funds the Bitcoin fee of the batch that will
    // spend this deposit: reserves = supply + queued + fee pool.
    let fee_pool = o
        .delta
        .fee_pool
        .checked_add(cost)
        .ok_or(FedTxError::Overflow)?;
    o.delta.accounts.insert(*account, a);
    o.delta.supply = supply;
    o.delta.fee_pool = fee_pool;
    o.delta
        .new_mints
        .push((*outpoint, *account, credit, amount));
    o.delta.new_utxos.push((
        *outpoint,
        Utxo {
            amount,
            owner: Owner::deposit(account),
            // Stamped with the block time by `rollover::stamp_new_utxos`.
            created_ms: 0,
            epoch,
        },
    ));
    events.push(Event::PegInMinted {
        outpoint: *outpoint,
        account: *account,
        amount: credit,
    });
    Ok(())
}
