//! One test per rule of Algorithm 1, plus restart, evidence and input checks.

use super::*;

const H: Height = Height(1);

struct Fixture {
    keys: Vec<SigningKey>,
    set: ValidatorSet,
    cfg: EngineConfig,
}

fn fixture() -> Fixture {
    let keys: Vec<SigningKey> = (1..=4u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect();
    let set = ValidatorSet::from_keys(keys.iter().map(|k| k.verifying_key()).collect()).unwrap();
    Fixture {
        keys,
        set,
        cfg: EngineConfig {
            chain_id: ChainId([7; 32]),
            timeouts: Timeouts::default(),
        },
    }
}

fn val(b: u8) -> ValueId {
    ValueId([b; 32])
}

impl Fixture {
    fn engine(&self, me: usize) -> Engine {
        Engine::new(
            self.cfg.clone(),
            self.set.clone(),
            Some(self.keys[me].clone()),
        )
        .unwrap()
    }

    fn vote(&self, who: u32, kind: VoteKind, round: u32, value: Option<u8>) -> Input {
        Input::Vote(SignedVote::sign(
            &self.cfg.chain_id,
            &self.keys[who as usize],
            ValidatorIndex(who),
            kind,
            H,
            Round(round),
            value.map(val),
        ))
    }

    fn proposal(&self, round: u32, value: u8, pol: Option<u32>) -> Input {
        let who = self.set.proposer(H, Round(round));
        Input::Proposal(SignedProposal::sign(
            &self.cfg.chain_id,
            &self.keys[who.as_usize()],
            who,
            H,
            Round(round),
            val(value),
            pol.map(Round),
        ))
    }

    /// Feed a valid proposal for `value` in `round` and its validation verdict.
    fn proposed(&self, e: &mut Engine, round: u32, value: u8, pol: Option<u32>) -> Vec<Output> {
        let mut out = e.handle(self.proposal(round, value, pol));
        out.extend(e.handle(Input::ValidationResult {
            height: H,
            value_id: val(value),
            valid: true,
        }));
        out
    }
}

/// Own votes signed in these outputs, as (kind, round, value).
fn signed_votes(out: &[Output]) -> Vec<(VoteKind, u32, Option<ValueId>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Persist(WalEntry::Vote(v)) => Some((v.kind, v.round.0, v.value)),
            _ => None,
        })
        .collect()
}

fn timeouts(out: &[Output]) -> Vec<(TimeoutKind, u32)> {
    out.iter()
        .filter_map(|o| match o {
            Output::ScheduleTimeout { step, round, .. } => Some((*step, round.0)),
            _ => None,
        })
        .collect()
}

fn timeout(round: u32, step: TimeoutKind) -> Input {
    Input::TimeoutElapsed {
        height: H,
        round: Round(round),
        step,
    }
}

#[test]
fn proposer_requests_a_value_and_persists_its_proposal_before_sending_it() {
    let f = fixture();
    let mut e = f.engine(1); // proposer of (1, 0)
    let out = e.handle(Input::StartHeight(H));
    assert!(out.contains(&Output::RequestValue {
        height: H,
        round: Round(0)
    }));
    let out = e.handle(Input::ProposeValue {
        height: H,
        round: Round(0),
        value_id: val(9),
    });
    let persist = out
        .iter()
        .position(|o| matches!(o, Output::Persist(WalEntry::Proposal(_))));
    let send = out
        .iter()
        .position(|o| matches!(o, Output::Broadcast(Message::Proposal(_))));
    assert!(
        persist.unwrap() < send.unwrap(),
        "persist must come before broadcast"
    );
    // It then prevotes its own (valid) proposal, again persist before send.
    assert_eq!(
        signed_votes(&out),
        vec![(VoteKind::Prevote, 0, Some(val(9)))]
    );
    // A second answer for the same round is ignored: never two proposals.
    let again = e.handle(Input::ProposeValue {
        height: H,
        round: Round(0),
        value_id: val(8),
    });
    assert!(!again.iter().any(|o| matches!(o, Output::Persist(_))));
}

