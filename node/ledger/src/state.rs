//! The ledger state: accounts, the fee pool, queued withdrawals, registered
//! deposit addresses, minted deposits, fee-rate votes, the federation's UTXO
//! set and unconfirmed peg-out batches, the federation's epochs and votes
//! for a change; and how a finalized block's outcome is committed to it.

use crate::account::AccountId;
use crate::amount::Sats;
use crate::apply::BlockOutcome;
use crate::block::Header;
use crate::epoch::{ChangeVotes, Epoch};
use crate::fedtx::OutPoint;
use crate::hash::Hash32;
use crate::ids::{BatchId, FeeRate, MemberIndex, WithdrawalId};
use crate::pegout_batch::{Batch, PegOutParams, Utxo};
use crate::quote_grace::QuoteGrace;
use crate::tx::TxId;
use bitcoin::secp256k1::PublicKey;
use bitcoin::ScriptBuf;
use fedpeg_consensus::Height;
use fedpeg_peg::federation::{Federation, FederationError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct LedgerParams {
    pub chain_id: Hash32,
    pub network: bitcoin::Network,
    /// Smallest fee a transaction may pay.
    pub min_tx_fee: Sats,
    /// Smallest fee of a peg-out (the quote at the agreed rate if higher).
    pub pegout_fee: Sats,
    /// Most transactions in one block.
    pub max_block_txs: usize,
    /// Virtual bytes it takes to spend one deposit; times the agreed fee
    /// rate, it is deducted from every mint so reserves always cover supply.
    pub pegin_spend_vbytes: u64,
    /// Fee rate (sat/vB) until members have voted one, and the vote of a
    /// member whose bitcoind has no estimate.
    pub default_fee_rate: FeeRate,
    /// Lowest fee rate a member may vote and the agreed rate may be.
    pub min_fee_rate: FeeRate,
    /// Highest fee rate a member may vote and the agreed rate may be.
    pub max_fee_rate: FeeRate,
    /// How long (ms of block time) a peg-out fee quoted at an agreed rate
    /// stays enough after the rate rises; 0: not at all.
    pub quote_validity_ms: u64,
    /// The peg of epoch 0: genesis members' peg keys (in genesis order: a
    /// peg-key index is a position here), threshold, network, emergency
    /// branch. Later epochs have their own ([`LedgerParams::federation_of`]).
    pub federation: Federation,
    /// Federations of later epochs, built once each (see
    /// [`LedgerParams::federation_of`]).
    pub epoch_federations: EpochFederations,
    /// Genesis `allow_unsafe_peg_threshold` (regtest only): a federation
    /// change may then name a peg threshold outside f < m <= n - f too.
    pub allow_unsafe_peg_threshold: bool,
    /// Peg-out batching policy.
    pub pegout: PegOutParams,
    /// Bitcoin confirmations a batch needs before it counts as paid.
    pub confirmations: u32,
    /// Age (ms of block time) at which a UTXO is rolled before its
    /// emergency timelock opens ([`crate::rollover`]); None without an
    /// emergency branch.
    pub rollover_after_ms: Option<u64>,
}

/// Peg federations of epochs after genesis, built on first use: building a
/// descriptor (miniscript planning) is too costly to repeat for every input
/// of every batch. Keyed by the peg keys and threshold, not by the epoch
/// number: two competing proposals may adopt different changes as the same
/// epoch number, and only the committed one must be used.
#[derive(Clone, Debug, Default)]
pub struct EpochFederations(Arc<Mutex<HashMap<PegSet, Federation>>>);

/// What a peg federation is built from: the peg keys in member order and
/// the threshold.
type PegSet = (Vec<PublicKey>, u32);

impl LedgerParams {
    /// The peg federation of `epoch`: its members' peg keys (member order:
    /// a peg-key index is a position there), its `peg_threshold` and the
    /// genesis emergency branch (same backup keys, k and timelock). Epoch 0
    /// is [`LedgerParams::federation`] itself, so genesis addresses never
    /// change. Fails only for a member set that forms no descriptor, which
    /// `fed::federation_change` refuses to adopt.
    pub fn federation_of(&self, epoch: &Epoch) -> Result<Federation, FederationError> {
        if epoch.number == 0 {
            return Ok(self.federation.clone());
        }
        let keys: Vec<PublicKey> = epoch.members.iter().map(|m| m.peg_key).collect();
        let key = (keys, epoch.peg_threshold);
        // Only adopted epochs are cached (what a vote proposes is checked
        // with `build_federation`), so the cache holds one entry per epoch.
        // A poisoned lock only means another thread panicked mid-insert of
        // a value that is rebuilt here anyway.
        let mut cache = self
            .epoch_federations
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(f) = cache.get(&key) {
            return Ok(f.clone());
        }
        let f = self.build_federation(&key.0, epoch.peg_threshold)?;
        cache.insert(key, f.clone());
        Ok(f)
    }

    /// The peg federation of `peg_keys` (member order) and threshold `m`
    /// with the genesis emergency branch, built anew (not cached).
    pub fn build_federation(
        &self,
        peg_keys: &[PublicKey],
        m: u32,
    ) -> Result<Federation, FederationError> {
        let f = Federation::new(peg_keys.to_vec(), m as usize, self.federation.network())?;
        match self.federation.emergency() {
            None => Ok(f),
            Some(e) => f.with_emergency(e.keys().to_vec(), e.threshold(), e.csv_blocks()),
        }
    }

    /// The federation of epoch `number` of `s`; None if `s` has no such
    /// epoch (or it forms no descriptor, see [`LedgerParams::federation_of`]).
    pub fn epoch_federation(&self, s: &State, number: u32) -> Option<Federation> {
        if number == 0 {
            return Some(self.federation.clone());
        }
        self.federation_of(s.epoch(number)?).ok()
    }

    /// Virtual bytes to spend one deposit of `fed`: the genesis value
    /// ([`LedgerParams::pegin_spend_vbytes`]) for the genesis federation,
    /// the descriptor's plan for any other.
    pub fn spend_vbytes_of(&self, fed: &Federation) -> u64 {
        if *fed == self.federation {
            self.pegin_spend_vbytes
        } else {
            fed.spend_vbytes_estimate()
        }
    }
}

/// Highest fee rate any genesis may allow (`fees.max_fee_rate_sat_vb`), sat/vB.
pub const MAX_FEE_RATE: FeeRate = FeeRate(100_000);

/// The (lower) median of `votes` within the genesis min/max; the genesis
/// default without votes. Clamped because a vote recorded under older,
/// wider bounds may lie outside them.
pub(crate) fn agreed_rate(votes: impl Iterator<Item = FeeRate>, params: &LedgerParams) -> FeeRate {
    let mut rates: Vec<FeeRate> = votes.collect();
    rates.sort_unstable();
    let median = match rates.len() {
        0 => params.default_fee_rate,
        n => rates[(n - 1) / 2],
    };
    // A validated genesis has min <= max; `max` keeps clamp from panicking
    // on hand-built parameters.
    median.clamp(
        params.min_fee_rate,
        params.max_fee_rate.max(params.min_fee_rate),
    )
}

/// Confirmed batches kept in [`State::settled`].
pub const SETTLED_KEPT: usize = 64;

/// Most federation transactions in one block.
pub const MAX_BLOCK_FED_TXS: usize = 1000;

/// An account's balance and next nonce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub balance: Sats,
    /// Nonce the account's next transaction must carry.
    pub nonce: u64,
}

