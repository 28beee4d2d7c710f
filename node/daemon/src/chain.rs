//! The replicated chain as one node holds it: ledger state, store and
//! mempool, with the three operations a block producer drives —
//! [`Chain::propose`], [`Chain::validate`] and [`Chain::commit`].
//!
//! This is the interface the consensus driver ([`crate::driver`]) plugs
//! into: it calls propose when it is the proposer, validate on others'
//! proposals, and commit on decision. A one-member chain is the same
//! consensus with n = 1.

use crate::store::{FeedRecord, Store, StoreError, TxLocation};
use fedpeg_consensus::Height;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::block::{Block, CommittedBlock};
use fedpeg_ledger::fed_pool::{is_bitcoin_claim, FedAdmitError, FedPool};
use fedpeg_ledger::fedtx::FederationTx;
use fedpeg_ledger::genesis::ChainSpec;
use fedpeg_ledger::hash::Hash32;
use fedpeg_ledger::ids::{BatchId, WithdrawalId};
use fedpeg_ledger::mempool::{AdmitError, Mempool};
use fedpeg_ledger::tx::{DecodeError, Transaction, TxId};
use fedpeg_ledger::{
    apply_block, build_block, Account, BlockError, BlockOutcome, FedTxError, LedgerParams, State,
};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// Why a submitted transaction was refused.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Admit(#[from] AdmitError),
    /// Refused by the API before the chain saw it (e.g. peg-outs halted).
    #[error("{0}")]
    Halted(String),
    /// A bug in batch bookkeeping; never expected.
    #[error("internal error: the transaction got no verdict")]
    Internal,
}

/// Why a block could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Invalid(#[from] BlockError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Signature verdicts of one block's transactions, computed before applying
/// it (see [`Chain::validate`]): the ones not listed are valid.
struct BlockSignatures {
    invalid: HashSet<SignedTxKey>,
}

impl fedpeg_ledger::SignatureCheck for BlockSignatures {
    fn is_valid(&self, tx: &Transaction) -> bool {
        // Nearly always empty: no id to compute.
        self.invalid.is_empty() || !self.invalid.contains(&(tx.id(), tx.signature))
    }
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
    /// Pending federation transactions, checked against state.
    fed_pool: Mutex<FedPool>,
    /// Per consensus key: the last height whose commit certificate holds
    /// its precommit (absent until one did since this node started).
    last_signed: Mutex<HashMap<[u8; 32], u64>>,
    /// Validator sets by epoch number, built once each.
    validator_sets: Mutex<HashMap<u32, fedpeg_consensus::ValidatorSet>>,
    /// Valid signatures of proposed blocks' transactions that are not
    /// pooled, verified off the consensus task as the block arrived
    /// ([`Chain::preverify_block`]) so that [`Chain::validate`] does not
    /// verify them again. Only valid verdicts are kept; bounded.
    verified: Mutex<HashSet<SignedTxKey>>,
}

/// A transaction's id with its signature: what a signature verdict is about.
type SignedTxKey = (TxId, [u8; 64]);

/// Most entries of [`Chain`]'s verified-signature cache (cleared when full).
const VERIFIED_CACHE_MAX: usize = 1 << 17;

