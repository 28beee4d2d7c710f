//! The federation-transaction pool: members' signed transactions waiting
//! for a block, each checked against state when it arrives.
//!
//! - Admission runs the check a block runs ([`check_fed_tx`]) against the
//!   finalized state, so junk that can never apply (a fee vote for a far
//!   height, signatures of a batch that does not exist) is refused at once.
//! - A `PegInMint` is never pooled: only a proposer's own watcher puts a
//!   mint in its block, and every member checks it on its own bitcoind. A
//!   pooled mint would reach honest proposers' blocks unchecked.
//! - Each member has its own quota ([`MAX_POOLED_PER_MEMBER`]) and holds at
//!   most one transaction per slot (one fee vote, one set of signatures or
//!   one bump vote per batch version, one confirmation per batch; one
//!   registration per account in all), so a faulty member fills only its
//!   own share and cannot re-sign the same thing a thousand ways.
//! - [`FedPool::candidates`] interleaves the members, so no member's
//!   transactions crowd the others' out of a block.
//! - What fails when a block is built is evicted ([`FedPool::evict`]); what
//!   a committed block makes moot is pruned ([`FedPool::prune`]).
//!
//! Claims about Bitcoin (`PegOutConfirmed`) pass admission on state alone;
//! the proposer checks them on its own bitcoind before it includes them
//! (the daemon does that: this crate does no I/O).

use crate::account::AccountId;
use crate::error::FedTxError;
use crate::fed::check_fed_tx;
use crate::fedtx::{FedTxKind, FederationTx};
use crate::hash::Hash32;
use crate::ids::{BatchId, MemberIndex};
use crate::state::State;
use crate::LedgerParams;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Most pooled federation transactions of one member.
pub const MAX_POOLED_PER_MEMBER: usize = 2_000;

/// Why the pool refused a federation transaction.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FedAdmitError {
    #[error("a PegInMint is never pooled: a proposer's own watcher proposes mints and every member checks them on its own bitcoind")]
    MintNotPooled,
    #[error("already pooled (or the member already pooled one for the same purpose)")]
    Duplicate,
    #[error("member {member} already has {quota} federation transactions pooled; retry after the next blocks")]
    Quota { member: MemberIndex, quota: usize },
    #[error(transparent)]
    Invalid(#[from] FedTxError),
}

/// What at most one pooled transaction may stand for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Slot {
    Register(AccountId),
    FeeVote(MemberIndex),
    Signatures(MemberIndex, BatchId, u32),
    Bump(MemberIndex, BatchId, u32),
    Confirmed(MemberIndex, BatchId),
    ChangeVote(MemberIndex),
}

/// The slot of `tx`; None for a mint (never pooled).
fn slot(tx: &FederationTx) -> Option<Slot> {
    let m = tx.member;
    Some(match &tx.kind {
        FedTxKind::RegisterDepositAddress { account } => Slot::Register(*account),
        FedTxKind::FeeRateVote { .. } => Slot::FeeVote(m),
        FedTxKind::PegOutSignatures { batch, version, .. } => Slot::Signatures(m, *batch, *version),
        FedTxKind::PegOutBump { batch, version } => Slot::Bump(m, *batch, *version),
        FedTxKind::PegOutConfirmed { batch, .. } => Slot::Confirmed(m, *batch),
        FedTxKind::FederationChange { .. } => Slot::ChangeVote(m),
        FedTxKind::PegInMint { .. } => return None,
    })
}

/// True if `new` is a later fee vote than `old` (it replaces it).
fn newer_vote(old: &FederationTx, new: &FederationTx) -> bool {
    match (&old.kind, &new.kind) {
        (FedTxKind::FeeRateVote { height: a, .. }, FedTxKind::FeeRateVote { height: b, .. }) => {
            b > a
        }
        _ => false,
    }
}