/// A peg-out waiting to be paid on Bitcoin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    pub id: WithdrawalId,
    pub account: AccountId,
    pub bitcoin_address: String,
    /// The address's output script, parsed once when the PegOut was checked.
    pub script_pubkey: ScriptBuf,
    pub amount: Sats,
    pub txid: TxId,
    pub height: Height,
    /// Block time when it was queued, ms.
    pub time_ms: u64,
}

/// The whole ledger state after some height.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub accounts: HashMap<AccountId, Account>,
    /// Fees collected by the federation.
    pub fee_pool: Sats,
    /// Σ balances: pegged BTC in circulation.
    pub supply: Sats,
    /// Queued withdrawals by id.
    pub withdrawals: BTreeMap<WithdrawalId, Withdrawal>,
    pub next_withdrawal_id: WithdrawalId,
    /// Accounts whose deposit address every member watches.
    pub registered: HashSet<AccountId>,
    /// Deposits already minted: outpoint → (account, credited, height, deposit amount).
    pub minted: HashMap<OutPoint, (AccountId, Sats, Height, Sats)>,
    /// Members' latest fee-rate votes: member → (sat/vB, height).
    pub fee_votes: BTreeMap<MemberIndex, (FeeRate, Height)>,
    /// Agreed rates that a rise replaced and that peg-out quotes may still
    /// use, rates ascending (see [`crate::quote_grace`]).
    pub quote_grace: Vec<QuoteGrace>,
    /// Federation UTXOs free to spend (minted deposits, confirmed change).
    pub utxos: BTreeMap<OutPoint, Utxo>,
    /// Batches not yet confirmed, by id.
    pub batches: BTreeMap<BatchId, Batch>,
    /// The [`SETTLED_KEPT`] confirmed batches with the highest ids: if a
    /// reorg deeper than the confirmation depth makes Bitcoin show another
    /// version of one, state follows it (see `fed::confirm`).
    pub settled: BTreeMap<BatchId, Batch>,
    /// Withdrawal id → the unconfirmed batch paying it.
    pub withdrawal_batch: BTreeMap<WithdrawalId, BatchId>,
    pub next_batch_id: BatchId,
    /// Every epoch, oldest first: genesis (activation 0), then each adopted
    /// change (the last may not be in force yet). Never empty in a state
    /// built by [`crate::genesis::ChainSpec::genesis_state`].
    pub epochs: Vec<Epoch>,
    /// Votes of members of the epoch in force for changes not yet adopted
    /// (member → change id, change); cleared when a change is adopted and
    /// when an epoch activates (member indices change meaning).
    pub change_votes: ChangeVotes,
    pub height: Height,
    pub tip: Hash32,
    pub tip_time_ms: u64,
    pub state_root: Hash32,
}