#[test]
fn line_22_valid_proposal_gets_a_prevote_after_validation() {
    let f = fixture();
    let mut e = f.engine(0);
    let out = e.handle(Input::StartHeight(H));
    assert!(timeouts(&out).contains(&(TimeoutKind::Propose, 0)));
    let out = e.handle(f.proposal(0, 5, None));
    assert!(out.contains(&Output::Validate {
        height: H,
        round: Round(0),
        value_id: val(5)
    }));
    assert!(
        signed_votes(&out).is_empty(),
        "must wait for the validity verdict"
    );
    let out = e.handle(Input::ValidationResult {
        height: H,
        value_id: val(5),
        valid: true,
    });
    assert_eq!(
        signed_votes(&out),
        vec![(VoteKind::Prevote, 0, Some(val(5)))]
    );
    assert_eq!(e.step(), Some(Step::Prevote));
}

#[test]
fn line_22_invalid_proposal_gets_a_nil_prevote() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    e.handle(f.proposal(0, 5, None));
    let out = e.handle(Input::ValidationResult {
        height: H,
        value_id: val(5),
        valid: false,
    });
    assert_eq!(signed_votes(&out), vec![(VoteKind::Prevote, 0, None)]);
}

#[test]
fn line_57_propose_timeout_prevotes_nil() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    let out = e.handle(timeout(0, TimeoutKind::Propose));
    assert_eq!(signed_votes(&out), vec![(VoteKind::Prevote, 0, None)]);
    // Stale or repeated timers do nothing.
    assert!(signed_votes(&e.handle(timeout(0, TimeoutKind::Propose))).is_empty());
}

#[test]
fn line_36_polka_for_valid_value_locks_and_precommits() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    f.proposed(&mut e, 0, 5, None);
    e.handle(f.vote(1, VoteKind::Prevote, 0, Some(5)));
    let out = e.handle(f.vote(2, VoteKind::Prevote, 0, Some(5)));
    assert_eq!(
        signed_votes(&out),
        vec![(VoteKind::Precommit, 0, Some(val(5)))]
    );
    assert_eq!(e.locked(), Some((Round(0), val(5))));
    assert_eq!(e.valid_value(), Some((Round(0), val(5))));
}

#[test]
fn lines_34_and_61_mixed_prevotes_start_prevote_timeout_which_precommits_nil() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    f.proposed(&mut e, 0, 5, None);
    e.handle(f.vote(1, VoteKind::Prevote, 0, None));
    let out = e.handle(f.vote(2, VoteKind::Prevote, 0, Some(6)));
    assert!(timeouts(&out).contains(&(TimeoutKind::Prevote, 0)));
    assert!(signed_votes(&out).is_empty());
    let out = e.handle(timeout(0, TimeoutKind::Prevote));
    assert_eq!(signed_votes(&out), vec![(VoteKind::Precommit, 0, None)]);
}

#[test]
fn line_44_nil_polka_precommits_nil() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    e.handle(timeout(0, TimeoutKind::Propose));
    e.handle(f.vote(1, VoteKind::Prevote, 0, None));
    let out = e.handle(f.vote(2, VoteKind::Prevote, 0, None));
    assert!(signed_votes(&out).contains(&(VoteKind::Precommit, 0, None)));
}

#[test]
fn line_49_quorum_of_precommits_decides_with_a_verifiable_certificate() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    e.handle(f.vote(1, VoteKind::Precommit, 0, Some(5)));
    e.handle(f.vote(2, VoteKind::Precommit, 0, Some(5)));
    let out = e.handle(f.vote(3, VoteKind::Precommit, 0, Some(5)));
    let cert = out
        .iter()
        .find_map(|o| match o {
            Output::Decide {
                height,
                value_id,
                certificate,
            } => {
                assert_eq!((*height, *value_id), (H, val(5)));
                Some(certificate.clone())
            }
            _ => None,
        })
        .expect("decision");
    assert_eq!(cert.verify(&f.cfg.chain_id, &f.set), Ok(()));
    assert_eq!(e.step(), Some(Step::Decided));
    // Decided is final: nothing more for this height.
    assert!(e.handle(timeout(0, TimeoutKind::Propose)).is_empty());
}

