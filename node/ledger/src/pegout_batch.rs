//! Peg-out batches in consensus state: the federation's UTXO set, batch
//! formation (deterministic coin selection and fee), and the Bitcoin
//! transaction every member derives from a batch.
//!
//! All of it is pure: each member computes the same batch, byte for byte,
//! from the same committed state. See [`crate::fed`] and [`crate::batching`] for where batches
//! are formed, signed, bumped and confirmed.

use crate::account::AccountId;
use crate::amount::Sats;
use crate::fedtx::OutPoint;
use crate::ids::{BatchId, FeeRate, MemberIndex, WithdrawalId};
use fedpeg_consensus::Height;
use fedpeg_peg::bitcoin::policy::MAX_STANDARD_TX_WEIGHT;
use fedpeg_peg::bitcoin::{self, Amount, BlockHash, ScriptBuf, Transaction, TxOut, Txid};
use fedpeg_peg::deposit::Tweak;
use fedpeg_peg::federation::Federation;
use fedpeg_peg::pegout::{output_bytes, unsigned_tx, BatchInput, CHANGE_DUST_LIMIT_SATS};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Peg-out policy, fixed by genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PegOutParams {
    /// A batch forms once the oldest queued peg-out is this old (block time).
    pub batch_interval_ms: u64,
    /// Most peg-outs (outputs besides change) in one batch; a full queue
    /// forms a batch at once.
    pub max_outputs: u32,
    /// Most federation UTXOs one batch spends.
    pub max_inputs: u32,
    /// Most batches waiting for confirmation at once.
    pub max_unconfirmed: u32,
    /// Members vote to replace a batch (RBF, higher fee) after this many
    /// Bitcoin blocks without a confirmation.
    pub bump_after_blocks: u32,
    /// Virtual bytes of shared batch overhead (transaction header, change,
    /// inputs) each peg-out pays for on top of its own output.
    pub shared_vbytes: u64,
    /// Consolidation: while the agreed fee rate is below this (sat/vB), a
    /// batch also spends the federation's smallest UTXOs, up to
    /// `max_inputs`, and merges them into its change; 0 never consolidates.
    /// [`PegOutParams::default`] (what `fedpegd genesis` writes) is 5: below
    /// it the mempool is quiet, and spending a 3-of-4 input costs
    /// 132 vB × 4 sat/vB = 528 sats (160 vB with the emergency branch),
    /// against 2,640–6,600 sats at the
    /// 20–50 sat/vB a busy mempool asks of the batch that would otherwise
    /// have to take it. A genesis that does not name it means 0, and 0 is
    /// not written: files from before this parameter keep their chain id
    /// and their batch rules.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consolidate_below_sat_vb: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Default for PegOutParams {
    fn default() -> Self {
        PegOutParams {
            batch_interval_ms: 0,
            max_outputs: 250,
            max_inputs: 50,
            max_unconfirmed: 8,
            bump_after_blocks: 3,
            shared_vbytes: 40,
            consolidate_below_sat_vb: 5,
        }
    }
}

impl PegOutParams {
    /// The parameters of a genesis file without a `pegout` section: the
    /// defaults, but without consolidation (see `consolidate_below_sat_vb`).
    pub fn unnamed_in_genesis() -> Self {
        PegOutParams {
            consolidate_below_sat_vb: 0,
            ..PegOutParams::default()
        }
    }
}

/// Most versions (original + replacements) of one batch.
pub const MAX_BATCH_VERSIONS: usize = 16;

/// Which federation address a UTXO pays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A deposit to this account's deposit address.
    Deposit([u8; 32]),
    /// Change of a peg-out batch.
    Change,
}

impl Owner {
    pub fn tweak(&self) -> Tweak {
        match self {
            Owner::Deposit(a) => Tweak::Deposit(*a),
            Owner::Change => Tweak::Change,
        }
    }

    pub fn deposit(account: &AccountId) -> Owner {
        Owner::Deposit(account.0)
    }
}

