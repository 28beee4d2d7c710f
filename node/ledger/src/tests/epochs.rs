//! Ledger tests of federation epochs: votes for a change, adoption at
//! quorum, refusals, activation (who signs, what is reset) and peg-out
//! signatures keyed by peg-key index.

use super::pegout::{deposit, fed, member, params, pegout, state, step};
use crate::epoch::{Epoch, EpochMember, FederationChange, MAX_ACTIVATION_LEAD};
use crate::fedtx::{FedTxKind, FederationTx};
use crate::ids::{BatchId, FeeRate, MemberIndex};
use crate::pegout_batch::test_peg_secrets;
use crate::testing::epoch_member;
use crate::*;
use ed25519_dalek::SigningKey;
use fedpeg_consensus::Height;
use proptest::prelude::*;

/// Genesis member `i` (0..4) as an epoch member (peg key `i` of the federation).
fn genesis_member(i: u8) -> EpochMember {
    epoch_member(i, member(i as u32).verifying_key())
}

/// The consensus key of newcomer `i`.
fn newcomer_key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[150 + i; 32])
}

/// Newcomer `i`: a new consensus key and a peg key of no federation.
fn newcomer(i: u8) -> EpochMember {
    EpochMember {
        name: format!("new{i}"),
        ..epoch_member(40 + i, newcomer_key(i).verifying_key())
    }
}

/// Newcomer 0 first, then genesis members 2, 0, 1 (member 3 leaves): every
/// one of them sits at another index than in genesis.
fn reshuffle(activation: u64) -> FederationChange {
    FederationChange {
        members: vec![
            newcomer(0),
            genesis_member(2),
            genesis_member(0),
            genesis_member(1),
        ],
        peg_threshold: 3,
        activation: Height(activation),
        base_epoch: 0,
    }
}

/// Genesis member `m`'s vote for `change`.
fn vote(m: u32, change: &FederationChange) -> FederationTx {
    fed(
        m,
        FedTxKind::FederationChange {
            change: change.clone(),
        },
    )
}

fn votes_of(events: &[Event]) -> Vec<(u32, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::FederationChangeVote { votes, needed, .. } => Some((*votes, *needed)),
            _ => None,
        })
        .collect()
}

/// Empty blocks until the state is at `height`.
fn advance_to(s: &mut State, height: u64) {
    while s.height.0 < height {
        let t = s.tip_time_ms + 1;
        step(s, &[], &[], t);
    }
}

#[test]
fn a_change_is_adopted_at_quorum_not_before_and_votes_stand() {
    let mut s = state();
    let a = reshuffle(20);
    let b = FederationChange {
        members: vec![genesis_member(0), genesis_member(1), genesis_member(2)],
        ..reshuffle(20)
    };
    // Quorum of 4 is 3.
    let ev = step(&mut s, &[], &[vote(0, &b), vote(1, &b)], 1);
    assert_eq!(votes_of(&ev), vec![(1, 3), (2, 3)]);
    assert_eq!(s.epochs.len(), 1, "two of three votes adopt nothing");
    // A vote for another change does not count for the first.
    let ev = step(&mut s, &[], &[vote(3, &a)], 2);
    assert_eq!(votes_of(&ev), vec![(1, 3)]);
    assert_eq!(s.epochs.len(), 1);
    // A vote stands: member 3 cannot switch to `b` (nor could anyone
    // replay an older vote of a member to switch it back).
    let e = check_fed_tx(&s, &params(), &vote(3, &b)).unwrap_err();
    assert!(e.to_string().contains("already voted for change"), "{e}");
    // The same vote again is a duplicate.
    assert_eq!(
        check_fed_tx(&s, &params(), &vote(1, &b)),
        Err(FedTxError::Duplicate(MemberIndex(1)))
    );
    step(&mut s, &[], &[], 3);
    step(&mut s, &[], &[], 4);
    // The third vote for `b` adopts it in this block.
    let ev = step(&mut s, &[], &[vote(2, &b)], 5);
    assert!(ev.contains(&Event::FederationChangeAdopted {
        change: b.id(),
        epoch: 1,
        activation: Height(20),
    }));
    assert_eq!(
        s.epochs[1],
        Epoch {
            number: 1,
            activation: Height(20),
            adopted: Height(5),
            members: b.members.clone(),
            peg_threshold: 3,
        }
    );
    assert!(s.change_votes.is_empty(), "adoption clears the votes");
    // Member 3's vote for `a`, replayed, is refused while `b` waits.
    assert!(matches!(
        check_fed_tx(&s, &params(), &vote(3, &a)),
        Err(FedTxError::ChangePending { .. })
    ));
    assert_eq!(s.next_epoch(), Some(&s.epochs[1]));
    // While it waits to activate, no other change is voted.
    assert_eq!(
        check_fed_tx(&s, &params(), &vote(3, &reshuffle(30))),
        Err(FedTxError::ChangePending {
            activation: Height(20)
        })
    );
    assert_eq!(s.epoch_at(Height(19)).number, 0);
    assert_eq!(s.epoch_at(Height(20)).number, 1);
    assert_eq!(s.epoch_at(Height(u64::MAX)).number, 1);
    assert_eq!(s.validators_at(Height(20)), s.epochs[1].consensus_keys());
    advance_to(&mut s, 19);
    assert_eq!(s.next_epoch(), None, "in force at the next block");
}

