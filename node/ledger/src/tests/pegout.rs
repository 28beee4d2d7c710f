//! Ledger tests of peg-out batches: forming, signing, bumping, confirming.

use super::{id as uid, key as user};
use crate::amount::Sats;
use crate::fedtx::{FedTxKind, FederationTx, OutPoint};
use crate::hash::Hash32;
use crate::ids::{BatchId, FeeRate, MemberIndex};
use crate::pegout_batch::{test_peg_secrets, Batch, PegOutParams};
use crate::testing::{block_hash, sats, txid};
use crate::tx::{Transaction, TxKind};
use crate::*;
use ed25519_dalek::SigningKey;
use fedpeg_consensus::Height;
use fedpeg_peg::bitcoin;

pub(super) fn member(i: u32) -> SigningKey {
    SigningKey::from_bytes(&[100 + i as u8; 32])
}
pub(super) fn params() -> LedgerParams {
    LedgerParams {
        chain_id: Hash32::tagged("pegout-test", &[]),
        pegin_spend_vbytes: 132,
        default_fee_rate: FeeRate(2),
        max_fee_rate: FeeRate(1000),
        // These histories (and the golden root) predate consolidation;
        // its tests turn it on with `consolidating`.
        pegout: PegOutParams {
            consolidate_below_sat_vb: 0,
            ..PegOutParams::default()
        },
        ..crate::testing::ledger_params()
    }
}
/// An empty state whose genesis epoch is the four test members (member `i`
/// holds peg key `i` of the test federation).
pub(super) fn state() -> State {
    crate::testing::state_with_members(
        &(0..4)
            .map(|i| member(i).verifying_key())
            .collect::<Vec<_>>(),
    )
}
pub(super) fn fed(m: u32, kind: FedTxKind) -> FederationTx {
    FederationTx::sign(params().chain_id, MemberIndex(m), &member(m), kind)
}
pub(super) fn address(i: u8) -> String {
    bitcoin::Address::p2wpkh(
        &bitcoin::CompressedPublicKey(
            bitcoin::secp256k1::SecretKey::from_slice(&[i + 50; 32])
                .unwrap()
                .public_key(&bitcoin::secp256k1::Secp256k1::signing_only()),
        ),
        bitcoin::Network::Regtest,
    )
    .to_string()
}
pub(super) fn pegout(from: u8, nonce: u64, amount: u64, fee: u64) -> Transaction {
    Transaction::sign(
        params().chain_id,
        &user(from),
        nonce,
        sats(fee),
        TxKind::PegOut {
            bitcoin_address: address(from),
            amount: sats(amount),
        },
    )
}
/// Applies a block of `txs` and `fed` (all must be valid), checks that a
/// re-application agrees, commits, and returns the events.
pub(super) fn step(
    s: &mut State,
    txs: &[Transaction],
    fed: &[FederationTx],
    time: u64,
) -> Vec<Event> {
    step_with(&params(), s, txs, fed, time)
}
/// [`step`] under parameters `p`.
pub(super) fn step_with(
    p: &LedgerParams,
    s: &mut State,
    txs: &[Transaction],
    fed: &[FederationTx],
    time: u64,
) -> Vec<Event> {
    let b = build_block(s, p, txs, fed, time, 0, &VerifyAll);
    assert!(b.rejected.is_empty(), "{:?}", b.rejected);
    assert_eq!(
        b.block.fed_txs.len(),
        fed.len(),
        "a federation tx was left out"
    );
    let again = apply_block(s, &b.block, p, &VerifyAll).unwrap();
    assert_eq!(again.delta, b.outcome.delta);
    s.commit(&b.block.header, &b.outcome);
    // Reserves always cover supply + unpaid peg-outs, exactly accounted.
    let r = s.reserves();
    assert!(r.covered(), "{r:?}");
    assert_eq!(
        r.confirmed(),
        s.total_value(),
        "reserves = balances + fee pool + unpaid + reserved fees: {r:?}"
    );
    b.outcome.events
}
pub(super) fn deposit(s: &mut State, acct: u8, vout: u32, amount: u64) {
    deposit_at(&params(), s, acct, vout, amount, 1);
}
/// [`deposit`] under parameters `p` in a block at `time`.
fn deposit_at(p: &LedgerParams, s: &mut State, acct: u8, vout: u32, amount: u64, time: u64) {
    let mut f = vec![];
    if !s.registered.contains(&uid(acct)) {
        f.push(fed(
            0,
            FedTxKind::RegisterDepositAddress { account: uid(acct) },
        ));
    }
    f.push(fed(
        0,
        FedTxKind::PegInMint {
            outpoint: OutPoint {
                txid: txid(acct),
                vout,
            },
            amount: sats(amount),
            account: uid(acct),
            bitcoin_block: block_hash(1),
            epoch: 0,
        },
    ));
    step_with(p, s, &[], &f, time);
}
/// Member `m`'s vote to bump version 0 of batch 0.
fn bump0(m: u32) -> FederationTx {
    fed(
        m,
        FedTxKind::PegOutBump {
            batch: BatchId(0),
            version: 0,
        },
    )
}
fn sign(s: &State, batch: u64, m: u32) -> FederationTx {
    let b = &s.batches[&BatchId(batch)];
    let v = b.versions.len() - 1;
    let tx = b.unsigned_tx(&params().federation, v).unwrap();
    let sigs = params()
        .federation
        .sign_batch(&tx, &b.batch_inputs(), &test_peg_secrets()[m as usize])
        .unwrap();
    fed(
        m,
        FedTxKind::PegOutSignatures {
            batch: BatchId(batch),
            version: v as u32,
            signatures: sigs,
        },
    )
}
/// Batch 0's newest version with the witnesses of the signatures in state.
fn assembled(p: &LedgerParams, s: &State) -> bitcoin::Transaction {
    let b = &s.batches[&BatchId(0)];
    let tx = b.unsigned_tx(&p.federation, b.versions.len() - 1).unwrap();
    let signed: Vec<(usize, Vec<Vec<u8>>)> = b
        .latest()
        .signatures
        .iter()
        .map(|(m, v)| (m.index(), v.clone()))
        .collect();
    p.federation
        .assemble_batch(&tx, &b.batch_inputs(), &signed)
        .unwrap()
}

