//! `PegOutConfirmed`: a version of a batch is confirmed at depth on Bitcoin;
//! its change joins the UTXO set and the fees the other versions reserved
//! return to the pool.

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
    let mut b = o.batch(batch).ok_or(FedTxError::UnknownBatch(batch))?;
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
    if version.change > Sats::ZERO {
        o.delta.new_utxos.push((
            OutPoint {
                txid: *txid,
                vout: b.outputs.len() as u32,
            },
            Utxo {
                amount: version.change,
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
        batch,
        stage: BatchStage::Confirmed { version: v as u32 },
        txid: *txid,
        withdrawals: b.withdrawal_ids(),
        accounts: b.accounts(),
    });
    o.delta.batches.insert(batch, b);
    Ok(())
}