/// A federation output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utxo {
    pub amount: Sats,
    pub owner: Owner,
    /// Block time (ms) of the sidechain block that added it to state (its
    /// mint, or its batch's confirmation): the age the timelock rollover
    /// goes by (see [`crate::rollover`]). Set for every new UTXO when the
    /// block is applied ([`crate::rollover::stamp_new_utxos`]); it is a
    /// function of the committed header, so the state root (which hashes
    /// UTXOs without it) still commits to it. 0 in records written before
    /// it existed and in batch inputs: "old", rolled at the first chance.
    pub created_ms: u64,
    /// Number of the epoch whose peg descriptor the output pays (0 in
    /// records written before epochs had descriptors).
    pub epoch: u32,
}

/// One peg-out paid by a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchOutput {
    pub withdrawal: WithdrawalId,
    /// The address as the user gave it (for people).
    pub address: String,
    /// Its output script, parsed once when the PegOut was checked.
    pub script_pubkey: ScriptBuf,
    pub amount: Sats,
    /// Account that burned it.
    pub account: [u8; 32],
}

/// One version of a batch's transaction (the original or a replacement).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchVersion {
    pub fee_rate: FeeRate,
    /// Bitcoin fee, sats.
    pub fee: Sats,
    /// Change back to the federation (0: no change output).
    pub change: Sats,
    /// Bitcoin txid.
    pub txid: Txid,
    /// Sidechain height that created this version.
    pub height: Height,
    /// Valid signatures (one per input, DER + sighash byte) keyed by the
    /// signer's PEG-KEY index (position of its peg key among the
    /// federation's keys), not by its member index: see `fed::signatures`.
    pub signatures: BTreeMap<MemberIndex, Vec<Vec<u8>>>,
    /// Members (index in the epoch in force) who saw this version stuck and
    /// voted to replace it; dropped when an epoch activates.
    pub bump_votes: BTreeSet<MemberIndex>,
}

/// Where a batch was confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmation {
    pub version: u32,
    pub bitcoin_block: BlockHash,
    /// Sidechain height of the confirmation.
    pub height: Height,
}

/// A peg-out batch: one Bitcoin transaction (in one or more versions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub id: BatchId,
    pub inputs: Vec<(OutPoint, Utxo)>,
    pub outputs: Vec<BatchOutput>,
    pub versions: Vec<BatchVersion>,
    pub created_height: Height,
    /// Sats taken from the fee pool for this batch so far (the highest
    /// version's fee); the difference is refunded if a cheaper version confirms.
    pub fee_reserved: Sats,
    pub confirmed: Option<Confirmation>,
    /// The epoch of every input: a batch never mixes epochs; its inputs are
    /// signed by holders of that epoch's peg keys.
    pub epoch: u32,
    /// The epoch whose descriptor the change pays: the one in force when
    /// the batch formed; the change UTXO carries it.
    pub change_epoch: u32,
}

impl Batch {
    /// The newest version.
    pub fn latest(&self) -> &BatchVersion {
        // Invariant: a batch is created with one version.
        &self.versions[self.versions.len() - 1]
    }

    pub fn input_total(&self) -> u64 {
        self.inputs.iter().map(|(_, u)| u.amount.to_sat()).sum()
    }