#[test]
fn lines_47_and_65_mixed_precommits_start_precommit_timeout_which_starts_next_round() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    e.handle(f.vote(1, VoteKind::Precommit, 0, None));
    e.handle(f.vote(2, VoteKind::Precommit, 0, Some(5)));
    let out = e.handle(f.vote(3, VoteKind::Precommit, 0, None));
    assert!(timeouts(&out).contains(&(TimeoutKind::Precommit, 0)));
    let out = e.handle(timeout(0, TimeoutKind::Precommit));
    assert_eq!(e.round(), Some(Round(1)));
    assert!(timeouts(&out).contains(&(TimeoutKind::Propose, 1)));
}

#[test]
fn timeouts_grow_per_round() {
    let t = Timeouts::default();
    assert!(t.propose.at(Round(3)) > t.propose.at(Round(0)));
    assert_eq!(t.prevote.at(Round(2)), Duration::from_millis(2000));
    assert_eq!(
        t.prevote.at(Round(u32::MAX)),
        t.prevote
            .base
            .saturating_add(t.prevote.delta.saturating_mul(u32::MAX))
    );
}

/// Engine 0 locked on value 5 in round 0, now in round 1.
fn locked_engine(f: &Fixture) -> Engine {
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    f.proposed(&mut e, 0, 5, None);
    e.handle(f.vote(1, VoteKind::Prevote, 0, Some(5)));
    e.handle(f.vote(2, VoteKind::Prevote, 0, Some(5)));
    e.handle(timeout(0, TimeoutKind::Precommit));
    assert_eq!(
        (e.round(), e.locked()),
        (Some(Round(1)), Some((Round(0), val(5))))
    );
    e
}

#[test]
fn line_22_locked_node_prevotes_nil_for_another_value_without_proof_of_lock_change() {
    let f = fixture();
    let mut e = locked_engine(&f);
    let out = f.proposed(&mut e, 1, 6, None);
    assert_eq!(signed_votes(&out), vec![(VoteKind::Prevote, 1, None)]);
}

#[test]
fn line_22_locked_node_prevotes_for_its_locked_value() {
    let f = fixture();
    let mut e = locked_engine(&f);
    let out = e.handle(f.proposal(1, 5, None));
    assert_eq!(
        signed_votes(&out),
        vec![(VoteKind::Prevote, 1, Some(val(5)))]
    );
}

#[test]
fn line_28_newer_proof_of_lock_change_unlocks() {
    let f = fixture();
    let mut e = locked_engine(&f);
    e.handle(timeout(1, TimeoutKind::Propose)); // prevote nil in round 1
    e.handle(timeout(1, TimeoutKind::Precommit));
    assert_eq!(e.round(), Some(Round(2)));
    // A polka for 6 in round 1 (newer than the lock in round 0).
    for who in 1..=3 {
        e.handle(f.vote(who, VoteKind::Prevote, 1, Some(6)));
    }
    let out = f.proposed(&mut e, 2, 6, Some(1));
    assert_eq!(
        signed_votes(&out),
        vec![(VoteKind::Prevote, 2, Some(val(6)))]
    );
}

#[test]
fn line_28_proof_of_lock_change_older_than_lock_is_refused() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    // Polka for 6 in round 0, lock on 5 in round 1, proposal of 6 with pol 0 in round 2.
    for who in 1..=3 {
        e.handle(f.vote(who, VoteKind::Prevote, 0, Some(6)));
    }
    e.handle(timeout(0, TimeoutKind::Precommit));
    f.proposed(&mut e, 1, 5, None);
    e.handle(f.vote(1, VoteKind::Prevote, 1, Some(5)));
    e.handle(f.vote(2, VoteKind::Prevote, 1, Some(5)));
    assert_eq!(e.locked(), Some((Round(1), val(5))));
    e.handle(timeout(1, TimeoutKind::Precommit));
    let out = f.proposed(&mut e, 2, 6, Some(0));
    assert_eq!(signed_votes(&out), vec![(VoteKind::Prevote, 2, None)]);
}

#[test]
fn line_55_f_plus_one_messages_from_a_higher_round_skip_to_it() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    e.handle(f.vote(1, VoteKind::Prevote, 5, None));
    assert_eq!(e.round(), Some(Round(0)), "one message (f) is not enough");
    let out = e.handle(f.vote(2, VoteKind::Precommit, 5, None));
    assert_eq!(e.round(), Some(Round(5)));
    assert!(timeouts(&out).contains(&(TimeoutKind::Propose, 5)));
}