#[test]
fn refusals_name_the_reason() {
    let s = state();
    let p = params();
    let check = |c: &FederationChange| check_fed_tx(&s, &p, &vote(0, c));
    // The next block is 1: activation 11..=1_000_001.
    assert!(check(&reshuffle(11)).is_ok());
    assert!(check(&reshuffle(1 + MAX_ACTIVATION_LEAD)).is_ok());
    for bad in [10, 2 + MAX_ACTIVATION_LEAD] {
        assert!(matches!(
            check(&reshuffle(bad)),
            Err(FedTxError::ActivationLead { .. })
        ));
    }
    let refused = |c: FederationChange, why: &str| match check(&c) {
        Err(FedTxError::BadFederationChange(e)) => assert!(e.contains(why), "{e} lacks {why}"),
        other => panic!("{other:?}: expected a refusal with {why}"),
    };
    let mut c = reshuffle(20);
    c.members[1].name = "m0".into();
    refused(c, "repeated");
    let mut c = reshuffle(20);
    c.members[0].consensus_key = c.members[1].consensus_key;
    refused(c, "consensus_key is repeated");
    let mut c = reshuffle(20);
    let mut identity = [0u8; 32];
    identity[0] = 1;
    c.members[0].consensus_key = ed25519_dalek::VerifyingKey::from_bytes(&identity).unwrap();
    refused(c, "weak");
    let mut c = reshuffle(20);
    c.members[0].peg_key = c.members[1].peg_key;
    refused(c, "peg_key is repeated");
    // The threshold must be safe for the new size: f < m <= n - f.
    let mut c = reshuffle(20);
    c.peg_threshold = 2;
    assert!(check(&c).is_ok(), "2 of 4 is safe");
    for m in [1, 4] {
        let mut c = reshuffle(20);
        c.peg_threshold = m;
        refused(c, &format!("peg_threshold {m} of 4 members is unsafe"));
    }
    // Continuity: the new members hold 3 (the threshold) of epoch 0's keys.
    let mut c = reshuffle(20);
    c.members[1] = newcomer(1);
    refused(c, "only 2 of the 4 peg keys of epoch 0 are held");
    refused(
        FederationChange {
            members: vec![],
            ..reshuffle(20)
        },
        "lists 0",
    );
    // Only members of the epoch in force vote.
    let mut outsider = vote(0, &reshuffle(20));
    outsider.member = MemberIndex(4);
    assert!(matches!(
        check_fed_tx_unsigned(&s, &p, &outsider),
        Err(FedTxError::NotAMember { .. })
    ));
    let forged = FederationTx::sign(
        p.chain_id,
        MemberIndex(0),
        &newcomer_key(0),
        FedTxKind::FederationChange {
            change: reshuffle(20),
        },
    );
    assert_eq!(
        check_fed_tx(&s, &p, &forged),
        Err(FedTxError::BadSignature(MemberIndex(0)))
    );
}

/// Adopts [`reshuffle`]`(activation)` with genesis members 0, 1, 2.
fn adopt(s: &mut State, activation: u64) {
    let c = reshuffle(activation);
    let t = s.tip_time_ms + 1;
    step(s, &[], &[vote(0, &c), vote(1, &c), vote(2, &c)], t);
    assert_eq!(s.epochs.len(), 2);
}

