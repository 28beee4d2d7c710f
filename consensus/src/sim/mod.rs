//! Deterministic, seeded, fault-injecting simulator of n engines (feature `sim`).
//!
//! One run = one seed. A virtual clock and an event queue ordered by
//! (time, sequence number) drive n [`Engine`]s; all randomness comes from one
//! `SmallRng` seeded with the run's seed, so a seed replays exactly.
//!
//! * **Safety phase** (random length): messages are dropped, delayed,
//!   reordered and duplicated; partitions come and heal; honest nodes crash and
//!   restart from their WAL, sometimes between a WAL write and the sends that
//!   follow it; Byzantine nodes equivocate as proposer, double-vote, propose and
//!   vote for invalid values, or stay silent.
//! * **Liveness phase**: the network heals (no loss, bounded delay), crashed
//!   honest nodes restart, and every honest node must decide
//!   [`SimConfig::liveness_heights`] more heights within
//!   [`SimConfig::liveness_bound_ms`] of virtual time.
//!
//! Checkers: agreement, validity, commit-certificate validity, no honest
//! double-sign (across restarts), no evidence against an honest node, and
//! termination in the liveness phase.

mod world;

pub use world::run;

use crate::engine::Mutant;

/// Fault switch for checking that the checkers catch bugs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SimMutant {
    /// The correct engine.
    #[default]
    None,
    /// Engine prevotes ignoring its lock.
    NoLock,
    /// Engine decides on f+1 precommits.
    WeakQuorum,
    /// Nodes restart with an empty WAL.
    NoWal,
}

impl SimMutant {
    /// Parse a command-line name (`no-lock`, `weak-quorum`, `no-wal`, `none`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(SimMutant::None),
            "no-lock" => Some(SimMutant::NoLock),
            "weak-quorum" => Some(SimMutant::WeakQuorum),
            "no-wal" => Some(SimMutant::NoWal),
            _ => None,
        }
    }

    pub(crate) fn engine_mutant(self) -> Mutant {
        match self {
            SimMutant::NoLock => Mutant::NoLock,
            SimMutant::WeakQuorum => Mutant::WeakQuorum,
            SimMutant::None | SimMutant::NoWal => Mutant::None,
        }
    }
}

/// Parameters of a batch of runs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of validators n.
    pub members: usize,
    /// Number of Byzantine validators (at most (n-1)/3 for the guarantees to hold).
    pub byzantine: usize,
    /// Injected bug, if any.
    pub mutant: SimMutant,
    /// Inject network faults and crashes in the safety phase.
    pub faults: bool,
    /// Range of the safety phase length in virtual milliseconds.
    pub safety_ms: (u64, u64),
    /// Virtual time the healed network has to decide.
    pub liveness_bound_ms: u64,
    /// Heights every honest node must decide in the liveness phase.
    pub liveness_heights: u64,
    /// Delay between a decision and the start of the next height.
    pub block_interval_ms: u64,
    /// Record a line per signed message, decision and fault in [`RunReport::trace`].
    pub trace: bool,
}

impl SimConfig {
    /// Defaults for `members` validators of which `byzantine` are faulty.
    pub fn new(members: usize, byzantine: usize) -> Self {
        SimConfig {
            members,
            byzantine,
            mutant: SimMutant::None,
            faults: true,
            safety_ms: (1_000, 6_000),
            liveness_bound_ms: 60_000,
            liveness_heights: 2,
            block_interval_ms: 100,
            trace: false,
        }
    }
}

/// Kind of a safety violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ViolationKind {
    /// Two honest nodes decided different values at one height.
    Agreement,
    /// An honest node decided an invalid value.
    Validity,
    /// An honest node signed two different messages for one slot.
    DoubleSign,
    /// A decision's certificate does not verify.
    Certificate,
}

/// One safety violation found in a run.
#[derive(Clone, Debug)]
pub struct Violation {
    /// What was violated.
    pub kind: ViolationKind,
    /// Human-readable details.
    pub detail: String,
}

/// Outcome of one seed.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// The seed (replay with it).
    pub seed: u64,
    /// Safety violations.
    pub violations: Vec<Violation>,
    /// Why the liveness phase failed, if it did.
    pub liveness_failure: Option<String>,
    /// Highest height decided by an honest node.
    pub heights_decided: u64,
    /// Point-to-point messages sent (consensus messages and certificates).
    pub messages: u64,
    /// Equivocation evidence outputs.
    pub evidence: u64,
    /// Crashes of honest nodes.
    pub crashes: u64,
    /// Virtual time at the end of the run.
    pub virtual_ms: u64,
    /// Event trace, when [`SimConfig::trace`] is set.
    pub trace: Vec<String>,
}

impl RunReport {
    /// True if the run found no violation and met the liveness bound.
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.liveness_failure.is_none()
    }
}
