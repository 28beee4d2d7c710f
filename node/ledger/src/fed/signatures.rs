//! `PegOutSignatures`: a member's signatures of every input of a batch's
//! newest version, each verified against the sighash and the member's
//! tweaked peg key before it is recorded.
//!
//! The signer is a member of the epoch in force; what it signs with is its
//! peg key, which must be one of the federation's (genesis) keys. Signatures
//! are recorded under that key's peg-key index (its position in
//! `params.federation.keys()`), not under the member index: the index
//! witnesses are assembled by, stable across epochs.

use crate::error::FedTxError;
use crate::events::{BatchStage, Event};
use crate::ids::{BatchId, MemberIndex};
use crate::overlay::Overlay;
use crate::LedgerParams;
use fedpeg_consensus::Height;

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
    let peg = params
        .federation
        .key_index(&peg_key)
        .ok_or(FedTxError::NoPegKey(member))?;
    if b.versions[latest]
        .signatures
        .contains_key(&MemberIndex(peg as u32))
    {
        return Err(FedTxError::Duplicate(member));
    }
    let unsigned = b
        .unsigned_tx(&params.federation, latest)
        .map_err(|e| FedTxError::BadPegOutSignatures(e.to_string()))?;
    params
        .federation
        .verify_batch_signatures(&unsigned, &b.batch_inputs(), peg, signatures)
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
            required: params.federation.threshold() as u32,
            version: latest as u32,
        },
        txid,
        withdrawals: withdrawals.clone(),
        accounts: accounts.clone(),
    });
    if count as usize == params.federation.threshold() {
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