/// True while a pooled transaction can still apply (cheap: no signature
/// check; state made it neither done nor moot).
fn still_pending(state: &State, tx: &FederationTx) -> bool {
    match &tx.kind {
        FedTxKind::RegisterDepositAddress { account } => !state.registered.contains(account),
        FedTxKind::PegInMint { .. } => false,
        FedTxKind::FeeRateVote { height, .. } => state
            .fee_votes
            .get(&tx.member)
            .is_none_or(|(_, last)| last < height),
        FedTxKind::PegOutSignatures { batch, version, .. } => {
            state.batches.get(batch).is_some_and(|b| {
                b.versions.len() == *version as usize + 1
                    && !state
                        .peg_index(state.height.next(), tx.member, b.epoch)
                        .is_some_and(|peg| b.latest().signatures.contains_key(&peg))
            })
        }
        FedTxKind::PegOutBump { batch, version } => state.batches.get(batch).is_some_and(|b| {
            b.versions.len() == *version as usize + 1 && !b.latest().bump_votes.contains(&tx.member)
        }),
        FedTxKind::PegOutConfirmed { batch, txid, .. } => {
            state.batches.contains_key(batch)
                || state.settled.get(batch).is_some_and(|b| {
                    b.confirmed
                        .as_ref()
                        .is_some_and(|c| b.versions[c.version as usize].txid != *txid)
                })
        }
        // One per member (its slot), until a block records a vote of the
        // member (this one or another: votes stand), the epoch it was for
        // ends, or its change could no longer be adopted.
        FedTxKind::FederationChange { change } => {
            let next = state.height.next();
            !state.change_votes.contains_key(&tx.member)
                && change.base_epoch == state.epoch_at(next).number
                && change.activation.0 >= next.0.saturating_add(crate::epoch::MIN_ACTIVATION_LEAD)
        }
    }
}

/// Pending federation transactions, per member in arrival order.
pub struct FedPool {
    queues: BTreeMap<MemberIndex, VecDeque<Hash32>>,
    txs: HashMap<Hash32, (FederationTx, Slot)>,
    slots: HashMap<Slot, Hash32>,
    /// How many of `txs` are claims about Bitcoin.
    claims: usize,
    quota: usize,
}

impl Default for FedPool {
    fn default() -> Self {
        FedPool::new(MAX_POOLED_PER_MEMBER)
    }
}

impl FedPool {
    /// An empty pool holding at most `quota` transactions per member.
    pub fn new(quota: usize) -> FedPool {
        FedPool {
            queues: BTreeMap::new(),
            txs: HashMap::new(),
            slots: HashMap::new(),
            claims: 0,
            quota,
        }
    }

    /// Number of pooled transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Number of pooled transactions a block may include without asking
    /// bitcoind (all but the claims about Bitcoin).
    pub fn ready_len(&self) -> usize {
        self.txs.len() - self.claims
    }

    /// True if a pooled transaction is worth a block now: anything ready
    /// but peg-out signatures, or signatures that, with those `state`
    /// recorded, reach the peg threshold of their batch's epoch.
    /// Fewer are useless until the rest arrive: a proposer that included
    /// the first one at once would spend a block per signature before the
    /// batch can be broadcast; they wait for the rest or the heartbeat.
    /// Signatures that can never count (an older version, a member state
    /// already recorded, a batch already complete or gone) are not urgent.
    pub fn urgent(&self, state: &State) -> bool {
        let mut pooled: HashMap<BatchId, usize> = HashMap::new();
        for (tx, _) in self.txs.values() {
            match &tx.kind {
                _ if is_bitcoin_claim(tx) => {}
                FedTxKind::PegOutSignatures { batch, version, .. } => {
                    let Some(b) = state.batches.get(batch) else {
                        continue;
                    };
                    let recorded = &b.latest().signatures;
                    let threshold = state.epoch(b.epoch).map_or(0, |e| e.peg_threshold as usize);
                    if b.versions.len() != *version as usize + 1
                        || state
                            .peg_index(state.height.next(), tx.member, b.epoch)
                            .is_some_and(|peg| recorded.contains_key(&peg))
                        || recorded.len() >= threshold
                    {
                        continue;
                    }
                    let n = pooled.entry(*batch).or_insert(recorded.len());
                    *n += 1;
                    if *n >= threshold {
                        return true;
                    }
                }
                _ => return true,
            }
        }
        false
    }

    /// Checks, against `state`, and pools `tx`. The expensive part is the
    /// state check; callers that must not hold the pool while it runs use
    /// [`FedPool::precheck`], [`check_fed_tx`] and [`FedPool::insert`].
    pub fn admit(
        &mut self,
        state: &State,
        params: &LedgerParams,
        tx: FederationTx,
    ) -> Result<Hash32, FedAdmitError> {
        self.precheck(&tx)?;
        check_fed_tx(state, params, &tx)?;
        self.insert(tx)
    }

    /// The pool's own refusals (mint, duplicate, quota), without the state
    /// check. Returns the pooled transaction `tx` would replace, if any.
    pub fn precheck(&self, tx: &FederationTx) -> Result<Option<Hash32>, FedAdmitError> {
        let slot = slot(tx).ok_or(FedAdmitError::MintNotPooled)?;
        let id = tx.id();
        if self.txs.contains_key(&id) {
            return Err(FedAdmitError::Duplicate);
        }
        if let Some(old) = self.slots.get(&slot) {
            return match self.txs.get(old) {
                Some((o, _)) if newer_vote(o, tx) => Ok(Some(*old)),
                _ => Err(FedAdmitError::Duplicate),
            };
        }
        let pooled = self.queues.get(&tx.member).map_or(0, VecDeque::len);
        if pooled >= self.quota {
            return Err(FedAdmitError::Quota {
                member: tx.member,
                quota: self.quota,
            });
        }
        Ok(None)
    }