#[test]
fn batch_forms_is_signed_bumped_and_confirmed_with_change() {
    let p = params();
    let mut s = state();
    deposit(&mut s, 1, 0, 1_000_000);
    deposit(&mut s, 2, 0, 300_000);
    assert_eq!(s.utxos.len(), 2);
    // Two peg-outs in one block: one batch, one input (the largest), change.
    let ev = step(
        &mut s,
        &[pegout(1, 0, 100_000, 1000), pegout(2, 0, 50_000, 1000)],
        &[],
        5,
    );
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::PegOutBatch {
            stage: BatchStage::Formed,
            ..
        }
    )));
    let b = s.batches[&BatchId(0)].clone();
    assert_eq!(b.outputs.len(), 2);
    assert_eq!(b.inputs.len(), 1);
    assert_eq!(b.inputs[0].1.amount, sats(1_000_000));
    let v0 = b.latest().clone();
    assert_eq!(
        b.input_total(),
        b.output_total() + v0.fee.to_sat() + v0.change.to_sat()
    );
    assert_eq!(s.utxos.len(), 1, "the input is locked");
    let tx = b.unsigned_tx(&p.federation, 0).unwrap();
    assert_eq!(tx.compute_txid(), v0.txid);

    // Invalid signatures (member 1 signs with member 2's key) are refused.
    let mut forged = sign(&s, 0, 2);
    forged.member = MemberIndex(1);
    forged.signature =
        FederationTx::sign(p.chain_id, MemberIndex(1), &member(1), forged.kind.clone()).signature;
    let blk = build_block(&s, &p, &[], &[forged], 6, 0, &VerifyAll);
    assert!(blk.block.fed_txs.is_empty());
    // Two signatures: not yet signed; the third completes it.
    let sigs = [sign(&s, 0, 0), sign(&s, 0, 3)];
    let ev = step(&mut s, &[], &sigs, 6);
    assert!(!ev.iter().any(|e| matches!(
        e,
        Event::PegOutBatch {
            stage: BatchStage::Signed { .. },
            ..
        }
    )));
    let sigs = [sign(&s, 0, 1)];
    let ev = step(&mut s, &[], &sigs, 7);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::PegOutBatch {
            stage: BatchStage::Signed { .. },
            ..
        }
    )));
    let full = assembled(&p, &s);
    assert_eq!(full.compute_txid(), tx.compute_txid());

    // Bump: f + 1 = 2 votes replace it at a higher rate, same inputs.
    step(&mut s, &[], &[bump0(0)], 8);
    assert_eq!(s.batches[&BatchId(0)].versions.len(), 1);
    let pool_before = s.fee_pool;
    let ev = step(&mut s, &[], &[bump0(3)], 9);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::PegOutBatch {
            stage: BatchStage::Replaced { version: 1, .. },
            ..
        }
    )));
    let b = s.batches[&BatchId(0)].clone();
    let v1 = b.latest().clone();
    assert!(v1.fee_rate > v0.fee_rate);
    assert!(v1.fee.to_sat() >= v0.fee.to_sat() + p.federation.batch_vbytes(1, 3, 31 * 2 + 43));
    assert_eq!(
        s.fee_pool.to_sat(),
        pool_before.to_sat() - (v1.fee.to_sat() - v0.fee.to_sat())
    );
    assert_ne!(v1.txid, v0.txid);
    // Old-version signatures are now stale.
    let stale = fed(
        0,
        FedTxKind::PegOutSignatures {
            batch: BatchId(0),
            version: 0,
            signatures: vec![],
        },
    );
    assert!(build_block(&s, &p, &[], &[stale], 10, 0, &VerifyAll)
        .block
        .fed_txs
        .is_empty());

    // The ORIGINAL version confirms: state follows it and refunds the bump.
    let unknown = fed(
        0,
        FedTxKind::PegOutConfirmed {
            batch: BatchId(0),
            txid: txid(9),
            bitcoin_block: block_hash(2),
        },
    );
    assert!(build_block(&s, &p, &[], &[unknown], 10, 0, &VerifyAll)
        .block
        .fed_txs
        .is_empty());
    let pool_before = s.fee_pool;
    let ev = step(
        &mut s,
        &[],
        &[fed(
            2,
            FedTxKind::PegOutConfirmed {
                batch: BatchId(0),
                txid: v0.txid,
                bitcoin_block: block_hash(2),
            },
        )],
        10,
    );
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::PegOutBatch {
            stage: BatchStage::Confirmed { version: 0 },
            ..
        }
    )));
    assert_eq!(
        s.fee_pool.to_sat(),
        pool_before.to_sat() + (v1.fee.to_sat() - v0.fee.to_sat())
    );
    assert!(s.batches.is_empty());
    assert!(s.withdrawals.is_empty());
    assert!(s.withdrawal_batch.is_empty());
    // Change of the confirmed version is spendable.
    assert_eq!(
        s.utxos
            .get(&OutPoint {
                txid: v0.txid,
                vout: 2
            })
            .map(|u| u.amount),
        Some(v0.change)
    );
    // A second confirmation of the same batch is refused.
    let again = fed(
        1,
        FedTxKind::PegOutConfirmed {
            batch: BatchId(0),
            txid: v0.txid,
            bitcoin_block: block_hash(2),
        },
    );
    assert!(build_block(&s, &p, &[], &[again], 11, 0, &VerifyAll)
        .block
        .fed_txs
        .is_empty());
}