#[test]
fn proposer_reproposes_its_valid_value_with_pol_round_and_relays_the_polka() {
    let f = fixture();
    let mut e = f.engine(0); // proposer of (1, 3)
    e.handle(Input::StartHeight(H));
    f.proposed(&mut e, 0, 5, None);
    e.handle(f.vote(1, VoteKind::Prevote, 0, Some(5)));
    e.handle(f.vote(2, VoteKind::Prevote, 0, Some(5)));
    for r in 0..2 {
        e.handle(timeout(r, TimeoutKind::Precommit));
    }
    let out = e.handle(timeout(2, TimeoutKind::Precommit));
    let proposal = out.iter().find_map(|o| match o {
        Output::Persist(WalEntry::Proposal(p)) => Some(p.clone()),
        _ => None,
    });
    let p = proposal.expect("proposal in round 3");
    assert_eq!(
        (p.round, p.value_id, p.pol_round),
        (Round(3), val(5), Some(Round(0)))
    );
    let relayed = out
        .iter()
        .filter(|o| matches!(o, Output::Broadcast(Message::Vote(v)) if v.round == Round(0) && v.kind == VoteKind::Prevote))
        .count();
    assert_eq!(relayed, 3, "the 2f+1 prevotes behind pol_round are relayed");
    assert!(!out.iter().any(|o| matches!(o, Output::RequestValue { .. })));
}

#[test]
fn conflicting_votes_yield_verifiable_evidence_once() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    e.handle(f.vote(2, VoteKind::Prevote, 0, Some(5)));
    let out = e.handle(f.vote(2, VoteKind::Prevote, 0, Some(6)));
    let ev: Vec<&Equivocation> = out
        .iter()
        .filter_map(|o| match o {
            Output::Evidence(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].offender(), ValidatorIndex(2));
    assert_eq!(ev[0].verify(&f.cfg.chain_id, &f.set), Ok(()));
    let again = e.handle(f.vote(2, VoteKind::Prevote, 0, None));
    assert!(!again.iter().any(|o| matches!(o, Output::Evidence(_))));
}

#[test]
fn equivocating_proposer_yields_evidence() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    e.handle(f.proposal(0, 5, None));
    let out = e.handle(f.proposal(0, 6, None));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Evidence(Equivocation::Proposals { .. }))));
}

#[test]
fn votes_with_bad_signatures_or_foreign_chain_are_ignored() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    let mut forged = SignedVote::sign(
        &f.cfg.chain_id,
        &f.keys[1],
        ValidatorIndex(2),
        VoteKind::Precommit,
        H,
        Round(0),
        Some(val(5)),
    );
    for who in [1, 3] {
        e.handle(f.vote(who, VoteKind::Precommit, 0, Some(5)));
    }
    assert!(e.handle(Input::Vote(forged.clone())).is_empty());
    forged.validator = ValidatorIndex(99);
    assert!(e.handle(Input::Vote(forged)).is_empty());
    let other_set = ValidatorSet::from_keys(vec![f.keys[2].verifying_key()]).unwrap();
    let v = SignedVote::sign(
        &f.cfg.chain_id,
        &f.keys[2],
        ValidatorIndex(0),
        VoteKind::Precommit,
        H,
        Round(0),
        Some(val(5)),
    );
    let verified = other_set
        .verify_message(&f.cfg.chain_id, Message::Vote(v))
        .unwrap();
    assert!(
        e.handle(Input::Verified(verified)).is_empty(),
        "verified against another set"
    );
    assert_eq!(e.step(), Some(Step::Propose));
}

#[test]
fn messages_too_far_ahead_are_dropped_and_next_height_ones_are_replayed() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    for who in 1..=2 {
        e.handle(f.vote(who, VoteKind::Prevote, MAX_ROUNDS_AHEAD + 1, None));
    }
    assert_eq!(e.round(), Some(Round(0)));
    // Precommits for height 2 arrive early, then height 1 is decided by certificate.
    let next: Vec<SignedVote> = (1..=3)
        .map(|who| {
            SignedVote::sign(
                &f.cfg.chain_id,
                &f.keys[who],
                ValidatorIndex(who as u32),
                VoteKind::Precommit,
                Height(2),
                Round(0),
                Some(val(8)),
            )
        })
        .collect();
    for v in &next {
        assert!(e.handle(Input::Vote(v.clone())).is_empty());
    }
    let cert = CommitCertificate {
        height: H,
        round: Round(0),
        value_id: val(5),
        precommits: (1..=3)
            .map(|who| {
                let v = SignedVote::sign(
                    &f.cfg.chain_id,
                    &f.keys[who],
                    ValidatorIndex(who as u32),
                    VoteKind::Precommit,
                    H,
                    Round(0),
                    Some(val(5)),
                );
                (v.validator, v.signature)
            })
            .collect(),
    };
    let out = e.handle(Input::Certificate(cert));
    assert!(out.iter().any(|o| matches!(o, Output::Decide { .. })));
    let out = e.handle(Input::StartHeight(Height(2)));
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Decide {
                height: Height(2),
                ..
            }
        )),
        "buffered precommits decide height 2"
    );
}