/// Why a transaction was refused. Every variant says what to do about it.
impl State {
    /// Applies a finalized block's outcome.
    pub fn commit(&mut self, header: &Header, outcome: &BlockOutcome) {
        if outcome.delta.epoch_start {
            self.fee_votes.clear();
            self.change_votes.clear();
        }
        if let Some(v) = &outcome.delta.change_votes {
            self.change_votes = v.clone();
        }
        if let Some(e) = &outcome.delta.adopted {
            self.epochs.push(e.clone());
        }
        for (id, a) in &outcome.delta.accounts {
            self.accounts.insert(*id, *a);
        }
        self.fee_pool = outcome.delta.fee_pool;
        self.supply = outcome.delta.supply;
        self.next_withdrawal_id = outcome.delta.next_withdrawal_id;
        for w in &outcome.delta.new_withdrawals {
            self.withdrawals.insert(w.id, w.clone());
        }
        self.registered
            .extend(outcome.delta.new_registrations.iter().copied());
        for (o, a, credit, amount) in &outcome.delta.new_mints {
            self.minted
                .insert(*o, (*a, *credit, header.height, *amount));
        }
        for (m, rate, at) in &outcome.delta.new_fee_votes {
            self.fee_votes.insert(*m, (*rate, *at));
        }
        if let Some(g) = &outcome.delta.quote_grace {
            self.quote_grace = g.clone();
        }
        for (o, u) in &outcome.delta.new_utxos {
            self.utxos.insert(*o, *u);
        }
        for o in &outcome.delta.spent_utxos {
            self.utxos.remove(o);
        }
        for (id, b) in &outcome.delta.batches {
            if b.confirmed.is_some() {
                self.batches.remove(id);
                for out in &b.outputs {
                    self.withdrawals.remove(&out.withdrawal);
                    self.withdrawal_batch.remove(&out.withdrawal);
                }
                self.settled.insert(*id, b.clone());
                while self.settled.len() > SETTLED_KEPT {
                    self.settled.pop_first();
                }
            } else {
                for out in &b.outputs {
                    self.withdrawal_batch.insert(out.withdrawal, *id);
                }
                self.batches.insert(*id, b.clone());
            }
        }
        self.next_batch_id = outcome.delta.next_batch_id;
        self.height = header.height;
        self.tip = header.hash();
        self.tip_time_ms = header.time_ms;
        self.state_root = outcome.state_root;
    }

