//! The Tendermint state machine: [`Engine::handle`] turns an [`Input`] into [`Output`]s.
//!
//! Rules follow Algorithm 1 of "The latest gossip on BFT consensus" (Buchman,
//! Kwon, Milosevic 2018); comments cite its line numbers. Differences, all
//! because the engine sees value ids and not blocks and because links may drop
//! messages before the network heals:
//!
//! * `valid(v)` is the application's verdict on a value id ([`Output::Validate`]
//!   / [`Input::ValidationResult`]); rules that need it wait for it.
//! * Locking (line 36) and deciding (line 49) need the polka / commit quorum and
//!   `valid(v)` (locking) but not the proposal message itself: the quorum is
//!   the proof, and the application fetches the block by id.
//! * `validValue` is also raised by a polka seen for an earlier round of the
//!   height (not just the current one), so proposers re-propose the freshest
//!   locked value even if they learned of the polka late.
//! * A [`TimeoutKind::Rebroadcast`] timer re-sends the messages that justify
//!   the node's round (own votes, the round's votes, the previous round's
//!   precommits, and the polka behind `validValue`), so progress resumes after
//!   lost messages without a separate gossip layer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ed25519_dalek::SigningKey;

use crate::certificate::CommitCertificate;
use crate::evidence::Equivocation;
use crate::message::{DecodeError, Message, SignedProposal, SignedVote, Verified};
use crate::types::{ChainId, Height, Round, Step, TimeoutKind, ValidatorIndex, ValueId, VoteKind};
use crate::validator::ValidatorSet;
use crate::votes::{Added, RoundVotes};

/// Messages for rounds further than this above the current one are dropped
/// (bounds memory against spam; honest peers re-send once we catch up).
pub const MAX_ROUNDS_AHEAD: u32 = 64;
/// Messages kept per signer for the next height while this one is undecided.
pub const MAX_BUFFERED_PER_SIGNER: usize = 3;

/// Duration of one kind of timeout: `base + delta * round`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutParams {
    /// Duration in round 0.
    pub base: Duration,
    /// Added per round, so that rounds eventually outlast network delay.
    pub delta: Duration,
}

impl TimeoutParams {
    /// Duration for `round`, saturating instead of overflowing.
    pub fn at(&self, round: Round) -> Duration {
        self.base.saturating_add(self.delta.saturating_mul(round.0))
    }
}

/// Per-step timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Wait for a proposal.
    pub propose: TimeoutParams,
    /// Wait after 2f+1 prevotes without a polka.
    pub prevote: TimeoutParams,
    /// Wait after 2f+1 precommits without a decision.
    pub precommit: TimeoutParams,
    /// Interval between re-broadcasts while stuck in a round.
    pub rebroadcast: TimeoutParams,
}

impl Default for Timeouts {
    /// CometBFT-like defaults: propose 3s+0.5s/round, votes 1s+0.5s/round, rebroadcast 5s+1s/round.
    fn default() -> Self {
        let ms = Duration::from_millis;
        Timeouts {
            propose: TimeoutParams {
                base: ms(3000),
                delta: ms(500),
            },
            prevote: TimeoutParams {
                base: ms(1000),
                delta: ms(500),
            },
            precommit: TimeoutParams {
                base: ms(1000),
                delta: ms(500),
            },
            rebroadcast: TimeoutParams {
                base: ms(5000),
                delta: ms(1000),
            },
        }
    }
}

impl Timeouts {
    fn get(&self, kind: TimeoutKind) -> TimeoutParams {
        match kind {
            TimeoutKind::Propose => self.propose,
            TimeoutKind::Prevote => self.prevote,
            TimeoutKind::Precommit => self.precommit,
            TimeoutKind::Rebroadcast => self.rebroadcast,
        }
    }
}

/// Static configuration of an engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Chain id every signature commits to.
    pub chain_id: ChainId,
    /// Timeout schedule.
    pub timeouts: Timeouts,
}

/// What the engine persisted: own signed messages, and the peers' prevotes
/// that prove its lock / valid value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalEntry {
    /// An own proposal.
    Proposal(SignedProposal),
    /// An own vote.
    Vote(SignedVote),
    /// A peer's prevote in the polka behind our lock or valid value. Kept so
    /// that after a restart we can still show the proof of lock (2f+1
    /// prevotes) to others; without it a crash can leave honest nodes locked
    /// on a value nobody can justify any more.
    Polka(SignedVote),
}

const WAL_OWN: u8 = 0x00;
const WAL_POLKA: u8 = 0x01;

impl WalEntry {
    /// Height the entry belongs to (the node may prune entries of decided heights).
    pub fn height(&self) -> Height {
        match self {
            WalEntry::Proposal(p) => p.height,
            WalEntry::Vote(v) | WalEntry::Polka(v) => v.height,
        }
    }

    /// Whether this node signed the entry (false for [`WalEntry::Polka`]).
    pub fn is_own(&self) -> bool {
        !matches!(self, WalEntry::Polka(_))
    }