/// Newcomer 0 (member 0 of the reshuffled epoch) registers an account.
fn newcomer_registers(account: u8) -> FederationTx {
    FederationTx::sign(
        params().chain_id,
        MemberIndex(0),
        &newcomer_key(0),
        FedTxKind::RegisterDepositAddress {
            account: super::id(account),
        },
    )
}

#[test]
fn at_activation_the_new_members_sign_and_old_votes_are_dropped() {
    let mut s = state();
    let p = params();
    adopt(&mut s, 12);
    let fee_vote = fed(
        3,
        FedTxKind::FeeRateVote {
            sat_per_vbyte: FeeRate(40),
            height: Height(2),
        },
    );
    step(&mut s, &[], &[fee_vote], 2);
    assert!(!s.fee_votes.is_empty());
    advance_to(&mut s, 10);
    // Block 12 is the first of epoch 1: in block 11 the newcomer is nobody...
    let b = build_block(&s, &p, &[], &[newcomer_registers(7)], 20, 0, &VerifyAll);
    assert!(b.block.fed_txs.is_empty(), "refused before activation");
    step(&mut s, &[], &[], 20);
    assert_eq!(s.height, Height(11));
    // ... in block 12 it signs, and genesis member 3 (gone) does not.
    let gone = fed(
        3,
        FedTxKind::RegisterDepositAddress {
            account: super::id(8),
        },
    );
    assert_eq!(
        check_fed_tx(&s, &p, &gone),
        Err(FedTxError::BadSignature(MemberIndex(3)))
    );
    assert!(check_fed_tx(&s, &p, &newcomer_registers(7)).is_ok());
    step(&mut s, &[], &[newcomer_registers(7)], 21);
    assert_eq!(s.height, Height(12));
    assert!(s.registered.contains(&super::id(7)));
    assert!(
        s.fee_votes.is_empty(),
        "fee votes of the old epoch are dropped"
    );
    assert_eq!(s.fee_rate(&p), p.default_fee_rate);
}

#[test]
fn activation_drops_fee_and_change_votes_in_state_and_state_root() {
    // The same history but for an activation: the roots differ from it on.
    let mut s = state();
    adopt(&mut s, 12);
    advance_to(&mut s, 11);
    let mut without = s.clone();
    without.epochs.pop();
    step(&mut s, &[], &[], 30);
    step(&mut without, &[], &[], 30);
    assert_ne!(s.state_root, without.state_root);
}

#[test]
fn peg_out_signatures_are_keyed_by_peg_index_not_member_index() {
    let p = params();
    let mut s = state();
    deposit(&mut s, 1, 0, 1_000_000);
    step(&mut s, &[pegout(1, 0, 100_000, 1000)], &[], 5);
    assert_eq!(s.batches.len(), 1);
    // Genesis member 0 votes to bump (one vote of the two needed).
    step(
        &mut s,
        &[],
        &[fed(
            0,
            FedTxKind::PegOutBump {
                batch: BatchId(0),
                version: 0,
            },
        )],
        6,
    );
    assert_eq!(s.batches[&BatchId(0)].latest().bump_votes.len(), 1);
    let activation = s.height.0 + 1 + 10;
    adopt(&mut s, activation);
    advance_to(&mut s, activation);
    assert!(
        s.batches[&BatchId(0)].latest().bump_votes.is_empty(),
        "bump votes of the old epoch are dropped"
    );
    // Member 1 of epoch 1 is genesis member 2: it signs with peg key 2.
    let b = s.batches[&BatchId(0)].clone();
    let tx = b.unsigned_tx(&p.federation, 0).unwrap();
    let sigs = p
        .federation
        .sign_batch(&tx, &b.batch_inputs(), &test_peg_secrets()[2])
        .unwrap();
    let signed = |m: u32, key: &SigningKey, sigs: Vec<Vec<u8>>| {
        FederationTx::sign(
            p.chain_id,
            MemberIndex(m),
            key,
            FedTxKind::PegOutSignatures {
                batch: BatchId(0),
                version: 0,
                signatures: sigs,
            },
        )
    };
    // The newcomer holds no peg key of the federation.
    assert_eq!(
        check_fed_tx(&s, &p, &signed(0, &newcomer_key(0), sigs.clone())),
        Err(FedTxError::NoPegKey {
            member: MemberIndex(0),
            epoch: 0
        })
    );
    let t = s.tip_time_ms + 1;
    step(&mut s, &[], &[signed(1, &member(2), sigs.clone())], t);
    let recorded = &s.batches[&BatchId(0)].latest().signatures;
    assert_eq!(
        recorded.keys().copied().collect::<Vec<_>>(),
        vec![MemberIndex(2)]
    );
    // Signing with its old index's key (peg key 1) is refused.
    let wrong = p
        .federation
        .sign_batch(&tx, &b.batch_inputs(), &test_peg_secrets()[1])
        .unwrap();
    assert!(check_fed_tx(&s, &p, &signed(2, &member(0), wrong)).is_err());
    // And a second submission by the same signer is a duplicate.
    assert_eq!(
        check_fed_tx(&s, &p, &signed(1, &member(2), sigs)),
        Err(FedTxError::Duplicate(MemberIndex(1)))
    );
}