    /// The epoch in force at height `h`: the last whose activation is at or
    /// below `h` (an empty one for a state without epochs).
    pub fn epoch_at(&self, h: Height) -> &Epoch {
        let n = self.epochs.partition_point(|e| e.activation <= h);
        n.checked_sub(1)
            .and_then(|i| self.epochs.get(i))
            .unwrap_or(&crate::epoch::NO_EPOCH)
    }

    /// Consensus keys of the epoch in force at `h`: who signs federation
    /// transactions in, and the commit certificate of, block `h`.
    pub fn validators_at(&self, h: Height) -> Vec<ed25519_dalek::VerifyingKey> {
        self.epoch_at(h).consensus_keys()
    }

    /// The epoch numbered `number`, if adopted.
    pub fn epoch(&self, number: u32) -> Option<&Epoch> {
        self.epochs.iter().find(|e| e.number == number)
    }

    /// The epoch of the peg at the next block (`self.height.next()`): new
    /// deposit addresses, batch change and peg-out batches' inputs are
    /// under its descriptor.
    pub fn peg_epoch(&self) -> &Epoch {
        self.epoch_at(self.height.next())
    }

    /// Epochs whose deposits a mint in the block at `h` may credit: the
    /// epoch in force, then the one before it while its deposit grace lasts
    /// (`h` < the activation of the epoch in force +
    /// [`DEPOSIT_GRACE_BLOCKS`](crate::epoch::DEPOSIT_GRACE_BLOCKS)) and no
    /// later change is adopted yet (after that its UTXOs might no longer
    /// be signable by the members who would have to sweep them).
    pub fn deposit_epochs(&self, h: Height) -> Vec<&Epoch> {
        let current = self.epoch_at(h);
        let mut v = vec![current];
        let grace_end = current
            .activation
            .0
            .saturating_add(crate::epoch::DEPOSIT_GRACE_BLOCKS);
        let later_adopted = self
            .epochs
            .last()
            .is_some_and(|e| e.number > current.number);
        if current.number > 0 && h.0 < grace_end && !later_adopted {
            if let Some(prev) = self.epoch(current.number - 1) {
                v.push(prev);
            }
        }
        v
    }

    /// An adopted epoch not yet in force at the next block
    /// (`self.height.next()`): the last one if its activation is later.
    pub fn next_epoch(&self) -> Option<&Epoch> {
        self.epochs
            .last()
            .filter(|e| e.activation > self.height.next())
    }

    /// The peg-key index in the federation of epoch `peg_epoch` (position
    /// of the key among that epoch's members' peg keys) of `member` of the
    /// epoch in force at `h`; None if it holds none of them or is no member.
    pub fn peg_index(&self, h: Height, member: MemberIndex, peg_epoch: u32) -> Option<MemberIndex> {
        let key = self.epoch_at(h).members.get(member.index())?.peg_key;
        self.epoch(peg_epoch)?
            .members
            .iter()
            .position(|m| m.peg_key == key)
            .map(|i| MemberIndex(i as u32))
    }

