//! `PegInMint`: credits a confirmed deposit to its account, minus what it
//! will cost the federation to spend it; the deposit joins the UTXO set.

use crate::account::AccountId;
use crate::amount::Sats;
use crate::error::FedTxError;
use crate::events::Event;
use crate::fedtx::OutPoint;
use crate::overlay::Overlay;
use crate::pegout_batch::{Owner, Utxo};
use crate::LedgerParams;

pub(super) fn apply(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    outpoint: &OutPoint,
    amount: Sats,
    account: &AccountId,
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    if !o.is_registered(account) {
        return Err(FedTxError::NotRegistered);
    }
    if o.is_minted(outpoint) {
        return Err(FedTxError::AlreadyMinted(*outpoint));
    }
    let cost = o.base.pegin_spend_cost(params);
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
        },
    ));
    events.push(Event::PegInMinted {
        outpoint: *outpoint,
        account: *account,
        amount: credit,
    });
    Ok(())
}