#[test]
fn queue_waits_for_the_interval_and_for_funds() {
    let mut p = params();
    p.pegout.batch_interval_ms = 1000;
    let mut s = state();
    // A peg-out queued at block time 100 is batched only once block
    // time reaches 100 + the 1000 ms interval.
    deposit(&mut s, 1, 0, 200_000);
    let b = build_block(
        &s,
        &p,
        &[pegout(1, 0, 150_000, 1000)],
        &[],
        100,
        0,
        &VerifyAll,
    );
    s.commit(&b.block.header, &b.outcome);
    assert!(s.batches.is_empty(), "interval not over");
    let b = build_block(&s, &p, &[], &[], 1099, 0, &VerifyAll);
    s.commit(&b.block.header, &b.outcome);
    assert!(s.batches.is_empty(), "interval not over");
    let b = build_block(&s, &p, &[], &[], 1100, 0, &VerifyAll);
    s.commit(&b.block.header, &b.outcome);
    assert_eq!(s.batches.len(), 1);
    assert!(s.reserves().covered());
}

/// The state root of a fixed history: a registration, two mints, a
/// transfer, two peg-outs forming a batch, three members' signatures, a fee
/// bump (two votes), signatures of the replacement and its confirmation.
/// Every byte that feeds the root is hand-encoded (see `crate::state_root`
/// and `crate::encoding`); if this constant changes, members running the old
/// and the new build would fork, so the change needs a new state-root tag
/// and a note in the README, not a new constant.
#[test]
fn golden_state_root_of_a_fixed_history() {
    let mut s = state();
    deposit(&mut s, 1, 0, 1_000_000);
    deposit(&mut s, 2, 0, 300_000);
    let transfer = Transaction::sign(
        params().chain_id,
        &user(1),
        0,
        sats(10),
        TxKind::Transfer {
            to: uid(2),
            amount: sats(5_000),
        },
    );
    step(&mut s, &[transfer], &[], 2);
    step(
        &mut s,
        &[pegout(1, 1, 100_000, 5_000), pegout(2, 0, 50_000, 5_000)],
        &[],
        3,
    );
    assert_eq!(s.batches.len(), 1, "the two peg-outs form one batch");
    let sigs: Vec<_> = (0..3).map(|m| sign(&s, 0, m)).collect();
    step(&mut s, &[], &sigs, 4);
    step(&mut s, &[], &[bump0(0), bump0(3)], 5);
    assert_eq!(
        s.batches[&BatchId(0)].versions.len(),
        2,
        "f + 1 votes replace the batch"
    );
    let sigs: Vec<_> = (1..4).map(|m| sign(&s, 0, m)).collect();
    step(&mut s, &[], &sigs, 6);
    let txid = s.batches[&BatchId(0)].versions[1].txid;
    step(
        &mut s,
        &[],
        &[fed(
            2,
            FedTxKind::PegOutConfirmed {
                batch: BatchId(0),
                txid,
                bitcoin_block: block_hash(7),
            },
        )],
        7,
    );
    assert!(s.batches.is_empty(), "the confirmed batch left state");
    assert_eq!(s.height, Height(8));
    assert_eq!(
        s.state_root.to_hex(),
        "d5e7cc1e010ea0e7de126f2968266873fc9fb2160df7f7ade1860c3162fc43eb",
        "the state root of a fixed history changed: a consensus encoding changed"
    );
}

