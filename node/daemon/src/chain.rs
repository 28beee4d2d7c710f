//! The replicated chain as one node holds it: ledger state, store and
//! mempool, with the three operations a block producer drives —
//! [`Chain::propose`], [`Chain::validate`] and [`Chain::commit`].
//!
//! This is the interface the consensus driver ([`crate::driver`]) plugs
//! into: it calls propose when it is the proposer, validate on others'
//! proposals, and commit on decision. A one-member chain is the same
//! consensus with n = 1.

use crate::store::{FeedRecord, Store, StoreError, TxLocation};
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::block::{Block, CommittedBlock};
use fedpeg_ledger::fedtx::{FedTxKind, FederationTx};
use fedpeg_ledger::genesis::ChainSpec;
use fedpeg_ledger::hash::Hash32;
use fedpeg_ledger::ids::{BatchId, WithdrawalId};
use fedpeg_ledger::mempool::{AdmitError, Mempool};
use fedpeg_ledger::tx::{DecodeError, Transaction, TxId};
use fedpeg_ledger::{
    apply_block, build_block, Account, BlockError, BlockOutcome, LedgerParams, State,
};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// Why a submitted transaction was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Admit(#[from] AdmitError),
}

/// Why a block could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Invalid(#[from] BlockError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A proposal built from the mempool, with its precomputed outcome.
pub struct Proposal {
    pub block: Block,
    pub outcome: BlockOutcome,
}

/// An account as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountView {
    pub finalized: Account,
    /// Next nonce and spendable balance counting pooled transactions.
    pub effective: Account,
}

/// Where a transaction is.
pub enum TxStatus {
    Pending(Arc<Transaction>),
    Finalized(Box<CommittedBlock>, TxLocation),
}

/// State, store and mempool of one node.
pub struct Chain {
    pub spec: ChainSpec,
    params: LedgerParams,
    store: Store,
    state: RwLock<State>,
    mempool: Mutex<Mempool>,
    tip: tokio::sync::watch::Sender<u64>,
    pending: tokio::sync::Notify,
    /// Where transactions submitted through the API go to be gossiped to the
    /// other members (set by the consensus driver).
    gossip: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Gossip>>,
    /// Pending federation transactions (verified), by id.
    fed_pool: Mutex<Vec<FederationTx>>,
}

/// What the chain hands to the driver for gossip.
pub enum Gossip {
    Tx(Transaction),
    Fed(FederationTx),
}

/// True while a federation transaction can still apply (not made moot by state).
fn fed_tx_pending(state: &State, tx: &FederationTx) -> bool {
    match &tx.kind {
        FedTxKind::RegisterDepositAddress { account } => !state.registered.contains(account),
        FedTxKind::PegInMint { outpoint, .. } => !state.minted.contains_key(outpoint),
        FedTxKind::FeeRateVote { height, .. } => state
            .fee_votes
            .get(&tx.member)
            .is_none_or(|(_, last)| last < height),
        FedTxKind::PegOutSignatures { batch, version, .. } => {
            state.batches.get(batch).is_some_and(|b| {
                b.versions.len() == *version as usize + 1
                    && !b.latest().signatures.contains_key(&tx.member)
            })
        }
        FedTxKind::PegOutBump { batch, version } => state.batches.get(batch).is_some_and(|b| {
            b.versions.len() == *version as usize + 1 && !b.latest().bump_votes.contains(&tx.member)
        }),
        FedTxKind::PegOutConfirmed { batch, .. } => state.batches.contains_key(batch),
    }
}

/// Most pending federation transactions.
const MAX_FED_POOL: usize = 10_000;

fn lock_poisoned<T>(_: T) -> StoreError {
    StoreError::Corrupt("internal lock poisoned by an earlier panic".into())
}

impl Chain {
    /// Opens the store under `data_dir` and loads the state.
    pub fn open(spec: ChainSpec, data_dir: &Path, mempool_max: usize) -> Result<Chain, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Corrupt(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let store = Store::open(&data_dir.join("db"), spec.chain_id, &spec.genesis_state())?;
        let state = store.load_state()?;
        let (tip, _) = tokio::sync::watch::channel(state.height.0);
        Ok(Chain {
            params: spec.ledger_params(),
            spec,
            store,
            state: RwLock::new(state),
            mempool: Mutex::new(Mempool::new(mempool_max)),
            tip,
            pending: tokio::sync::Notify::new(),
            gossip: std::sync::OnceLock::new(),
            fed_pool: Mutex::new(Vec::new()),
        })
    }