proptest! {
    /// `epoch_at` is the last epoch activated at or below the height.
    #[test]
    fn epoch_at_agrees_with_a_linear_scan(
        gaps in proptest::collection::vec(1u64..50, 0..6),
        h in 0u64..400,
    ) {
        let mut s = state();
        let mut at = 0;
        for (i, g) in gaps.iter().enumerate() {
            at += g;
            s.epochs.push(Epoch { number: i as u32 + 1, activation: Height(at), ..s.epochs[0].clone() });
        }
        let scan = s.epochs.iter().rev().find(|e| e.activation.0 <= h).unwrap();
        prop_assert_eq!(s.epoch_at(Height(h)), scan);
        // Boundaries: an epoch is in force exactly from its activation.
        for e in &s.epochs {
            prop_assert_eq!(s.epoch_at(e.activation).number, e.number);
            if e.number > 0 {
                prop_assert_eq!(s.epoch_at(Height(e.activation.0 - 1)).number, e.number - 1);
            }
        }
    }
}

/// A vote whose change can no longer be adopted (its activation less than
/// MIN_ACTIVATION_LEAD ahead) expires, and its member may vote again; the
/// expired vote, replayed, is refused. A vote naming another epoch than the
/// one in force is refused.
#[test]
fn votes_expire_with_their_activation_and_name_the_epoch_they_replace() {
    let mut s = state();
    let a = reshuffle(15);
    step(&mut s, &[], &[vote(0, &a)], 1);
    assert!(s.change_votes.contains_key(&MemberIndex(0)));
    step(&mut s, &[], &[], 2);
    step(&mut s, &[], &[], 3);
    step(&mut s, &[], &[], 4);
    step(&mut s, &[], &[], 5);
    assert!(s.change_votes.contains_key(&MemberIndex(0)), "15 >= 5 + 10");
    step(&mut s, &[], &[], 6);
    assert!(
        s.change_votes.is_empty(),
        "15 < 6 + 10: expired as block 6 starts"
    );
    assert!(matches!(
        check_fed_tx(&s, &params(), &vote(0, &a)),
        Err(FedTxError::ActivationLead { .. })
    ));
    let b = reshuffle(40);
    check_fed_tx(&s, &params(), &vote(0, &b)).expect("member 0 votes again");
    let wrong_epoch = FederationChange {
        base_epoch: 1,
        ..reshuffle(40)
    };
    let e = check_fed_tx(&s, &params(), &vote(0, &wrong_epoch)).unwrap_err();
    assert!(
        e.to_string().contains("replaces epoch 1, but epoch 0"),
        "{e}"
    );
}

/// The consensus key of member `m` of the [`reshuffle`]d epoch: newcomer 0,
/// then genesis members 2, 0, 1.
fn reshuffled_key(m: u32) -> SigningKey {
    match m {
        0 => newcomer_key(0),
        1 => member(2),
        2 => member(0),
        _ => member(1),
    }
}

/// The peg secret of member `m` of the [`reshuffle`]d epoch.
fn reshuffled_peg_secret(m: u32) -> fedpeg_peg::bitcoin::secp256k1::SecretKey {
    match m {
        // `newcomer(0)` is `epoch_member(40, ..)`: secret [41; 32].
        0 => fedpeg_peg::bitcoin::secp256k1::SecretKey::from_slice(&[41; 32]).unwrap(),
        1 => test_peg_secrets()[2],
        2 => test_peg_secrets()[0],
        _ => test_peg_secrets()[1],
    }
}

