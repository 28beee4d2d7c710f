//! `PegOutConfirmed`: a version of a batch is confirmed at depth on Bitcoin;
//! its change joins the UTXO set and the fees the other versions reserved
//! return to the pool.
//!
//! For a batch already confirmed (kept in `State::settled`) with another
//! version, state follows what Bitcoin shows after a reorg deeper than the
//! confirmation depth: the old version's change leaves the UTXO set, the
//! new version's joins it, and the fee pool gives or takes the difference
//! of their fees. An unconfirmed batch that spent the old change can never
//! be mined: it is abandoned (its other inputs are free again, its peg-outs
//! queued again, its reserved fee back in the pool) and the queue forms a
//! new one.

use crate::amount::Sats;
use crate::error::FedTxError;
use crate::events::{BatchStage, Event};
use crate::fedtx::OutPoint;
use crate::ids::BatchId;
use crate::overlay::Overlay;
use crate::pegout_batch::{Confirmation, Owner, Utxo};
use bitcoin::{BlockHash, Txid};
use fedpeg_consensus::Height;

pub(super) fn apply(
    o: &mut Overlay<'_>,
    height: Height,
    batch: BatchId,
    txid: &Txid,
    bitcoin_block: &BlockHash,
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    let Some(b) = o.batch(batch) else {
        return match o.settled_batch(batch) {
            Some(b) => reconfirm(o, height, b, txid, bitcoin_block, events),
            None => Err(FedTxError::UnknownBatch(batch)),
        };
    };
    let Some(v) = b.version_of(txid) else {
        return Err(FedTxError::NotABatchVersion(txid.to_string()));
    };
    let version = &b.versions[v];
    // The cheaper version confirmed: refund what the others reserved.
    let refund = b
        .fee_reserved
        .checked_sub(version.fee)
        .ok_or(FedTxError::Overflow)?;
    o.delta.fee_pool = o
        .delta
        .fee_pool
        .checked_add(refund)
        .ok_or(FedTxError::Overflow)?;
    settle(o, height, b, v, bitcoin_block, events);
    Ok(())
}

/// The change output of version `v` of `b`, if it has one.
fn change_of(b: &crate::pegout_batch::Batch, v: usize) -> Option<(OutPoint, Sats)> {
    let version = &b.versions[v];
    (version.change > Sats::ZERO).then_some((
        OutPoint {
            txid: version.txid,
            vout: b.outputs.len() as u32,
        },
        version.change,
    ))
}

/// A confirmed batch `b` is confirmed again with another version: state
/// follows Bitcoin (see the module documentation).
fn reconfirm(
    o: &mut Overlay<'_>,
    height: Height,
    b: crate::pegout_batch::Batch,
    txid: &Txid,
    bitcoin_block: &BlockHash,
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    let batch = b.id;
    let Some(new) = b.version_of(txid) else {
        return Err(FedTxError::NotABatchVersion(txid.to_string()));
    };
    let old = b
        .confirmed
        .as_ref()
        .map(|c| c.version as usize)
        .ok_or(FedTxError::UnknownBatch(batch))?;
    if old == new {
        return Err(FedTxError::AlreadyConfirmed(batch));
    }
    // The old change: still free, or spent by a batch that can now never
    // be mined (abandoned), or by a confirmed one (refused: the operator's).
    if let Some((change, _)) = change_of(&b, old) {
        let free = o.available_utxos().iter().any(|(u, _)| *u == change);
        if free {
            o.delta.spent_utxos.push(change);
        } else if let Some(c) = o.batch_spending(&change) {
            if !o.base.batches.contains_key(&c.id) {
                return Err(FedTxError::UnknownBatch(c.id));
            }
            o.delta.batches.remove(&c.id);
            o.delta.abandoned.push(c.id);
            for (i, u) in &c.inputs {
                if *i != change {
                    o.delta.new_utxos.push((*i, *u));
                }
            }
            o.delta.fee_pool = o
                .delta
                .fee_pool
                .checked_add(c.fee_reserved)
                .ok_or(FedTxError::Overflow)?;
        } else if let Some(by) = o
            .base
            .settled
            .values()
            .find(|s| s.inputs.iter().any(|(i, _)| *i == change))
        {
            return Err(FedTxError::ChangeSpentByConfirmedBatch {
                batch,
                change: change.to_string(),
                by: by.id,
            });
        }
    }
    // The pool kept fee_reserved − old fee; it keeps fee_reserved − new fee.
    let (old_fee, new_fee) = (b.versions[old].fee, b.versions[new].fee);
    o.delta.fee_pool = if new_fee > old_fee {
        o.delta
            .fee_pool
            .checked_sub(new_fee.checked_sub(old_fee).ok_or(FedTxError::Overflow)?)
    } else {
        o.delta
            .fee_pool
            .checked_add(old_fee.checked_sub(new_fee).ok_or(FedTxError::Overflow)?)
    }
    .ok_or(FedTxError::Overflow)?;
    settle(o, height, b, new, bitcoin_block, events);
    Ok(())
}

/// Records version `v` of `b` as the confirmed one: its change joins the
/// UTXO set, the batch is done (kept as settled), and an event says so.
fn settle(
    o: &mut Overlay<'_>,
    height: Height,
    mut b: crate::pegout_batch::Batch,
    v: usize,
    bitcoin_block: &BlockHash,
    events: &mut Vec<Event>,
) {
    if let Some((change, amount)) = change_of(&b, v) {
        o.delta.new_utxos.push((
            change,
            Utxo {
                amount,
                owner: Owner::Change,
            },
        ));
    }
    b.confirmed = Some(Confirmation {
        version: v as u32,
        bitcoin_block: *bitcoin_block,
        height,
    });
    events.push(Event::PegOutBatch {
        batch: b.id,
        stage: BatchStage::Confirmed { version: v as u32 },
        txid: b.versions[v].txid,
        withdrawals: b.withdrawal_ids(),
        accounts: b.accounts(),
    });
    o.delta.batches.insert(b.id, b);
}