    /// The entry as a message.
    pub fn to_message(&self) -> Message {
        match self {
            WalEntry::Proposal(p) => Message::Proposal(p.clone()),
            WalEntry::Vote(v) | WalEntry::Polka(v) => Message::Vote(v.clone()),
        }
    }

    /// Encode: one byte (0x00 own message, 0x01 polka vote) then the message wire format.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![if self.is_own() { WAL_OWN } else { WAL_POLKA }];
        b.extend(self.to_message().encode());
        b
    }

    /// Decode bytes written by [`WalEntry::encode`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (kind, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        Ok(match (*kind, Message::decode(rest)?) {
            (WAL_OWN, Message::Proposal(p)) => WalEntry::Proposal(p),
            (WAL_OWN, Message::Vote(v)) => WalEntry::Vote(v),
            (WAL_POLKA, Message::Vote(v)) if v.kind == VoteKind::Prevote => WalEntry::Polka(v),
            _ => return Err(DecodeError::BadField("wal entry kind")),
        })
    }
}

/// Something that happened that the engine must react to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Begin (or, after [`Engine::restore`], resume) this height; must exceed the current one.
    StartHeight(Height),
    /// A proposal from the network; the engine verifies it.
    Proposal(SignedProposal),
    /// A vote from the network; the engine verifies it.
    Vote(SignedVote),
    /// A message already checked by [`ValidatorSet::verify_message`] (trusted path).
    Verified(Verified),
    /// A timer from [`Output::ScheduleTimeout`] fired.
    TimeoutElapsed {
        /// Height of the timer.
        height: Height,
        /// Round of the timer.
        round: Round,
        /// Kind of the timer.
        step: TimeoutKind,
    },
    /// Answer to [`Output::RequestValue`]: the value to propose (must be valid).
    ProposeValue {
        /// Height asked for.
        height: Height,
        /// Round asked for.
        round: Round,
        /// The block hash to propose.
        value_id: ValueId,
    },
    /// Answer to [`Output::Validate`].
    ValidationResult {
        /// Height asked for.
        height: Height,
        /// The value judged.
        value_id: ValueId,
        /// Whether the block is valid at this height.
        valid: bool,
    },
    /// A commit certificate for the current height obtained by block sync.
    Certificate(CommitCertificate),
}

/// Something the node must do. Apply outputs in order.
///
/// **Persist contract:** a [`Output::Persist`] entry must be durable (fsync)
/// before any *later* output of the same `handle` call leaves the node. A
/// crash before that point is harmless (nothing was sent); after it, the
/// entry is in the WAL and [`Engine::restore`] will never sign a conflicting
/// message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Write this own signed message to the WAL, durably, before continuing.
    Persist(WalEntry),
    /// Send this message to every other member.
    Broadcast(Message),
    /// Call back with [`Input::TimeoutElapsed`] after `duration`.
    ScheduleTimeout {
        /// Height of the timer.
        height: Height,
        /// Round of the timer.
        round: Round,
        /// Kind of the timer.
        step: TimeoutKind,
        /// Delay before it fires.
        duration: Duration,
    },
    /// We are proposer: answer with [`Input::ProposeValue`].
    RequestValue {
        /// Height to propose for.
        height: Height,
        /// Round to propose in.
        round: Round,
    },
    /// Fetch/check the block with this id; answer with [`Input::ValidationResult`].
    Validate {
        /// Height of the proposal.
        height: Height,
        /// Round the value was seen in.
        round: Round,
        /// The block hash to validate.
        value_id: ValueId,
    },
    /// The height is decided (final). Store it, then send [`Input::StartHeight`] for the next.
    Decide {
        /// Decided height.
        height: Height,
        /// Decided value.
        value_id: ValueId,
        /// Proof of the decision for followers.
        certificate: CommitCertificate,
    },
    /// A validator equivocated.
    Evidence(Equivocation),
}

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// The signing key is not a member of the validator set.
    #[error("signing key is not in the validator set; run as observer (no key) or fix genesis")]
    NotAValidator,
    /// A WAL entry was not signed by this node's key.
    #[error("WAL entry {0} is not signed by this node's key; the WAL belongs to another member")]
    ForeignWalEntry(usize),
    /// WAL entries span several heights.
    #[error("WAL entries span heights {0} and {1}; pass only the entries of one height")]
    MixedHeights(Height, Height),
    /// The WAL holds two different messages for one slot.
    #[error("WAL entry {0} conflicts with an earlier entry for the same slot; the node already equivocated")]
    ConflictingWal(usize),
    /// Restoring needs the signing key.
    #[error("restoring a WAL needs the signing key that wrote it")]
    MissingKey,
}

/// Test-only fault switches, compiled only with the `sim` feature.
#[cfg(feature = "sim")]
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mutant {
    /// The correct algorithm.
    #[default]
    None,
    /// Ignore the lock when prevoting (breaks safety).
    NoLock,
    /// Decide on f+1 precommits instead of 2f+1 (breaks safety).
    WeakQuorum,
}