    /// The agreed fee rate: the (lower) median of members' latest votes, or
    /// the genesis default before anyone voted, always within the genesis
    /// min/max. A minority of members cannot move it past the honest votes
    /// (members without a bitcoind estimate vote the default, so they count).
    pub fn fee_rate(&self, params: &LedgerParams) -> FeeRate {
        agreed_rate(self.fee_votes.values().map(|(r, _)| *r), params)
    }

    /// The rate a peg-out's fee is checked against in a block at `time_ms`:
    /// the lowest of the agreed rate and the earlier agreed rates whose quote
    /// grace still runs, so a quote stays good for `quote_validity_ms`
    /// after the rate rises.
    pub fn pegout_quote_rate(&self, params: &LedgerParams, time_ms: u64) -> FeeRate {
        let agreed = self.fee_rate(params);
        crate::quote_grace::lowest_valid(&self.quote_grace, time_ms)
            .map_or(agreed, |g| g.min(agreed))
    }

    /// What spending one deposit will cost the federation at the agreed fee
    /// rate: deducted from every mint; a deposit not above it is not minted.
    pub fn pegin_spend_cost(&self, params: &LedgerParams) -> Sats {
        self.spend_cost(params, params.pegin_spend_vbytes)
    }

    /// [`State::pegin_spend_cost`] of a deposit to `fed`'s descriptor (an
    /// epoch's inputs weigh what its descriptor plans).
    pub fn pegin_spend_cost_of(&self, params: &LedgerParams, fed: &Federation) -> Sats {
        self.spend_cost(params, params.spend_vbytes_of(fed))
    }

    fn spend_cost(&self, params: &LedgerParams, vbytes: u64) -> Sats {
        // A cost beyond 21M BTC is beyond any deposit: below cost either way.
        Sats::checked(vbytes.saturating_mul(self.fee_rate(params).0)).unwrap_or(Sats::MAX)
    }

    /// The account, or an empty one.
    pub fn account(&self, id: &AccountId) -> Account {
        self.accounts.get(id).copied().unwrap_or_default()
    }

    /// Σ balances + fee pool + Σ unpaid withdrawals + Σ fees reserved by
    /// unconfirmed batches (u128: cannot overflow).
    pub fn total_value(&self) -> u128 {
        let balances: u128 = self
            .accounts
            .values()
            .map(|a| a.balance.to_sat() as u128)
            .sum();
        let queued: u128 = self
            .withdrawals
            .values()
            .map(|w| w.amount.to_sat() as u128)
            .sum();
        let reserved: u128 = self
            .batches
            .values()
            .map(|b| b.fee_reserved.to_sat() as u128)
            .sum();
        balances + self.fee_pool.to_sat() as u128 + queued + reserved
    }

    /// Copy of the scalars (tip, totals, counters, epochs and change votes)
    /// without the large maps, for a
    /// store that writes a block's delta and needs only the new tip record.
    pub fn clone_meta(&self) -> State {
        State {
            accounts: Default::default(),
            withdrawals: Default::default(),
            registered: Default::default(),
            minted: Default::default(),
            fee_votes: Default::default(),
            quote_grace: self.quote_grace.clone(),
            fee_pool: self.fee_pool,
            supply: self.supply,
            next_withdrawal_id: self.next_withdrawal_id,
            utxos: Default::default(),
            batches: Default::default(),
            settled: Default::default(),
            withdrawal_batch: Default::default(),
            next_batch_id: self.next_batch_id,
            epochs: self.epochs.clone(),
            change_votes: self.change_votes.clone(),
            height: self.height,
            tip: self.tip,
            tip_time_ms: self.tip_time_ms,
            state_root: self.state_root,
        }
    }
}