/// A federation transaction of member `m` of the reshuffled epoch.
fn fed1(m: u32, kind: FedTxKind) -> FederationTx {
    FederationTx::sign(params().chain_id, MemberIndex(m), &reshuffled_key(m), kind)
}

/// Member `m`'s (of the epoch in force) signatures of `batch`'s newest
/// version with `secret`, built as the daemon signer does: sighash and
/// tweaks of the batch epoch's federation, change of its change epoch's.
fn signatures_of(
    s: &State,
    batch: u64,
    secret: &fedpeg_peg::bitcoin::secp256k1::SecretKey,
) -> FedTxKind {
    let p = params();
    let b = &s.batches[&BatchId(batch)];
    let v = b.versions.len() - 1;
    let fed = p.epoch_federation(s, b.epoch).unwrap();
    let change = p.epoch_federation(s, b.change_epoch).unwrap();
    let tx = b.unsigned_tx(&change, v).unwrap();
    FedTxKind::PegOutSignatures {
        batch: BatchId(batch),
        version: v as u32,
        signatures: fed.sign_batch(&tx, &b.batch_inputs(), secret).unwrap(),
    }
}

/// Member 0 (genesis member 0 in both test epochs) registers account 1.
fn register_1() -> FederationTx {
    fed(
        0,
        FedTxKind::RegisterDepositAddress {
            account: super::id(1),
        },
    )
}

fn mint_kind(vout: u32, amount: u64, epoch: u32) -> FedTxKind {
    FedTxKind::PegInMint {
        outpoint: crate::fedtx::OutPoint {
            txid: crate::testing::txid(1),
            vout,
        },
        amount: crate::testing::sats(amount),
        account: super::id(1),
        bitcoin_block: crate::testing::block_hash(1),
        epoch,
    }
}

fn refused_with(r: Result<(), FedTxError>, why: &str) {
    match r {
        Err(FedTxError::BadFederationChange(e)) => assert!(e.contains(why), "{e} lacks {why}"),
        other => panic!("{other:?}: expected a refusal with {why}"),
    }
}

#[test]
fn epoch_0_federation_is_the_genesis_one_and_a_later_epoch_has_its_own() {
    let p = params();
    let s = state();
    assert_eq!(p.federation_of(&s.epochs[0]).unwrap(), p.federation);
    // Derived from the members like any later epoch, genesis gives the
    // genesis federation too (same keys in member order, same threshold).
    let as_later = Epoch {
        number: 7,
        ..s.epochs[0].clone()
    };
    assert_eq!(p.federation_of(&as_later).unwrap(), p.federation);
    let other = Epoch {
        number: 1,
        activation: Height(20),
        adopted: Height(1),
        members: reshuffle(20).members,
        peg_threshold: 3,
    };
    let f = p.federation_of(&other).unwrap();
    assert_ne!(
        f.change_script_pubkey().unwrap(),
        p.federation.change_script_pubkey().unwrap()
    );
    assert_eq!(f.key_index(&reshuffle(20).members[0].peg_key), Some(0));
    // Cached: the same value again.
    assert_eq!(p.federation_of(&other).unwrap(), f);
}