#[test]
fn certificate_below_quorum_does_not_decide() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    let v = SignedVote::sign(
        &f.cfg.chain_id,
        &f.keys[1],
        ValidatorIndex(1),
        VoteKind::Precommit,
        H,
        Round(0),
        Some(val(5)),
    );
    let cert = CommitCertificate {
        height: H,
        round: Round(0),
        value_id: val(5),
        precommits: vec![(v.validator, v.signature)],
    };
    assert!(e.handle(Input::Certificate(cert)).is_empty());
}

#[test]
fn restart_resumes_the_round_and_never_signs_a_conflicting_vote() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    e.handle(timeout(0, TimeoutKind::Precommit)); // to round 1
    let out = f.proposed(&mut e, 1, 5, None);
    let wal: Vec<WalEntry> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Persist(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(wal.len(), 1);
    let mut r = Engine::restore(f.cfg.clone(), f.set.clone(), f.keys[0].clone(), &wal).unwrap();
    let out = r.handle(Input::StartHeight(H));
    assert_eq!((r.round(), r.step()), (Some(Round(1)), Some(Step::Prevote)));
    assert!(
        out.contains(&Output::Broadcast(wal[0].to_message())),
        "re-sends the same prevote"
    );
    assert!(!out.iter().any(|o| matches!(o, Output::Persist(_))));
    // A different proposal for round 1 cannot make it prevote again.
    let out = r.handle(f.proposal(1, 6, None));
    assert!(signed_votes(&out).is_empty());
}

#[test]
fn restart_keeps_the_lock_from_the_last_non_nil_precommit() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    let mut wal = Vec::new();
    let mut keep = |out: Vec<Output>| {
        wal.extend(out.into_iter().filter_map(|o| match o {
            Output::Persist(w) => Some(w),
            _ => None,
        }))
    };
    keep(f.proposed(&mut e, 0, 5, None));
    keep(e.handle(f.vote(1, VoteKind::Prevote, 0, Some(5))));
    keep(e.handle(f.vote(2, VoteKind::Prevote, 0, Some(5))));
    assert_eq!(wal.iter().filter(|w| w.is_own()).count(), 2);
    let mut r = Engine::restore(f.cfg.clone(), f.set.clone(), f.keys[0].clone(), &wal).unwrap();
    r.handle(Input::StartHeight(H));
    assert_eq!(r.locked(), Some((Round(0), val(5))));
    r.handle(timeout(0, TimeoutKind::Precommit));
    let out = f.proposed(&mut r, 1, 6, None);
    assert_eq!(signed_votes(&out), vec![(VoteKind::Prevote, 1, None)]);
}

#[test]
fn restore_rejects_foreign_mixed_or_conflicting_wal() {
    let f = fixture();
    let mine = |round: u32, value: Option<u8>, h: u64| {
        WalEntry::Vote(SignedVote::sign(
            &f.cfg.chain_id,
            &f.keys[0],
            ValidatorIndex(0),
            VoteKind::Prevote,
            Height(h),
            Round(round),
            value.map(val),
        ))
    };
    let theirs = WalEntry::Vote(SignedVote::sign(
        &f.cfg.chain_id,
        &f.keys[1],
        ValidatorIndex(1),
        VoteKind::Prevote,
        H,
        Round(0),
        None,
    ));
    let restore = |wal: &[WalEntry]| {
        Engine::restore(f.cfg.clone(), f.set.clone(), f.keys[0].clone(), wal).err()
    };
    assert_eq!(restore(&[theirs]), Some(EngineError::ForeignWalEntry(0)));
    assert_eq!(
        restore(&[mine(0, None, 1), mine(0, None, 2)]),
        Some(EngineError::MixedHeights(Height(1), Height(2)))
    );
    assert_eq!(
        restore(&[mine(0, None, 1), mine(0, Some(3), 1)]),
        Some(EngineError::ConflictingWal(1))
    );
    assert_eq!(restore(&[mine(0, None, 1), mine(0, None, 1)]), None);
}

