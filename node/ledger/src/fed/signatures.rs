//! `PegOutSignatures`: a member's signatures of every input of a batch's
//! newest version, each verified against the sighash and the member's
//! tweaked peg key before it is recorded.

use crate::error::FedTxError;
use crate::events::{BatchStage, Event};
use crate::ids::{BatchId, MemberIndex};
use crate::overlay::Overlay;
use crate::LedgerParams;

pub(super) fn apply(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
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
    if b.versions[latest].signatures.contains_key(&member) {
        return Err(FedTxError::Duplicate(member));
    }
    let unsigned = b
        .unsigned_tx(&params.federation, latest)
        .map_err(|e| FedTxError::BadPegOutSignatures(e.to_string()))?;
    params
        .federation
        .verify_batch_signatures(&unsigned, &b.batch_inputs(), member.index(), signatures)
        .map_err(|e| FedTxError::BadPegOutSignatures(e.to_string()))?;
    let v = &mut b.versions[latest];
    v.signatures.insert(member, signatures.to_vec());
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
