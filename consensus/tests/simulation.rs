//! Seeded fault-injecting simulation of the engine (debug build, well under a minute).

use fedpeg_consensus::sim::{run, RunReport, SimConfig, SimMutant, ViolationKind};

fn config(members: usize, byzantine: usize) -> SimConfig {
    let mut c = SimConfig::new(members, byzantine);
    c.safety_ms = (500, 3_000);
    c
}

fn assert_all_ok(cfg: &SimConfig, seeds: std::ops::Range<u64>) {
    for seed in seeds {
        let r = run(cfg, seed);
        assert!(
            r.ok(),
            "seed {seed} failed (replay: cargo run --release -p fedpeg-consensus --example simulate -- \
             --members {} --byzantine {} --seed {seed}): {:?} {:?}",
            cfg.members,
            cfg.byzantine,
            r.violations,
            r.liveness_failure
        );
        assert!(
            r.heights_decided >= cfg.liveness_heights,
            "seed {seed} decided too little"
        );
    }
}

fn first_failure(cfg: &SimConfig, seeds: std::ops::Range<u64>) -> Option<RunReport> {
    seeds
        .map(|s| run(cfg, s))
        .find(|r| !r.violations.is_empty())
}

#[test]
fn four_members_one_byzantine_stay_safe_and_live_under_faults() {
    assert_all_ok(&config(4, 1), 0..400);
}

#[test]
fn seven_members_two_byzantine_stay_safe_and_live_under_faults() {
    assert_all_ok(&config(7, 2), 1_000..1_150);
}

#[test]
fn ten_members_three_byzantine_stay_safe_and_live_without_network_faults() {
    let mut c = config(10, 3);
    c.faults = false;
    assert_all_ok(&c, 2_000..2_030);
}

#[test]
fn a_seed_replays_identically() {
    let c = config(7, 2);
    let (a, b) = (run(&c, 42), run(&c, 42));
    assert_eq!(
        (
            a.heights_decided,
            a.messages,
            a.evidence,
            a.crashes,
            a.virtual_ms
        ),
        (
            b.heights_decided,
            b.messages,
            b.evidence,
            b.crashes,
            b.virtual_ms
        )
    );
}

#[test]
fn checkers_catch_the_no_lock_mutant() {
    let mut c = config(7, 2);
    c.mutant = SimMutant::NoLock;
    c.faults = false;
    let r = first_failure(&c, 0..200).expect("no-lock mutant survived 200 seeds");
    assert_eq!(r.violations[0].kind, ViolationKind::Agreement);
}

#[test]
fn checkers_catch_the_weak_quorum_mutant() {
    let mut c = config(7, 2);
    c.mutant = SimMutant::WeakQuorum;
    assert!(
        first_failure(&c, 0..20).is_some(),
        "weak-quorum mutant survived 20 seeds"
    );
}

#[test]
fn checkers_catch_the_no_wal_mutant() {
    let mut c = config(4, 1);
    c.mutant = SimMutant::NoWal;
    let r = first_failure(&c, 0..100).expect("no-wal mutant survived 100 seeds");
    assert_eq!(r.violations[0].kind, ViolationKind::DoubleSign);
}