    /// Accounts whose peg-outs the batch pays, each once, in output order.
    pub fn accounts(&self) -> Vec<AccountId> {
        let mut out: Vec<AccountId> = Vec::new();
        for o in &self.outputs {
            let a = AccountId(o.account);
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// Withdrawal ids the batch pays, in output order.
    pub fn withdrawal_ids(&self) -> Vec<WithdrawalId> {
        self.outputs.iter().map(|o| o.withdrawal).collect()
    }

    pub fn output_total(&self) -> u64 {
        self.outputs.iter().map(|o| o.amount.to_sat()).sum()
    }

    /// The inputs as the peg crate describes them.
    pub fn batch_inputs(&self) -> Vec<BatchInput> {
        self.inputs
            .iter()
            .map(|(o, u)| BatchInput {
                outpoint: *o,
                amount: u.amount.to_sat(),
                tweak: u.owner.tweak(),
            })
            .collect()
    }

    /// The unsigned transaction of version `v`; `change_federation` is the
    /// federation of [`Batch::change_epoch`] (what its change pays).
    pub fn unsigned_tx(
        &self,
        change_federation: &Federation,
        v: usize,
    ) -> Result<Transaction, BatchTxError> {
        let version = self.versions.get(v).ok_or(BatchTxError::NoVersion(v))?;
        let mut outputs = Vec::with_capacity(self.outputs.len() + 1);
        for o in &self.outputs {
            outputs.push(TxOut {
                value: Amount::from_sat(o.amount.to_sat()),
                script_pubkey: o.script_pubkey.clone(),
            });
        }
        if version.change > Sats::ZERO {
            outputs.push(TxOut {
                value: Amount::from_sat(version.change.to_sat()),
                script_pubkey: change_federation.script_pubkey(&Tweak::Change)?,
            });
        }
        Ok(unsigned_tx(&self.batch_inputs(), &outputs))
    }

    /// The index of the version whose txid is `txid`.
    pub fn version_of(&self, txid: &Txid) -> Option<usize> {
        self.versions.iter().position(|v| &v.txid == txid)
    }
}

/// Why a batch's transaction could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BatchTxError {
    #[error("batch has no version {0}")]
    NoVersion(usize),
    #[error(transparent)]
    Address(#[from] fedpeg_peg::address::AddressError),
    #[error(transparent)]
    Tweak(#[from] fedpeg_peg::deposit::TweakError),
}

/// What a peg-out to `address` costs the user at `fee_rate`: its own output
/// plus its share of the batch, never below `floor`.
pub fn pegout_fee_quote(
    params: &PegOutParams,
    floor: Sats,
    fee_rate: FeeRate,
    script: &bitcoin::Script,
) -> Sats {
    let vbytes = output_bytes(script) + params.shared_vbytes;
    // A quote beyond 21M BTC cannot be paid: the cap says as much.
    Sats::checked(vbytes.saturating_mul(fee_rate.0).max(floor.to_sat())).unwrap_or(Sats::MAX)
}

/// Fee and change of a transaction spending `input_total` to outputs worth
/// `output_total` (`n_outputs` taking `out_bytes`), at `fee_rate`, with a
/// change output when it is above dust. None if the inputs cannot pay.
#[allow(clippy::too_many_arguments)] // all plain numbers of one transaction
pub fn fee_and_change(
    federation: &Federation,
    n_inputs: usize,
    input_total: u64,
    n_outputs: usize,
    out_bytes: u64,
    output_total: u64,
    fee_rate: u64,
    min_fee: u64,
) -> Option<(u64, u64)> {
    let change_bytes = 8 + 1 + 34; // P2WSH change output
    let with_change = federation
        .batch_vbytes(n_inputs, n_outputs + 1, out_bytes + change_bytes)
        .saturating_mul(fee_rate)
        .max(min_fee);
    let spare = input_total.checked_sub(output_total)?;
    if spare >= with_change.saturating_add(CHANGE_DUST_LIMIT_SATS) {
        return Some((with_change, spare - with_change));
    }
    let without = federation
        .batch_vbytes(n_inputs, n_outputs, out_bytes)
        .saturating_mul(fee_rate)
        .max(min_fee);
    // No change: whatever is left over goes to the fee.
    (spare >= without).then_some((spare, 0))
}

/// A planned batch: which UTXOs pay which withdrawals, the fee and the
/// change. The paying inputs are a prefix of the ordered available set;
/// consolidation inputs come from its other end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The first `n_inputs` UTXOs pay the withdrawals.
    pub n_inputs: usize,
    /// Consolidation inputs: indices into the UTXOs past the prefix,
    /// smallest first (see [`PegOutParams::consolidate_below_sat_vb`]).
    pub consolidated: Vec<usize>,
    pub withdrawals: Vec<usize>,
    pub fee: u64,
    pub change: u64,
}

impl Plan {
    /// The UTXOs the batch spends, as indices in spending order: the paying
    /// prefix, then the consolidation inputs.
    pub fn inputs(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.n_inputs).chain(self.consolidated.iter().copied())
    }
}

/// Deterministic batch planning. `utxos` are the available UTXO amounts in
/// selection order (largest first); `wanted` the queued peg-outs in queue
/// order as (output bytes, amount). Peg-outs are taken in order, skipping one
/// that cannot be paid (with at most `max_inputs` inputs and `fee_budget`
/// for the fee); inputs are the fewest largest UTXOs that pay. Below the
/// consolidation rate, the smallest UTXOs are added (see [`consolidate`]).
pub fn plan_batch(
    federation: &Federation,
    params: &PegOutParams,
    utxos: &[u64],
    wanted: &[(u64, u64)],
    fee_rate: u64,
    fee_budget: u64,
) -> Option<Plan> {
    let max_inputs = (params.max_inputs as usize).min(utxos.len());
    let mut best: Option<Plan> = None;
    let (mut bytes, mut total, mut n) = (0u64, 0u64, 0usize);
    let mut chosen = Vec::new();
    for (i, (b, amount)) in wanted.iter().enumerate() {
        if chosen.len() >= params.max_outputs as usize {
            break;
        }
        let (nb, nt, nn) = (bytes + b, total.saturating_add(*amount), n + 1);
        // Fewest inputs that pay: grow the prefix until it covers.
        let mut sum = 0u64;
        let mut found = None;
        for (k, u) in utxos.iter().take(max_inputs).enumerate() {
            sum = sum.saturating_add(*u);
            if sum < nt {
                continue;
            }
            if let Some((fee, change)) =
                fee_and_change(federation, k + 1, sum, nn, nb, nt, fee_rate, 0)
            {
                found = Some((k + 1, fee, change));
                break;
            }
        }
        match found {
            Some((k, fee, change)) if fee <= fee_budget => {
                bytes = nb;
                total = nt;
                n = nn;
                chosen.push(i);
                best = Some(Plan {
                    n_inputs: k,
                    consolidated: Vec::new(),
                    withdrawals: chosen.clone(),
                    fee,
                    change,
                });
            }
            _ => {}
        }
    }
    let mut plan = best?;
    if fee_rate < params.consolidate_below_sat_vb {
        let outputs = Outputs { n, bytes, total };
        consolidate(
            federation, max_inputs, utxos, &mut plan, &outputs, fee_rate, fee_budget,
        );
    }
    Some(plan)
}

/// The withdrawal outputs of a plan: how many, their bytes, their total.
struct Outputs {
    n: usize,
    bytes: u64,
    total: u64,
}

/// Adds consolidation inputs to `plan`: the UTXOs past its paying prefix,
/// smallest first (the reverse of selection order, so equal amounts go by
/// outpoint, highest first), until the batch has `max_inputs`. An input is
/// taken only if it keeps the transaction standard and adds to the change, that is if it is worth more than the
/// fee it adds at `fee_rate` (an uneconomic one is skipped; a larger one may
/// still pay), and only while the whole fee stays within `fee_budget` (the
/// fee pool, which every mint pre-paid that deposit's spend cost into).
fn consolidate(
    federation: &Federation,
    max_inputs: usize,
    utxos: &[u64],
    plan: &mut Plan,
    outputs: &Outputs,
    fee_rate: u64,
    fee_budget: u64,
) {
    let mut input_total = utxos[..plan.n_inputs]
        .iter()
        .fold(0u64, |t, u| t.saturating_add(*u));
    for i in (plan.n_inputs..utxos.len()).rev() {
        let n_inputs = plan.n_inputs + plan.consolidated.len() + 1;
        // A batch over the standard weight would not relay: stay below it
        // whatever `max_inputs` a genesis allows.
        let weight = federation.batch_weight(n_inputs, outputs.n + 1, outputs.bytes + 43);
        if n_inputs > max_inputs || weight.to_wu() > u64::from(MAX_STANDARD_TX_WEIGHT) {
            break;
        }
        let with = input_total.saturating_add(utxos[i]);
        let Some((fee, change)) = fee_and_change(
            federation,
            n_inputs,
            with,
            outputs.n,
            outputs.bytes,
            outputs.total,
            fee_rate,
            0,
        ) else {
            continue;
        };
        if change <= plan.change {
            continue;
        }
        if fee > fee_budget {
            // With a change output the fee depends only on the input
            // count: no further input fits the budget either.
            break;
        }
        input_total = with;
        plan.consolidated.push(i);
        plan.fee = fee;
        plan.change = change;
    }
}

/// A 3-of-4 regtest federation with fixed keys, for unit tests.
#[cfg(test)]
pub(crate) fn test_federation() -> Federation {
    use fedpeg_peg::bitcoin::secp256k1::Secp256k1;
    let secp = Secp256k1::signing_only();
    let keys = test_peg_secrets()
        .iter()
        .map(|k| k.public_key(&secp))
        .collect();
    Federation::new(keys, 3, bitcoin::Network::Regtest).expect("valid test federation")
}

/// The peg secrets of [`test_federation`].
#[cfg(test)]
pub(crate) fn test_peg_secrets() -> Vec<fedpeg_peg::bitcoin::secp256k1::SecretKey> {
    (0..4u8)
        .map(|i| fedpeg_peg::bitcoin::secp256k1::SecretKey::from_slice(&[i + 1; 32]).expect("key"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn federation() -> Federation {
        test_federation()
    }

    /// [`PegOutParams::default`] without consolidation: today's selection.
    fn no_consolidation() -> PegOutParams {
        PegOutParams {
            consolidate_below_sat_vb: 0,
            ..PegOutParams::default()
        }
    }

    #[test]
    fn plan_takes_the_fewest_largest_inputs_and_skips_what_cannot_be_paid() {
        let f = federation();
        let p = no_consolidation();
        let utxos = [50_000, 30_000, 10_000];
        let wanted = [(31, 20_000), (31, 1_000_000), (31, 20_000)];
        let plan = plan_batch(&f, &p, &utxos, &wanted, 2, u64::MAX).unwrap();
        assert_eq!(plan.withdrawals, vec![0, 2]);
        assert_eq!(plan.n_inputs, 1);
        assert_eq!(plan.fee + plan.change + 40_000, 50_000);
        // A fee budget too small for any batch: nothing.
        assert_eq!(plan_batch(&f, &p, &utxos, &wanted, 2, 10), None);
        // Nothing to spend: nothing.
        assert_eq!(plan_batch(&f, &p, &[], &wanted, 2, u64::MAX), None);
    }

    #[test]
    fn below_the_consolidation_rate_the_smallest_economic_utxos_join_up_to_max_inputs() {
        let f = federation();
        let p = PegOutParams {
            max_inputs: 4,
            consolidate_below_sat_vb: 5,
            ..PegOutParams::default()
        };
        // 200 sats are less than spending them costs at 2 sat/vB (~263).
        let utxos = [1_000_000, 50_000, 40_000, 30_000, 20_000, 200];
        let wanted = [(31, 100_000)];
        let plan = plan_batch(&f, &p, &utxos, &wanted, 2, u64::MAX).unwrap();
        assert_eq!(plan.n_inputs, 1);
        assert_eq!(
            plan.consolidated,
            vec![4, 3, 2],
            "smallest first, 200 skipped"
        );
        let inputs: u64 = plan.inputs().map(|i| utxos[i]).sum();
        assert_eq!(inputs, 1_090_000);
        assert_eq!(plan.fee, f.batch_vbytes(4, 2, 31 + 43) * 2);
        assert_eq!(plan.change, inputs - 100_000 - plan.fee);
        // The fee pool limits it: a budget for three inputs takes two extra.
        let budget = f.batch_vbytes(3, 2, 31 + 43) * 2;
        let plan = plan_batch(&f, &p, &utxos, &wanted, 2, budget).unwrap();
        assert_eq!(plan.consolidated, vec![4, 3]);
        assert_eq!(plan.fee, budget);
        // At or above the rate: only the input that pays (today's batch).
        for rate in [5, 6, 50] {
            let plan = plan_batch(&f, &p, &utxos, &wanted, rate, u64::MAX).unwrap();
            assert_eq!(
                (plan.n_inputs, plan.consolidated.len()),
                (1, 0),
                "{rate} sat/vB"
            );
        }
    }

    #[test]
    fn consolidation_stops_below_the_standard_transaction_weight() {
        let f = federation();
        let p = PegOutParams {
            max_inputs: 5_000,
            consolidate_below_sat_vb: 5,
            ..PegOutParams::default()
        };
        let mut utxos = vec![10_000u64; 3_000];
        utxos.insert(0, 1_000_000);
        let wanted = [(31, 100_000)];
        let plan = plan_batch(&f, &p, &utxos, &wanted, 1, u64::MAX).unwrap();
        let n = plan.inputs().count();
        let weight = |n| f.batch_weight(n, 2, 31 + 43).to_wu();
        let max = u64::from(MAX_STANDARD_TX_WEIGHT);
        assert!(weight(n) <= max && weight(n + 1) > max, "{n} inputs");
    }

    #[test]
    fn small_change_goes_to_the_fee() {
        let f = federation();
        let (fee, change) = fee_and_change(&f, 1, 10_000 + 400 + 100, 1, 31, 10_000, 1, 0).unwrap();
        assert_eq!(change, 0);
        assert_eq!(fee, 500);
    }

    proptest! {
        #[test]
        fn a_plan_balances_and_pays_at_least_the_rate(
            utxos in proptest::collection::vec(200u64..5_000_000, 0..80),
            wanted in proptest::collection::vec((31u64..44, 546u64..2_000_000), 1..40),
            rate in 1u64..200,
            consolidate_below in 0u64..300,
            max_inputs in 1u32..60,
            budget in prop_oneof![Just(u64::MAX), 0u64..200_000],
        ) {
            let f = federation();
            let p = PegOutParams {
                max_inputs,
                consolidate_below_sat_vb: consolidate_below,
                ..PegOutParams::default()
            };
            let mut utxos = utxos;
            utxos.sort_unstable_by(|a, b| b.cmp(a));
            let plain = PegOutParams { consolidate_below_sat_vb: 0, ..p.clone() };
            let base = plan_batch(&f, &plain, &utxos, &wanted, rate, budget);
            let plan = plan_batch(&f, &p, &utxos, &wanted, rate, budget);
            prop_assert_eq!(plan.is_some(), base.is_some());
            if let (Some(plan), Some(base)) = (plan, base) {
                // Consolidation only adds inputs, only below its rate.
                prop_assert_eq!(plan.n_inputs, base.n_inputs);
                prop_assert_eq!(&plan.withdrawals, &base.withdrawals);
                if rate >= consolidate_below {
                    prop_assert_eq!(&plan, &base);
                }
                let spent: Vec<usize> = plan.inputs().collect();
                let distinct: BTreeSet<usize> = spent.iter().copied().collect();
                prop_assert_eq!(distinct.len(), spent.len());
                prop_assert!(spent.len() <= max_inputs as usize);
                prop_assert!(plan.consolidated.iter().all(|i| *i >= plan.n_inputs && *i < utxos.len()));
                prop_assert!(plan.consolidated.windows(2).all(|w| utxos[w[0]] <= utxos[w[1]]), "smallest first");
                // Every extra input adds to the change.
                prop_assert!(plan.consolidated.is_empty() || plan.change > base.change);
                let inputs: u64 = spent.iter().map(|i| utxos[*i]).sum();
                let outs: u64 = plan.withdrawals.iter().map(|i| wanted[*i].1).sum();
                let bytes: u64 = plan.withdrawals.iter().map(|i| wanted[*i].0).sum();
                prop_assert_eq!(inputs, outs + plan.fee + plan.change);
                prop_assert!(plan.fee <= budget);
                let n_out = plan.withdrawals.len() + usize::from(plan.change > 0);
                let change_bytes = if plan.change > 0 { 43 } else { 0 };
                prop_assert!(plan.fee >= f.batch_vbytes(spent.len(), n_out, bytes + change_bytes) * rate);
                prop_assert!(plan.change == 0 || plan.change >= CHANGE_DUST_LIMIT_SATS);
            }
        }
    }
}