/// Own signed messages of one height.
#[derive(Clone, Debug, Default)]
struct OwnSigned {
    proposals: BTreeMap<Round, SignedProposal>,
    prevotes: BTreeMap<Round, SignedVote>,
    precommits: BTreeMap<Round, SignedVote>,
    /// Peers' prevotes restored from [`WalEntry::Polka`] entries.
    polka: Vec<SignedVote>,
}

impl OwnSigned {
    fn votes(&self, kind: VoteKind) -> &BTreeMap<Round, SignedVote> {
        match kind {
            VoteKind::Prevote => &self.prevotes,
            VoteKind::Precommit => &self.precommits,
        }
    }

    fn max_round(&self) -> Option<Round> {
        let a = self.proposals.keys().next_back();
        let b = self.prevotes.keys().next_back();
        let c = self.precommits.keys().next_back();
        [a, b, c].into_iter().flatten().max().copied()
    }
}

/// State of the height being decided.
#[derive(Clone, Debug)]
struct HeightState {
    height: Height,
    round: Round,
    step: Step,
    locked: Option<(Round, ValueId)>,
    valid: Option<(Round, ValueId)>,
    proposals: BTreeMap<Round, SignedProposal>,
    votes: BTreeMap<Round, RoundVotes>,
    validity: BTreeMap<ValueId, bool>,
    validation_requested: BTreeSet<ValueId>,
    own: OwnSigned,
    value_requested: bool,
    prevote_timeout_scheduled: bool,
    precommit_timeout_scheduled: bool,
    polka_seen: bool,
    polka_persisted: BTreeSet<Round>,
    evidence_reported: BTreeSet<(ValidatorIndex, Round, u8)>,
}

impl HeightState {
    fn new(height: Height) -> Self {
        HeightState {
            height,
            round: Round(0),
            step: Step::Propose,
            locked: None,
            valid: None,
            proposals: BTreeMap::new(),
            votes: BTreeMap::new(),
            validity: BTreeMap::new(),
            validation_requested: BTreeSet::new(),
            own: OwnSigned::default(),
            value_requested: false,
            prevote_timeout_scheduled: false,
            precommit_timeout_scheduled: false,
            polka_seen: false,
            polka_persisted: BTreeSet::new(),
            evidence_reported: BTreeSet::new(),
        }
    }
}

/// A sans-IO Tendermint participant (validator, or observer without a key).
///
/// Incoming messages may arrive through [`Input::Proposal`]/[`Input::Vote`],
/// which the engine verifies ([`crate::signature_rule`]), or pre-verified through
/// [`Input::Verified`]. Invalid or irrelevant messages are dropped silently;
/// use [`Message::verify`] first if the node wants to score peers.
#[derive(Clone, Debug)]
pub struct Engine {
    config: EngineConfig,
    validators: ValidatorSet,
    key: Option<(SigningKey, ValidatorIndex)>,
    prior: Option<(Height, OwnSigned)>,
    state: Option<HeightState>,
    next_buffer: Vec<Verified>,
    #[cfg(feature = "sim")]
    mutant: Mutant,
}

impl Engine {
    /// A fresh engine; `key = None` makes an observer that never signs.
    pub fn new(
        config: EngineConfig,
        validators: ValidatorSet,
        key: Option<SigningKey>,
    ) -> Result<Self, EngineError> {
        let key = match key {
            Some(k) => {
                let idx = validators
                    .index_of(&k.verifying_key())
                    .ok_or(EngineError::NotAValidator)?;
                Some((k, idx))
            }
            None => None,
        };
        Ok(Engine {
            config,
            validators,
            key,
            prior: None,
            state: None,
            next_buffer: Vec::new(),
            #[cfg(feature = "sim")]
            mutant: Mutant::None,
        })
    }

