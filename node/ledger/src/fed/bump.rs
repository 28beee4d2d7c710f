//! `PegOutBump`: f + 1 members (of the epoch in force; votes are keyed by
//! member index and dropped when an epoch activates) vote to replace a batch that is not
//! confirming with a version at a higher fee rate (BIP125), paid from the fee
//! pool. When the pool cannot pay, the votes are cleared so that the bump
//! is retried once members vote again (they do, once per Bitcoin block,
//! while the batch stays unmined).

use crate::amount::Sats;
use crate::error::FedTxError;
use crate::events::{BatchStage, Event};
use crate::ids::{BatchId, FeeRate, MemberIndex};
use crate::overlay::Overlay;
use crate::pegout_batch::{fee_and_change, Batch, BatchVersion, MAX_BATCH_VERSIONS};
use crate::state::MAX_FEE_RATE;
use crate::LedgerParams;
use bitcoin::hashes::Hash as _;
use bitcoin::Txid;
use fedpeg_consensus::Height;
use fedpeg_peg::federation::Federation;
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn apply(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    member: MemberIndex,
    batch: BatchId,
    version: u32,
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    let mut b = o.batch(batch).ok_or(FedTxError::UnknownBatch(batch))?;
    let latest = b.versions.len() - 1;
    if version as usize != latest {
        return Err(FedTxError::StaleVersion { batch, version });
    }
    if !b.versions[latest].bump_votes.insert(member) {
        return Err(FedTxError::Duplicate(member));
    }
    if b.versions[latest].bump_votes.len() >= o.base.epoch_at(height).honest_quorum()
        && b.versions.len() < MAX_BATCH_VERSIONS
    {
        let rate = o.base.fee_rate(params);
        let feds = super::signatures::batch_federations(o, params, b.epoch, b.change_epoch)?;
        if let Some((v, extra)) = replacement(&b, &feds, rate, height, o.delta.fee_pool) {
            o.delta.fee_pool = o
                .delta
                .fee_pool
                .checked_sub(extra)
                .ok_or(FedTxError::Overflow)?;
            b.fee_reserved = b
                .fee_reserved
                .checked_add(extra)
                .ok_or(FedTxError::Overflow)?;
            events.push(Event::PegOutBatch {
                batch,
                stage: BatchStage::Replaced {
                    version: b.versions.len() as u32,
                    fee_rate: v.fee_rate,
                },
                txid: v.txid,
                withdrawals: b.withdrawal_ids(),
                accounts: b.accounts(),
            });
            b.versions.push(v);
        } else {
            // The fee pool cannot pay for it now: the votes are spent, and
            // members still seeing the batch stuck vote again later, when
            // fees may have refilled the pool.
            b.versions[latest].bump_votes.clear();
        }
    }
    o.delta.batches.insert(batch, b);
    Ok(())
}

/// A replacement of `b`'s newest version at a higher rate (the agreed rate,
/// or 25% more than before, whichever is higher) with the fee BIP125 asks
/// for, paid from the fee pool; with the extra sats it takes from the pool.
/// `feds`: the federations of its inputs and of its change.
fn replacement(
    b: &Batch,
    (fed, change_fed): &(Federation, Federation),
    agreed_rate: FeeRate,
    height: Height,
    fee_pool: Sats,
) -> Option<(BatchVersion, Sats)> {
    let old = b.latest();
    let rate = agreed_rate
        .max(FeeRate(
            old.fee_rate.0.saturating_add((old.fee_rate.0 / 4).max(1)),
        ))
        .min(MAX_FEE_RATE);
    let out_bytes: u64 = b
        .outputs
        .iter()
        .map(|o| fedpeg_peg::pegout::output_bytes(&o.script_pubkey))
        .sum();
    let n_out = b.outputs.len();
    // BIP125: the replacement pays at least the old fee plus its own size
    // at the incremental relay rate (1 sat/vB).
    let min_fee = old.fee.to_sat().saturating_add(fed.batch_vbytes(
        b.inputs.len(),
        n_out + 1,
        out_bytes + 43,
    ));
    let (fee, change) = fee_and_change(
        fed,
        b.inputs.len(),
        b.input_total(),
        n_out,
        out_bytes,
        b.output_total(),
        rate.0,
        min_fee,
    )?;
    let extra = Sats::checked(fee.saturating_sub(b.fee_reserved.to_sat()))?;
    if extra > fee_pool {
        return None;
    }
    let mut v = BatchVersion {
        fee_rate: rate,
        fee: Sats::checked(fee)?,
        change: Sats::checked(change)?,
        txid: Txid::all_zeros(),
        height,
        signatures: BTreeMap::new(),
        bump_votes: BTreeSet::new(),
    };
    let mut probe = b.clone();
    probe.versions.push(v.clone());
    let tx = probe
        .unsigned_tx(change_fed, probe.versions.len() - 1)
        .ok()?;
    v.txid = tx.compute_txid();
    Some((v, extra))
}
