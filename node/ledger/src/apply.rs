//! Applying a block: [`apply_block`] validates a block against a state and
//! computes its outcome (a [`Delta`] plus events) without touching the
//! state; [`build_block`] is the proposer's side of the same function.

use crate::account::AccountId;
use crate::amount::Sats;
use crate::batching::form_batch;
use crate::block::{tx_root, Block, Header};
use crate::epoch::{ChangeVotes, Epoch};
use crate::error::{BlockError, FedTxError, TxError};
use crate::events::Event;
use crate::fed::{apply_fed_tx, start_block};
use crate::fedtx::{FederationTx, OutPoint};
use crate::hash::Hash32;
use crate::ids::{BatchId, FeeRate, MemberIndex, WithdrawalId};
use crate::overlay::Overlay;
use crate::pegout_batch::{Batch, Utxo};
use crate::quote_grace::{self, QuoteGrace};
use crate::state::{Account, State, Withdrawal, MAX_BLOCK_FED_TXS};
use crate::state_root;
use crate::transfer::apply_tx;
use crate::tx::{Transaction, TxId};
use crate::LedgerParams;
use fedpeg_consensus::Height;
use std::collections::BTreeMap;

/// Decides whether a transaction's signature is valid. Lets a node skip
/// re-verifying signatures it already checked at mempool admission.
pub trait SignatureCheck {
    /// True if `tx.signature` is valid for `tx`
    /// ([`fedpeg_consensus::signature_rule`]).
    fn is_valid(&self, tx: &Transaction) -> bool;
}

/// For callers that verified the signature themselves (or are checking
/// everything else first): treats every signature as valid.
pub struct AlreadyVerified;

impl SignatureCheck for AlreadyVerified {
    fn is_valid(&self, _: &Transaction) -> bool {
        true
    }
}

/// Verifies every signature.
pub struct VerifyAll;

impl SignatureCheck for VerifyAll {
    fn is_valid(&self, tx: &Transaction) -> bool {
        tx.verify_signature()
    }
}

/// Changes a block makes to the state, applied by [`State::commit`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub accounts: BTreeMap<AccountId, Account>,
    pub fee_pool: Sats,
    pub supply: Sats,
    pub new_withdrawals: Vec<Withdrawal>,
    pub next_withdrawal_id: WithdrawalId,
    pub new_registrations: Vec<AccountId>,
    /// Minted deposits: (outpoint, account, credited amount, deposit amount).
    pub new_mints: Vec<(OutPoint, AccountId, Sats, Sats)>,
    /// Fee-rate votes: (member, sat/vB, height).
    pub new_fee_votes: Vec<(MemberIndex, FeeRate, Height)>,
    /// Federation UTXOs that became spendable.
    pub new_utxos: Vec<(OutPoint, Utxo)>,
    /// UTXOs locked into a new batch.
    pub spent_utxos: Vec<OutPoint>,
    /// New or changed batches (their whole new record).
    pub batches: BTreeMap<BatchId, Batch>,
    pub next_batch_id: BatchId,
    /// The new quote grace list when this block's fee votes raised the
    /// agreed rate; `None` leaves it as it was.
    pub quote_grace: Option<Vec<QuoteGrace>>,
    /// The block is the first of an epoch: fee-rate and change votes of
    /// the old one were dropped before its transactions (bump votes too, in
    /// `batches`).
    pub epoch_start: bool,
    /// The whole new change-vote map when this block changed it; `None`
    /// leaves it as it was (or empty after an `epoch_start`).
    pub change_votes: Option<ChangeVotes>,
    /// The epoch this block adopted (active from its `activation`).
    pub adopted: Option<Epoch>,
}

/// The result of applying a block to a state.
#[derive(Clone, Debug)]
pub struct BlockOutcome {
    pub delta: Delta,
    pub events: Vec<Event>,
    pub state_root: Hash32,
}