    /// An engine that remembers the own messages in `wal` (all of one height).
    ///
    /// On [`Input::StartHeight`] of that height it resumes in the highest
    /// round it signed in, re-broadcasts those messages, re-derives its lock
    /// from its last non-nil precommit, and never signs a different proposal
    /// or vote for a (round, step) it already signed.
    pub fn restore(
        config: EngineConfig,
        validators: ValidatorSet,
        key: SigningKey,
        wal: &[WalEntry],
    ) -> Result<Self, EngineError> {
        let mut engine = Engine::new(config, validators, Some(key))?;
        let me = engine
            .key
            .as_ref()
            .map(|k| k.1)
            .ok_or(EngineError::MissingKey)?;
        let mut own = OwnSigned::default();
        let mut height: Option<Height> = None;
        for (i, entry) in wal.iter().enumerate() {
            let h = entry.height();
            match height {
                Some(prev) if prev != h => return Err(EngineError::MixedHeights(prev, h)),
                _ => height = Some(h),
            }
            let msg = entry.to_message();
            let signer_ok = msg.signer() == me || !entry.is_own();
            if !signer_ok
                || msg
                    .verify(&engine.config.chain_id, &engine.validators)
                    .is_err()
            {
                return Err(EngineError::ForeignWalEntry(i));
            }
            let conflict = match entry {
                WalEntry::Proposal(p) => own
                    .proposals
                    .insert(p.round, p.clone())
                    .is_some_and(|old| old != *p),
                WalEntry::Vote(v) => {
                    let map = match v.kind {
                        VoteKind::Prevote => &mut own.prevotes,
                        VoteKind::Precommit => &mut own.precommits,
                    };
                    map.insert(v.round, v.clone()).is_some_and(|old| old != *v)
                }
                WalEntry::Polka(v) => {
                    if v.kind != VoteKind::Prevote {
                        return Err(EngineError::ForeignWalEntry(i));
                    }
                    own.polka.push(v.clone());
                    false
                }
            };
            if conflict {
                return Err(EngineError::ConflictingWal(i));
            }
        }
        engine.prior = height.map(|h| (h, own));
        Ok(engine)
    }

    /// Enable a test-only fault (simulator only).
    #[cfg(feature = "sim")]
    #[doc(hidden)]
    pub fn set_mutant(&mut self, mutant: Mutant) {
        self.mutant = mutant;
    }

    fn ignore_lock(&self) -> bool {
        #[cfg(feature = "sim")]
        if self.mutant == Mutant::NoLock {
            return true;
        }
        false
    }

    fn decide_threshold(&self) -> u64 {
        #[cfg(feature = "sim")]
        if self.mutant == Mutant::WeakQuorum {
            return self.validators.f_plus_one();
        }
        self.validators.quorum()
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The validator set.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// Own index, or `None` for an observer.
    pub fn validator_index(&self) -> Option<ValidatorIndex> {
        self.key.as_ref().map(|k| k.1)
    }

    /// Current height, once started.
    pub fn height(&self) -> Option<Height> {
        self.state.as_ref().map(|s| s.height)
    }

    /// Current round, once started.
    pub fn round(&self) -> Option<Round> {
        self.state.as_ref().map(|s| s.round)
    }

    /// Current step, once started.
    pub fn step(&self) -> Option<Step> {
        self.state.as_ref().map(|s| s.step)
    }

    /// Current lock (round, value), if any.
    pub fn locked(&self) -> Option<(Round, ValueId)> {
        self.state.as_ref().and_then(|s| s.locked)
    }

    /// Current valid value (round, value), if any.
    pub fn valid_value(&self) -> Option<(Round, ValueId)> {
        self.state.as_ref().and_then(|s| s.valid)
    }

    /// Feed one input and collect the outputs.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        self.handle_into(input, &mut out);
        out
    }

