//! The simulated world: nodes, network, clock, faults and checkers.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::{RunReport, SimConfig, SimMutant, Violation, ViolationKind};
use crate::certificate::CommitCertificate;
use crate::engine::{Engine, EngineConfig, Input, Output, TimeoutParams, Timeouts, WalEntry};
use crate::message::{Message, SignedProposal, SignedVote, Verified};
use crate::types::{ChainId, Height, Round, ValidatorIndex, ValueId, VoteKind};
use crate::validator::ValidatorSet;
use ed25519_dalek::SigningKey;

/// First byte marking a value the application rejects.
const INVALID_MARK: u8 = 0xBD;
/// (node, height, round, step tag) of a signature.
type SignSlot = (usize, u64, u32, u8);
/// What was signed in a slot: value and, for proposals, pol_round.
type SignedContent = (Option<ValueId>, Option<Round>);

const MS: u64 = 1_000; // virtual time is in microseconds
/// A peer must lag this long before it is sent a certificate (block sync is not instant).
const SYNC_AFTER_MS: u64 = 1_000;

fn is_valid(v: &ValueId) -> bool {
    v.0[0] != INVALID_MARK
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Byzantine {
    /// Sends nothing.
    Silent,
    /// As proposer sends different proposals to two groups; votes differently to each group.
    Equivocate,
    /// Sends every vote together with a conflicting one to everyone.
    DoubleVote,
    /// Proposes invalid values and prevotes/precommits anything.
    Invalid,
}

#[derive(Clone, Debug)]
enum Payload {
    Msg(Verified),
    Cert(CommitCertificate),
}

#[derive(Clone, Debug)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        payload: Payload,
    },
    Timer {
        node: usize,
        incarnation: u64,
        input: Input,
    },
    App {
        node: usize,
        incarnation: u64,
        input: Input,
    },
    Crash {
        node: usize,
        down_ms: u64,
    },
    Restart {
        node: usize,
    },
    Partition {
        side: Vec<bool>,
    },
    Heal,
    Liveness,
}

struct Queued {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    // Reversed so that BinaryHeap (a max-heap) pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Node {
    key: SigningKey,
    byz: Option<Byzantine>,
    engine: Option<Engine>,
    incarnation: u64,
    /// Durable: own signed messages of the current height.
    wal: Vec<WalEntry>,
    /// Durable: decided values with certificates; index i is height i+1.
    chain: Vec<(ValueId, CommitCertificate)>,
    /// When a lagging (peer, height) was first seen, and when a certificate was last sent.
    sync_sent: BTreeMap<(usize, u64), (u64, u64)>,
}

struct World<'a> {
    cfg: &'a SimConfig,
    seed: u64,
    rng: SmallRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Queued>,
    engine_cfg: EngineConfig,
    validators: ValidatorSet,
    nodes: Vec<Node>,
    // network and fault parameters
    drop_p: f64,
    dup_p: f64,
    delay: (u64, u64),
    mid_crash_p: f64,
    partition: Option<Vec<bool>>,
    severity: u8,
    liveness: bool,
    liveness_target: u64,
    // adversary knowledge shared by Byzantine nodes
    groups: BTreeMap<u64, (Vec<usize>, Vec<usize>)>,
    split: BTreeMap<(u64, u32), (ValueId, ValueId)>,
    seen: BTreeMap<(u64, u32), ValueId>,
    value_counter: u64,
    // checkers
    decided: BTreeMap<u64, (ValueId, usize)>,
    signed: BTreeMap<SignSlot, SignedContent>,
    report: RunReport,
}

/// Run one seed and report what the checkers found.
pub fn run(cfg: &SimConfig, seed: u64) -> RunReport {
    let mut w = World::new(cfg, seed);
    w.run();
    w.report
}