#[test]
fn after_activation_old_coins_are_swept_to_the_new_descriptor_before_peg_outs() {
    let p = params();
    let mut s = state();
    deposit(&mut s, 1, 0, 1_000_000);
    let activation = s.height.0 + 1 + 10;
    adopt(&mut s, activation);
    advance_to(&mut s, activation - 1);
    assert!(
        s.batches.is_empty(),
        "nothing is swept before the activation"
    );
    let t = s.tip_time_ms + 1;
    // The activation block queues a peg-out and forms the sweep.
    step(&mut s, &[pegout(1, 0, 100_000, 1000)], &[], t);
    assert_eq!(s.height.0, activation);
    assert_eq!(s.batches.len(), 1, "the sweep, not a peg-out batch");
    let sweep = s.batches[&BatchId(0)].clone();
    assert!(sweep.outputs.is_empty());
    assert_eq!((sweep.epoch, sweep.change_epoch), (0, 1));
    assert_eq!(sweep.inputs.len(), 1);
    let fed1_ = p.federation_of(&s.epochs[1]).unwrap();
    let tx = sweep.unsigned_tx(&fed1_, 0).unwrap();
    assert_eq!(tx.output.len(), 1);
    assert_eq!(
        tx.output[0].script_pubkey,
        fed1_.change_script_pubkey().unwrap(),
        "the change pays the new descriptor"
    );
    // Peg-outs wait: no coin pays the new descriptor yet.
    step(&mut s, &[], &[], t + 1);
    assert_eq!(s.batches.len(), 1);
    assert_eq!(s.withdrawals.len(), 1);
    // No further change until the sweep is confirmed.
    let again = FederationChange {
        members: s.epochs[1].members.clone(),
        peg_threshold: 2,
        activation: Height(s.height.0 + 20),
        base_epoch: 1,
    };
    let vote_again = fed1(
        1,
        FedTxKind::FederationChange {
            change: again.clone(),
        },
    );
    // A further change during the sweep is allowed while the new set
    // still holds the threshold of every epoch that has coins (a remedy
    // for a sweep that old-key holders stall), and refused otherwise.
    check_fed_tx(&s, &p, &vote_again).expect("continuity holds for epochs 0 and 1");
    let too_few = FederationChange {
        members: vec![
            newcomer(0),
            newcomer(1),
            genesis_member(2),
            genesis_member(0),
        ],
        peg_threshold: 3,
        ..again.clone()
    };
    refused_with(
        check_fed_tx(
            &s,
            &p,
            &fed1(1, FedTxKind::FederationChange { change: too_few }),
        ),
        "only 2 of the 4 peg keys of epoch 0",
    );
    // An old peg key listed under a newcomer does not count: its secret
    // stays with the member who held it.
    let mut borrowed = again.clone();
    let g1 = borrowed
        .members
        .iter()
        .position(|m| m.name == genesis_member(1).name)
        .unwrap();
    borrowed.members[g1] = EpochMember {
        peg_key: genesis_member(1).peg_key,
        ..newcomer(1)
    };
    refused_with(
        check_fed_tx(
            &s,
            &p,
            &fed1(1, FedTxKind::FederationChange { change: borrowed }),
        ),
        "only 2 of the 4 peg keys of epoch 0",
    );
    // The newcomer holds no peg key of epoch 0: it cannot sign the sweep.
    assert_eq!(
        check_fed_tx(
            &s,
            &p,
            &fed1(0, signatures_of(&s, 0, &reshuffled_peg_secret(0)))
        ),
        Err(FedTxError::NoPegKey {
            member: MemberIndex(0),
            epoch: 0
        })
    );
    // Members holding epoch 0's keys sign, under their epoch-0 peg index.
    let sigs: Vec<FederationTx> = (1..4)
        .map(|m| fed1(m, signatures_of(&s, 0, &reshuffled_peg_secret(m))))
        .collect();
    let ev = step(&mut s, &[], &sigs, t + 2);
    let b = &s.batches[&BatchId(0)];
    assert_eq!(
        b.latest().signatures.keys().copied().collect::<Vec<_>>(),
        vec![MemberIndex(0), MemberIndex(1), MemberIndex(2)]
    );
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::PegOutBatch {
            stage: BatchStage::Signed { .. },
            ..
        }
    )));
    // The witnesses assemble under epoch 0's descriptor.
    let signed: Vec<(usize, Vec<Vec<u8>>)> = b
        .latest()
        .signatures
        .iter()
        .map(|(k, v)| (k.index(), v.clone()))
        .collect();
    let tx = b.unsigned_tx(&fed1_, 0).unwrap();
    p.federation
        .assemble_batch(&tx, &b.batch_inputs(), &signed)
        .unwrap();
    // The sweep confirms: its change is a coin of epoch 1, and the queued
    // peg-out forms its batch from it in the same block.
    let confirmed = fed1(
        1,
        FedTxKind::PegOutConfirmed {
            batch: BatchId(0),
            txid: sweep.latest().txid,
            bitcoin_block: crate::testing::block_hash(9),
        },
    );
    step(&mut s, &[], &[confirmed], t + 3);
    let pay = s.batches[&BatchId(1)].clone();
    assert_eq!(pay.outputs.len(), 1);
    assert_eq!((pay.epoch, pay.change_epoch), (1, 1));
    assert!(pay.inputs.iter().all(|(_, u)| u.epoch == 1));
    assert!(s.utxos.values().all(|u| u.epoch == 1));
    // The newcomer signs it with its own key, at its epoch-1 peg index.
    let newcomer_sig = fed1(0, signatures_of(&s, 1, &reshuffled_peg_secret(0)));
    step(&mut s, &[], &[newcomer_sig], t + 4);
    assert_eq!(
        s.batches[&BatchId(1)]
            .latest()
            .signatures
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![MemberIndex(0)]
    );
    // Nothing of epoch 0 is left: the next change may be voted.
    assert!(check_fed_tx(&s, &p, &vote_again).is_ok());
}