    /// Feed one input and append the outputs to `out`.
    pub fn handle_into(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::StartHeight(h) => self.start_height(h, out),
            Input::Proposal(p) => self.on_unverified(Message::Proposal(p), out),
            Input::Vote(v) => self.on_unverified(Message::Vote(v), out),
            Input::Verified(v) => {
                if v.matches(&self.config.chain_id, &self.validators) {
                    self.on_verified(v, out);
                }
            }
            Input::TimeoutElapsed {
                height,
                round,
                step,
            } => self.on_timeout(height, round, step, out),
            Input::ProposeValue {
                height,
                round,
                value_id,
            } => self.on_propose_value(height, round, value_id, out),
            Input::ValidationResult {
                height,
                value_id,
                valid,
            } => {
                if let Some(st) = self.state.as_mut() {
                    if st.height == height && st.validation_requested.contains(&value_id) {
                        st.validity.insert(value_id, valid);
                        self.run_rules(out);
                    }
                }
            }
            Input::Certificate(cert) => self.on_certificate(cert, out),
        }
    }

    // ----- inputs -------------------------------------------------------

    fn start_height(&mut self, h: Height, out: &mut Vec<Output>) {
        if self.state.as_ref().is_some_and(|s| s.height >= h) {
            return;
        }
        let mut st = HeightState::new(h);
        let mut resume_round = Round(0);
        if let Some(ph) = self.prior.as_ref().map(|p| p.0) {
            if ph == h {
                if let Some((_, mut own)) = self.prior.take() {
                    // The lock is exactly the last non-nil own precommit (lines 36-43
                    // set lockedValue only together with precommitting it).
                    st.locked = own
                        .precommits
                        .iter()
                        .rev()
                        .find_map(|(r, v)| v.value.map(|val| (*r, val)));
                    st.valid = st.locked;
                    if let Some((_, v)) = st.locked {
                        st.validity.insert(v, true);
                    }
                    resume_round = own.max_round().unwrap_or(Round(0));
                    for p in own.proposals.values() {
                        st.proposals.insert(p.round, p.clone());
                        st.validity.insert(p.value_id, true);
                    }
                    for v in own.prevotes.values().chain(own.precommits.values()) {
                        st.votes
                            .entry(v.round)
                            .or_default()
                            .of_mut(v.kind)
                            .add(v.clone(), None);
                    }
                    // Polka votes were persisted only after their value was validated.
                    for v in std::mem::take(&mut own.polka) {
                        if let Some(val) = v.value {
                            st.validity.insert(val, true);
                        }
                        st.polka_persisted.insert(v.round);
                        st.votes.entry(v.round).or_default().prevotes.add(v, None);
                    }
                    st.own = own;
                }
            } else if ph < h {
                self.prior = None;
            }
        }
        self.state = Some(st);
        self.start_round(resume_round, out);
        let buffered = std::mem::take(&mut self.next_buffer);
        for m in buffered {
            if m.message().height() == h {
                self.on_verified(m, out);
            }
        }
        self.run_rules(out);
    }

    fn on_unverified(&mut self, msg: Message, out: &mut Vec<Output>) {
        if self.is_duplicate(&msg) || !self.is_relevant(&msg) {
            return;
        }
        if let Ok(v) = self.validators.verify_message(&self.config.chain_id, msg) {
            self.on_verified(v, out);
        }
    }

    /// Cheap pre-filter so that the signature check is skipped for noise.
    fn is_relevant(&self, msg: &Message) -> bool {
        match &self.state {
            Some(st) => {
                let h = msg.height();
                h == st.height.next()
                    || (h == st.height
                        && st.step != Step::Decided
                        && msg.round().0 <= st.round.0.saturating_add(MAX_ROUNDS_AHEAD))
            }
            None => false,
        }
    }

    fn is_duplicate(&self, msg: &Message) -> bool {
        let Some(st) = &self.state else { return false };
        if msg.height() != st.height {
            return false;
        }
        match msg {
            Message::Proposal(p) => st.proposals.get(&p.round) == Some(p),
            Message::Vote(v) => st
                .votes
                .get(&v.round)
                .is_some_and(|rv| rv.of(v.kind).contains(v)),
        }
    }

    fn on_verified(&mut self, verified: Verified, out: &mut Vec<Output>) {
        if !self.is_relevant(verified.message()) {
            return;
        }
        let Some(st) = self.state.as_mut() else {
            return;
        };
        if verified.message().height() != st.height {
            // Next height: keep a bounded number per signer for round skipping at start.
            let signer = verified.message().signer();
            let mine = self
                .next_buffer
                .iter()
                .filter(|m| m.message().signer() == signer)
                .count();
            if mine < MAX_BUFFERED_PER_SIGNER && !self.next_buffer.contains(&verified) {
                self.next_buffer.push(verified);
            }
            return;
        }
        match verified.into_message() {
            Message::Proposal(p) => {
                if let Some(existing) = st.proposals.get(&p.round) {
                    // Compare content, not signature bytes: a signer can make several
                    // valid signatures for one message, and that is not equivocation.
                    let differs =
                        (existing.value_id, existing.pol_round) != (p.value_id, p.pol_round);
                    if differs && st.evidence_reported.insert((p.proposer, p.round, 0)) {
                        out.push(Output::Evidence(Equivocation::Proposals {
                            first: existing.clone(),
                            second: p,
                        }));
                    }
                    return;
                }
                let (round, value) = (p.round, p.value_id);
                st.proposals.insert(round, p);
                Self::request_validation(st, round, value, out);
            }
            Message::Vote(v) => {
                let tag = match v.kind {
                    VoteKind::Prevote => 1,
                    VoteKind::Precommit => 2,
                };
                let proposal = st.proposals.get(&v.round).map(|p| p.value_id);
                let (validator, round) = (v.validator, v.round);
                let slot = st.votes.entry(round).or_default().of_mut(v.kind);
                match slot.add(v.clone(), proposal) {
                    Added::New => {}
                    Added::Duplicate => return,
                    Added::Conflict { first, kept } => {
                        if st.evidence_reported.insert((validator, round, tag)) {
                            out.push(Output::Evidence(Equivocation::Votes { first, second: v }));
                        }
                        if !kept {
                            return;
                        }
                    }
                }
            }
        }
        self.run_rules(out);
    }

    fn request_validation(
        st: &mut HeightState,
        round: Round,
        value_id: ValueId,
        out: &mut Vec<Output>,
    ) {
        if !st.validity.contains_key(&value_id) && st.validation_requested.insert(value_id) {
            out.push(Output::Validate {
                height: st.height,
                round,
                value_id,
            });
        }
    }

    fn on_timeout(
        &mut self,
        height: Height,
        round: Round,
        kind: TimeoutKind,
        out: &mut Vec<Output>,
    ) {
        let Some(st) = self.state.as_mut() else {
            return;
        };
        if st.height != height || st.round != round || st.step == Step::Decided {
            return;
        }
        match kind {
            // Line 57: OnTimeoutPropose.
            TimeoutKind::Propose => {
                if st.step == Step::Propose {
                    self.vote(VoteKind::Prevote, None, out);
                }
            }
            // Line 61: OnTimeoutPrevote.
            TimeoutKind::Prevote => {
                if st.step == Step::Prevote {
                    self.vote(VoteKind::Precommit, None, out);
                }
            }
            // Line 65: OnTimeoutPrecommit.
            TimeoutKind::Precommit => self.start_round(round.next(), out),
            TimeoutKind::Rebroadcast => {
                self.rebroadcast(out);
                self.schedule(TimeoutKind::Rebroadcast, out);
            }
        }
        self.run_rules(out);
    }

    fn on_propose_value(
        &mut self,
        height: Height,
        round: Round,
        value_id: ValueId,
        out: &mut Vec<Output>,
    ) {
        let Some(st) = self.state.as_mut() else {
            return;
        };
        if st.height != height
            || st.round != round
            || st.step != Step::Propose
            || !st.value_requested
            || st.own.proposals.contains_key(&round)
        {
            return;
        }
        st.validity.insert(value_id, true);
        self.propose(value_id, None, out);
        self.run_rules(out);
    }

    fn on_certificate(&mut self, cert: CommitCertificate, out: &mut Vec<Output>) {
        let Some(st) = self.state.as_ref() else {
            return;
        };
        if st.height != cert.height || st.step == Step::Decided {
            return;
        }
        if cert.verify(&self.config.chain_id, &self.validators).is_ok() {
            self.decide(cert, out);
        }
    }

    // ----- actions ------------------------------------------------------

    fn schedule(&self, kind: TimeoutKind, out: &mut Vec<Output>) {
        if let Some(st) = &self.state {
            out.push(Output::ScheduleTimeout {
                height: st.height,
                round: st.round,
                step: kind,
                duration: self.config.timeouts.get(kind).at(st.round),
            });
        }
    }

    /// StartRound (line 11), also used to resume a restored round.
    fn start_round(&mut self, round: Round, out: &mut Vec<Output>) {
        let me = self.validator_index();
        let proposer = self
            .state
            .as_ref()
            .map(|st| self.validators.proposer(st.height, round));
        let Some(st) = self.state.as_mut() else {
            return;
        };
        st.round = round;
        st.step = Step::Propose;
        st.value_requested = false;
        st.prevote_timeout_scheduled = false;
        st.precommit_timeout_scheduled = false;
        st.polka_seen = false;
        // Resuming after restore: own messages of this round fix the step and are re-sent.
        if let Some(p) = st.own.proposals.get(&round) {
            out.push(Output::Broadcast(Message::Proposal(p.clone())));
        }
        if let Some(v) = st.own.prevotes.get(&round) {
            st.step = Step::Prevote;
            out.push(Output::Broadcast(Message::Vote(v.clone())));
        }
        if let Some(v) = st.own.precommits.get(&round) {
            st.step = Step::Precommit;
            out.push(Output::Broadcast(Message::Vote(v.clone())));
        }
        let step = st.step;
        let already_proposed = st.own.proposals.contains_key(&round);
        let valid = st.valid;
        self.schedule(TimeoutKind::Rebroadcast, out);
        if step != Step::Propose {
            return;
        }
        self.schedule(TimeoutKind::Propose, out);
        if me.is_some() && me == proposer && !already_proposed {
            match valid {
                Some((vr, v)) => self.propose(v, Some(vr), out),
                None => {
                    if let Some(st) = self.state.as_mut() {
                        st.value_requested = true;
                        out.push(Output::RequestValue {
                            height: st.height,
                            round,
                        });
                    }
                }
            }
        }
    }

    fn propose(&mut self, value_id: ValueId, pol_round: Option<Round>, out: &mut Vec<Output>) {
        let Some((key, me)) = &self.key else { return };
        let Some(st) = self.state.as_mut() else {
            return;
        };
        let round = st.round;
        if st.own.proposals.contains_key(&round) {
            return; // never sign a second proposal for a round
        }
        let p = SignedProposal::sign(
            &self.config.chain_id,
            key,
            *me,
            st.height,
            round,
            value_id,
            pol_round,
        );
        st.own.proposals.insert(round, p.clone());
        out.push(Output::Persist(WalEntry::Proposal(p.clone())));
        out.push(Output::Broadcast(Message::Proposal(p.clone())));
        // Relay the proof of lock change so that peers that missed it can accept.
        if let Some(vr) = pol_round {
            if let Some(rv) = st.votes.get(&vr) {
                for v in rv.prevotes.votes_for(Some(value_id)) {
                    out.push(Output::Broadcast(Message::Vote(v.clone())));
                }
            }
        }
        st.proposals.entry(round).or_insert(p);
    }

    /// Sign, persist and broadcast a vote for the current round, and move the step.
    fn vote(&mut self, kind: VoteKind, value: Option<ValueId>, out: &mut Vec<Output>) {
        let Some(st) = self.state.as_mut() else {
            return;
        };
        st.step = match kind {
            VoteKind::Prevote => Step::Prevote,
            VoteKind::Precommit => Step::Precommit,
        };
        let Some((key, me)) = &self.key else { return };
        let round = st.round;
        if let Some(existing) = st.own.votes(kind).get(&round) {
            // Already signed in this slot (e.g. before a restart): re-send that one, never another.
            out.push(Output::Broadcast(Message::Vote(existing.clone())));
            return;
        }
        let v = SignedVote::sign(
            &self.config.chain_id,
            key,
            *me,
            kind,
            st.height,
            round,
            value,
        );
        match kind {
            VoteKind::Prevote => st.own.prevotes.insert(round, v.clone()),
            VoteKind::Precommit => st.own.precommits.insert(round, v.clone()),
        };
        out.push(Output::Persist(WalEntry::Vote(v.clone())));
        out.push(Output::Broadcast(Message::Vote(v.clone())));
        st.votes.entry(round).or_default().of_mut(kind).add(v, None);
    }

    fn rebroadcast(&self, out: &mut Vec<Output>) {
        let Some(st) = &self.state else { return };
        let mut msgs: Vec<Message> = Vec::new();
        let mut add = |m: Message| {
            if !msgs.contains(&m) {
                msgs.push(m);
            }
        };
        let r = st.round;
        if let Some(p) = st.proposals.get(&r) {
            add(Message::Proposal(p.clone()));
        }
        if let Some(rv) = st.votes.get(&r) {
            rv.prevotes
                .all()
                .chain(rv.precommits.all())
                .for_each(|v| add(Message::Vote(v.clone())));
        }
        if r.0 > 0 {
            if let Some(rv) = st.votes.get(&Round(r.0 - 1)) {
                rv.precommits
                    .all()
                    .for_each(|v| add(Message::Vote(v.clone())));
            }
        }
        if let Some((vr, val)) = st.valid {
            if let Some(p) = st.proposals.get(&vr).filter(|p| p.value_id == val) {
                add(Message::Proposal(p.clone()));
            }
            if let Some(rv) = st.votes.get(&vr) {
                rv.prevotes
                    .votes_for(Some(val))
                    .for_each(|v| add(Message::Vote(v.clone())));
            }
        }
        out.extend(msgs.into_iter().map(Output::Broadcast));
    }

    fn decide(&mut self, certificate: CommitCertificate, out: &mut Vec<Output>) {
        let Some(st) = self.state.as_mut() else {
            return;
        };
        st.step = Step::Decided;
        out.push(Output::Decide {
            height: st.height,
            value_id: certificate.value_id,
            certificate,
        });
    }

    // ----- rules --------------------------------------------------------

    fn run_rules(&mut self, out: &mut Vec<Output>) {
        loop {
            if self.state.as_ref().is_none_or(|s| s.step == Step::Decided) {
                return;
            }
            if self.check_decision(out) {
                return;
            }
            if self.check_round_skip(out) || self.check_current_round(out) {
                continue;
            }
            return;
        }
    }

    /// Line 49: 2f+1 precommits for a value in any round decide it.
    fn check_decision(&mut self, out: &mut Vec<Output>) -> bool {
        let threshold = self.decide_threshold();
        let Some(st) = &self.state else { return false };
        let found = st.votes.iter().find_map(|(r, rv)| {
            rv.precommits
                .value_with(threshold, &self.validators)
                .map(|v| (*r, v, rv))
        });
        let Some((round, value_id, rv)) = found else {
            return false;
        };
        let mut precommits: Vec<(ValidatorIndex, _)> = rv
            .precommits
            .votes_for(Some(value_id))
            .map(|v| (v.validator, v.signature))
            .collect();
        precommits.sort_by_key(|(i, _)| *i);
        let certificate = CommitCertificate {
            height: st.height,
            round,
            value_id,
            precommits,
        };
        self.decide(certificate, out);
        true
    }

    /// Line 55: f+1 validators with messages in a higher round make us jump to it.
    fn check_round_skip(&mut self, out: &mut Vec<Output>) -> bool {
        let Some(st) = &self.state else { return false };
        let mut signers: BTreeMap<Round, BTreeSet<ValidatorIndex>> = BTreeMap::new();
        for (r, p) in st.proposals.range(st.round.next()..) {
            signers.entry(*r).or_default().insert(p.proposer);
        }
        for (r, rv) in st.votes.range(st.round.next()..) {
            let s = signers.entry(*r).or_default();
            s.extend(rv.prevotes.signers().chain(rv.precommits.signers()));
        }
        let target = signers.iter().rev().find_map(|(r, s)| {
            let p: u64 = s.iter().map(|i| self.validators.power(*i)).sum();
            (*r > st.round && p >= self.validators.f_plus_one()).then_some(*r)
        });
        match target {
            Some(r) => {
                self.start_round(r, out);
                true
            }
            None => false,
        }
    }

    /// Persist the peers' prevotes of the polka for (`round`, `value`) once, so the
    /// proof of lock survives a restart.
    fn persist_polka(
        st: &mut HeightState,
        me: Option<ValidatorIndex>,
        round: Round,
        value: ValueId,
        out: &mut Vec<Output>,
    ) {
        let Some(me) = me else { return };
        if !st.polka_persisted.insert(round) {
            return;
        }
        if let Some(rv) = st.votes.get(&round) {
            for v in rv
                .prevotes
                .votes_for(Some(value))
                .filter(|v| v.validator != me)
            {
                out.push(Output::Persist(WalEntry::Polka(v.clone())));
            }
        }
    }

    fn check_current_round(&mut self, out: &mut Vec<Output>) -> bool {
        let me = self.validator_index();
        let quorum = self.validators.quorum();
        let ignore_lock = self.ignore_lock();
        let set = &self.validators;
        let Some(st) = self.state.as_mut() else {
            return false;
        };
        let r = st.round;

        // validValue also follows polkas of earlier rounds; unknown polka values get validated.
        let floor = st.valid.map(|(vr, _)| vr);
        let polkas: Vec<(Round, ValueId)> = st
            .votes
            .range(..=r)
            .filter(|(vr, _)| floor.is_none_or(|f| **vr > f))
            .filter_map(|(vr, rv)| rv.prevotes.value_with(quorum, set).map(|v| (*vr, v)))
            .collect();
        for (vr, val) in polkas {
            match st.validity.get(&val) {
                Some(true) if vr < r && st.valid.is_none_or(|(cur, _)| cur < vr) => {
                    st.valid = Some((vr, val));
                    Self::persist_polka(st, me, vr, val, out);
                }
                None => Self::request_validation(st, vr, val, out),
                _ => {}
            }
        }

        let empty = RoundVotes::default();
        let cur = st.votes.get(&r).unwrap_or(&empty);
        let prevotes_any = cur.prevotes.power_any(set);
        let prevotes_nil = cur.prevotes.power_for(None, set);
        let polka_value = cur.prevotes.value_with(quorum, set);
        let precommits_any = cur.precommits.power_any(set);

        // Lines 22 and 28: the proposal of this round.
        let mut prevote = None;
        if st.step == Step::Propose {
            if let Some(p) = st.proposals.get(&r) {
                let v = p.value_id;
                prevote = match (p.pol_round, st.validity.get(&v).copied()) {
                    (None, Some(valid)) => {
                        Some(valid && (ignore_lock || st.locked.is_none_or(|(_, lv)| lv == v)))
                    }
                    (Some(vr), Some(valid)) => {
                        let pol = st
                            .votes
                            .get(&vr)
                            .map_or(0, |rv| rv.prevotes.power_for(Some(v), set));
                        (pol >= quorum).then(|| {
                            valid
                                && (ignore_lock
                                    || st.locked.is_none_or(|(lr, lv)| lr <= vr || lv == v))
                        })
                    }
                    (_, None) => None,
                }
                .map(|accept| accept.then_some(v));
            }
        }
        if let Some(value) = prevote {
            self.vote(VoteKind::Prevote, value, out);
            return true;
        }

        // Line 34: 2f+1 prevotes of any kind start timeoutPrevote.
        let mut schedule = None;
        if st.step == Step::Prevote && !st.prevote_timeout_scheduled && prevotes_any >= quorum {
            st.prevote_timeout_scheduled = true;
            schedule = Some(TimeoutKind::Prevote);
        }

        // Line 36: a polka for a valid value in this round locks (if still prevoting) and sets validValue.
        let mut precommit = None;
        if schedule.is_none()
            && matches!(st.step, Step::Prevote | Step::Precommit)
            && !st.polka_seen
        {
            if let Some(val) = polka_value {
                match st.validity.get(&val) {
                    Some(true) => {
                        st.polka_seen = true;
                        st.valid = Some((r, val));
                        Self::persist_polka(st, me, r, val, out);
                        if st.step == Step::Prevote {
                            st.locked = Some((r, val));
                            precommit = Some(Some(val));
                        } else {
                            return true;
                        }
                    }
                    Some(false) => {}
                    None => Self::request_validation(st, r, val, out),
                }
            }
        }

        // Line 44: a nil polka precommits nil.
        if schedule.is_none()
            && precommit.is_none()
            && st.step == Step::Prevote
            && prevotes_nil >= quorum
        {
            precommit = Some(None);
        }

        // Line 47: 2f+1 precommits of any kind start timeoutPrecommit.
        if schedule.is_none()
            && precommit.is_none()
            && !st.precommit_timeout_scheduled
            && precommits_any >= quorum
        {
            st.precommit_timeout_scheduled = true;
            schedule = Some(TimeoutKind::Precommit);
        }

        if let Some(value) = precommit {
            self.vote(VoteKind::Precommit, value, out);
            return true;
        }
        if let Some(kind) = schedule {
            self.schedule(kind, out);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests;
