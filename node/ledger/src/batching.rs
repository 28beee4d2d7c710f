//! Batch formation at the end of a block: when the peg-out queue is due, the
//! oldest peg-outs are paid from the federation's UTXOs in one deterministic
//! Bitcoin transaction (see [`crate::pegout_batch`] for its shape). While the
//! agreed fee rate is low the batch also merges small UTXOs into its change
//! (consolidation, [`crate::pegout_batch::plan_batch`]). Before either, UTXOs
//! of a past epoch are swept, or UTXOs nearing their emergency timelock
//! rolled ([`crate::rollover`]). A peg-out batch spends only UTXOs of the
//! epoch in force (a batch never mixes epochs), so right after an
//! activation peg-outs wait until the sweep's change is confirmed; every
//! batch's change pays the descriptor of the epoch in force.

use crate::amount::Sats;
use crate::events::{BatchStage, Event};
use crate::fedtx::OutPoint;
use crate::ids::FeeRate;
use crate::overlay::Overlay;
use crate::pegout_batch::{plan_batch, Batch, BatchOutput, BatchVersion, Utxo};
use crate::rollover;
use crate::state::Withdrawal;
use crate::LedgerParams;
use bitcoin::hashes::Hash as _;
use bitcoin::Txid;
use fedpeg_consensus::Height;
use std::collections::{BTreeMap, BTreeSet};

/// Forms a batch at the end of a block when the queue is due: the oldest
/// unbatched peg-out waited `batch_interval_ms`, or the queue is full.
pub(crate) fn form_batch(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    time_ms: u64,
    events: &mut Vec<Event>,
) {
    let p = &params.pegout;
    if o.unconfirmed_batches() >= p.max_unconfirmed as usize {
        return;
    }
    if form_rollover(o, params, height, time_ms, events) {
        return;
    }
    let epoch = o.base.epoch_at(height);
    let Ok(fed) = params.federation_of(epoch) else {
        return;
    };
    let epochs = (epoch.number, epoch.number);
    let queued: Vec<&Withdrawal> = o
        .base
        .withdrawals
        .values()
        .filter(|w| !o.base.withdrawal_batch.contains_key(&w.id))
        .chain(o.delta.new_withdrawals.iter())
        .collect();
    let Some(oldest) = queued.first() else {
        return;
    };
    let due = oldest.time_ms.saturating_add(p.batch_interval_ms) <= time_ms
        || queued.len() >= p.max_outputs as usize;
    if !due {
        return;
    }
    let utxos: Vec<(OutPoint, Utxo)> = o
        .available_utxos()
        .into_iter()
        .filter(|(_, u)| u.epoch == epochs.0)
        .collect();
    let amounts: Vec<u64> = utxos.iter().map(|(_, u)| u.amount.to_sat()).collect();
    let wanted: Vec<(u64, u64)> = queued
        .iter()
        .map(|w| {
            let bytes = fedpeg_peg::pegout::output_bytes(&w.script_pubkey);
            (bytes, w.amount.to_sat())
        })
        .collect();
    let rate = o.base.fee_rate(params);
    let Some(plan) = plan_batch(
        &fed,
        p,
        &amounts,
        &wanted,
        rate.0,
        o.delta.fee_pool.to_sat(),
    ) else {
        return;
    };
    let (fee, change) = (plan.fee, plan.change);
    let inputs = plan.inputs().map(|i| utxos[i]).collect();
    let outputs = plan
        .withdrawals
        .iter()
        .map(|i| BatchOutput {
            withdrawal: queued[*i].id,
            address: queued[*i].bitcoin_address.clone(),
            script_pubkey: queued[*i].script_pubkey.clone(),
            amount: queued[*i].amount,
            account: queued[*i].account.0,
        })
        .collect();
    add_batch(
        o,
        &fed,
        height,
        inputs,
        outputs,
        (rate, fee, change),
        epochs,
        events,
    );
}

