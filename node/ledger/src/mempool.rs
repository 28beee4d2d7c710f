//! The mempool: verified transactions waiting for a block.
//!
//! A transaction is admitted only if it applies on top of the sender's
//! finalized account plus the sender's transactions already pooled (next
//! nonce, remaining balance). Its signature is verified once, at admission;
//! block building and validation reuse that verdict through
//! [`SignatureCheck`].

use crate::account::AccountId;
use crate::amount::Sats;
use crate::ids::FeeRate;
use crate::tx::{Transaction, TxId};
use crate::{
    check_tx, Account, AlreadyVerified as Verified, LedgerParams, SignatureCheck, State, TxError,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// Why the mempool refused a transaction.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("mempool is full ({0} transactions); retry in a few seconds")]
    Full(usize),
    #[error(transparent)]
    Tx(#[from] TxError),
}

#[derive(Default)]
struct Pending {
    /// Pooled transactions by nonce.
    by_nonce: BTreeMap<u64, TxId>,
    /// Σ debits of pooled transactions.
    spend: Sats,
}

/// Pending transactions in arrival order.
pub struct Mempool {
    txs: HashMap<TxId, (Arc<Transaction>, Sats)>,
    order: VecDeque<TxId>,
    accounts: HashMap<AccountId, Pending>,
    max: usize,
}

impl Mempool {
    /// An empty mempool holding at most `max` transactions.
    pub fn new(max: usize) -> Mempool {
        Mempool {
            txs: HashMap::new(),
            order: VecDeque::new(),
            accounts: HashMap::new(),
            max,
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

    /// True if pooled.
    pub fn contains(&self, id: &TxId) -> bool {
        self.txs.contains_key(id)
    }

    /// True if exactly this transaction (same id `id` and signature) is
    /// pooled; the caller passes the id (a hash: worth computing once).
    pub fn contains_signed(&self, id: &TxId, signature: &[u8; 64]) -> bool {
        self.txs
            .get(id)
            .is_some_and(|(t, _)| t.signature == *signature)
    }

    /// Checks everything but the signatures of transactions submitted
    /// together, in order, against each sender's effective account
    /// (finalized state plus pooled transactions): each sees the pool plus
    /// the earlier ones of the sequence that passed,
    /// so one sender may submit consecutive nonces in one request.
    /// `finalized` gives an account's finalized state.
    pub fn precheck_seq<'a>(
        &self,
        txs: impl IntoIterator<Item = &'a Transaction>,
        finalized: impl Fn(&AccountId) -> Account,
        params: &LedgerParams,
        fee_rate: FeeRate,
    ) -> Vec<Result<(), TxError>> {
        let mut views: HashMap<AccountId, Account> = HashMap::new();
        txs.into_iter()
            .map(|tx| {
                let view = views
                    .entry(tx.sender)
                    .or_insert_with(|| self.effective_account(finalized(&tx.sender), &tx.sender));
                let debit = check_tx(params, fee_rate, *view, tx, &Verified)?;
                view.nonce += 1;
                view.balance = view.balance.checked_sub(debit).unwrap_or(Sats::ZERO);
                Ok(())
            })
            .collect()
    }

    /// A pooled transaction.
    pub fn get(&self, id: &TxId) -> Option<Arc<Transaction>> {
        self.txs.get(id).map(|(t, _)| t.clone())
    }

    /// The account as a new transaction sees it: finalized state minus what
    /// pooled transactions spend, nonce after the pooled ones.
    pub fn effective_account(&self, finalized: Account, id: &AccountId) -> Account {
        match self.accounts.get(id) {
            None => finalized,
            Some(p) => Account {
                balance: finalized.balance.checked_sub(p.spend).unwrap_or(Sats::ZERO),
                nonce: finalized.nonce + p.by_nonce.len() as u64,
            },
        }
    }

    /// Admits `tx`, whose signature the caller has already verified
    /// (verification is done outside the mempool lock). Idempotent: a
    /// transaction already pooled is accepted again without change.
    pub fn admit(
        &mut self,
        tx: Transaction,
        finalized: Account,
        params: &LedgerParams,
        fee_rate: FeeRate,
    ) -> Result<TxId, AdmitError> {
        let id = tx.id();
        if let Some((pooled, _)) = self.txs.get(&id) {
            if pooled.signature == tx.signature {
                return Ok(id);
            }
        }
        if self.txs.len() >= self.max {
            return Err(AdmitError::Full(self.max));
        }
        let view = self.effective_account(finalized, &tx.sender);
        let debit = check_tx(params, fee_rate, view, &tx, &Verified)?;
        let p = self.accounts.entry(tx.sender).or_default();
        p.by_nonce.insert(tx.nonce, id);
        // debit <= view.balance <= finalized balance, so the sum fits.
        p.spend = p.spend.checked_add(debit).unwrap_or(Sats::MAX);
        self.txs.insert(id, (Arc::new(tx), debit));
        self.order.push_back(id);
        Ok(id)
    }

    /// Up to `limit` pooled transactions in arrival order (which respects each
    /// account's nonce order, since admission requires the next nonce).
    pub fn candidates(&self, limit: usize) -> Vec<Arc<Transaction>> {
        self.order
            .iter()
            .filter_map(|id| self.txs.get(id).map(|(t, _)| t.clone()))
            .take(limit)
            .collect()
    }

    /// Removes what a finalized block included and whatever the new state
    /// made invalid (stale nonces, balance no longer enough).
    pub fn on_block_committed(
        &mut self,
        included: &[Transaction],
        state: &State,
        params: &LedgerParams,
    ) {
        let fee_rate = state.pegout_quote_rate(params, state.tip_time_ms);
        let mut touched: Vec<AccountId> = Vec::new();
        for tx in included {
            let id = tx.id();
            self.txs.remove(&id);
            touched.push(tx.sender);
            if let crate::tx::TxKind::Transfer { to, .. } = &tx.kind {
                touched.push(*to);
            }
        }
        touched.sort();
        touched.dedup();
        for acct in touched {
            let Some(p) = self.accounts.remove(&acct) else {
                continue;
            };
            // Re-admit the account's remaining transactions in nonce order
            // against the new state; drop the ones that no longer apply.
            let mut view = state.account(&acct);
            let mut np = Pending::default();
            for (_, id) in p.by_nonce {
                let Some((tx, _)) = self.txs.get(&id).cloned() else {
                    continue;
                };
                match check_tx(params, fee_rate, view, &tx, &Verified) {
                    Ok(debit) => {
                        view.balance = view.balance.checked_sub(debit).unwrap_or(Sats::ZERO);
                        view.nonce += 1;
                        np.by_nonce.insert(tx.nonce, id);
                        np.spend = np.spend.checked_add(debit).unwrap_or(Sats::MAX);
                        self.txs.insert(id, (tx, debit));
                    }
                    Err(_) => {
                        self.txs.remove(&id);
                    }
                }
            }
            if !np.by_nonce.is_empty() {
                self.accounts.insert(acct, np);
            }
        }
        let txs = &self.txs;
        self.order.retain(|id| txs.contains_key(id));
    }
}

/// Trusts signatures of pooled transactions (verified at admission) and
/// verifies anything else.
impl SignatureCheck for Mempool {
    fn is_valid(&self, tx: &Transaction) -> bool {
        match self.txs.get(&tx.id()) {
            Some((t, _)) if t.signature == tx.signature => true,
            _ => tx.verify_signature(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build_block;
    use crate::hash::Hash32;
    use crate::testing::sats;
    use crate::tx::TxKind;
    use ed25519_dalek::SigningKey;

    fn params() -> LedgerParams {
        LedgerParams {
            chain_id: Hash32::ZERO,
            pegout_fee: sats(100),
            max_block_txs: 100,
            pegin_spend_vbytes: 0,
            default_fee_rate: FeeRate(1),
            ..crate::testing::ledger_params()
        }
    }
    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i + 1; 32])
    }
    fn id(i: u8) -> AccountId {
        AccountId(key(i).verifying_key().to_bytes())
    }
    fn tx(nonce: u64, amount: u64) -> Transaction {
        Transaction::sign(
            Hash32::ZERO,
            &key(0),
            nonce,
            sats(1),
            TxKind::Transfer {
                to: id(1),
                amount: sats(amount),
            },
        )
    }
    fn state(balance: u64) -> State {
        let mut s = State::default();
        s.accounts.insert(
            id(0),
            Account {
                balance: sats(balance),
                nonce: 0,
            },
        );
        s.supply = sats(balance);
        s
    }

    #[test]
    fn precheck_seq_sees_earlier_transactions_of_the_sequence() {
        let s = state(100);
        let mut m = Mempool::new(10);
        m.admit(tx(0, 10), s.account(&id(0)), &params(), FeeRate(10))
            .unwrap();
        let seq = [tx(1, 10), tx(2, 10), tx(4, 1), tx(3, 60), tx(3, 10)];
        let r = m.precheck_seq(seq.iter(), |a| s.account(a), &params(), FeeRate(10));
        assert!(r[0].is_ok() && r[1].is_ok(), "{r:?}");
        assert!(
            matches!(
                r[2],
                Err(TxError::NonceGap {
                    expected: 3,
                    got: 4
                })
            ),
            "{r:?}"
        );
        // 100 - 3 × 11 = 67 left: 61 fits, then nonce 3 is taken.
        assert!(r[3].is_ok(), "{r:?}");
        assert!(r[4].is_err(), "{r:?}");
        // Nothing was pooled by the check.
        assert_eq!(m.effective_account(s.account(&id(0)), &id(0)).nonce, 1);
    }

    #[test]
    fn admission_counts_pooled_nonces_and_spend() {
        let s = state(100);
        let mut m = Mempool::new(10);
        m.admit(tx(0, 40), s.account(&id(0)), &params(), FeeRate(10))
            .unwrap();
        m.admit(tx(1, 40), s.account(&id(0)), &params(), FeeRate(10))
            .unwrap();
        // Third would need 41 but only 18 remain.
        let e = m
            .admit(tx(2, 40), s.account(&id(0)), &params(), FeeRate(10))
            .unwrap_err();
        assert!(
            matches!(e, AdmitError::Tx(TxError::InsufficientBalance { .. })),
            "{e}"
        );
        let e = m
            .admit(tx(3, 1), s.account(&id(0)), &params(), FeeRate(10))
            .unwrap_err();
        assert!(
            matches!(
                e,
                AdmitError::Tx(TxError::NonceGap {
                    expected: 2,
                    got: 3
                })
            ),
            "{e}"
        );
        // Resubmitting a pooled transaction is idempotent.
        m.admit(tx(0, 40), s.account(&id(0)), &params(), FeeRate(10))
            .unwrap();
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn full_mempool_refuses() {
        let s = state(100);
        let mut m = Mempool::new(1);
        m.admit(tx(0, 1), s.account(&id(0)), &params(), FeeRate(10))
            .unwrap();
        assert!(matches!(
            m.admit(tx(1, 1), s.account(&id(0)), &params(), FeeRate(10)),
            Err(AdmitError::Full(1))
        ));
    }

    #[test]
    fn committed_block_evicts_included_and_keeps_rest() {
        let mut s = state(100);
        let mut m = Mempool::new(10);
        for n in 0..3 {
            m.admit(tx(n, 10), s.account(&id(0)), &params(), FeeRate(10))
                .unwrap();
        }
        let cands = m.candidates(2);
        let b = build_block(
            &s,
            &params(),
            cands.iter().map(|t| t.as_ref()),
            &[],
            1,
            0,
            &m,
        );
        assert_eq!(b.block.txs.len(), 2);
        s.commit(&b.block.header, &b.outcome);
        m.on_block_committed(&b.block.txs, &s, &params());
        assert_eq!(m.len(), 1);
        assert_eq!(m.candidates(10)[0].nonce, 2);
        assert_eq!(m.effective_account(s.account(&id(0)), &id(0)).nonce, 3);
    }
}
