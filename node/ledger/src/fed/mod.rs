//! Federation transactions: signed by a member's consensus key and checked
//! by every member against its own state. One module per kind; this one
//! checks what they share (chain, member signature) and dispatches.

mod bump;
mod confirm;
mod federation_change;
mod fee_vote;
mod mint;
mod register;
mod signatures;

use crate::error::FedTxError;
use crate::events::Event;
use crate::fedtx::{FedTxKind, FederationTx};
use crate::ids::MemberIndex;
use crate::overlay::Overlay;
use crate::state::State;
use crate::LedgerParams;
use fedpeg_consensus::Height;

pub(crate) use federation_change::start_block;

/// Whether federation transaction `tx` would apply on top of `state` in the
/// next block (nothing is written). Its member signature is checked too.
pub fn check_fed_tx(
    state: &State,
    params: &LedgerParams,
    tx: &FederationTx,
) -> Result<(), FedTxError> {
    check_signed(state, params, state.height.next(), tx)?;
    check_fed_tx_unsigned(state, params, tx)
}

/// [`check_fed_tx`] without the member signature, for a caller that checks
/// it next ([`FederationTx::verify`]): junk then costs no signature check.
pub fn check_fed_tx_unsigned(
    state: &State,
    params: &LedgerParams,
    tx: &FederationTx,
) -> Result<(), FedTxError> {
    let height = state.height.next();
    let mut o = Overlay::new(state);
    start_block(&mut o, height);
    apply_unsigned(&mut o, params, height, tx, &mut Vec::new())
}

/// Checks `tx` and applies it to the block's working view at `height`.
/// A refused transaction leaves `o` and `events` untouched.
pub(crate) fn apply_fed_tx(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    tx: &FederationTx,
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    check_signed(o.base, params, height, tx)?;
    apply_unsigned(o, params, height, tx, events)
}

/// For this chain, signed by `tx.member` of the epoch in force at `height`.
fn check_signed(
    state: &State,
    params: &LedgerParams,
    height: Height,
    tx: &FederationTx,
) -> Result<(), FedTxError> {
    check_chain(params, tx)?;
    if !tx.verify(&state.validators_at(height)) {
        return Err(FedTxError::BadSignature(tx.member));
    }
    Ok(())
}

fn check_chain(params: &LedgerParams, tx: &FederationTx) -> Result<(), FedTxError> {
    if tx.chain_id != params.chain_id {
        return Err(FedTxError::WrongChain {
            expected: params.chain_id,
            got: tx.chain_id,
        });
    }
    Ok(())
}

/// [`apply_fed_tx`] but for the member signature.
fn apply_unsigned(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: Height,
    tx: &FederationTx,
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    check_chain(params, tx)?;
    let member = tx.member;
    check_member(o, height, member)?;
    match &tx.kind {
        FedTxKind::RegisterDepositAddress { account } => {
            register::apply(o, member, account, events)
        }
        FedTxKind::FeeRateVote {
            sat_per_vbyte,
            height: at,
        } => fee_vote::apply(o, params, height, member, *sat_per_vbyte, *at),
        FedTxKind::PegInMint {
            outpoint,
            amount,
            account,
            epoch,
            ..
        } => mint::apply(
            o,
            params,
            height,
            mint::Deposit {
                outpoint,
                amount: *amount,
                account,
                epoch: *epoch,
            },
            events,
        ),
        FedTxKind::PegOutSignatures {
            batch,
            version,
            signatures,
        } => signatures::apply(
            o, params, height, member, *batch, *version, signatures, events,
        ),
        FedTxKind::PegOutBump { batch, version } => {
            bump::apply(o, params, height, member, *batch, *version, events)
        }
        FedTxKind::PegOutConfirmed {
            batch,
            txid,
            bitcoin_block,
        } => confirm::apply(o, params, height, *batch, txid, bitcoin_block, events),
        FedTxKind::FederationChange { change } => {
            federation_change::apply(o, params, height, member, change, events)
        }
    }
}

/// `member` is a member of the epoch in force at `height`.
fn check_member(o: &Overlay<'_>, height: Height, member: MemberIndex) -> Result<(), FedTxError> {
    let epoch = o.base.epoch_at(height);
    if member.index() >= epoch.members.len() {
        return Err(FedTxError::NotAMember {
            member,
            epoch: epoch.number,
            members: epoch.members.len(),
        });
    }
    Ok(())
}
