//! `PegOutSignatures`: a member's signatures of every input of a batch's
//! newest version, each verified against the sighash and the member's
//! tweaked peg key before it is recorded.
//!
//! The signer is a member of the epoch in force; what it signs with is its
//! peg key, which must be one of the keys of the federation of the batch's
//! epoch (the descriptor its inputs pay, [`crate::LedgerParams::federation_of`]).
//! Signatures are recorded under that key's peg-key index there (its
//! position among that epoch's members' peg keys), not under the member
//! index: the index witnesses are assembled by, stable across epochs.

use crate::error::FedTxError;
use crate::events::{BatchStage, Event};
use crate::ids::{BatchId, MemberIndex};
use crate::overlay::Overlay;
use crate::LedgerParams;
use fedpeg_consensus::Height;
use fedpeg_peg::federation::Federation;

/// The federations of a batch's inputs (`epoch`) and of its change
/// (`change_epoch`).
pub(crate) fn batch_federations(
    o: &Overlay<'_>,
    params: &LedgerParams,
    epoch: u32,
    change_epoch: u32,
) -> Result<(Federation, Federation), FedTxError> {
    let of = |n| {
        params
            .epoch_federation(o.base, n)
            .ok_or(FedTxError::NoEpochDescriptor(n))
    };
    Ok((of(epoch)?, of(change_epoch)?))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn apply(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    member: MemberIndex,
    batch: BatchId,
    version: u32,
    signatures: &[Vec<u8>],
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    let mut b = o.batch(batch).ok_or(FedTxError::UnknownBatch(batch))?;
    let latest = b.versions.len() - 1;
    if version as usize != latest {
        return Err(FedTxError::StaleVersion { batch, version });
    }
    let peg_key = o
        .base
        .epoch_at(height)
        .members
        .get(member.index())
        .map(|m| m.peg_key)
        .ok_or(FedTxError::BadSignature(member))?;
    let (fed, change_fed) = batch_federations(o, params, b.epoch, b.change_epoch)?;
    let peg = fed.key_index(&peg_key).ok_or(FedTxError::NoPegKey {
        member,
        epoch: b.epoch,
    })?;
    if b.versions[latest]
        .signatures
        .contains_key(&MemberIndex(peg as u32))
    {
        return Err(FedTxError::Duplicate(member));
    }
    let unsigned = b
        .unsigned_tx(&change_fed, latest)
        .map_err(|e| FedTxError::BadPegOutSignatures(e.to_string()))?;
    fed.verify_batch_signatures(&unsigned, &b.batch_inputs(), peg, signatures)
        .map_err(|e| FedTxError::BadPegOutSignatures(e.to_string()))?;
    let v = &mut b.versions[latest];
    v.signatures
        .insert(MemberIndex(peg as u32), signatures.to_vec());
    let count = v.signatures.len() as u32;
    let txid = v.txid;
    let withdrawals = b.withdrawal_ids();
    let accounts = b.accounts();
    events.push(Event::PegOutBatch {
        batch,
        stage: BatchStage::Signature {
            member,
            count,
            required: fed.threshold() as u32,
            version: latest as u32,
        },
        txid,
        withdrawals: withdrawals.clone(),
        accounts: accounts.clone(),
    });
    if count as usize == fed.threshold() {
        events.push(Event::PegOutBatch {
            batch,
            stage: BatchStage::Signed {
                version: latest as u32,
            },
            txid,
            withdrawals,
            accounts,
        });
    }
    o.delta.batches.insert(batch, b);
    Ok(())
}
