//! A working view of the state while a block is applied: the committed
//! state underneath, this block's changes on top.

use crate::account::AccountId;
use crate::apply::Delta;
use crate::fedtx::OutPoint;
use crate::ids::BatchId;
use crate::pegout_batch::{Batch, Utxo};
use crate::state::{Account, State};

/// A working view: base state plus pending changes.
pub(crate) struct Overlay<'a> {
    pub(crate) base: &'a State,
    pub(crate) delta: Delta,
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(base: &'a State) -> Self {
        Overlay {
            base,
            delta: Delta {
                fee_pool: base.fee_pool,
                supply: base.supply,
                next_withdrawal_id: base.next_withdrawal_id,
                next_batch_id: base.next_batch_id,
                ..Delta::default()
            },
        }
    }

    pub(crate) fn is_minted(&self, o: &OutPoint) -> bool {
        self.base.minted.contains_key(o) || self.delta.new_mints.iter().any(|(m, _, _, _)| m == o)
    }

    pub(crate) fn is_registered(&self, id: &AccountId) -> bool {
        self.base.registered.contains(id) || self.delta.new_registrations.contains(id)
    }

    /// An unconfirmed batch, with this block's changes.
    pub(crate) fn batch(&self, id: BatchId) -> Option<Batch> {
        match self.delta.batches.get(&id) {
            Some(b) => Some(b.clone()),
            None => self.base.batches.get(&id).cloned(),
        }
        .filter(|b| b.confirmed.is_none())
    }

    /// A confirmed batch still kept (see [`State::settled`]), with this
    /// block's changes.
    pub(crate) fn settled_batch(&self, id: BatchId) -> Option<Batch> {
        match self.delta.batches.get(&id) {
            Some(b) => Some(b.clone()).filter(|b| b.confirmed.is_some()),
            None => self.base.settled.get(&id).cloned(),
        }
    }

    /// The unconfirmed batch (base or this block's) spending `o`.
    pub(crate) fn batch_spending(&self, o: &OutPoint) -> Option<Batch> {
        let spends = |b: &Batch| b.inputs.iter().any(|(i, _)| i == o);
        self.delta
            .batches
            .values()
            .filter(|b| b.confirmed.is_none() && spends(b))
            .chain(
                self.base
                    .batches
                    .values()
                    .filter(|b| !self.delta.batches.contains_key(&b.id) && spends(b)),
            )
            .next()
            .cloned()
    }

    pub(crate) fn unconfirmed_batches(&self) -> usize {
        let mut n = self.base.batches.len();
        for (id, b) in &self.delta.batches {
            match (self.base.batches.contains_key(id), b.confirmed.is_some()) {
                (false, false) => n += 1,
                (true, true) => n -= 1,
                _ => {}
            }
        }
        n
    }

    /// Spendable UTXOs in selection order: largest first, then by outpoint
    /// (a batch's payers come from the front, consolidation from the back).
    pub(crate) fn available_utxos(&self) -> Vec<(OutPoint, Utxo)> {
        let mut v: Vec<(OutPoint, Utxo)> = self
            .base
            .utxos
            .iter()
            .map(|(o, u)| (*o, *u))
            .chain(self.delta.new_utxos.iter().copied())
            .filter(|(o, _)| !self.delta.spent_utxos.contains(o))
            .collect();
        v.sort_by(|a, b| b.1.amount.cmp(&a.1.amount).then(a.0.cmp(&b.0)));
        v
    }

    pub(crate) fn account(&self, id: &AccountId) -> Account {
        self.delta
            .accounts
            .get(id)
            .or_else(|| self.base.accounts.get(id))
            .copied()
            .unwrap_or_default()
    }
}