    /// Pools `tx`, which the caller checked against state with
    /// [`check_fed_tx`]; the pool's own refusals are checked again.
    pub fn insert(&mut self, tx: FederationTx) -> Result<Hash32, FedAdmitError> {
        if let Some(old) = self.precheck(&tx)? {
            self.remove(&old);
        }
        let slot = slot(&tx).ok_or(FedAdmitError::MintNotPooled)?;
        let id = tx.id();
        self.queues.entry(tx.member).or_default().push_back(id);
        self.slots.insert(slot, id);
        self.claims += usize::from(is_bitcoin_claim(&tx));
        self.txs.insert(id, (tx, slot));
        Ok(id)
    }

    /// Pooled transactions for a block: the members' first ones, then
    /// their second ones, and so on (each member in arrival order).
    pub fn candidates(&self) -> Vec<FederationTx> {
        let mut out = Vec::with_capacity(self.txs.len());
        let longest = self.queues.values().map(VecDeque::len).max().unwrap_or(0);
        for i in 0..longest {
            for q in self.queues.values() {
                if let Some((tx, _)) = q.get(i).and_then(|id| self.txs.get(id)) {
                    out.push(tx.clone());
                }
            }
        }
        out
    }

    /// Pooled peg-out confirmations: claims about Bitcoin a proposer checks
    /// on its own bitcoind before it includes them.
    pub fn bitcoin_claims(&self) -> Vec<FederationTx> {
        self.txs
            .values()
            .filter(|(tx, _)| is_bitcoin_claim(tx))
            .map(|(tx, _)| tx.clone())
            .collect()
    }

    /// Number of pooled deposit-address registrations.
    pub fn registrations(&self) -> usize {
        self.slots
            .keys()
            .filter(|s| matches!(s, Slot::Register(_)))
            .count()
    }

    /// True if a registration of `account` is pooled.
    pub fn registration_pending(&self, account: &AccountId) -> bool {
        self.slots.contains_key(&Slot::Register(*account))
    }

    /// Drops these transactions (e.g. they failed at block building).
    pub fn evict<'a>(&mut self, ids: impl IntoIterator<Item = &'a Hash32>) {
        for id in ids {
            self.remove(id);
        }
    }

    /// Drops what `state` applied or made moot (after a commit).
    pub fn prune(&mut self, state: &State) {
        let moot: Vec<Hash32> = self
            .txs
            .iter()
            .filter(|(_, (tx, _))| !still_pending(state, tx))
            .map(|(id, _)| *id)
            .collect();
        self.evict(&moot);
    }

    fn remove(&mut self, id: &Hash32) {
        let Some((tx, slot)) = self.txs.remove(id) else {
            return;
        };
        self.slots.remove(&slot);
        self.claims -= usize::from(is_bitcoin_claim(&tx));
        if let Some(q) = self.queues.get_mut(&tx.member) {
            q.retain(|x| x != id);
            if q.is_empty() {
                self.queues.remove(&tx.member);
            }
        }
    }
}

