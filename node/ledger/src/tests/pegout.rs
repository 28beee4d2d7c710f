//! Ledger tests of peg-out batches: forming, signing, bumping, confirming.

use super::{id as uid, key as user};
use crate::fedtx::{FedTxKind, FederationTx, OutPoint};
use crate::hash::Hash32;
use crate::ids::{BatchId, FeeRate, MemberIndex};
use crate::pegout_batch::{test_federation, test_peg_secrets};
use crate::testing::{block_hash, sats, txid};
use crate::tx::{Transaction, TxKind};
use crate::*;
use ed25519_dalek::SigningKey;
use fedpeg_consensus::Height;
use fedpeg_peg::bitcoin;

fn member(i: u32) -> SigningKey {
    SigningKey::from_bytes(&[100 + i as u8; 32])
}
pub(super) fn params() -> LedgerParams {
    LedgerParams {
        chain_id: Hash32::tagged("pegout-test", &[]),
        network: bitcoin::Network::Regtest,
        min_tx_fee: sats(1),
        pegout_fee: sats(1000),
        max_block_txs: 1000,
        members: (0..4).map(|i| member(i).verifying_key()).collect(),
        pegin_spend_vbytes: 132,
        default_fee_rate: FeeRate(2),
        min_fee_rate: FeeRate(1),
        max_fee_rate: FeeRate(1000),
        quote_validity_ms: 600_000,
        federation: test_federation(),
        pegout: Default::default(),
        confirmations: 1,
    }
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
    let p = params();
    let b = build_block(s, &p, txs, fed, time, 0, &VerifyAll);
    assert!(b.rejected.is_empty(), "{:?}", b.rejected);
    assert_eq!(
        b.block.fed_txs.len(),
        fed.len(),
        "a federation tx was left out"
    );
    let again = apply_block(s, &b.block, &p, &VerifyAll).unwrap();
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
        },
    ));
    step(s, &[], &f, 1);
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

#[test]
fn batch_forms_is_signed_bumped_and_confirmed_with_change() {
    let p = params();
    let mut s = State::default();
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
    let signed: Vec<(usize, Vec<Vec<u8>>)> = s.batches[&BatchId(0)]
        .latest()
        .signatures
        .iter()
        .map(|(m, v)| (m.index(), v.clone()))
        .collect();
    let full = p
        .federation
        .assemble_batch(&tx, &s.batches[&BatchId(0)].batch_inputs(), &signed)
        .unwrap();
    assert_eq!(full.compute_txid(), tx.compute_txid());

    // Bump: f + 1 = 2 votes replace it at a higher rate, same inputs.
    let bump = |m| {
        fed(
            m,
            FedTxKind::PegOutBump {
                batch: BatchId(0),
                version: 0,
            },
        )
    };
    step(&mut s, &[], &[bump(0)], 8);
    assert_eq!(s.batches[&BatchId(0)].versions.len(), 1);
    let pool_before = s.fee_pool;
    let ev = step(&mut s, &[], &[bump(3)], 9);
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
    let mut s = State::default();
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
    let mut s = State::default();
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
    let bump = |m| {
        fed(
            m,
            FedTxKind::PegOutBump {
                batch: BatchId(0),
                version: 0,
            },
        )
    };
    step(&mut s, &[], &[bump(0), bump(3)], 5);
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
    let mut s = State::default();
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
    let mut v2 = bytes;
    v2[0] = 2;
    assert!(Batch::decode(&v2)
        .unwrap_err()
        .to_string()
        .contains("version 2"));
    for u in s.utxos.values() {
        assert_eq!(Utxo::decode(&u.encode()).unwrap(), *u);
    }
    assert!(Utxo::decode(&[1, 0, 0]).is_err());
}