/// Stored batches and UTXOs round-trip through their canonical encoding, and
/// truncated or trailing bytes are refused rather than misread.
#[test]
fn batch_and_utxo_records_round_trip_and_refuse_damage() {
    use crate::pegout_batch::{Batch, Utxo};
    let mut s = state();
    deposit(&mut s, 1, 0, 1_000_000);
    step(&mut s, &[pegout(1, 0, 100_000, 5_000)], &[], 3);
    let sigs: Vec<_> = (0..2).map(|m| sign(&s, 0, m)).collect();
    step(&mut s, &[], &sigs, 4);
    let b = s.batches[&BatchId(0)].clone();
    let bytes = b.encode();
    assert_eq!(Batch::decode(&bytes).unwrap(), b);
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(Batch::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(Batch::decode(&long).is_err());
    let mut v3 = bytes;
    v3[0] = 3;
    assert!(Batch::decode(&v3)
        .unwrap_err()
        .to_string()
        .contains("version 3"));
    // A version-1 record (before epochs had descriptors) reads as epoch 0.
    let mut w = crate::encoding::Writer::default();
    w.u8(1);
    b.write(&mut w);
    assert_eq!((b.epoch, b.change_epoch), (0, 0));
    assert_eq!(Batch::decode(&w.buf).unwrap(), b);
    // A batch of a later epoch keeps its epochs, its inputs carry them.
    let mut later = b.clone();
    later.epoch = 2;
    later.change_epoch = 3;
    for (_, u) in &mut later.inputs {
        u.epoch = 2;
    }
    assert_eq!(Batch::decode(&later.encode()).unwrap(), later);
    for u in s.utxos.values() {
        assert_eq!(Utxo::decode(&u.encode()).unwrap(), *u);
    }
    assert!(Utxo::decode(&[1, 0, 0]).is_err());
}

/// [`params`] with consolidation below 5 sat/vB (the agreed rate here is
/// the default 2) into batches of at most `max_inputs` inputs.
fn consolidating(max_inputs: u32) -> LedgerParams {
    let mut p = params();
    p.pegout.consolidate_below_sat_vb = 5;
    p.pegout.max_inputs = max_inputs;
    p
}

/// A 1,000,000-sat deposit, eight small ones (10,000 to 17,000 sats) and a
/// second 10,000 (a tie), then one 100,000-sat peg-out (fee 5,000) under
/// `p`; the fee pool just before the peg-out's block.
fn small_deposits_then_a_pegout(p: &LedgerParams, s: &mut State) -> amount::Sats {
    deposit(s, 1, 0, 1_000_000);
    for v in 0..8 {
        deposit(s, 2, v, 10_000 + 1_000 * u64::from(v));
    }
    deposit(s, 3, 0, 10_000);
    assert_eq!(s.utxos.len(), 10);
    let pool = s.fee_pool;
    step_with(p, s, &[pegout(1, 0, 100_000, 5_000)], &[], 5);
    assert_eq!(s.batches.len(), 1);
    pool
}

fn op(acct: u8, vout: u32) -> OutPoint {
    OutPoint {
        txid: txid(acct),
        vout,
    }
}

/// Total bytes of a batch's peg-out outputs.
fn out_bytes(b: &pegout_batch::Batch) -> u64 {
    b.outputs
        .iter()
        .map(|o| fedpeg_peg::pegout::output_bytes(&o.script_pubkey))
        .sum()
}

/// Members `signers` sign batch 0's newest version, which then confirms
/// (block times `time`, `time + 1`); the value of its change UTXO.
fn sign_and_confirm(
    p: &LedgerParams,
    s: &mut State,
    signers: std::ops::Range<u32>,
    time: u64,
) -> Option<amount::Sats> {
    let sigs: Vec<_> = signers.map(|m| sign(s, 0, m)).collect();
    step_with(p, s, &[], &sigs, time);
    let b = &s.batches[&BatchId(0)];
    let txid = b.latest().txid;
    let vout = b.outputs.len() as u32;
    let confirm = fed(
        2,
        FedTxKind::PegOutConfirmed {
            batch: BatchId(0),
            txid,
            bitcoin_block: block_hash(2),
        },
    );
    step_with(p, s, &[], &[confirm], time + 1);
    s.utxos.get(&OutPoint { txid, vout }).map(|u| u.amount)
}

#[test]
fn a_low_fee_rate_batch_merges_the_smallest_utxos_into_its_change_up_to_max_inputs() {
    let p = consolidating(6);
    let mut s = state();
    let pool = small_deposits_then_a_pegout(&p, &mut s);
    let b = s.batches[&BatchId(0)].clone();
    // The largest pays; then the five smallest, smallest first (equal
    // amounts: the reverse of selection order, highest outpoint first).
    let spent: Vec<(OutPoint, u64)> = b
        .inputs
        .iter()
        .map(|(o, u)| (*o, u.amount.to_sat()))
        .collect();
    assert_eq!(
        spent,
        vec![
            (op(1, 0), 1_000_000),
            (op(3, 0), 10_000),
            (op(2, 0), 10_000),
            (op(2, 1), 11_000),
            (op(2, 2), 12_000),
            (op(2, 3), 13_000),
        ]
    );
    let v = b.latest();
    // Fee: the agreed rate (2) × the batch's worst-case vsize with change;
    // change: everything else, exactly.
    let fee = p.federation.batch_vbytes(6, 2, out_bytes(&b) + 43) * 2;
    assert_eq!(v.fee.to_sat(), fee);
    assert_eq!(v.change.to_sat(), 1_056_000 - 100_000 - fee);
    assert_eq!(b.input_total(), b.output_total() + fee + v.change.to_sat());
    // The fee pool pays it (the peg-out's fee came in the same block).
    assert_eq!(s.fee_pool.to_sat(), pool.to_sat() + 5_000 - fee);
    assert_eq!(s.utxos.len(), 4, "the six inputs are locked");

    // Confirmed: the merged value is one change UTXO; `step` checked
    // reserves = balances + fee pool + unpaid + reserved after each block.
    assert_eq!(sign_and_confirm(&p, &mut s, 0..3, 6), Some(v.change));
    assert_eq!(s.utxos.len(), 5);
    assert_eq!(s.reserves().confirmed(), s.total_value());
}

#[test]
fn at_or_above_the_consolidation_rate_a_batch_takes_only_the_inputs_that_pay() {
    for rate in [5, 9] {
        let mut p = consolidating(6);
        p.default_fee_rate = FeeRate(rate);
        let mut s = state();
        small_deposits_then_a_pegout(&p, &mut s);
        let b = &s.batches[&BatchId(0)];
        assert_eq!(b.inputs.len(), 1, "{rate} sat/vB");
        assert_eq!(b.inputs[0].0, op(1, 0));
        assert_eq!(s.utxos.len(), 9);
    }
}

#[test]
fn a_replacement_of_a_consolidating_batch_keeps_its_inputs_and_exact_fee_and_change() {
    let p = consolidating(6);
    let mut s = state();
    small_deposits_then_a_pegout(&p, &mut s);
    let v0 = s.batches[&BatchId(0)].latest().clone();
    let pool = s.fee_pool;
    step_with(&p, &mut s, &[], &[bump0(0), bump0(3)], 6);
    let b = s.batches[&BatchId(0)].clone();
    assert_eq!(b.versions.len(), 2);
    let v1 = b.latest().clone();
    // 2 sat/vB + 25 % (at least 1) = 3; BIP125 asks old fee + 1 sat/vB × size.
    assert_eq!(v1.fee_rate, FeeRate(3));
    let vbytes = p.federation.batch_vbytes(6, 2, out_bytes(&b) + 43);
    assert_eq!(v1.fee.to_sat(), (vbytes * 3).max(v0.fee.to_sat() + vbytes));
    assert_eq!(
        b.input_total(),
        b.output_total() + v1.fee.to_sat() + v1.change.to_sat()
    );
    assert_eq!(
        s.fee_pool.to_sat(),
        pool.to_sat() - (v1.fee.to_sat() - v0.fee.to_sat())
    );
    assert_eq!(b.fee_reserved, v1.fee);
    let tx = b.unsigned_tx(&p.federation, 1).unwrap();
    assert_eq!(tx.input.len(), 6);
    assert_eq!(tx.compute_txid(), v1.txid);
    // The replacement confirms; its change holds the merged value.
    assert_eq!(sign_and_confirm(&p, &mut s, 1..4, 7), Some(v1.change));
}

#[test]
fn a_consolidating_batch_transaction_spends_every_input_and_its_signed_vsize_fits_the_fee() {
    let p = consolidating(6);
    let mut s = state();
    small_deposits_then_a_pegout(&p, &mut s);
    let b = s.batches[&BatchId(0)].clone();
    let v = b.latest().clone();
    let tx = b.unsigned_tx(&p.federation, 0).unwrap();
    let prevouts: Vec<OutPoint> = tx.input.iter().map(|i| i.previous_output).collect();
    let inputs: Vec<OutPoint> = b.inputs.iter().map(|(o, _)| *o).collect();
    assert_eq!(prevouts, inputs);
    assert_eq!(tx.output.len(), 2, "the peg-out and the change");
    let spent = b.input_total();
    let paid: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    assert_eq!(
        spent - paid,
        v.fee.to_sat(),
        "the fee is what the tx leaves"
    );
    // Fully signed, the transaction is at most the size the fee was
    // computed for, and pays at least the agreed rate.
    let sigs: Vec<_> = (0..3).map(|m| sign(&s, 0, m)).collect();
    step_with(&p, &mut s, &[], &sigs, 6);
    let full = assembled(&p, &s);
    assert_eq!(full.compute_txid(), tx.compute_txid());
    let estimate = p.federation.batch_vbytes(6, 2, out_bytes(&b) + 43);
    let vsize = full.vsize() as u64;
    assert!(vsize <= estimate, "{vsize} > {estimate}");
    // The estimate assumes 73-byte signatures; real ones are at most 2
    // bytes (2 WU) shorter: 6 inputs × 3 signatures × 2 WU / 4, rounded up.
    assert!(
        estimate - vsize <= (6 * 3 * 2) / 4 + 1,
        "{vsize} vs {estimate}"
    );
    assert!(v.fee.to_sat() >= vsize * 2);
}

/// A bump the fee pool cannot pay makes no version and clears the votes, so
/// that the same members' later votes retry it once fees refilled the pool
/// (before, the votes stayed and every later vote was a duplicate: the
/// batch could never be bumped again).
#[test]
fn a_bump_the_fee_pool_cannot_pay_is_retried_when_it_can() {
    let mut s = state();
    deposit(&mut s, 1, 0, 1_000_000);
    step(&mut s, &[pegout(1, 0, 100_000, 1000)], &[], 5);
    assert_eq!(s.batches.len(), 1);
    // Empty the pool into user 9's balance (as if fees had been spent on
    // earlier bumps): still exactly accounted, now nothing to bump with.
    let pool = s.fee_pool;
    s.fee_pool = Sats::ZERO;
    s.accounts.entry(uid(9)).or_default().balance = pool;
    s.supply = s.supply.checked_add(pool).unwrap();
    let ev = step(&mut s, &[], &[bump0(0), bump0(3)], 6);
    assert!(!ev.iter().any(|e| matches!(
        e,
        Event::PegOutBatch {
            stage: BatchStage::Replaced { .. },
            ..
        }
    )));
    let b = &s.batches[&BatchId(0)];
    assert_eq!(b.versions.len(), 1, "nothing to pay a replacement with");
    assert!(b.latest().bump_votes.is_empty(), "the votes are spent");
    // User 9's transfer pays its balance as fee: the pool is refilled.
    let refill = Transaction::sign(
        params().chain_id,
        &user(9),
        0,
        pool.checked_sub(sats(1)).unwrap(),
        TxKind::Transfer {
            to: uid(1),
            amount: sats(1),
        },
    );
    step(&mut s, &[refill], &[], 7);
    assert!(s.fee_pool > Sats::ZERO);
    // The same members vote again: this time it is replaced.
    let ev = step(&mut s, &[], &[bump0(0), bump0(3)], 8);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::PegOutBatch {
            stage: BatchStage::Replaced { version: 1, .. },
            ..
        }
    )));
    assert_eq!(s.batches[&BatchId(0)].versions.len(), 2);
}