    /// Ledger parameters.
    pub fn params(&self) -> &LedgerParams {
        &self.params
    }

    /// Reads the state under a short lock.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        match self.state.read() {
            Ok(s) => f(&s),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    /// Current finalized height.
    pub fn height(&self) -> u64 {
        self.with_state(|s| s.height).0
    }

    /// Watches the finalized height.
    pub fn subscribe_tip(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tip.subscribe()
    }

    /// Resolves when the mempool may have gained transactions.
    pub async fn mempool_changed(&self) {
        self.pending.notified().await
    }

    /// Number of pooled transactions (user and federation).
    pub fn mempool_len(&self) -> usize {
        self.mempool.lock().map(|m| m.len()).unwrap_or(0)
            + self.fed_pool.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Sends every transaction later accepted through [`Chain::submit`] to
    /// `gossip` as well (the driver forwards them to the other members).
    pub fn set_gossip(&self, gossip: tokio::sync::mpsc::UnboundedSender<Gossip>) {
        let _ = self.gossip.set(gossip);
    }

    /// Decodes, verifies and pools a transaction submitted by a client, and
    /// hands it to gossip.
    pub fn submit(&self, bytes: &[u8]) -> Result<TxId, SubmitError> {
        let tx = Transaction::decode(bytes)?;
        let copy = self.gossip.get().map(|g| (g, tx.clone()));
        let id = self.submit_tx(tx)?;
        if let Some((g, tx)) = copy {
            let _ = g.send(Gossip::Tx(tx));
        }
        Ok(id)
    }

    /// Verifies and pools a federation transaction; `gossip` also hands it
    /// to the driver for the other members. Returns false if it was refused
    /// (bad signature, already applied or pooled, pool full).
    pub fn submit_fed_tx(&self, tx: FederationTx, gossip: bool) -> bool {
        if tx.chain_id != self.params.chain_id || !tx.verify(&self.params.members) {
            return false;
        }
        if self.with_state(|s| !fed_tx_pending(s, &tx)) {
            return false;
        }
        // Peg-out signatures are checked against the batch now: invalid ones
        // (a Byzantine or misconfigured member) would otherwise sit in the
        // pool until the batch is done, re-verified at every proposal.
        if let FedTxKind::PegOutSignatures { batch, version, .. } = &tx.kind {
            if let Err(e) = self.with_state(|s| fedpeg_ledger::check_fed_tx(s, &self.params, &tx)) {
                tracing::warn!(
                    member = tx.member.0,
                    batch = batch.0,
                    version,
                    "refused peg-out signatures: {e}"
                );
                return false;
            }
        }
        let Ok(mut pool) = self.fed_pool.lock() else {
            return false;
        };
        let id = tx.id();
        if pool.len() >= MAX_FED_POOL || pool.iter().any(|t| t.id() == id) {
            return false;
        }
        pool.push(tx.clone());
        drop(pool);
        if gossip {
            if let Some(g) = self.gossip.get() {
                let _ = g.send(Gossip::Fed(tx));
            }
        }
        self.pending.notify_one();
        true
    }

    #[cfg(feature = "byzantine")]
    /// Hands a federation transaction to the driver for the other members
    /// without pooling it here (test-only Byzantine behaviour).
    pub(crate) fn gossip_fed_tx(&self, tx: FederationTx) {
        if let Some(g) = self.gossip.get() {
            let _ = g.send(Gossip::Fed(tx));
        }
    }

    /// True if a registration for `account` is pooled (not yet final).
    pub fn registration_pending(&self, account: &AccountId) -> bool {
        self.fed_pool.lock().map(|p| {
            p.iter().any(|t| matches!(&t.kind, FedTxKind::RegisterDepositAddress { account: a } if a == account))
        }).unwrap_or(false)
    }

    /// Verifies and pools a decoded transaction (without gossiping it).
    pub fn submit_tx(&self, tx: Transaction) -> Result<TxId, SubmitError> {
        use fedpeg_ledger::TxError;
        if tx.chain_id != self.params.chain_id {
            return Err(AdmitError::Tx(TxError::WrongChain {
                expected: self.params.chain_id,
                got: tx.chain_id,
            })
            .into());
        }
        // Cheap checks first: a duplicate, stale or unaffordable transaction
        // (common when gossip arrives after the block) costs no signature check.
        {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            let pool = self.mempool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.contains_exact(&tx) {
                return Ok(tx.id());
            }
            pool.precheck(
                &tx,
                state.account(&tx.sender),
                &self.params,
                state.fee_rate(self.params.default_fee_rate),
            )
            .map_err(AdmitError::Tx)?;
        }
        // Verify outside any lock: it is the expensive part.
        if !tx.verify_signature() {
            return Err(AdmitError::Tx(TxError::BadSignature).into());
        }
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let finalized = state.account(&tx.sender);
        let mut pool = self.mempool.lock().unwrap_or_else(|p| p.into_inner());
        let rate = state.fee_rate(self.params.default_fee_rate);
        let id = pool.admit(tx, finalized, &self.params, rate)?;
        drop(pool);
        drop(state);
        self.pending.notify_one();
        Ok(id)
    }

    /// Finalized and effective views of an account.
    pub fn account(&self, id: &AccountId) -> AccountView {
        self.with_state(|s| {
            let finalized = s.account(id);
            let effective = self
                .mempool
                .lock()
                .map(|m| m.effective_account(finalized, id))
                .unwrap_or(finalized);
            AccountView {
                finalized,
                effective,
            }
        })
    }

    /// Builds the next block from the mempool (the proposer's step).
    /// `extra_fed` are federation transactions the proposer adds itself
    /// (mints of deposits its own watcher saw reach depth).
    pub fn propose(
        &self,
        time_ms: u64,
        proposer: u32,
        extra_fed: Vec<FederationTx>,
    ) -> Result<Proposal, StoreError> {
        let state = self.state.read().map_err(lock_poisoned)?;
        let pool = self.mempool.lock().map_err(lock_poisoned)?;
        let cands = pool.candidates(self.params.max_block_txs);
        let mut fed = self.fed_pool.lock().map_err(lock_poisoned)?.clone();
        fed.extend(extra_fed);
        let built = build_block(
            &state,
            &self.params,
            cands.iter().map(|t| t.as_ref()),
            &fed,
            time_ms,
            proposer,
            &*pool,
        );
        Ok(Proposal {
            block: built.block,
            outcome: built.outcome,
        })
    }

    /// Checks another member's proposal against the current state.
    pub fn validate(&self, block: &Block) -> Result<BlockOutcome, CommitError> {
        let state = self.state.read().map_err(lock_poisoned)?;
        let pool = self.mempool.lock().map_err(lock_poisoned)?;
        Ok(apply_block(&state, block, &self.params, &*pool)?)
    }

    /// Finalizes a decided block: persists it (one synced batch), then updates
    /// the in-memory state and the mempool. `outcome` must come from
    /// [`Chain::propose`] or [`Chain::validate`] against the current tip; if
    /// the tip moved, the block is re-validated.
    pub fn commit(&self, cb: CommittedBlock, outcome: BlockOutcome) -> Result<(), CommitError> {
        let mut state = self.state.write().map_err(lock_poisoned)?;
        let outcome = if cb.block.header.parent == state.tip
            && cb.block.header.height == state.height.next()
        {
            outcome
        } else {
            let pool = self.mempool.lock().map_err(lock_poisoned)?;
            apply_block(&state, &cb.block, &self.params, &*pool)?
        };
        let mut after = state.clone_meta();
        after.commit(&cb.block.header, &outcome);
        let feed = self.feed_record(&cb, &outcome);
        self.store.commit_block_with(&cb, &outcome, &after, &feed)?;
        // Durable: now make it visible.
        state.commit(&cb.block.header, &outcome);
        let height = state.height;
        if let Ok(mut pool) = self.mempool.lock() {
            pool.on_block_committed(&cb.block.txs, &state, &self.params);
        }
        if let Ok(mut fed) = self.fed_pool.lock() {
            // Drop what the block applied, and what it made moot.
            fed.retain(|t| fed_tx_pending(&state, t));
        }
        drop(state);
        tracing::debug!(
            height = height.0,
            txs = cb.block.txs.len(),
            "block finalized"
        );
        self.tip.send_replace(height.0);
        Ok(())
    }

    /// A peg-out batch by id (confirmed ones too).
    pub fn batch(&self, id: u64) -> Result<Option<fedpeg_ledger::pegout_batch::Batch>, StoreError> {
        if let Some(b) = self.with_state(|s| s.batches.get(&BatchId(id)).cloned()) {
            return Ok(Some(b));
        }
        self.store.batch(id)
    }

    /// The newest `limit` batches (stored), newest first.
    pub fn recent_batches(
        &self,
        limit: usize,
    ) -> Result<Vec<fedpeg_ledger::pegout_batch::Batch>, StoreError> {
        self.store.recent_batches(limit)
    }

    /// A withdrawal by id, unpaid or paid, with the batch paying it.
    pub fn withdrawal(
        &self,
        id: u64,
    ) -> Result<Option<(fedpeg_ledger::Withdrawal, Option<u64>)>, StoreError> {
        if let Some(w) = self.with_state(|s| {
            s.withdrawals.get(&WithdrawalId(id)).map(|w| {
                (
                    w.clone(),
                    s.withdrawal_batch.get(&WithdrawalId(id)).map(|b| b.0),
                )
            })
        }) {
            return Ok(Some(w));
        }
        // Paid: find its batch among the stored ones.
        let Some(w) = self.store.paid_withdrawal(id)? else {
            return Ok(None);
        };
        let batch = self.store.batch_paying(id)?;
        Ok(Some((w, batch)))
    }

    /// The id of the withdrawal queued by PegOut transaction `txid`.
    pub fn withdrawal_id_of(&self, txid: &TxId) -> Result<Option<u64>, StoreError> {
        if let Some(id) = self.with_state(|s| {
            s.withdrawals
                .values()
                .find(|w| &w.txid == txid)
                .map(|w| w.id)
        }) {
            return Ok(Some(id.0));
        }
        Ok(self.store.paid_withdrawal_by_txid(txid)?.map(|w| w.id.0))
    }

    /// A finalized block by height.
    pub fn block(&self, height: u64) -> Result<Option<CommittedBlock>, StoreError> {
        self.store.block(height)
    }

    /// A finalized block by hash.
    pub fn block_by_hash(&self, hash: &Hash32) -> Result<Option<CommittedBlock>, StoreError> {
        match self.store.height_of(hash)? {
            Some(h) => self.store.block(h),
            None => Ok(None),
        }
    }

    /// What the explorer feed stores with a block: its events and the
    /// account index of its transactions.
    fn feed_record(&self, cb: &CommittedBlock, outcome: &BlockOutcome) -> FeedRecord {
        let events = fedpeg_ledger::events::block_events(cb, &outcome.events, self.spec.hrp());
        FeedRecord {
            events: Some(fedpeg_ledger::events::encode_events(&events)),
            account_txs: cb
                .block
                .txs
                .iter()
                .enumerate()
                .flat_map(|(i, tx)| {
                    fedpeg_ledger::events::tx_accounts(tx)
                        .into_iter()
                        .map(move |a| (a, i as u32))
                })
                .collect(),
        }
    }

    /// The stored events of the block at `height` (see [`Store::block_events`]).
    pub fn block_events(
        &self,
        height: u64,
    ) -> Result<Option<Vec<fedpeg_proto::v1::ChainEvent>>, StoreError> {
        self.store.block_events(height)
    }

    /// An account's finalized transactions, newest first (see [`Store::account_txs`]).
    pub fn account_txs(
        &self,
        account: &AccountId,
        before: Option<TxLocation>,
        limit: usize,
    ) -> Result<Vec<TxLocation>, StoreError> {
        self.store.account_txs(account, before, limit)
    }

    /// Status of a transaction: pooled, finalized, or unknown.
    pub fn transaction(&self, txid: &TxId) -> Result<Option<TxStatus>, StoreError> {
        if let Some(loc) = self.store.tx_location(txid)? {
            if let Some(b) = self.store.block(loc.height)? {
                return Ok(Some(TxStatus::Finalized(Box::new(b), loc)));
            }
        }
        let pooled = self.mempool.lock().map_err(lock_poisoned)?.get(txid);
        Ok(pooled.map(TxStatus::Pending))
    }
}