impl<'a> World<'a> {
    fn new(cfg: &'a SimConfig, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = cfg.members.max(1);
        let keys: Vec<SigningKey> = (0..n)
            .map(|_| SigningKey::from_bytes(&rng.random::<[u8; 32]>()))
            .collect();
        // Keys come from a CSPRNG-sized 32-byte seed; collisions would need 2^128 work.
        let validators =
            match ValidatorSet::from_keys(keys.iter().map(|k| k.verifying_key()).collect()) {
                Ok(v) => v,
                Err(e) => panic!("simulator generated an invalid validator set: {e}"),
            };
        let ms = Duration::from_millis;
        let engine_cfg = EngineConfig {
            chain_id: ChainId(rng.random()),
            timeouts: Timeouts {
                propose: TimeoutParams {
                    base: ms(300),
                    delta: ms(100),
                },
                prevote: TimeoutParams {
                    base: ms(150),
                    delta: ms(75),
                },
                precommit: TimeoutParams {
                    base: ms(150),
                    delta: ms(75),
                },
                rebroadcast: TimeoutParams {
                    base: ms(500),
                    delta: ms(150),
                },
            },
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let byz_set: Vec<usize> = order.into_iter().take(cfg.byzantine.min(n)).collect();
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let byz = byz_set.contains(&i).then(|| match rng.random_range(0..8) {
                    0 => Byzantine::Silent,
                    1 => Byzantine::DoubleVote,
                    2 => Byzantine::Invalid,
                    _ => Byzantine::Equivocate,
                });
                Node {
                    key,
                    byz,
                    engine: None,
                    incarnation: 0,
                    wal: Vec::new(),
                    chain: Vec::new(),
                    sync_sent: BTreeMap::new(),
                }
            })
            .collect();
        // Severity 0: only Byzantine faults and jitter; 1: mild; 2: heavy network and crash faults.
        let severity = if cfg.faults {
            rng.random_range(0..3u8)
        } else {
            0
        };
        let (drop_p, dup_p, delay, mid_crash_p) = match (cfg.faults, severity) {
            (false, _) => (0.0, 0.0, (MS, 50 * MS), 0.0),
            (true, 0) => (
                0.0,
                rng.random_range(0.0..0.1),
                (MS, rng.random_range(5..100) * MS),
                0.0,
            ),
            (true, 1) => (
                rng.random_range(0.0..0.1),
                rng.random_range(0.0..0.1),
                (MS, rng.random_range(5..200) * MS),
                [0.0, 0.02][rng.random_range(0..2)],
            ),
            (true, _) => (
                rng.random_range(0.0..0.3),
                rng.random_range(0.0..0.2),
                (MS, rng.random_range(5..400) * MS),
                [0.0, 0.02, 0.1][rng.random_range(0..3)],
            ),
        };
        World {
            cfg,
            seed,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            engine_cfg,
            validators,
            nodes,
            drop_p,
            dup_p,
            delay,
            mid_crash_p,
            partition: None,
            severity,
            liveness: false,
            liveness_target: 0,
            groups: BTreeMap::new(),
            split: BTreeMap::new(),
            seen: BTreeMap::new(),
            value_counter: 0,
            decided: BTreeMap::new(),
            signed: BTreeMap::new(),
            report: RunReport {
                seed,
                ..RunReport::default()
            },
        }
    }

    fn push(&mut self, after_us: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Queued {
            at: self.now + after_us,
            seq: self.seq,
            event,
        });
    }

    fn honest(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].byz.is_none())
    }

    fn run(&mut self) {
        let n = self.nodes.len();
        let safety_ms = self
            .rng
            .random_range(self.cfg.safety_ms.0..=self.cfg.safety_ms.1.max(self.cfg.safety_ms.0));
        if self.cfg.faults {
            self.schedule_faults(safety_ms);
        }
        self.push(safety_ms * MS, Event::Liveness);
        let setup = format!(
            "n={n} byzantine={:?} drop={:.2} dup={:.2} delay_ms={}..{} mid_crash={} safety_ms={safety_ms} severity={}",
            self.nodes.iter().enumerate().filter_map(|(i, x)| x.byz.map(|b| (i, b))).collect::<Vec<_>>(),
            self.drop_p, self.dup_p, self.delay.0 / MS, self.delay.1 / MS, self.mid_crash_p, self.severity
        );
        self.trace(|| setup);
        for i in 0..n {
            let mut engine = match Engine::new(
                self.engine_cfg.clone(),
                self.validators.clone(),
                Some(self.nodes[i].key.clone()),
            ) {
                Ok(e) => e,
                Err(e) => panic!("simulator key not in its own validator set: {e}"),
            };
            engine.set_mutant(self.cfg.mutant.engine_mutant());
            self.nodes[i].engine = Some(engine);
            self.handle(i, Input::StartHeight(Height(1)));
        }
        let deadline = (safety_ms + self.cfg.liveness_bound_ms) * MS;
        while let Some(q) = self.queue.pop() {
            self.now = q.at;
            if self.now > deadline {
                break;
            }
            self.dispatch(q.event);
            if !self.report.violations.is_empty() {
                break; // the first violation is enough; replay the seed for details
            }
            if self.liveness && self.liveness_done() {
                break;
            }
        }
        if !self.liveness_done() && self.report.violations.is_empty() {
            let state: Vec<String> = self
                .honest()
                .map(|i| {
                    let e = self.nodes[i].engine.as_ref();
                    format!(
                        "node{i}: decided={} h={:?} r={:?} step={:?}",
                        self.nodes[i].chain.len(),
                        e.and_then(|e| e.height()).map(|h| h.0),
                        e.and_then(|e| e.round()).map(|r| r.0),
                        e.and_then(|e| e.step())
                    )
                })
                .collect();
            self.report.liveness_failure = Some(format!(
                "honest nodes did not all reach height {} within {} ms of healing: {}",
                self.liveness_target,
                self.cfg.liveness_bound_ms,
                state.join("; ")
            ));
        }
        self.report.heights_decided = self
            .honest()
            .map(|i| self.nodes[i].chain.len() as u64)
            .max()
            .unwrap_or(0);
        self.report.virtual_ms = self.now / MS;
    }

    fn liveness_done(&self) -> bool {
        self.liveness
            && self
                .honest()
                .all(|i| self.nodes[i].chain.len() as u64 >= self.liveness_target)
    }

    fn schedule_faults(&mut self, safety_ms: u64) {
        let n = self.nodes.len();
        let (partitions, crash_p) = match self.severity {
            0 => (0, 0.1),
            1 => (self.rng.random_range(0..3), 0.2),
            _ => (self.rng.random_range(0..4), 0.3),
        };
        for _ in 0..partitions {
            let start = self.rng.random_range(0..safety_ms);
            let len = self.rng.random_range(200..3_000);
            let side: Vec<bool> = (0..n).map(|_| self.rng.random_bool(0.5)).collect();
            self.push(start * MS, Event::Partition { side });
            self.push((start + len) * MS, Event::Heal);
        }
        let honest: Vec<usize> = self.honest().collect();
        for i in honest {
            if self.rng.random_bool(crash_p) {
                for _ in 0..self.rng.random_range(1..4) {
                    let at = self.rng.random_range(0..safety_ms);
                    let down_ms = self.rng.random_range(50..2_000);
                    self.push(at * MS, Event::Crash { node: i, down_ms });
                }
            }
        }
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver { to, from, payload } => self.deliver(to, from, payload),
            Event::Timer {
                node,
                incarnation,
                input,
            }
            | Event::App {
                node,
                incarnation,
                input,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.handle(node, input);
                }
            }
            Event::Crash { node, down_ms } => {
                if !self.liveness && self.nodes[node].engine.is_some() {
                    self.crash(node, down_ms);
                }
            }
            Event::Restart { node } => self.restart(node),
            Event::Partition { side } => {
                self.trace(|| format!("partition {side:?}"));
                if !self.liveness {
                    self.partition = Some(side);
                }
            }
            Event::Heal => self.partition = None,
            Event::Liveness => self.start_liveness(),
        }
    }

    fn start_liveness(&mut self) {
        self.trace(|| "--- liveness phase: network healed ---".to_string());
        self.liveness = true;
        self.partition = None;
        self.drop_p = 0.0;
        self.dup_p = self.dup_p.min(0.05);
        self.delay = (MS, 50 * MS);
        let down: Vec<usize> = self
            .honest()
            .filter(|i| self.nodes[*i].engine.is_none())
            .collect();
        for i in down {
            self.restart(i);
        }
        let h0 = self
            .honest()
            .map(|i| self.nodes[i].chain.len() as u64)
            .max()
            .unwrap_or(0);
        self.liveness_target = h0 + self.cfg.liveness_heights;
    }

    fn crash(&mut self, node: usize, down_ms: u64) {
        self.trace(|| format!("node{node} crashes for {down_ms} ms"));
        let nd = &mut self.nodes[node];
        nd.engine = None;
        nd.incarnation += 1;
        self.report.crashes += 1;
        self.push(down_ms * MS, Event::Restart { node });
    }

    fn restart(&mut self, node: usize) {
        if self.nodes[node].engine.is_some() {
            return;
        }
        let wal: Vec<WalEntry> = if self.cfg.mutant == SimMutant::NoWal {
            Vec::new()
        } else {
            self.nodes[node].wal.clone()
        };
        let key = self.nodes[node].key.clone();
        match Engine::restore(self.engine_cfg.clone(), self.validators.clone(), key, &wal) {
            Ok(mut engine) => {
                engine.set_mutant(self.cfg.mutant.engine_mutant());
                self.nodes[node].engine = Some(engine);
                let next = Height(self.nodes[node].chain.len() as u64 + 1);
                self.handle(node, Input::StartHeight(next));
            }
            Err(e) => self.violation(
                ViolationKind::DoubleSign,
                format!("node{node} cannot restore its WAL: {e}"),
            ),
        }
    }

    fn handle(&mut self, node: usize, input: Input) {
        let Some(engine) = self.nodes[node].engine.as_mut() else {
            return;
        };
        let outputs = engine.handle(input);
        self.apply(node, outputs);
    }

    fn delay_us(&mut self, lo: u64, hi: u64) -> u64 {
        self.rng.random_range(lo..=hi)
    }

    fn apply(&mut self, i: usize, outputs: Vec<Output>) {
        let honest = self.nodes[i].byz.is_none();
        for out in outputs {
            if self.nodes[i].engine.is_none() {
                return; // crashed part-way: the rest never left the node
            }
            match out {
                Output::Persist(entry) => {
                    if entry.is_own() {
                        self.trace(|| format!("node{i} signs {}", short(&entry.to_message())));
                    }
                    if honest && entry.is_own() {
                        self.record_signed(i, &entry.to_message());
                    }
                    self.nodes[i].wal.push(entry);
                    if honest
                        && !self.liveness
                        && self.mid_crash_p > 0.0
                        && self.rng.random_bool(self.mid_crash_p)
                    {
                        // Crash right after the WAL write, before the send.
                        let down = self.rng.random_range(50..1_000);
                        self.crash(i, down);
                        return;
                    }
                }
                Output::Broadcast(m) => {
                    if honest {
                        if m.signer().as_usize() == i {
                            self.record_signed(i, &m);
                        }
                        self.broadcast(i, m);
                    } else {
                        self.byzantine_broadcast(i, m);
                    }
                }
                Output::ScheduleTimeout {
                    height,
                    round,
                    step,
                    duration,
                } => {
                    let incarnation = self.nodes[i].incarnation;
                    let us = duration.as_micros().min(u128::from(u64::MAX / 4)) as u64;
                    self.push(
                        us,
                        Event::Timer {
                            node: i,
                            incarnation,
                            input: Input::TimeoutElapsed {
                                height,
                                round,
                                step,
                            },
                        },
                    );
                }
                Output::RequestValue { height, round } => {
                    let valid = self.nodes[i].byz != Some(Byzantine::Invalid);
                    let value_id = self.fresh_value(valid);
                    let incarnation = self.nodes[i].incarnation;
                    let d = self.delay_us(0, 20 * MS);
                    self.push(
                        d,
                        Event::App {
                            node: i,
                            incarnation,
                            input: Input::ProposeValue {
                                height,
                                round,
                                value_id,
                            },
                        },
                    );
                }
                Output::Validate {
                    height, value_id, ..
                } => {
                    let valid =
                        self.nodes[i].byz == Some(Byzantine::Invalid) || is_valid(&value_id);
                    let incarnation = self.nodes[i].incarnation;
                    let d = self.delay_us(0, 20 * MS);
                    self.push(
                        d,
                        Event::App {
                            node: i,
                            incarnation,
                            input: Input::ValidationResult {
                                height,
                                value_id,
                                valid,
                            },
                        },
                    );
                }
                Output::Decide {
                    height,
                    value_id,
                    certificate,
                } => self.on_decide(i, height, value_id, certificate),
                Output::Evidence(e) => {
                    self.report.evidence += 1;
                    let offender = e.offender().as_usize();
                    if e.verify(&self.engine_cfg.chain_id, &self.validators)
                        .is_err()
                    {
                        self.violation(
                            ViolationKind::DoubleSign,
                            format!(
                                "node{i} reported unverifiable evidence against node{offender}"
                            ),
                        );
                    } else if self.nodes.get(offender).is_some_and(|n| n.byz.is_none()) {
                        self.violation(ViolationKind::DoubleSign, format!("node{i} holds evidence that honest node{offender} equivocated: {e:?}"));
                    }
                }
            }
        }
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        if self.cfg.trace {
            let l = format!("{:>9.3}s {}", self.now as f64 / 1e6, line());
            self.report.trace.push(l);
        }
    }

    fn violation(&mut self, kind: ViolationKind, detail: String) {
        self.report.violations.push(Violation { kind, detail });
    }

    fn record_signed(&mut self, i: usize, m: &Message) {
        let (key, content) = match m {
            Message::Proposal(p) => (
                (i, p.height.0, p.round.0, 0u8),
                (Some(p.value_id), p.pol_round),
            ),
            Message::Vote(v) => {
                let tag = match v.kind {
                    VoteKind::Prevote => 1,
                    VoteKind::Precommit => 2,
                };
                ((i, v.height.0, v.round.0, tag), (v.value, None))
            }
        };
        match self.signed.get(&key) {
            Some(prev) if *prev != content => {
                let detail = format!(
                    "honest node{i} signed two messages for height {} round {} step {}: {:?} then {:?}",
                    key.1, key.2, key.3, prev, content
                );
                self.violation(ViolationKind::DoubleSign, detail);
            }
            Some(_) => {}
            None => {
                self.signed.insert(key, content);
            }
        }
    }

    fn on_decide(&mut self, i: usize, height: Height, value_id: ValueId, cert: CommitCertificate) {
        self.trace(|| {
            format!(
                "node{i} DECIDES h={} {value_id:?} (round {})",
                height.0, cert.round.0
            )
        });
        let honest = self.nodes[i].byz.is_none();
        if honest {
            if !is_valid(&value_id) {
                self.violation(
                    ViolationKind::Validity,
                    format!(
                        "honest node{i} decided invalid value {value_id:?} at height {}",
                        height.0
                    ),
                );
            }
            if cert.value_id != value_id || cert.height != height {
                self.violation(
                    ViolationKind::Certificate,
                    format!(
                        "node{i}: certificate does not match decision at height {}",
                        height.0
                    ),
                );
            }
            if let Err(e) = cert.verify(&self.engine_cfg.chain_id, &self.validators) {
                self.violation(
                    ViolationKind::Certificate,
                    format!(
                        "node{i}: decision certificate at height {} does not verify: {e}",
                        height.0
                    ),
                );
            }
            match self.decided.get(&height.0) {
                Some((v, j)) if *v != value_id => {
                    let detail = format!(
                        "height {}: node{j} decided {v:?} but node{i} decided {value_id:?}",
                        height.0
                    );
                    self.violation(ViolationKind::Agreement, detail);
                }
                Some(_) => {}
                None => {
                    self.decided.insert(height.0, (value_id, i));
                }
            }
        }
        let nd = &mut self.nodes[i];
        if height.0 != nd.chain.len() as u64 + 1 {
            return; // not the height this node's chain expects; never happens with a correct driver
        }
        nd.chain.push((value_id, cert));
        nd.wal.clear();
        let incarnation = nd.incarnation;
        let interval = self.cfg.block_interval_ms * MS;
        self.push(
            interval,
            Event::App {
                node: i,
                incarnation,
                input: Input::StartHeight(height.next()),
            },
        );
    }

    fn fresh_value(&mut self, valid: bool) -> ValueId {
        self.value_counter += 1;
        let mut h = Sha256::new();
        h.update(self.seed.to_be_bytes());
        h.update(self.value_counter.to_be_bytes());
        let mut v: [u8; 32] = h.finalize().into();
        if valid {
            if v[0] == INVALID_MARK {
                v[0] = 0;
            }
        } else {
            v[0] = INVALID_MARK;
        }
        ValueId(v)
    }

    fn send(&mut self, from: usize, to: usize, payload: Payload) {
        if from == to {
            return;
        }
        self.report.messages += 1;
        if let Some(side) = &self.partition {
            if side[from] != side[to] {
                return;
            }
        }
        if self.drop_p > 0.0 && self.rng.random_bool(self.drop_p) {
            return;
        }
        let d = self.delay_us(self.delay.0, self.delay.1);
        if self.dup_p > 0.0 && self.rng.random_bool(self.dup_p) {
            let d2 = self.delay_us(self.delay.0, self.delay.1);
            self.push(
                d2,
                Event::Deliver {
                    to,
                    from,
                    payload: payload.clone(),
                },
            );
        }
        self.push(d, Event::Deliver { to, from, payload });
    }

    fn send_msg(&mut self, from: usize, to: &[usize], m: Message) {
        // Verify once for all recipients; recipients still check chain id and set fingerprint.
        let Ok(v) = self.validators.verify_message(&self.engine_cfg.chain_id, m) else {
            return;
        };
        for &t in to {
            self.send(from, t, Payload::Msg(v.clone()));
        }
    }

    fn broadcast(&mut self, from: usize, m: Message) {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.send_msg(from, &all, m);
    }

    fn deliver(&mut self, to: usize, from: usize, payload: Payload) {
        if self.nodes[to].engine.is_none() {
            return;
        }
        match payload {
            Payload::Msg(v) => {
                if let (Some(_), Message::Proposal(p)) = (self.nodes[to].byz, v.message()) {
                    // Byzantine nodes pool what they see.
                    self.seen
                        .entry((p.height.0, p.round.0))
                        .or_insert(p.value_id);
                }
                let h = v.message().height().0;
                // Block sync: a peer sending messages of a height we decided is lagging.
                if h >= 1
                    && h <= self.nodes[to].chain.len() as u64
                    && self.nodes[to].byz != Some(Byzantine::Silent)
                {
                    // Like a periodic block-sync poll: only after the peer lagged for a while.
                    let now = self.now;
                    let (first, last) = *self.nodes[to]
                        .sync_sent
                        .entry((from, h))
                        .or_insert((now, 0));
                    if now >= first + SYNC_AFTER_MS * MS && (last == 0 || now >= last + 300 * MS) {
                        self.nodes[to].sync_sent.insert((from, h), (first, now));
                        let cert = self.nodes[to].chain[(h - 1) as usize].1.clone();
                        self.send(to, from, Payload::Cert(cert));
                    }
                    return;
                }
                // Mostly use the pre-verified path; sometimes make the engine verify itself.
                let input = if self.rng.random_bool(0.9) {
                    Input::Verified(v)
                } else {
                    match v.into_message() {
                        Message::Proposal(p) => Input::Proposal(p),
                        Message::Vote(x) => Input::Vote(x),
                    }
                };
                self.handle(to, input);
            }
            Payload::Cert(c) => self.handle(to, Input::Certificate(c)),
        }
    }

    // ----- Byzantine behaviour -------------------------------------------

    /// Two groups of recipients per height, shared by all Byzantine nodes.
    fn groups(&mut self, height: u64) -> (Vec<usize>, Vec<usize>) {
        if let Some(g) = self.groups.get(&height) {
            return g.clone();
        }
        let mut all: Vec<usize> = self.honest().collect();
        all.shuffle(&mut self.rng);
        let cut = self.rng.random_range(1..all.len().max(2)).min(all.len());
        let g = (all[..cut].to_vec(), all[cut..].to_vec());
        self.groups.insert(height, g.clone());
        g
    }

    fn sign_vote(&self, i: usize, like: &SignedVote, value: Option<ValueId>) -> Message {
        Message::Vote(SignedVote::sign(
            &self.engine_cfg.chain_id,
            &self.nodes[i].key,
            ValidatorIndex(i as u32),
            like.kind,
            like.height,
            like.round,
            value,
        ))
    }

    fn byzantine_broadcast(&mut self, i: usize, m: Message) {
        let Some(mode) = self.nodes[i].byz else {
            return;
        };
        if m.signer().as_usize() != i {
            return; // Byzantine nodes do not help by relaying
        }
        match mode {
            Byzantine::Silent => {}
            Byzantine::Invalid => self.broadcast(i, m),
            Byzantine::DoubleVote => {
                self.broadcast(i, m.clone());
                if let Message::Vote(v) = &m {
                    let other = match v.value {
                        Some(_) => None,
                        None => Some(self.fresh_value(true)),
                    };
                    let second = self.sign_vote(i, v, other);
                    self.broadcast(i, second);
                }
            }
            Byzantine::Equivocate => {
                let (g1, g2) = self.groups(m.height().0);
                match m {
                    Message::Proposal(p) => {
                        let b = self.fresh_value(true);
                        let p2 = SignedProposal::sign(
                            &self.engine_cfg.chain_id,
                            &self.nodes[i].key,
                            p.proposer,
                            p.height,
                            p.round,
                            b,
                            None,
                        );
                        self.split.insert((p.height.0, p.round.0), (p.value_id, b));
                        self.send_msg(i, &g1, Message::Proposal(p));
                        self.send_msg(i, &g2, Message::Proposal(p2));
                    }
                    Message::Vote(v) => {
                        let slot = (v.height.0, v.round.0);
                        let (a, b) = match (self.split.get(&slot), self.seen.get(&slot)) {
                            // Own split: back each half with its value.
                            (Some((a, b)), _) => (Some(*a), Some(*b)),
                            // An honest proposal: support it everywhere (even if locked),
                            // and tell one group nil as well.
                            (None, Some(p)) => {
                                let p = Some(*p);
                                let vp = self.sign_vote(i, &v, p);
                                self.broadcast(i, vp);
                                (p, None)
                            }
                            (None, None) => (
                                v.value,
                                if v.value.is_some() {
                                    None
                                } else {
                                    Some(self.fresh_value(true))
                                },
                            ),
                        };
                        let va = self.sign_vote(i, &v, a);
                        let vb = self.sign_vote(i, &v, b);
                        if v.kind == VoteKind::Precommit && self.rng.random_bool(0.7) {
                            // Withhold: let only one member of each group see the precommit.
                            // All Byzantine nodes pick the same member, so it alone may decide.
                            let t1: Vec<usize> = g1.first().copied().into_iter().collect();
                            let t2: Vec<usize> = g2.first().copied().into_iter().collect();
                            self.send_msg(i, &t1, va);
                            self.send_msg(i, &t2, vb);
                        } else {
                            self.send_msg(i, &g1, va);
                            self.send_msg(i, &g2, vb);
                        }
                    }
                }
            }
        }
    }
}

fn short(m: &Message) -> String {
    match m {
        Message::Proposal(p) => format!(
            "proposal h={} r={} {:?} pol={:?}",
            p.height.0,
            p.round.0,
            p.value_id,
            p.pol_round.map(|r| r.0)
        ),
        Message::Vote(v) => format!(
            "{:?} h={} r={} {:?}",
            v.kind, v.height.0, v.round.0, v.value
        ),
    }
}