fn confirmed_tx(m: u32, batch: u64, txid: bitcoin::Txid) -> FederationTx {
    fed(
        m,
        FedTxKind::PegOutConfirmed {
            batch: BatchId(batch),
            txid,
            bitcoin_block: block_hash(7),
        },
    )
}

/// Batch 0 paying 100k sats from a 1 BTC deposit, signed, then bumped to a
/// version 1: the state, and the batch.
fn signed_and_bumped() -> (State, Batch) {
    let mut s = state();
    deposit(&mut s, 1, 0, 1_000_000);
    step(&mut s, &[pegout(1, 0, 100_000, 1000)], &[], 5);
    let sigs: Vec<_> = (0..3).map(|m| sign(&s, 0, m)).collect();
    step(&mut s, &[], &sigs, 6);
    step(&mut s, &[], &[bump0(0), bump0(3)], 7);
    let b = s.batches[&BatchId(0)].clone();
    (s, b)
}

/// Version 0 of a batch confirms, a later batch spends its change; then a
/// reorg deeper than the confirmation depth leaves version 1 in Bitcoin's
/// best chain instead. State follows: version 0's change leaves the UTXO
/// set, the pool pays the fee difference, and the later batch (which can
/// never be mined) is rebuilt to spend version 1's change in its place, as
/// one fresh unsigned version. Reserves stay exact after every block
/// (checked by `step`).
#[test]
fn after_a_deep_reorg_state_follows_the_version_bitcoin_shows() {
    let p = params();
    let (mut s, b) = signed_and_bumped();
    let (v0, v1) = (b.versions[0].clone(), b.versions[1].clone());
    assert!(v1.fee > v0.fee && v0.change > v1.change);
    let n = b.outputs.len() as u32;
    let change = |t: bitcoin::Txid| OutPoint { txid: t, vout: n };
    // Version 0 confirms.
    step(&mut s, &[], &[confirmed_tx(0, 0, v0.txid)], 8);
    assert!(s.batches.is_empty());
    assert_eq!(
        s.settled[&BatchId(0)].confirmed.as_ref().unwrap().version,
        0
    );
    assert_eq!(s.utxos[&change(v0.txid)].amount, v0.change);
    // A second peg-out: batch 1 spends version 0's change.
    step(&mut s, &[pegout(1, 1, 50_000, 1000)], &[], 9);
    let later = s.batches[&BatchId(1)].clone();
    assert!(later.inputs.iter().any(|(o, _)| *o == change(v0.txid)));
    let pool = s.fee_pool;
    // Bitcoin now shows version 1.
    let ev = step(&mut s, &[], &[confirmed_tx(1, 0, v1.txid)], 10);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::PegOutBatch {
            stage: BatchStage::Confirmed { version: 1 },
            ..
        }
    )));
    assert_eq!(
        s.settled[&BatchId(0)].confirmed.as_ref().unwrap().version,
        1
    );
    assert!(!s.utxos.contains_key(&change(v0.txid)));
    // Batch 1 now spends version 1's change: one fresh version to sign.
    let rebuilt = s.batches[&BatchId(1)].clone();
    assert_eq!(rebuilt.outputs, later.outputs);
    assert_eq!(
        rebuilt
            .inputs
            .iter()
            .map(|(o, u)| (*o, u.amount))
            .collect::<Vec<_>>(),
        vec![(change(v1.txid), v1.change)]
    );
    assert!(!s.utxos.contains_key(&change(v1.txid)), "spent by batch 1");
    assert_eq!(rebuilt.versions.len(), 1);
    let r = rebuilt.latest();
    assert!(r.signatures.is_empty());
    assert_ne!(r.txid, later.latest().txid);
    assert_eq!(
        rebuilt
            .unsigned_tx(&p.federation, 0)
            .unwrap()
            .compute_txid(),
        r.txid
    );
    assert_eq!(
        rebuilt.input_total(),
        rebuilt.output_total() + r.fee.to_sat() + r.change.to_sat()
    );
    assert_eq!(rebuilt.fee_reserved, r.fee);
    assert_eq!(
        s.fee_pool.to_sat(),
        pool.to_sat() + later.fee_reserved.to_sat()
            - r.fee.to_sat()
            - (v1.fee.to_sat() - v0.fee.to_sat())
    );
    // Members sign the rebuilt batch and it confirms like any other.
    let sigs: Vec<_> = (0..3).map(|m| sign(&s, 1, m)).collect();
    step(&mut s, &[], &sigs, 11);
    step(&mut s, &[], &[confirmed_tx(0, 1, r.txid)], 12);
    assert!(s.batches.is_empty());
    // The same claim again, or a txid that is no version: refused.
    for bad in [confirmed_tx(2, 0, v1.txid), confirmed_tx(2, 0, txid(0x99))] {
        let blk = build_block(&s, &p, &[], &[bad], 13, 0, &VerifyAll);
        assert!(blk.block.fed_txs.is_empty());
    }
}

