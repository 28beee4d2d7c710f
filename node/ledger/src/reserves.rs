//! The federation's reserves against what it owes, from committed state.

use crate::state::State;

impl State {
    /// The federation's reserves against what it owes.
    pub fn reserves(&self) -> Reserves {
        let sum = |it: &mut dyn Iterator<Item = u64>| it.map(u128::from).sum::<u128>();
        Reserves {
            available: sum(&mut self.utxos.values().map(|u| u.amount.to_sat())),
            locked: sum(&mut self.batches.values().map(|b| b.input_total())),
            pending_change: sum(&mut self.batches.values().map(|b| b.latest().change.to_sat())),
            supply: self.supply.to_sat() as u128,
            queued: sum(&mut self
                .withdrawals
                .values()
                .filter(|w| !self.withdrawal_batch.contains_key(&w.id))
                .map(|w| w.amount.to_sat())),
            in_batches: sum(&mut self
                .withdrawals
                .values()
                .filter(|w| self.withdrawal_batch.contains_key(&w.id))
                .map(|w| w.amount.to_sat())),
            fee_pool: self.fee_pool.to_sat() as u128,
        }
    }
}

/// Federation reserves vs liabilities, in sats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserves {
    /// Confirmed federation UTXOs free to spend.
    pub available: u128,
    /// Confirmed UTXOs spent by batches not yet confirmed.
    pub locked: u128,
    /// Change those batches pay back (newest versions).
    pub pending_change: u128,
    /// Pegged BTC in circulation.
    pub supply: u128,
    /// Peg-outs burned but not yet in a batch.
    pub queued: u128,
    /// Peg-outs in batches not yet confirmed.
    pub in_batches: u128,
    pub fee_pool: u128,
}

impl Reserves {
    /// Confirmed Bitcoin the federation holds.
    pub fn confirmed(&self) -> u128 {
        self.available + self.locked
    }

    /// What it owes: supply plus every unpaid peg-out.
    pub fn liabilities(&self) -> u128 {
        self.supply + self.queued + self.in_batches
    }

    /// True if the confirmed reserves cover every liability.
    pub fn covered(&self) -> bool {
        self.confirmed() >= self.liabilities()
    }
}