#[test]
fn a_deposit_to_the_previous_epoch_is_credited_during_its_grace_only() {
    let p = params();
    let mut s = state();
    step(&mut s, &[], &[register_1()], 1);
    let activation = s.height.0 + 1 + 10;
    adopt(&mut s, activation);
    // Adopted but not in force: a mint naming it is refused.
    let early = fed(0, mint_kind(0, 100_000, 1));
    assert_eq!(
        check_fed_tx(&s, &p, &early),
        Err(FedTxError::MintEpoch {
            epoch: 1,
            current: 0,
            height: s.height.next()
        })
    );
    advance_to(&mut s, activation);
    // An unknown (future) epoch is refused.
    assert!(matches!(
        check_fed_tx(&s, &p, &fed1(1, mint_kind(0, 100_000, 2))),
        Err(FedTxError::MintEpoch { epoch: 2, .. })
    ));
    // The epoch in force and the previous one (in grace) are credited.
    let t = s.tip_time_ms + 1;
    step(
        &mut s,
        &[],
        &[
            fed1(1, mint_kind(0, 100_000, 0)),
            fed1(1, mint_kind(1, 100_000, 1)),
        ],
        t,
    );
    let epoch_of = |s: &State, vout: u32| {
        let o = crate::fedtx::OutPoint {
            txid: crate::testing::txid(1),
            vout,
        };
        s.utxos
            .get(&o)
            .copied()
            .or_else(|| {
                s.batches
                    .values()
                    .flat_map(|b| b.inputs.iter())
                    .find(|(i, _)| *i == o)
                    .map(|(_, u)| *u)
            })
            .unwrap()
            .epoch
    };
    assert_eq!((epoch_of(&s, 0), epoch_of(&s, 1)), (0, 1));
    // The grace deposit is swept at once (the only coin of a past epoch).
    let sweep = &s.batches[&BatchId(0)];
    assert_eq!((sweep.epoch, sweep.change_epoch), (0, 1));
    // The last block of the grace still credits epoch 0; the next does not.
    let last = activation + crate::epoch::DEPOSIT_GRACE_BLOCKS - 1;
    let mut late = s.clone();
    late.height = Height(last - 1);
    assert!(check_fed_tx(&late, &p, &fed1(1, mint_kind(2, 100_000, 0))).is_ok());
    late.height = Height(last);
    assert_eq!(
        check_fed_tx(&late, &p, &fed1(1, mint_kind(2, 100_000, 0))),
        Err(FedTxError::MintEpoch {
            epoch: 0,
            current: 1,
            height: Height(last + 1)
        })
    );
    assert!(check_fed_tx(&late, &p, &fed1(1, mint_kind(2, 100_000, 1))).is_ok());
    // A change adopted earlier in the same block ends the grace for the
    // mints after it: a proposer cannot order an old-epoch mint behind the
    // adopting vote (its coin might not be signable by the set after).
    let next = FederationChange {
        members: s.epochs[1].members.clone(),
        peg_threshold: 2,
        activation: Height(s.height.0 + 30),
        base_epoch: 1,
    };
    let mut fed_txs: Vec<FederationTx> = (0..3)
        .map(|m| {
            fed1(
                m,
                FedTxKind::FederationChange {
                    change: next.clone(),
                },
            )
        })
        .collect();
    let mint = fed1(1, mint_kind(3, 100_000, 0));
    fed_txs.push(mint.clone());
    let b = crate::apply::build_block(
        &s,
        &p,
        &[],
        &fed_txs,
        s.tip_time_ms + 1,
        0,
        &crate::VerifyAll,
    );
    assert_eq!(b.block.fed_txs.len(), 3, "the votes apply");
    assert!(
        matches!(
            b.rejected_fed.as_slice(),
            [(id, FedTxError::MintEpoch { epoch: 0, .. })] if *id == mint.id()
        ),
        "{:?}",
        b.rejected_fed
    );
}