/// A re-confirmation the fee pool cannot pay is refused as a whole: the
/// block built without it is the block every member applies (before, its
/// first changes stayed in the proposer's working state, so the proposer's
/// state root differed from every validator's and the chain halted).
#[test]
fn a_reconfirmation_the_pool_cannot_pay_is_left_out_without_a_trace() {
    let p = params();
    let (mut s, b) = signed_and_bumped();
    let (v0, v1) = (b.versions[0].clone(), b.versions[1].clone());
    step(&mut s, &[], &[confirmed_tx(0, 0, v0.txid)], 8);
    // Empty the pool (as in the bump test above): exactly accounted still.
    let pool = s.fee_pool;
    s.fee_pool = Sats::ZERO;
    s.accounts.entry(uid(9)).or_default().balance = pool;
    s.supply = s.supply.checked_add(pool).unwrap();
    let before = s.utxos.clone();
    let blk = build_block(
        &s,
        &p,
        &[],
        &[confirmed_tx(1, 0, v1.txid)],
        9,
        0,
        &VerifyAll,
    );
    assert!(blk.block.fed_txs.is_empty(), "the pool cannot pay it");
    let again = apply_block(&s, &blk.block, &p, &VerifyAll).unwrap();
    assert_eq!(
        again.delta, blk.outcome.delta,
        "proposer and validators agree"
    );
    assert!(blk.outcome.delta.spent_utxos.is_empty());
    s.commit(&blk.block.header, &blk.outcome);
    assert_eq!(s.utxos, before);
    assert_eq!(
        s.settled[&BatchId(0)].confirmed.as_ref().unwrap().version,
        0
    );
}

