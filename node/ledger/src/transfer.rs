//! User transactions: checking a transfer or a peg-out against the sender's
//! account, and applying it to the block's working view.

use crate::amount::Sats;
use crate::apply::SignatureCheck;
use crate::error::TxError;
use crate::events::Event;
use crate::ids::FeeRate;
use crate::overlay::Overlay;
use crate::pegout_batch::pegout_fee_quote;
use crate::state::{Account, Withdrawal};
use crate::tx::{Transaction, TxKind};
use crate::LedgerParams;
#[cfg(doc)]
use crate::State;
use bitcoin::ScriptBuf;
use fedpeg_consensus::Height;

/// The smallest peg-out, as an amount (checked when compiled).
const PEGOUT_DUST: Sats = match Sats::checked(fedpeg_peg::address::PEGOUT_DUST_LIMIT_SATS) {
    Some(s) => s,
    None => panic!("dust limit above 21M BTC"),
};

/// Checks `tx` against `sender` (the sender's current account) without
/// state access; returns the total debit (amount + fee). A peg-out's fee
/// must cover the quote at `fee_rate`: the agreed Bitcoin fee rate, or a
/// lower one whose quote grace still runs ([`State::pegout_quote_rate`]).
/// Used by both block application and mempool admission.
pub fn check_tx(
    params: &LedgerParams,
    fee_rate: FeeRate,
    sender: Account,
    tx: &Transaction,
    sigs: &dyn SignatureCheck,
) -> Result<Sats, TxError> {
    check(params, fee_rate, sender, tx, sigs).map(|(debit, _)| debit)
}

/// [`check_tx`], also returning a peg-out's output script: the address is
/// parsed here, once, and the script travels with the withdrawal from then on.
fn check(
    params: &LedgerParams,
    fee_rate: FeeRate,
    sender: Account,
    tx: &Transaction,
    sigs: &dyn SignatureCheck,
) -> Result<(Sats, Option<ScriptBuf>), TxError> {
    if tx.chain_id != params.chain_id {
        return Err(TxError::WrongChain {
            expected: params.chain_id,
            got: tx.chain_id,
        });
    }
    if tx.nonce < sender.nonce {
        return Err(TxError::NonceReplayed {
            expected: sender.nonce,
            got: tx.nonce,
        });
    }
    if tx.nonce > sender.nonce {
        return Err(TxError::NonceGap {
            expected: sender.nonce,
            got: tx.nonce,
        });
    }
    if tx.fee < params.min_tx_fee {
        return Err(TxError::FeeTooLow {
            min: params.min_tx_fee,
            got: tx.fee,
        });
    }
    let amount = tx.amount();
    if amount == Sats::ZERO {
        return Err(TxError::ZeroAmount);
    }
    let debit = amount.checked_add(tx.fee).ok_or(TxError::Overflow)?;
    let mut pegout_script = None;
    if let TxKind::PegOut {
        bitcoin_address, ..
    } = &tx.kind
    {
        let script = fedpeg_peg::address::parse_pegout_address(bitcoin_address, params.network)?
            .script_pubkey();
        let dust = PEGOUT_DUST;
        if amount < dust {
            return Err(TxError::BelowDust {
                min: dust,
                got: amount,
            });
        }
        let quote = pegout_fee_quote(&params.pegout, params.pegout_fee, fee_rate, &script);
        if tx.fee < quote {
            return Err(TxError::PegOutFeeTooLow { quote, got: tx.fee });
        }
        pegout_script = Some(script);
    }
    if debit > sender.balance {
        return Err(TxError::InsufficientBalance {
            needed: debit,
            available: sender.balance,
        });
    }
    // Signature last: it is the expensive check.
    if !sigs.is_valid(tx) {
        return Err(TxError::BadSignature);
    }
    Ok((debit, pegout_script))
}

pub(crate) fn apply_tx(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    (height, time_ms): (Height, u64),
    tx: &Transaction,
    sigs: &dyn SignatureCheck,
    events: &mut Vec<Event>,
) -> Result<(), TxError> {
    let mut sender = o.account(&tx.sender);
    let rate = o.base.pegout_quote_rate(params, time_ms);
    let (debit, pegout_script) = check(params, rate, sender, tx, sigs)?;
    let txid = tx.id();
    // Compute every new value with checked arithmetic first, then write: a
    // rejected transaction leaves the overlay untouched.
    sender.balance = sender.balance.checked_sub(debit).ok_or(TxError::Overflow)?;
    sender.nonce = sender.nonce.checked_add(1).ok_or(TxError::Overflow)?;
    let fee_pool = o
        .delta
        .fee_pool
        .checked_add(tx.fee)
        .ok_or(TxError::Overflow)?;
    match &tx.kind {
        TxKind::Transfer { to, amount } => {
            let recipient = if *to == tx.sender {
                sender.balance = sender
                    .balance
                    .checked_add(*amount)
                    .ok_or(TxError::Overflow)?;
                None
            } else {
                let mut r = o.account(to);
                r.balance = r
                    .balance
                    .checked_add(*amount)
                    .ok_or(TxError::RecipientOverflow)?;
                Some(r)
            };
            // Supply drops by the fee only.
            let supply = o
                .delta
                .supply
                .checked_sub(tx.fee)
                .ok_or(TxError::Overflow)?;
            o.delta.accounts.insert(tx.sender, sender);
            if let Some(r) = recipient {
                o.delta.accounts.insert(*to, r);
            }
            o.delta.supply = supply;
            o.delta.fee_pool = fee_pool;
            events.push(Event::FeePaid {
                txid,
                from: tx.sender,
                amount: tx.fee,
            });
            events.push(Event::Transfer {
                txid,
                from: tx.sender,
                to: *to,
                amount: *amount,
            });
        }
        TxKind::PegOut {
            bitcoin_address,
            amount,
        } => {
            let supply = o.delta.supply.checked_sub(debit).ok_or(TxError::Overflow)?;
            let next_id = o.delta.next_withdrawal_id.next().ok_or(TxError::Overflow)?;
            // `check` parsed the address of every peg-out it accepted.
            let Some(script_pubkey) = pegout_script else {
                return Err(TxError::Overflow);
            };
            let w = Withdrawal {
                id: o.delta.next_withdrawal_id,
                account: tx.sender,
                bitcoin_address: bitcoin_address.clone(),
                script_pubkey,
                amount: *amount,
                txid,
                height,
                time_ms,
            };
            o.delta.accounts.insert(tx.sender, sender);
            o.delta.supply = supply;
            o.delta.fee_pool = fee_pool;
            o.delta.next_withdrawal_id = next_id;
            o.delta.new_withdrawals.push(w.clone());
            events.push(Event::FeePaid {
                txid,
                from: tx.sender,
                amount: tx.fee,
            });
            events.push(Event::PegOutQueued {
                txid,
                withdrawal: w,
            });
        }
    }
    Ok(())
}