/// What the chain hands to the driver for gossip.
pub enum Gossip {
    Tx(Transaction),
    Fed(FederationTx),
}

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
            fed_pool: Mutex::new(FedPool::default()),
            last_signed: Mutex::new(HashMap::new()),
            validator_sets: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashSet::new()),
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

    /// The pooled user transactions in arrival order (each account's in
    /// nonce order).
    pub fn pooled_txs(&self) -> Vec<Arc<Transaction>> {
        self.mempool
            .lock()
            .map(|m| m.candidates(usize::MAX))
            .unwrap_or_default()
    }

    /// True if a proposal would carry pooled transactions without asking
    /// bitcoind: pooled claims about Bitcoin alone (perhaps ones bitcoind
    /// cannot check now) are no reason to propose before the heartbeat, nor
    /// are peg-out signatures short of the threshold ([`FedPool::urgent`]).
    pub fn has_ready_txs(&self) -> bool {
        if self.mempool.lock().map(|m| !m.is_empty()).unwrap_or(false) {
            return true;
        }
        // State before pool, as everywhere.
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        self.fed_pool
            .lock()
            .map(|p| p.ready_len() > 0 && p.urgent(&state))
            .unwrap_or(false)
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

    /// [`Chain::submit`] for many transactions of one client: one result per
    /// input, in order; the signatures are checked as one batch (see
    /// [`Chain::submit_txs`]). Blocking: a thousand signatures take ~30 ms.
    pub fn submit_many(&self, txs: &[Vec<u8>]) -> Vec<Result<TxId, SubmitError>> {
        let mut out: Vec<Option<Result<TxId, SubmitError>>> = Vec::with_capacity(txs.len());
        let mut decoded = Vec::with_capacity(txs.len());
        let mut slots = Vec::with_capacity(txs.len());
        for (i, bytes) in txs.iter().enumerate() {
            match Transaction::decode(bytes) {
                Ok(tx) => {
                    decoded.push(tx);
                    slots.push(i);
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e.into()))),
            }
        }
        let results = self.submit_decoded(decoded);
        for (i, r) in slots.into_iter().zip(results) {
            out[i] = Some(r);
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(SubmitError::Internal)))
            .collect()
    }

    /// [`Chain::submit_txs`], then hands the accepted transactions to gossip
    /// (clients' transactions; gossiped ones are not gossiped again).
    pub fn submit_decoded(&self, txs: Vec<Transaction>) -> Vec<Result<TxId, SubmitError>> {
        let copies = self.gossip.get().map(|g| (g, txs.clone()));
        let results = self.submit_txs(txs);
        if let Some((g, copies)) = copies {
            for (tx, r) in copies.into_iter().zip(&results) {
                if r.is_ok() {
                    let _ = g.send(Gossip::Tx(tx));
                }
            }
        }
        results
    }

    /// [`Chain::submit_tx`] for transactions from one source (a client's
    /// request, a peer's gossip batch), in order. Cheap checks first under
    /// the locks; then one batch signature check without locks, single
    /// checks only if the batch fails, so a bad signature costs its own
    /// source's batch at most one extra batch check, never anyone else's;
    /// then admission. A transaction repeated in `txs` gets the first
    /// copy's result.
    pub fn submit_txs(&self, txs: Vec<Transaction>) -> Vec<Result<TxId, SubmitError>> {
        use fedpeg_ledger::TxError;
        let ids: Vec<TxId> = txs.iter().map(|t| t.id()).collect();
        let mut first: HashMap<TxId, usize> = HashMap::with_capacity(txs.len());
        let mut out: Vec<Option<Result<TxId, SubmitError>>> =
            (0..txs.len()).map(|_| None).collect();
        // Index of the first copy, for repeats.
        let mut repeat_of: Vec<Option<usize>> = vec![None; txs.len()];
        let mut fresh: Vec<usize> = Vec::with_capacity(txs.len());
        for (i, tx) in txs.iter().enumerate() {
            if let Some(&j) = first.get(&ids[i]) {
                if txs[j].signature == tx.signature {
                    repeat_of[i] = Some(j);
                    continue;
                }
            }
            first.entry(ids[i]).or_insert(i);
            if tx.chain_id != self.params.chain_id {
                out[i] = Some(Err(AdmitError::Tx(TxError::WrongChain {
                    expected: self.params.chain_id,
                    got: tx.chain_id,
                })
                .into()));
                continue;
            }
            fresh.push(i);
        }
        // Cheap checks first: duplicates, stale or unaffordable transactions
        // (common when gossip arrives after the block) cost no signature check.
        let mut to_verify: Vec<usize> = Vec::with_capacity(fresh.len());
        // Refused by the cheap checks, perhaps only because an earlier
        // transaction of the same sender in `txs` was counted as if valid.
        let mut prechecked_out: Vec<usize> = Vec::new();
        {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            let pool = self.mempool.lock().unwrap_or_else(|p| p.into_inner());
            let rate = state.pegout_quote_rate(&self.params, state.tip_time_ms);
            let mut unpooled = Vec::with_capacity(fresh.len());
            for &i in &fresh {
                if pool.contains_signed(&ids[i], &txs[i].signature) {
                    out[i] = Some(Ok(ids[i]));
                } else {
                    unpooled.push(i);
                }
            }
            let checks = pool.precheck_seq(
                unpooled.iter().map(|&i| &txs[i]),
                |a| state.account(a),
                &self.params,
                rate,
            );
            for (i, c) in unpooled.into_iter().zip(checks) {
                match c {
                    Ok(()) => to_verify.push(i),
                    Err(e) => {
                        prechecked_out.push(i);
                        out[i] = Some(Err(AdmitError::Tx(e).into()));
                    }
                }
            }
        }
        // The expensive part, outside any lock.
        let verdicts = fedpeg_ledger::tx::verify_batch(
            to_verify.iter().map(|&i| &txs[i]),
            &mut rand010::rng(),
        );
        let mut admitted = 0;
        {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            let mut pool = self.mempool.lock().unwrap_or_else(|p| p.into_inner());
            let rate = state.pegout_quote_rate(&self.params, state.tip_time_ms);
            let mut txs: Vec<Option<Transaction>> = txs.into_iter().map(Some).collect();
            let mut bad_senders = HashSet::new();
            for (i, ok) in to_verify.into_iter().zip(verdicts) {
                if !ok {
                    bad_senders.insert(txs[i].as_ref().map(|t| t.sender));
                    out[i] = Some(Err(AdmitError::Tx(TxError::BadSignature).into()));
                    continue;
                }
                let Some(tx) = txs[i].take() else { continue };
                let finalized = state.account(&tx.sender);
                let r = pool.admit(tx, finalized, &self.params, rate);
                admitted += usize::from(r.is_ok());
                out[i] = Some(r.map_err(SubmitError::from));
            }
            drop(pool);
            drop(state);
            // A sender whose transaction had a bad signature: its later
            // ones were checked against a nonce it did not get; check them
            // again, one by one (only a sender that sent a bad signature
            // pays for this).
            for i in prechecked_out {
                if bad_senders.contains(&txs[i].as_ref().map(|t| t.sender)) {
                    if let Some(tx) = txs[i].take() {
                        let r = self.submit_tx(tx);
                        admitted += usize::from(r.is_ok());
                        out[i] = Some(r);
                    }
                }
            }
        }
        if admitted > 0 {
            self.pending.notify_one();
        }
        let mut done: Vec<Result<TxId, SubmitError>> = Vec::with_capacity(out.len());
        for (i, r) in out.into_iter().enumerate() {
            let r = match (r, repeat_of[i]) {
                (Some(r), _) => r,
                (None, Some(j)) => match &done[j] {
                    Ok(id) => Ok(*id),
                    Err(e) => Err(e.clone()),
                },
                (None, None) => Err(SubmitError::Internal),
            };
            done.push(r);
        }
        done
    }

    /// Checks a federation transaction against state and pools it; `gossip`
    /// also hands it to the driver for the other members. Refused: a mint
    /// (never pooled), anything that would not apply to the next block
    /// (bad signature, done, moot, stale or future), a duplicate, or a
    /// member over its pool quota (see [`FedPool`]).
    pub fn submit_fed_tx(&self, tx: FederationTx, gossip: bool) -> Result<Hash32, FedAdmitError> {
        // Cheapest refusals first, so that junk costs no signature check;
        // the state check (peg-out signatures against the batch) and the
        // member signature run without holding the pool.
        self.fed_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .precheck(&tx)?;
        // A federation change is the one kind whose state check costs more
        // than its signature (it copies the votes): signature first.
        let change = matches!(
            tx.kind,
            fedpeg_ledger::fedtx::FedTxKind::FederationChange { .. }
        );
        if change && !tx.verify(&self.with_state(|s| s.validators_at(s.height.next()))) {
            return Err(FedTxError::BadSignature(tx.member).into());
        }
        let signers = self.with_state(|s| {
            fedpeg_ledger::check_fed_tx_unsigned(s, &self.params, &tx)
                .map(|()| s.validators_at(s.height.next()))
        })?;
        if !change && !tx.verify(&signers) {
            return Err(FedTxError::BadSignature(tx.member).into());
        }
        let id = self
            .fed_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tx.clone())?;
        if gossip {
            if let Some(g) = self.gossip.get() {
                let _ = g.send(Gossip::Fed(tx));
            }
        }
        self.pending.notify_one();
        Ok(id)
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
    /// Deposit-address registrations waiting for a block.
    pub fn pending_registrations(&self) -> usize {
        self.fed_pool
            .lock()
            .map(|p| p.registrations())
            .unwrap_or(usize::MAX)
    }

    pub fn registration_pending(&self, account: &AccountId) -> bool {
        self.fed_pool
            .lock()
            .map(|p| p.registration_pending(account))
            .unwrap_or(false)
    }

    /// Pooled claims about Bitcoin (peg-out confirmations): a proposer
    /// checks them on its own bitcoind and passes the backed ones to
    /// [`Chain::propose`].
    pub fn pooled_bitcoin_claims(&self) -> Vec<FederationTx> {
        self.fed_pool
            .lock()
            .map(|p| p.bitcoin_claims())
            .unwrap_or_default()
    }

    /// Drops pooled federation transactions (e.g. claims this member's
    /// bitcoind refutes).
    pub fn evict_fed_txs(&self, ids: &[Hash32]) {
        if let Ok(mut p) = self.fed_pool.lock() {
            p.evict(ids);
        }
    }

    /// Verifies and pools a decoded transaction (without gossiping it):
    /// [`Chain::submit_txs`] for one.
    pub fn submit_tx(&self, tx: Transaction) -> Result<TxId, SubmitError> {
        self.submit_txs(vec![tx])
            .pop()
            .unwrap_or(Err(SubmitError::Internal))
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

    /// Builds the next block from the mempools (the proposer's step).
    /// `own` are federation transactions the proposer adds itself (its fee
    /// vote, mints of deposits its own watcher saw reach depth): they come
    /// first. Pooled claims about Bitcoin are included only if listed in
    /// `backed_claims` (checked on the proposer's bitcoind). Pooled
    /// federation transactions that no longer apply are evicted.
    pub fn propose(
        &self,
        time_ms: u64,
        proposer: u32,
        own: Vec<FederationTx>,
        backed_claims: &HashSet<Hash32>,
    ) -> Result<Proposal, StoreError> {
        let state = self.state.read().map_err(lock_poisoned)?;
        let pool = self.mempool.lock().map_err(lock_poisoned)?;
        let cands = pool.candidates(self.params.max_block_txs);
        let mut fed = own;
        fed.extend(
            self.fed_pool
                .lock()
                .map_err(lock_poisoned)?
                .candidates()
                .into_iter()
                .filter(|t| !is_bitcoin_claim(t) || backed_claims.contains(&t.id())),
        );
        let built = build_block(
            &state,
            &self.params,
            cands.iter().map(|t| t.as_ref()),
            &fed,
            time_ms,
            proposer,
            &*pool,
        );
        if !built.rejected_fed.is_empty() {
            tracing::debug!(
                evicted = built.rejected_fed.len(),
                first = %built.rejected_fed[0].1,
                "federation transactions no longer apply; evicted from the pool"
            );
            self.evict_fed_txs(
                &built
                    .rejected_fed
                    .iter()
                    .map(|(id, _)| *id)
                    .collect::<Vec<_>>(),
            );
        }
        Ok(Proposal {
            block: built.block,
            outcome: built.outcome,
        })
    }

    /// Checks another member's proposal against the current state.
    /// Signatures of pooled transactions were verified at admission; the
    /// others are verified here as one batch, before taking any lock.
    pub fn validate(&self, block: &Block) -> Result<BlockOutcome, CommitError> {
        let sigs = self.block_signatures(block)?;
        let state = self.state.read().map_err(lock_poisoned)?;
        Ok(apply_block(&state, block, &self.params, &sigs)?)
    }

    /// The signature verdicts of `block`'s transactions: pooled ones are
    /// valid (checked at admission), the rest checked as one batch.
    fn block_signatures(&self, block: &Block) -> Result<BlockSignatures, CommitError> {
        let (unseen, verdicts) = self.verify_unseen(block)?;
        let mut invalid = HashSet::new();
        for (key, ok) in unseen.into_iter().zip(verdicts) {
            if !ok {
                invalid.insert(key);
            }
        }
        Ok(BlockSignatures { invalid })
    }

    /// Signatures checked ahead of their block, waiting in the cache.
    #[cfg(test)]
    pub(crate) fn preverified_len(&self) -> usize {
        self.verified.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Verifies, as one batch, the signatures of `block`'s transactions that
    /// are neither pooled nor cached, and caches the valid ones. Called off
    /// the consensus task when a proposed block arrives; blocking.
    pub fn preverify_block(&self, block: &Block) -> Result<(), StoreError> {
        let (unseen, verdicts) = self.verify_unseen(block)?;
        let mut cache = self.verified.lock().map_err(lock_poisoned)?;
        if cache.len() + unseen.len() > VERIFIED_CACHE_MAX {
            cache.clear();
        }
        cache.extend(
            unseen
                .into_iter()
                .zip(verdicts)
                .filter_map(|(k, ok)| ok.then_some(k)),
        );
        Ok(())
    }

    /// `block`'s transactions whose signatures are neither pooled nor
    /// cached, with their verdicts (one batch check).
    fn verify_unseen(&self, block: &Block) -> Result<(Vec<SignedTxKey>, Vec<bool>), StoreError> {
        let unseen: Vec<(usize, TxId)> = {
            let pool = self.mempool.lock().map_err(lock_poisoned)?;
            let cache = self.verified.lock().map_err(lock_poisoned)?;
            block
                .txs
                .iter()
                .enumerate()
                .map(|(i, t)| (i, t.id()))
                .filter(|(i, id)| {
                    let sig = &block.txs[*i].signature;
                    !pool.contains_signed(id, sig) && !cache.contains(&(*id, *sig))
                })
                .collect()
        };
        let verdicts = fedpeg_ledger::tx::verify_batch(
            unseen.iter().map(|(i, _)| &block.txs[*i]),
            &mut rand010::rng(),
        );
        let keys = unseen
            .into_iter()
            .map(|(i, id)| (id, block.txs[i].signature))
            .collect();
        Ok((keys, verdicts))
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
            // Same signature verdicts as validation: pooled or pre-verified,
            // the rest in one batch.
            let sigs = self.block_signatures(&cb.block)?;
            apply_block(&state, &cb.block, &self.params, &sigs)?
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
        if let Ok(mut cache) = self.verified.lock() {
            if !cache.is_empty() {
                for tx in &cb.block.txs {
                    cache.remove(&(tx.id(), tx.signature));
                }
            }
        }
        if let Ok(mut fed) = self.fed_pool.lock() {
            // Drop what the block applied, and what it made moot.
            fed.prune(&state);
        }
        drop(state);
        if let (Ok(c), Ok(mut signed)) = (
            fedpeg_consensus::CommitCertificate::decode(&cb.commit),
            self.last_signed.lock(),
        ) {
            let keys = self.with_state(|s| s.validators_at(height));
            for (i, _) in &c.precommits {
                if let Some(k) = keys.get(i.0 as usize) {
                    signed.insert(k.to_bytes(), height.0);
                }
            }
        }
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

    /// Per member of the epoch in force at the next height (its order):
    /// the last height whose commit certificate holds its precommit, since
    /// this node started.
    pub fn last_signed(&self) -> Vec<Option<u64>> {
        let keys = self.with_state(|s| s.validators_at(s.height.next()));
        let Ok(signed) = self.last_signed.lock() else {
            return vec![None; keys.len()];
        };
        keys.iter()
            .map(|k| signed.get(&k.to_bytes()).copied())
            .collect()
    }

    /// The validator set in force at height `h` and its epoch number. The
    /// state knows every set up to its height plus the activation lead
    /// (an adopted set activates at least
    /// [`fedpeg_ledger::epoch::MIN_ACTIVATION_LEAD`] blocks after it was
    /// adopted), so the sets of the next heights are always known.
    pub fn validators_at(
        &self,
        h: Height,
    ) -> anyhow::Result<(u32, fedpeg_consensus::ValidatorSet)> {
        let (number, keys) = self.with_state(|s| {
            let e = s.epoch_at(h);
            (e.number, e.consensus_keys())
        });
        let mut sets = self
            .validator_sets
            .lock()
            .map_err(|_| anyhow::anyhow!("validator set cache lock poisoned"))?;
        if let Some(set) = sets.get(&number) {
            return Ok((number, set.clone()));
        }
        let set = fedpeg_consensus::ValidatorSet::from_keys(keys)
            .map_err(|e| anyhow::anyhow!("members of epoch {number}: {e}"))?;
        sets.insert(number, set.clone());
        Ok((number, set))
    }

    /// Who may use the members' p2p protocols: the members of the epoch in
    /// force at the next height (in its order, so that a network index
    /// below its size is the validator index), then the members of an
    /// adopted epoch not yet in force that are not already listed.
    pub fn network_members(&self) -> Vec<fedpeg_ledger::epoch::EpochMember> {
        self.with_state(|s| {
            let mut list = s.epoch_at(s.height.next()).members.clone();
            if let Some(next) = s.next_epoch() {
                for m in &next.members {
                    if !list.iter().any(|l| l.consensus_key == m.consensus_key) {
                        list.push(m.clone());
                    }
                }
            }
            list
        })
    }

    /// This node's own bookkeeping record `key` (see [`Store::local_record`]).
    pub fn local_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.local_record(key)
    }

    /// Replaces these own bookkeeping records in one synced write.
    pub fn put_local_records(&self, records: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        self.store.put_local_records(records)
    }

    /// A consistent copy of the store in `dir` (see [`Store::checkpoint`]).
    /// Blocking: call it off the async tasks.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StoreError> {
        self.store.checkpoint(dir)
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

#[cfg(test)]
mod tests {
    use crate::peg_testing::{account, funded_users, user_transfer, PegNode, CONFIRMATIONS};
    use fedpeg_consensus::Height;
    use fedpeg_ledger::account::AccountId;
    use fedpeg_ledger::fedtx::FedTxKind;
    use fedpeg_ledger::hash::Hash32;
    use fedpeg_ledger::ids::{BatchId, FeeRate};

    /// A four-member federation with user 1 registered and a real deposit
    /// of 250k sats to it at depth (not minted).
    fn deposited() -> (PegNode, crate::watcher::SeenDeposit) {
        let node = PegNode::new(4, 3);
        node.register(account(1));
        let d = node.deposit(account(1), 250_000);
        node.btc.mine(CONFIRMATIONS);
        (node, d)
    }

    #[test]
    fn a_gossiped_mint_is_never_pooled_even_of_a_real_deposit() {
        let (node, d) = deposited();
        // Only a proposer's own watcher puts a mint in a block: a mint from
        // the pool would be checked by nobody before it is proposed.
        let mint = node.mint_tx(&d);
        let _ = node.chain.submit_fed_tx(mint.clone(), false);
        assert!(node.pooled().iter().all(|t| t.id() != mint.id()));
        assert_eq!(node.chain.mempool_len(), 0);
    }

    #[test]
    fn federation_transactions_that_cannot_apply_are_refused_at_admission() {
        let node = PegNode::new(4, 3);
        let next = node.chain.height() + 1;
        let junk = [
            FedTxKind::FeeRateVote {
                sat_per_vbyte: FeeRate(5),
                height: Height(u64::MAX),
            },
            FedTxKind::FeeRateVote {
                sat_per_vbyte: FeeRate(0),
                height: Height(next),
            },
            FedTxKind::PegOutSignatures {
                batch: BatchId(7),
                version: 0,
                signatures: vec![vec![0x30; 72]],
            },
            FedTxKind::PegOutBump {
                batch: BatchId(7),
                version: 0,
            },
        ];
        for kind in junk {
            let tx = node.fed_tx(3, kind);
            let _ = node.chain.submit_fed_tx(tx, false);
        }
        assert_eq!(node.chain.mempool_len(), 0);
    }

    #[test]
    fn a_member_filling_the_pool_cannot_crowd_out_the_others() {
        let node = PegNode::new(4, 3);
        // Member 3 registers more accounts than any pool holds.
        for i in 0..10_001u64 {
            let account = AccountId(Hash32::tagged("flood", &[&i.to_be_bytes()]).0);
            let tx = node.fed_tx(3, FedTxKind::RegisterDepositAddress { account });
            let _ = node.chain.submit_fed_tx(tx, false);
        }
        // Member 0's registration still gets into the next block.
        let mine = node.fed_tx(
            0,
            FedTxKind::RegisterDepositAddress {
                account: account(1),
            },
        );
        let _ = node.chain.submit_fed_tx(mine.clone(), false);
        assert!(node.pooled().iter().any(|t| t.id() == mine.id()));
    }

    #[test]
    fn one_batch_gives_each_transaction_its_own_verdict() {
        let node = funded_users();
        let mut bad = user_transfer(&node, 2, 0);
        bad.signature[9] ^= 1;
        // User 2's nonce 1 was prechecked as if its bad nonce 0 were valid:
        // it is checked again and refused for its nonce, not admitted.
        let txs = vec![
            user_transfer(&node, 1, 0),
            bad,
            user_transfer(&node, 2, 1),
            user_transfer(&node, 1, 1),
            user_transfer(&node, 2, 0),
            user_transfer(&node, 1, 0),
        ];
        let r = node.chain.submit_txs(txs.clone());
        assert!(r[0].is_ok() && r[3].is_ok(), "{r:?}");
        assert!(
            matches!(
                r[1],
                Err(super::SubmitError::Admit(
                    fedpeg_ledger::mempool::AdmitError::Tx(fedpeg_ledger::TxError::BadSignature)
                ))
            ),
            "{r:?}"
        );
        assert!(
            matches!(
                r[2],
                Err(super::SubmitError::Admit(
                    fedpeg_ledger::mempool::AdmitError::Tx(fedpeg_ledger::TxError::NonceGap { .. })
                ))
            ),
            "{r:?}"
        );
        assert!(r[4].is_ok(), "the valid nonce 0 of user 2: {r:?}");
        assert_eq!(r[5].as_ref().ok(), Some(&txs[0].id()), "a repeat");
        assert_eq!(node.chain.mempool_len(), 3);
    }

    #[test]
    fn a_proposal_with_unseen_transactions_is_verified_once_and_a_bad_signature_refuses_it() {
        let (proposer, follower) = (funded_users(), funded_users());
        assert_eq!(proposer.chain.spec.chain_id, follower.chain.spec.chain_id);
        let txs: Vec<_> = (0..5).map(|n| user_transfer(&proposer, 1, n)).collect();
        assert!(proposer.chain.submit_txs(txs).iter().all(|r| r.is_ok()));
        let block = proposer.proposal(vec![]);
        assert_eq!(block.txs.len(), 5);
        // The follower never saw them: pre-verified, then validated.
        follower.chain.preverify_block(&block).unwrap();
        assert!(follower.chain.validate(&block).is_ok());
        // A bad signature (with a header that matches it) is refused.
        let mut forged = block.clone();
        forged.txs[3].signature[2] ^= 1;
        forged.header.tx_root = fedpeg_ledger::block::tx_root(&forged.txs, &forged.fed_txs);
        let e = follower.chain.validate(&forged).unwrap_err();
        assert!(e.to_string().contains("signature"), "{e}");
    }
}