/// Pooled peg-out signatures ask for a block at once only when, with those
/// state already recorded, they reach the threshold: fewer are useless
/// until the rest arrive. Anything else pooled is urgent as before.
#[test]
fn pooled_signatures_are_urgent_only_once_they_complete_the_batch() {
    use crate::fed_pool::FedPool;
    let p = params();
    let m = p.federation.threshold();
    assert!(m >= 2);
    let mut s = state();
    deposit(&mut s, 1, 0, 1_000_000);
    step(&mut s, &[pegout(1, 0, 100_000, 1000)], &[], 5);
    let mut pool = FedPool::default();
    for member in 0..m as u32 - 1 {
        pool.admit(&s, &p, sign(&s, 0, member)).unwrap();
        assert!(!pool.urgent(&s), "{} of {m} signatures", member + 1);
    }
    pool.admit(&s, &p, sign(&s, 0, m as u32 - 1)).unwrap();
    assert!(pool.urgent(&s));
    // Recorded signatures count: one pooled signature completes a batch
    // that a block already gave m - 1.
    let sigs: Vec<_> = (0..m as u32 - 1).map(|i| sign(&s, 0, i)).collect();
    step(&mut s, &[], &sigs, 6);
    let mut pool = FedPool::default();
    // A member already recorded (pooled in a race with the block) does
    // not count twice.
    pool.insert(sign(&s, 0, 0)).unwrap();
    assert!(!pool.urgent(&s));
    pool.admit(&s, &p, sign(&s, 0, m as u32 - 1)).unwrap();
    assert!(pool.urgent(&s));
    // Once the batch has its m signatures, later ones are no reason for a
    // block; nor are signatures of a version that was replaced.
    let last = sign(&s, 0, m as u32 - 1);
    step(&mut s, &[], &[last], 7);
    if (m as u32) < 4 {
        let mut pool = FedPool::default();
        pool.admit(&s, &p, sign(&s, 0, m as u32)).unwrap();
        assert!(!pool.urgent(&s), "a surplus signature");
    }
    let (s2, _) = signed_and_bumped();
    let mut pool = FedPool::default();
    let stale = {
        let mut f = sign(&s2, 0, 3);
        if let FedTxKind::PegOutSignatures { version, .. } = &mut f.kind {
            *version = 0;
        }
        f
    };
    pool.insert(stale).unwrap();
    assert!(!pool.urgent(&s2), "a replaced version's signature");
    // Anything else is urgent on its own.
    let mut pool = FedPool::default();
    pool.admit(
        &s,
        &p,
        fed(
            0,
            FedTxKind::FeeRateVote {
                sat_per_vbyte: FeeRate(7),
                height: Height(s.height.0 + 1),
            },
        ),
    )
    .unwrap();
    assert!(pool.urgent(&s));
    assert!(!FedPool::default().urgent(&s));
}