/// Forms a rollover batch when UTXOs of a past epoch remain (the sweep) or
/// UTXOs are due ([`crate::rollover`]); true if it did (then no peg-out
/// batch forms in this block).
fn form_rollover(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    time_ms: u64,
    events: &mut Vec<Event>,
) -> bool {
    // One rollover batch in flight at a time: a backlog of due UTXOs
    // (many deposits of one month) must not take every unconfirmed-batch
    // slot and hold the peg-outs back until they all confirm.
    if o.base.batches.values().any(|b| b.outputs.is_empty()) {
        return false;
    }
    let current = o.base.epoch_at(height);
    let available = o.available_utxos();
    let (epoch, due) = match rollover::sweep(&available, current.number) {
        Some(sweep) => sweep,
        None => {
            let mine: Vec<(OutPoint, Utxo)> = available
                .into_iter()
                .filter(|(_, u)| u.epoch == current.number)
                .collect();
            (current.number, rollover::due(&mine, params, time_ms))
        }
    };
    if due.is_empty() {
        return false;
    }
    let (Some(in_fed), Ok(change_fed)) = (
        params.epoch_federation(o.base, epoch),
        params.federation_of(current),
    ) else {
        return false;
    };
    let rate = o.base.fee_rate(params);
    let Some((n, rate, fee, change)) =
        rollover::plan(&due, &in_fed, params, rate.0, o.delta.fee_pool)
    else {
        return false;
    };
    let inputs = due[..n].to_vec();
    let epochs = (epoch, current.number);
    add_batch(
        o,
        &change_fed,
        height,
        inputs,
        Vec::new(),
        (FeeRate(rate), fee, change),
        epochs,
        events,
    )
}

/// Adds a new batch spending `inputs` (all of epoch `epochs.0`) to pay
/// `outputs` and `change` (sats, to `change_fed`, the federation of epoch
/// `epochs.1`) at `rate` with `fee` (sats) from the fee pool; false (and
/// nothing changed) if it cannot be built or paid.
#[allow(clippy::too_many_arguments)] // one batch's parts
fn add_batch(
    o: &mut Overlay<'_>,
    change_fed: &fedpeg_peg::federation::Federation,
    height: Height,
    inputs: Vec<(OutPoint, Utxo)>,
    outputs: Vec<BatchOutput>,
    (rate, fee, change): (FeeRate, u64, u64),
    (epoch, change_epoch): (u32, u32),
    events: &mut Vec<Event>,
) -> bool {
    // Fee and change are parts of the inputs' total, so they fit.
    let (Some(fee), Some(change)) = (Sats::checked(fee), Sats::checked(change)) else {
        return false;
    };
    let id = o.delta.next_batch_id;
    let Some(next_id) = id.next() else {
        return false;
    };
    let mut b = Batch {
        id,
        // Spent UTXOs need no age, and batch records do not store it.
        inputs: inputs
            .into_iter()
            .map(|(op, u)| (op, Utxo { created_ms: 0, ..u }))
            .collect(),
        outputs,
        versions: vec![BatchVersion {
            fee_rate: rate,
            fee,
            change,
            txid: Txid::all_zeros(),
            height,
            signatures: BTreeMap::new(),
            bump_votes: BTreeSet::new(),
        }],
        created_height: height,
        fee_reserved: fee,
        confirmed: None,
        epoch,
        change_epoch,
    };
    let Ok(tx) = b.unsigned_tx(change_fed, 0) else {
        return false;
    };
    let Some(fee_pool) = o.delta.fee_pool.checked_sub(fee) else {
        return false;
    };
    b.versions[0].txid = tx.compute_txid();
    o.delta.fee_pool = fee_pool;
    o.delta.next_batch_id = next_id;
    o.delta
        .spent_utxos
        .extend(b.inputs.iter().map(|(op, _)| *op));
    events.push(Event::PegOutBatch {
        batch: id,
        stage: BatchStage::Formed,
        txid: b.versions[0].txid,
        withdrawals: b.withdrawal_ids(),
        accounts: b.accounts(),
    });
    o.delta.batches.insert(id, b);
    true
}