#[test]
fn an_input_of_a_3_of_5_epoch_weighs_and_costs_what_its_descriptor_plans() {
    let p = params();
    let mut s = state();
    let five = FederationChange {
        members: vec![
            genesis_member(0),
            genesis_member(1),
            genesis_member(2),
            genesis_member(3),
            newcomer(0),
        ],
        peg_threshold: 3,
        activation: Height(12),
        base_epoch: 0,
    };
    step(
        &mut s,
        &[],
        &[vote(0, &five), vote(1, &five), vote(2, &five)],
        1,
    );
    advance_to(&mut s, 11);
    assert_eq!(s.peg_epoch().number, 1);
    let fed5 = p.federation_of(&s.epochs[1]).unwrap();
    assert_eq!((fed5.size(), fed5.threshold()), (5, 3));
    // One more 33-byte key (and its push) in the witness script.
    assert_eq!(
        fed5.spend_weight_estimate().to_wu(),
        p.federation.spend_weight_estimate().to_wu() + 34
    );
    assert_eq!(p.spend_vbytes_of(&fed5), fed5.spend_vbytes_estimate());
    assert_eq!(p.spend_vbytes_of(&p.federation), p.pegin_spend_vbytes);
    let t = s.tip_time_ms + 1;
    step(&mut s, &[], &[register_1()], t);
    step(&mut s, &[], &[fed(0, mint_kind(0, 100_000, 1))], t + 1);
    let rate = s.fee_rate(&p).0;
    assert_eq!(
        s.account(&super::id(1)).balance,
        crate::testing::sats(100_000 - fed5.spend_vbytes_estimate() * rate)
    );
    step(&mut s, &[pegout(1, 0, 50_000, 1000)], &[], t + 2);
    let b = &s.batches[&BatchId(0)];
    assert_eq!((b.epoch, b.change_epoch), (1, 1));
    let out_bytes = fedpeg_peg::pegout::output_bytes(&b.outputs[0].script_pubkey);
    let (fee, change) =
        crate::pegout_batch::fee_and_change(&fed5, 1, 100_000, 1, out_bytes, 50_000, rate, 0)
            .unwrap();
    assert_eq!(
        (b.latest().fee.to_sat(), b.latest().change.to_sat()),
        (fee, change)
    );
    assert_ne!(
        crate::pegout_batch::fee_and_change(
            &p.federation,
            1,
            100_000,
            1,
            out_bytes,
            50_000,
            rate,
            0
        )
        .unwrap()
        .0,
        fee,
        "the genesis descriptor would plan another fee"
    );
}

#[test]
fn a_change_must_leave_the_old_coins_signable() {
    let s = state();
    let p = params();
    // The genesis members, genesis member 0 with a new peg key: 3 of epoch
    // 0's 4 keys are kept, its threshold: allowed.
    let mut one = FederationChange {
        members: (0..4).map(genesis_member).collect(),
        ..reshuffle(20)
    };
    one.members[0].peg_key = newcomer(5).peg_key;
    assert!(check_fed_tx(&s, &p, &vote(0, &one)).is_ok());
    // Two keys rotated in one change: 2 < 3 kept, the old coins would freeze.
    let mut two = one.clone();
    two.members[1].peg_key = newcomer(6).peg_key;
    refused_with(
        check_fed_tx(&s, &p, &vote(0, &two)),
        "only 2 of the 4 peg keys of epoch 0 are held",
    );
    // A threshold above n - f, or not above f, is refused for the new size.
    let mut seven = reshuffle(20);
    for i in 1..4 {
        seven.members.push(newcomer(10 + i));
    }
    seven.peg_threshold = 6;
    refused_with(
        check_fed_tx(&s, &p, &vote(0, &seven)),
        "peg_threshold 6 of 7 members is unsafe",
    );
    seven.peg_threshold = 5;
    assert!(check_fed_tx(&s, &p, &vote(0, &seven)).is_ok());
}