/// Timelock rollover ([`crate::rollover`]): UTXOs older than the rollover
/// age form a batch of their own, paid back to the change address with the
/// fee from the pool, before the peg-out batch (which forms at the next
/// block); younger ones stay; the rolled coins are young again.
#[test]
fn utxos_nearing_their_timelock_are_rolled_back_to_change_before_peg_outs_batch() {
    let p = LedgerParams {
        rollover_after_ms: Some(1000),
        ..params()
    };
    let mut s = state();
    deposit_at(&p, &mut s, 1, 0, 1_000_000, 1);
    deposit_at(&p, &mut s, 2, 0, 500_000, 1);
    deposit_at(&p, &mut s, 3, 0, 300_000, 600);
    let ages: Vec<u64> = [1, 2, 3].map(|a| s.utxos[&op(a, 0)].created_ms).to_vec();
    assert_eq!(ages, vec![1, 1, 600], "each UTXO carries its block's time");
    step_with(&p, &mut s, &[], &[], 1000);
    assert!(s.batches.is_empty(), "999 ms old: not yet");
    let pool = s.fee_pool;
    // Due in the same block as a peg-out: the rollover goes first, alone.
    step_with(&p, &mut s, &[pegout(1, 0, 100_000, 5_000)], &[], 1001);
    assert_eq!(s.batches.len(), 1);
    let b = s.batches[&BatchId(0)].clone();
    assert!(b.outputs.is_empty(), "no peg-out in a rollover batch");
    let ins: Vec<OutPoint> = b.inputs.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        ins,
        vec![op(1, 0), op(2, 0)],
        "the two old ones, not the young one"
    );
    let v = b.latest();
    assert_eq!(v.change.to_sat() + v.fee.to_sat(), 1_500_000);
    // The pool pays the fee (it also took the peg-out's fee in this block;
    // `step_with` checks the exact accounting of reserves).
    assert!(s.fee_pool.to_sat() + v.fee.to_sat() > pool.to_sat());
    let tx = b.unsigned_tx(&p.federation, 0).unwrap();
    assert_eq!(tx.output.len(), 1);
    assert_eq!(
        tx.output[0].script_pubkey,
        p.federation.change_script_pubkey().unwrap()
    );
    assert_eq!(
        p.federation.batch_vbytes(2, 1, out_bytes(&b) + 43) * 2,
        v.fee.to_sat(),
        "fee at the agreed rate (2 sat/vB) for the planned weight"
    );
    // The next block forms the peg-out batch from the young UTXO.
    step_with(&p, &mut s, &[], &[], 1002);
    assert_eq!(s.batches.len(), 2);
    let pegouts = &s.batches[&BatchId(1)];
    assert_eq!(pegouts.outputs.len(), 1);
    assert_eq!(pegouts.inputs[0].0, op(3, 0));
    // Confirmed at 1004: the rolled coins are one change UTXO, young again.
    let change = sign_and_confirm(&p, &mut s, 0..3, 1003).unwrap();
    assert_eq!(change, v.change);
    let (o, u) = s
        .utxos
        .iter()
        .find(|(_, u)| u.owner == pegout_batch::Owner::Change)
        .unwrap();
    assert_eq!(u.created_ms, 1004, "{o}");
    step_with(&p, &mut s, &[], &[], 2003);
    assert_eq!(s.batches.len(), 1, "only the peg-out batch is in flight");
    step_with(&p, &mut s, &[], &[], 2004);
    assert_eq!(s.batches.len(), 2, "the change comes due in turn");
}

/// Without an emergency branch nothing is ever rolled, however old.
#[test]
fn without_an_emergency_branch_nothing_is_rolled() {
    let mut s = state();
    deposit(&mut s, 1, 0, 1_000_000);
    step(&mut s, &[], &[], u64::MAX / 2);
    assert!(s.batches.is_empty());
}

/// A backlog of due UTXOs (more than one batch's `max_inputs`) is rolled
/// one batch at a time: the peg-outs queued meanwhile get their batch at
/// the next block instead of waiting for every rollover to confirm.
#[test]
fn a_rollover_backlog_takes_one_batch_slot_at_a_time() {
    let mut p = LedgerParams {
        rollover_after_ms: Some(1000),
        ..params()
    };
    p.pegout.max_inputs = 2;
    let mut s = state();
    for a in 1..=5 {
        deposit_at(&p, &mut s, a, 0, 1_000_000, 1);
    }
    step_with(&p, &mut s, &[pegout(1, 0, 100_000, 5_000)], &[], 1001);
    assert_eq!(s.batches.len(), 1);
    assert!(
        s.batches[&BatchId(0)].outputs.is_empty(),
        "a rollover first"
    );
    assert_eq!(s.batches[&BatchId(0)].inputs.len(), 2);
    step_with(&p, &mut s, &[], &[], 1002);
    assert_eq!(s.batches.len(), 2);
    assert_eq!(
        s.batches[&BatchId(1)].outputs.len(),
        1,
        "the peg-out's batch, not a second rollover"
    );
    step_with(&p, &mut s, &[], &[], 1003);
    assert_eq!(s.batches.len(), 2, "the next rollover waits for the first");
}

/// A lone deposit and no other fee income: the pool holds its input's
/// spend cost but not the transaction's header and change output, so the
/// rollover cannot pay the agreed rate; it goes out at the highest rate
/// the pool pays (at least 1 sat/vB) instead of waiting until the backup
/// branch opens.
#[test]
fn a_lone_deposit_is_rolled_at_the_rate_the_pool_can_pay() {
    let p = LedgerParams {
        rollover_after_ms: Some(1000),
        ..params()
    };
    let mut s = state();
    deposit_at(&p, &mut s, 1, 0, 1_000_000, 1);
    let pool = s.fee_pool.to_sat();
    let agreed = s.fee_rate(&p).0;
    assert!(agreed >= 2, "the agreed rate leaves room below it");
    let full = p.federation.batch_vbytes(1, 1, 43) * agreed;
    assert!(
        full > pool,
        "the pool cannot pay the agreed rate: {full} > {pool}"
    );
    step_with(&p, &mut s, &[], &[], 1001);
    assert_eq!(s.batches.len(), 1, "rolled anyway");
    let v = s.batches[&BatchId(0)].latest().clone();
    assert!(v.fee.to_sat() <= pool);
    assert!(
        v.fee_rate.0 >= 1 && v.fee_rate.0 < agreed,
        "{:?}",
        v.fee_rate
    );
}