/// True for a claim about Bitcoin that only bitcoind can back.
pub fn is_bitcoin_claim(tx: &FederationTx) -> bool {
    matches!(tx.kind, FedTxKind::PegOutConfirmed { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fedtx::OutPoint;
    use crate::ids::FeeRate;
    use crate::testing::{block_hash, sats, txid};
    use ed25519_dalek::SigningKey;
    use fedpeg_consensus::Height;

    fn key(m: u32) -> SigningKey {
        SigningKey::from_bytes(&[70 + m as u8; 32])
    }

    fn state() -> State {
        crate::testing::state_with_members(
            &(0..4).map(|m| key(m).verifying_key()).collect::<Vec<_>>(),
        )
    }

    fn params() -> LedgerParams {
        crate::testing::ledger_params()
    }

    fn tx(member: u32, kind: FedTxKind) -> FederationTx {
        FederationTx::sign(params().chain_id, MemberIndex(member), &key(member), kind)
    }

    fn register(member: u32, i: u64) -> FederationTx {
        let account = AccountId(Hash32::tagged("acct", &[&i.to_be_bytes()]).0);
        tx(member, FedTxKind::RegisterDepositAddress { account })
    }

    fn vote(member: u32, height: u64) -> FederationTx {
        tx(
            member,
            FedTxKind::FeeRateVote {
                sat_per_vbyte: FeeRate(5),
                height: Height(height),
            },
        )
    }

    #[test]
    fn a_mint_is_never_pooled() {
        let mut s = state();
        let reg = register(0, 1);
        let FedTxKind::RegisterDepositAddress { account } = reg.kind else {
            unreachable!()
        };
        s.registered.insert(account);
        let mint = tx(
            0,
            FedTxKind::PegInMint {
                outpoint: OutPoint {
                    txid: txid(1),
                    vout: 0,
                },
                amount: sats(100_000),
                account,
                bitcoin_block: block_hash(1),
                epoch: 0,
            },
        );
        let mut pool = FedPool::default();
        assert_eq!(
            pool.admit(&s, &params(), mint),
            Err(FedAdmitError::MintNotPooled)
        );
    }

    #[test]
    fn what_cannot_apply_to_state_is_refused() {
        let s = state();
        let mut pool = FedPool::default();
        let p = params();
        for junk in [
            vote(1, u64::MAX),
            tx(
                1,
                FedTxKind::PegOutSignatures {
                    batch: BatchId(9),
                    version: 0,
                    signatures: vec![],
                },
            ),
            tx(
                1,
                FedTxKind::PegOutConfirmed {
                    batch: BatchId(9),
                    txid: txid(2),
                    bitcoin_block: block_hash(2),
                },
            ),
        ] {
            assert!(matches!(
                pool.admit(&s, &p, junk),
                Err(FedAdmitError::Invalid(_))
            ));
        }
        // Signed by another key than the member's.
        let mut forged = register(1, 1);
        forged.member = MemberIndex(2);
        assert!(matches!(
            pool.admit(&s, &p, forged),
            Err(FedAdmitError::Invalid(FedTxError::BadSignature(
                MemberIndex(2)
            )))
        ));
        assert!(pool.is_empty());
    }

    #[test]
    fn each_member_fills_only_its_own_quota() {
        let s = state();
        let p = params();
        let mut pool = FedPool::new(3);
        for i in 0..3 {
            pool.admit(&s, &p, register(3, i)).unwrap();
        }
        assert_eq!(
            pool.admit(&s, &p, register(3, 3)),
            Err(FedAdmitError::Quota {
                member: MemberIndex(3),
                quota: 3
            })
        );
        pool.admit(&s, &p, register(0, 10)).unwrap();
        // Interleaved: member 0's first transaction comes second, not last.
        let ids: Vec<u32> = pool.candidates().iter().map(|t| t.member.0).collect();
        assert_eq!(ids, vec![0, 3, 3, 3]);
    }

    #[test]
    fn a_member_holds_one_transaction_per_slot() {
        let s = state();
        let p = params();
        let mut pool = FedPool::default();
        pool.admit(&s, &p, register(0, 1)).unwrap();
        // The same account by another member: one registration is enough.
        let again = tx(1, register(0, 1).kind);
        assert_eq!(pool.admit(&s, &p, again), Err(FedAdmitError::Duplicate));
        // A later fee vote replaces the earlier one.
        pool.admit(&s, &p, vote(1, 0)).unwrap();
        pool.admit(&s, &p, vote(1, 1)).unwrap();
        assert_eq!(
            pool.admit(&s, &p, vote(1, 1)),
            Err(FedAdmitError::Duplicate)
        );
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn claims_about_bitcoin_are_counted_apart() {
        let mut pool = FedPool::default();
        let claim = tx(
            1,
            FedTxKind::PegOutConfirmed {
                batch: BatchId(9),
                txid: txid(2),
                bitcoin_block: block_hash(2),
            },
        );
        // Inserted as if checked against a state holding batch 9.
        let id = pool.insert(claim.clone()).unwrap();
        pool.insert(register(0, 1)).unwrap();
        assert_eq!((pool.len(), pool.ready_len()), (2, 1));
        assert_eq!(pool.bitcoin_claims(), vec![claim]);
        pool.evict(&[id]);
        assert_eq!((pool.len(), pool.ready_len()), (1, 1));
    }

    #[test]
    fn evicted_and_moot_transactions_leave_the_pool() {
        let mut s = state();
        let p = params();
        let mut pool = FedPool::default();
        let a = pool.admit(&s, &p, register(0, 1)).unwrap();
        pool.admit(&s, &p, register(1, 2)).unwrap();
        pool.evict(&[a]);
        assert_eq!(pool.len(), 1);
        let FedTxKind::RegisterDepositAddress { account } = register(1, 2).kind else {
            unreachable!()
        };
        s.registered.insert(account);
        pool.prune(&s);
        assert!(pool.is_empty());
        // Its slot is free again.
        pool.admit(&state(), &p, register(1, 2)).unwrap();
    }
}