/// Validates `block` against `state` and computes its outcome, without
/// changing `state`. Every transaction must be valid; the header must match.
pub fn apply_block(
    state: &State,
    block: &Block,
    params: &LedgerParams,
    sigs: &dyn SignatureCheck,
) -> Result<BlockOutcome, BlockError> {
    let h = &block.header;
    if h.chain_id != params.chain_id {
        return Err(BlockError::WrongChain {
            expected: params.chain_id,
            got: h.chain_id,
        });
    }
    if h.height != state.height.next() {
        return Err(BlockError::WrongHeight {
            expected: state.height.next(),
            got: h.height,
        });
    }
    if h.parent != state.tip {
        return Err(BlockError::WrongParent {
            expected: state.tip,
            got: h.parent,
        });
    }
    if block.txs.len() > params.max_block_txs {
        return Err(BlockError::TooManyTxs {
            max: params.max_block_txs,
            got: block.txs.len(),
        });
    }
    if block.fed_txs.len() > MAX_BLOCK_FED_TXS {
        return Err(BlockError::TooManyFedTxs {
            max: MAX_BLOCK_FED_TXS,
            got: block.fed_txs.len(),
        });
    }
    let ids: Vec<TxId> = block.txs.iter().map(Transaction::id).collect();
    if tx_root(&block.txs, &block.fed_txs) != h.tx_root {
        return Err(BlockError::TxRoot);
    }
    let mut o = Overlay::new(state);
    start_block(&mut o, h.height);
    let mut events = Vec::new();
    for (index, tx) in block.txs.iter().enumerate() {
        apply_tx(&mut o, params, (h.height, h.time_ms), tx, sigs, &mut events).map_err(
            |error| BlockError::Tx {
                index,
                txid: ids[index],
                error,
            },
        )?;
    }
    for (index, f) in block.fed_txs.iter().enumerate() {
        apply_fed_tx(&mut o, params, h.height, f, &mut events)
            .map_err(|error| BlockError::FedTx { index, error })?;
    }
    quote_grace::after_fee_votes(&mut o, params, h.time_ms);
    crate::rollover::stamp_new_utxos(&mut o, h.time_ms);
    form_batch(&mut o, params, h.height, h.time_ms, &mut events);
    let root = state_root::next(state.state_root, h.height, &o.delta);
    if root != h.state_root {
        return Err(BlockError::StateRoot {
            expected: root,
            got: h.state_root,
        });
    }
    Ok(BlockOutcome {
        delta: o.delta,
        events,
        state_root: root,
    })
}

/// A block built by a proposer, with what it did and what it left out.
pub struct BuiltBlock {
    pub block: Block,
    pub outcome: BlockOutcome,
    /// Candidates that were invalid against the state, with the reason.
    pub rejected: Vec<(TxId, TxError)>,
    /// Federation candidates that did not apply, with the reason (a pool
    /// evicts them).
    pub rejected_fed: Vec<(Hash32, FedTxError)>,
}

/// Most federation candidates one block tries: bounds the proposer's work
/// when a pool holds many that fail (they are evicted after one try).
const MAX_FED_CANDIDATES_TRIED: usize = 2 * MAX_BLOCK_FED_TXS;

/// Builds the next block from `candidates` in order, skipping the invalid
/// ones, up to `params.max_block_txs`; then from `fed_candidates` up to
/// [`MAX_BLOCK_FED_TXS`] included (skipped ones do not count).
pub fn build_block<'t>(
    state: &State,
    params: &LedgerParams,
    candidates: impl IntoIterator<Item = &'t Transaction>,
    fed_candidates: &[FederationTx],
    time_ms: u64,
    proposer: u32,
    sigs: &dyn SignatureCheck,
) -> BuiltBlock {
    let height = state.height.next();
    let time_ms = time_ms.max(state.tip_time_ms);
    let mut o = Overlay::new(state);
    start_block(&mut o, height);
    let mut events = Vec::new();
    let mut txs = Vec::new();
    let mut rejected = Vec::new();
    for tx in candidates {
        if txs.len() >= params.max_block_txs {
            break;
        }
        let before = (o.account(&tx.sender), o.delta.fee_pool, o.delta.supply);
        let n_events = events.len();
        match apply_tx(&mut o, params, (height, time_ms), tx, sigs, &mut events) {
            Ok(()) => txs.push(tx.clone()),
            Err(e) => {
                // apply_tx writes only after every check passed: nothing to undo.
                debug_assert_eq!(
                    before,
                    (o.account(&tx.sender), o.delta.fee_pool, o.delta.supply)
                );
                events.truncate(n_events);
                rejected.push((tx.id(), e));
            }
        }
    }
    let mut fed_txs = Vec::new();
    let mut rejected_fed = Vec::new();
    for f in fed_candidates.iter().take(MAX_FED_CANDIDATES_TRIED) {
        if fed_txs.len() >= MAX_BLOCK_FED_TXS {
            break;
        }
        // Invalid ones (e.g. a registration another member's block already
        // made) are left out and reported.
        match apply_fed_tx(&mut o, params, height, f, &mut events) {
            Ok(()) => fed_txs.push(f.clone()),
            Err(e) => rejected_fed.push((f.id(), e)),
        }
    }
    quote_grace::after_fee_votes(&mut o, params, time_ms);
    crate::rollover::stamp_new_utxos(&mut o, time_ms);
    form_batch(&mut o, params, height, time_ms, &mut events);
    let root = state_root::next(state.state_root, height, &o.delta);
    let header = Header {
        chain_id: params.chain_id,
        height,
        parent: state.tip,
        time_ms,
        proposer,
        tx_root: tx_root(&txs, &fed_txs),
        state_root: root,
    };
    BuiltBlock {
        block: Block {
            header,
            txs,
            fed_txs,
        },
        outcome: BlockOutcome {
            delta: o.delta,
            events,
            state_root: root,
        },
        rejected,
        rejected_fed,
    }
}