#[test]
fn observer_follows_and_decides_without_signing() {
    let f = fixture();
    let mut e = Engine::new(f.cfg.clone(), f.set.clone(), None).unwrap();
    let mut out = e.handle(Input::StartHeight(H));
    out.extend(f.proposed(&mut e, 0, 5, None));
    for who in 0..3 {
        out.extend(e.handle(f.vote(who, VoteKind::Precommit, 0, Some(5))));
    }
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::Persist(_) | Output::RequestValue { .. })));
    assert!(out.iter().any(|o| matches!(o, Output::Decide { .. })));
}

#[test]
fn key_outside_the_validator_set_is_rejected() {
    let f = fixture();
    let stranger = SigningKey::from_bytes(&[42; 32]);
    assert_eq!(
        Engine::new(f.cfg.clone(), f.set.clone(), Some(stranger)).err(),
        Some(EngineError::NotAValidator)
    );
}

#[test]
fn rebroadcast_timer_resends_own_votes_and_reschedules() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    let sent = e.handle(timeout(0, TimeoutKind::Propose));
    let out = e.handle(timeout(0, TimeoutKind::Rebroadcast));
    let own = sent
        .iter()
        .find(|o| matches!(o, Output::Broadcast(_)))
        .unwrap();
    assert!(out.contains(own));
    assert!(timeouts(&out).contains(&(TimeoutKind::Rebroadcast, 0)));
    assert!(!out.iter().any(|o| matches!(o, Output::Persist(_))));
}

#[test]
fn locking_persists_the_polka_so_a_restarted_proposer_can_still_justify_it() {
    let f = fixture();
    let mut e = f.engine(0);
    e.handle(Input::StartHeight(H));
    let mut wal: Vec<WalEntry> = Vec::new();
    let mut keep = |out: Vec<Output>| {
        wal.extend(out.into_iter().filter_map(|o| match o {
            Output::Persist(w) => Some(w),
            _ => None,
        }))
    };
    keep(f.proposed(&mut e, 0, 5, None));
    keep(e.handle(f.vote(1, VoteKind::Prevote, 0, Some(5))));
    keep(e.handle(f.vote(2, VoteKind::Prevote, 0, Some(5))));
    let polka = wal
        .iter()
        .filter(|w| matches!(w, WalEntry::Polka(_)))
        .count();
    assert_eq!(polka, 2, "peers' prevotes of the polka are persisted");
    // Restart, then become proposer of round 3: the proof of lock is relayed in full.
    let mut r = Engine::restore(f.cfg.clone(), f.set.clone(), f.keys[0].clone(), &wal).unwrap();
    r.handle(Input::StartHeight(H));
    for round in 0..2 {
        r.handle(timeout(round, TimeoutKind::Precommit));
    }
    let out = r.handle(timeout(2, TimeoutKind::Precommit));
    let relayed = out
        .iter()
        .filter(|o| matches!(o, Output::Broadcast(Message::Vote(v)) if v.round == Round(0) && v.value == Some(val(5))))
        .count();
    assert_eq!(relayed, 3);
}

#[test]
fn wal_entries_round_trip_and_reject_unknown_kinds() {
    let f = fixture();
    let v = SignedVote::sign(
        &f.cfg.chain_id,
        &f.keys[1],
        ValidatorIndex(1),
        VoteKind::Prevote,
        H,
        Round(0),
        Some(val(5)),
    );
    for entry in [WalEntry::Vote(v.clone()), WalEntry::Polka(v.clone())] {
        assert_eq!(WalEntry::decode(&entry.encode()), Ok(entry));
    }
    let mut bad = WalEntry::Vote(v).encode();
    bad[0] = 7;
    assert!(WalEntry::decode(&bad).is_err());
    assert!(WalEntry::decode(&[]).is_err());
}
