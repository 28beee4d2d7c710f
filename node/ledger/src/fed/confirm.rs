//! `PegOutConfirmed`: a version of a batch is confirmed at depth on Bitcoin;
//! its change joins the UTXO set and the fees the other versions reserved
//! return to the pool.
//!
//! For a batch already confirmed (kept in `State::settled`) with another
//! version, state follows what Bitcoin shows after a reorg deeper than the
//! confirmation depth: the old version's change leaves the UTXO set, the
//! new version's joins it, and the fee pool gives or takes the difference
//! of their fees. An unconfirmed batch that spent the old change can never
//! be mined: it is rebuilt to spend the new change in its place (same other
//! inputs, its newest fee rate, one fresh unsigned version that members
//! sign), so that the old and the rebuilt transaction can never both be
//! mined. When it cannot be rebuilt (the new version has no change and the
//! old change was its only input, or it could not pay), or the old change
//! was spent by a batch that is confirmed too, the claim is refused: that
//! is left to the operators, whose deep-reorg alert is open anyway (freeing
//! the batch's peg-outs for another batch could pay them twice should a
//! further reorg bring the old version back). The whole change is all or
//! nothing: a refused claim leaves the block's working state as it was.

use crate::amount::Sats;
use crate::error::FedTxError;
use crate::events::{BatchStage, Event};
use crate::fedtx::OutPoint;
use crate::ids::BatchId;
use crate::overlay::Overlay;
use crate::pegout_batch::{fee_and_change, Batch, BatchVersion, Confirmation, Owner, Utxo};
use crate::LedgerParams;
use bitcoin::{BlockHash, Txid};
use fedpeg_consensus::Height;
use fedpeg_peg::federation::Federation;

pub(super) fn apply(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    batch: BatchId,
    txid: &Txid,
    bitcoin_block: &BlockHash,
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    let Some(b) = o.batch(batch) else {
        return match o.settled_batch(batch) {
            Some(b) => reconfirm(o, params, height, b, txid, bitcoin_block, events),
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
    settle(o, height, b, v, true, bitcoin_block, events);
    Ok(())
}

/// The change output of version `v` of `b`, if it has one.
fn change_of(b: &Batch, v: usize) -> Option<(OutPoint, Sats)> {
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
/// follows Bitcoin (see the module documentation). All or nothing: a
/// refusal leaves `o` as it was (the block's other transactions stand).
fn reconfirm(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    b: Batch,
    txid: &Txid,
    bitcoin_block: &BlockHash,
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    let before = o.delta.clone();
    let r = follow(o, params, height, &b, txid);
    match r {
        Ok((new, change_taken)) => {
            settle(o, height, b, new, !change_taken, bitcoin_block, events);
            Ok(())
        }
        Err(e) => {
            o.delta = before;
            Err(e)
        }
    }
}

/// The changes of [`reconfirm`] but the settling: the new version's index,
/// and whether a rebuilt batch spends its change already.
fn follow(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    b: &Batch,
    txid: &Txid,
) -> Result<(usize, bool), FedTxError> {
    let batch = b.id;
    let mut change_taken = false;
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
    // be mined (rebuilt on the new change), or by a confirmed one (refused:
    // the operators', under an open alert).
    if let Some((change, _)) = change_of(b, old) {
        let free = o.available_utxos().iter().any(|(u, _)| *u == change);
        if free {
            o.delta.spent_utxos.push(change);
        } else if let Some(c) = o.batch_spending(&change) {
            if !o.base.batches.contains_key(&c.id) {
                return Err(FedTxError::UnknownBatch(c.id));
            }
            // The rebuilt batch shares every other input with the old one,
            // or spends the new change where the old one spent the old:
            // the two can never both be mined.
            let feds = super::signatures::batch_federations(o, params, c.epoch, c.change_epoch)?;
            let Some(r) = rebuilt(&feds, height, &c, change, change_of(b, new)) else {
                return Err(FedTxError::CannotRebuild {
                    batch,
                    spender: c.id,
                });
            };
            o.delta.fee_pool = o
                .delta
                .fee_pool
                .checked_add(c.fee_reserved)
                .and_then(|p| p.checked_sub(r.fee_reserved))
                .ok_or(FedTxError::Overflow)?;
            change_taken = change_of(b, new).is_some();
            o.delta.batches.insert(r.id, r);
        } else {
            let by = o
                .delta
                .batches
                .values()
                .chain(o.base.settled.values())
                .find(|s| s.confirmed.is_some() && s.inputs.iter().any(|(i, _)| *i == change))
                .map(|s| s.id);
            return Err(match by {
                Some(by) => FedTxError::ChangeSpentByConfirmedBatch {
                    batch,
                    change: change.to_string(),
                    by,
                },
                None => FedTxError::UnknownBatch(batch),
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
    Ok((new, change_taken))
}

/// Batch `c`, which spent `old_change`, rebuilt to spend `new_change`
/// instead (or nothing in its place), at its newest fee rate: one fresh
/// unsigned version. None when it would have no input or cannot pay.
/// `feds`: the federations of `c`'s inputs and of its change.
fn rebuilt(
    (fed, change_fed): &(Federation, Federation),
    height: Height,
    c: &Batch,
    old_change: OutPoint,
    new_change: Option<(OutPoint, Sats)>,
) -> Option<Batch> {
    let mut r = c.clone();
    r.inputs = c
        .inputs
        .iter()
        .filter_map(|(i, u)| match (*i == old_change, new_change) {
            (false, _) => Some((*i, *u)),
            (true, Some((o, amount))) => Some((
                o,
                Utxo {
                    amount,
                    owner: Owner::Change,
                    created_ms: 0,
                    // The change of a version of the batch `c` spent an
                    // output of: the same epoch as `c`'s other inputs.
                    epoch: c.epoch,
                },
            )),
            (true, None) => None,
        })
        .collect();
    if r.inputs.is_empty() {
        return None;
    }
    let out_bytes: u64 = c
        .outputs
        .iter()
        .map(|o| fedpeg_peg::pegout::output_bytes(&o.script_pubkey))
        .sum();
    let rate = c.latest().fee_rate;
    let (fee, change) = fee_and_change(
        fed,
        r.inputs.len(),
        r.input_total(),
        c.outputs.len(),
        out_bytes,
        c.output_total(),
        rate.0,
        0,
    )?;
    let mut v = BatchVersion {
        fee_rate: rate,
        fee: Sats::checked(fee)?,
        change: Sats::checked(change)?,
        txid: c.latest().txid,
        height,
        signatures: Default::default(),
        bump_votes: Default::default(),
    };
    r.versions = vec![v.clone()];
    v.txid = r.unsigned_tx(change_fed, 0).ok()?.compute_txid();
    r.versions = vec![v];
    r.fee_reserved = r.versions[0].fee;
    Some(r)
}

/// Records version `v` of `b` as the confirmed one: its change joins the
/// free UTXOs (if `free_change`), the batch is done (kept as settled), and
/// an event says so.
fn settle(
    o: &mut Overlay<'_>,
    height: Height,
    mut b: Batch,
    v: usize,
    free_change: bool,
    bitcoin_block: &BlockHash,
    events: &mut Vec<Event>,
) {
    if let Some((change, amount)) = change_of(&b, v).filter(|_| free_change) {
        o.delta.new_utxos.push((
            change,
            Utxo {
                amount,
                owner: Owner::Change,
                // Stamped with the block time by `rollover::stamp_new_utxos`.
                created_ms: 0,
                epoch: b.change_epoch,
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
