//! The consensus driver: wires the sans-IO Tendermint engine
//! (`fedpeg-consensus`) to the network, timers, the WAL and the chain.
//!
//! - The proposer builds a block from the mempool ([`Chain::propose`]) and
//!   gossips the block before its signed proposal; others cache it (only if
//!   its body matches its header, within the sender's quota: see
//!   [`block_cache`]) and validate it by applying it to a scratch copy of
//!   state ([`Chain::validate`]). Its Bitcoin checks (mints, peg-out
//!   confirmations: [`peg_checks`]) run off this task; the engine gets the
//!   verdict when it arrives, and a check that cannot be done within the
//!   propose timeout is a nil vote on that block only.
//! - Every own proposal/vote is fsynced to the [`Wal`] before it is sent.
//! - A decided block and its commit certificate are stored in one atomic
//!   batch ([`Chain::commit`]); then the next height starts. A decided block
//!   this node lacks, or holds but cannot apply, is fetched by block sync.
//! - Block sync: a member that lags (or an observer, which only syncs) asks
//!   peers for blocks + certificates and verifies each certificate against
//!   the validator set before applying the block. Serving sync to others is
//!   not done here but by [`crate::sync_server`], off this task.
//! - Transactions submitted to this node are gossiped to the other members.
//! - With a halt height H (coordinated upgrades) the driver stops once H is
//!   stored, whether by consensus or by sync, and never feeds the engine
//!   `StartHeight(H + 1)`: the engine signs only at the height it was started
//!   at, so nothing for H + 1 is ever signed, written to the WAL or sent.
//!   Sync applies no block above H.

use crate::chain::{Chain, CommitError, Gossip};
use crate::faults::Faults;
use crate::network::{LogLimiter, NetEvent, Network, PeerId, SYNC_MAX_BLOCKS};
use crate::sync_server::MAX_SYNC_WAIT;
use crate::watcher::{SeenDeposit, Watcher};
use fedpeg_ledger::block::{Block, CommittedBlock};
use fedpeg_ledger::fedtx::{FedTxKind, FederationTx};

use crate::wal::Wal;
use anyhow::Context;
use fedpeg_consensus::{
    ChainId, CommitCertificate, Engine, EngineConfig, Height, Input, Message, Output, Round,
    SignedProposal, SigningKey, TimeoutKind, TimeoutParams, Timeouts, ValidatorSet, ValueId,
};
use fedpeg_ledger::tx::Transaction;
use fedpeg_ledger::BlockOutcome;
use fedpeg_proto::v1 as pb;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod block_cache;
mod gossip;
mod peg_checks;
pub mod rejoin;
mod sync;

use block_cache::BlockCache;
use gossip::gossip_tx;

/// Most mints a proposer puts in one block.
const MAX_MINTS_PER_BLOCK: usize = 100;
/// Most transactions in one gossip batch.
const TX_GOSSIP_BATCH: usize = 2048;
/// Longest a submitted transaction waits to be gossiped with others.
const TX_GOSSIP_DELAY: Duration = Duration::from_millis(5);
/// Largest allowed clock skew of a proposed block's time.
const MAX_FUTURE_MS: u64 = 10_000;

/// Live consensus numbers for the status API.
#[derive(Default)]
pub struct ConsensusStatus {
    pub round: AtomicU32,
    pub equivocations: AtomicU64,
    pub synced_blocks: AtomicU64,
    /// Restored from a backup and not voting yet ([`rejoin`]).
    pub rejoining: std::sync::atomic::AtomicBool,
    /// The vote floor of a restored member, once fixed (0: none).
    pub vote_floor: AtomicU64,
}

/// Why [`Driver::run`] returned without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The shutdown future resolved.
    Shutdown,
    /// The chain reached the halt height (the value); nothing was signed above it.
    Halted(u64),
}

/// Driver settings.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Longest a proposer waits for transactions before proposing an empty block.
    pub heartbeat: Duration,
    /// How often to ask peers whether we are behind.
    pub sync_interval: Duration,
}

/// Engine configuration from genesis.
pub fn engine_config(chain: &Chain) -> EngineConfig {
    let c = &chain.spec.genesis.consensus;
    let ms = Duration::from_millis;
    EngineConfig {
        chain_id: ChainId(chain.spec.chain_id.0),
        timeouts: Timeouts {
            propose: TimeoutParams {
                base: ms(c.timeout_propose_ms),
                delta: ms(c.timeout_propose_delta_ms),
            },
            prevote: TimeoutParams {
                base: ms(c.timeout_vote_ms),
                delta: ms(c.timeout_vote_delta_ms),
            },
            precommit: TimeoutParams {
                base: ms(c.timeout_vote_ms),
                delta: ms(c.timeout_vote_delta_ms),
            },
            rebroadcast: TimeoutParams {
                base: ms(2 * c.timeout_propose_ms),
                delta: ms(c.timeout_propose_delta_ms),
            },
        },
    }
}

/// The validator set in force at the next height.
pub fn validator_set(chain: &Chain) -> anyhow::Result<ValidatorSet> {
    Ok(chain.validators_at(Height(chain.height() + 1))?.1)
}

type SyncResult = Result<(PeerId, pb::SyncResponse), String>;

/// Most Bitcoin checks of proposed blocks running at once; a block that
/// finds them all busy (bitcoind hung) is refused at once.
const MAX_PEG_CHECKS: usize = 8;

/// The verdict of an off-task peg check: (height, block, backed).
type PegVerdict = (Height, ValueId, bool);

/// One node's consensus loop (member) or follow loop (observer).
pub struct Driver {
    chain: Arc<Chain>,
    net: Network,
    engine: Option<Engine>,
    wal: Option<Wal>,
    me: Option<u32>,
    /// The validator set of the epoch in force at the next height.
    validators: ValidatorSet,
    /// That epoch's number.
    epoch: u32,
    /// This node's consensus key (a member now, before or after).
    key: Option<SigningKey>,
    /// Consensus keys of the members last given to the network, in order.
    network_members: Vec<[u8; 32]>,
    chain_id: ChainId,
    cfg: DriverConfig,
    /// This member's index and key, for the federation transactions it signs.
    signer: Option<(u32, SigningKey)>,
    /// The peg-in watcher over this member's bitcoind (None without bitcoind).
    watcher: Option<Arc<Watcher>>,
    /// Fee rate this member votes instead of its bitcoind's estimate.
    fee_pin: Option<u64>,
    /// The Bitcoin best block at which this member last proposed early
    /// for new deposits ([`Driver::new_mints_ready`]).
    early_mints_at: Option<fedpeg_peg::bitcoin::BlockHash>,
    /// Test-only faults (see [`crate::faults`]): a member that proposes a
    /// mint of a deposit that does not exist, to show the others refuse it.
    faults: Faults,
    propose_cap: Duration,
    /// Proposed blocks of this height and the next.
    blocks: BlockCache,
    /// Rate limit of warnings about refused proposed blocks.
    warn_blocks: LogLimiter,
    /// Rate limit of warnings about members' refused federation transactions.
    warn_fed: Arc<std::sync::Mutex<LogLimiter>>,
    /// Blocks already written to the WAL at this height.
    wal_blocks: Vec<ValueId>,
    pending_validate: HashMap<ValueId, Height>,
    /// Blocks whose ledger check passed, waiting for their Bitcoin checks
    /// (run off the consensus task): the outcome to cache if they pass.
    pending_peg: HashMap<ValueId, (Height, BlockOutcome)>,
    peg_tx: mpsc::UnboundedSender<PegVerdict>,
    peg_rx: mpsc::UnboundedReceiver<PegVerdict>,
    /// Permits for running peg checks ([`MAX_PEG_CHECKS`]).
    peg_checks: Arc<tokio::sync::Semaphore>,
    /// One pre-verification of a proposed block's signatures at a time
    /// ([`Driver::preverify`]).
    preverifying: Arc<tokio::sync::Semaphore>,
    /// Longest a peg check may take before the block is refused.
    peg_check_bound: Duration,
    /// Pooled peg-out confirmations this member's bitcoind backed at the
    /// last off-task check: what its proposals may include.
    backed_claims: std::collections::HashSet<fedpeg_ledger::hash::Hash32>,
    claims_inflight: bool,
    claims_tx: mpsc::UnboundedSender<std::collections::HashSet<fedpeg_ledger::hash::Hash32>>,
    claims_rx: mpsc::UnboundedReceiver<std::collections::HashSet<fedpeg_ledger::hash::Hash32>>,
    pending_propose: Option<(Height, Round)>,
    out: Vec<pb::GossipMessage>,
    /// Transactions waiting to be gossiped (flushed every few ms).
    tx_out: Vec<pb::GossipMessage>,
    timer_tx: mpsc::UnboundedSender<(Height, Round, TimeoutKind)>,
    timer_rx: mpsc::UnboundedReceiver<(Height, Round, TimeoutKind)>,
    sync_tx: mpsc::UnboundedSender<SyncResult>,
    sync_rx: mpsc::UnboundedReceiver<SyncResult>,
    sync_inflight: bool,
    last_commit: Instant,
    status: Arc<ConsensusStatus>,
    /// Last height to commit ([`Driver::with_halt_height`]).
    halt_height: Option<u64>,
    /// Set once the chain reached `halt_height`: from then on the engine
    /// gets no input and the run loop returns.
    halted: Option<u64>,
    /// A member restored from a backup, not voting until its vote floor.
    rejoin: Option<rejoin::Rejoining>,
}

impl Driver {
    /// A keyed node's driver: a member of the epoch in force at the next
    /// height restores its engine from the WAL in `data_dir`; a node whose
    /// key joins the federation only at a later epoch follows by sync until
    /// then, and one whose key left it follows as an observer
    /// ([`Driver::enter_epoch`]).
    pub fn member(
        chain: Arc<Chain>,
        net: Network,
        key: SigningKey,
        data_dir: &Path,
        cfg: DriverConfig,
        status: Arc<ConsensusStatus>,
        watcher: Option<Arc<Watcher>>,
    ) -> anyhow::Result<Driver> {
        let (epoch, validators) = chain.validators_at(Height(chain.height() + 1))?;
        let (wal, contents) = Wal::open(&data_dir.join("consensus.wal"))?;
        let mut d = Driver::new(chain, net, None, Some(wal), None, validators, cfg, status);
        d.epoch = epoch;
        d.key = Some(key);
        d.watcher = watcher;
        d.faults = Faults::from_env(d.chain.spec.network);
        d.enter_epoch(contents)?;
        Ok(d)
    }

    /// Sets the driver up for the epoch in force at the next height: its
    /// validator set, this node's role in it (an engine, restored from
    /// `wal` entries of that height, if its key is a member; none
    /// otherwise), and who the network treats as a member. Called at start
    /// and whenever a committed block brings the next height into another
    /// epoch or adopts one; the engine of the previous epoch, if any, is
    /// dropped (it held nothing for the new height but messages to verify
    /// against the old set, which the others rebroadcast).
    pub(super) fn enter_epoch(&mut self, wal: crate::wal::WalContents) -> anyhow::Result<()> {
        let next = Height(self.chain.height() + 1);
        let (epoch, validators) = self.chain.validators_at(next)?;
        self.epoch = epoch;
        self.validators = validators;
        self.update_network_members();
        let me = self
            .key
            .as_ref()
            .and_then(|k| self.validators.index_of(&k.verifying_key()));
        let (Some(me), Some(key)) = (me, self.key.clone()) else {
            if self.me.is_some() {
                tracing::info!(
                    height = next.0,
                    epoch,
                    "this node is not a member of the epoch in force: following the chain as an observer"
                );
            }
            self.engine = None;
            self.me = None;
            self.signer = None;
            // A restored member held back below its vote floor: the held
            // engine is of a set it left. Should a later epoch list it
            // again, the restore marker in the store holds that one back.
            if self.rejoin.take().is_some() {
                self.status.rejoining.store(false, Ordering::Relaxed);
            }
            return Ok(());
        };
        let current: Vec<_> = wal
            .entries
            .into_iter()
            .filter(|e| e.height() == next)
            .collect();
        let engine_cfg = engine_config(&self.chain);
        let engine = if current.is_empty() {
            Engine::new(engine_cfg, self.validators.clone(), Some(key.clone()))?
        } else {
            tracing::info!(
                height = next.0,
                entries = current.len(),
                "restoring consensus from WAL"
            );
            Engine::restore(engine_cfg, self.validators.clone(), key.clone(), &current)?
        };
        if self.me.is_none() && self.chain.height() > 0 {
            tracing::info!(
                height = next.0,
                epoch,
                member = me.0,
                "this node is a member of the epoch in force: voting from this height"
            );
        }
        self.me = Some(me.0);
        self.signer = Some((me.0, key));
        match self.rejoin.as_mut() {
            // Restored from a backup and below its vote floor: the engine
            // stays held until the floor (see `rejoin`), now at its index
            // in this set.
            Some(r) => {
                r.engine = engine;
                r.guard.reindex(me);
            }
            None => {
                self.engine = Some(engine);
                // Whenever an engine is made (at start, or when an epoch
                // makes this node a member): a node restored from a backup
                // holds it back until its vote floor, even if it was not a
                // member when the backup was taken.
                self.hold_engine_if_restored()?;
            }
        }
        for block in wal.blocks.into_iter().filter(|b| b.header.height == next) {
            let id = ValueId(block.hash().0);
            self.wal_blocks.push(id);
            self.blocks.insert_own(id, block, None);
        }
        // A lone member has nobody waiting on its proposal: it may wait the
        // whole heartbeat. In a federation, others time out the proposer.
        let timeout_propose =
            Duration::from_millis(self.chain.spec.genesis.consensus.timeout_propose_ms);
        self.propose_cap = if self.validators.len() > 1 {
            self.cfg.heartbeat.min(timeout_propose / 2)
        } else {
            self.cfg.heartbeat
        };
        Ok(())
    }

    /// Tells the network who the members are, if that changed: those of
    /// the epoch in force at the next height and of an adopted next one.
    fn update_network_members(&mut self) {
        let list = self.chain.network_members();
        let keys: Vec<[u8; 32]> = list.iter().map(|m| m.consensus_key.to_bytes()).collect();
        if keys == self.network_members {
            return;
        }
        // Off this task: the network's command queue may be full for a
        // moment, and consensus must not wait on it. Changes are at least
        // the activation lead (10 blocks) apart, so two never race.
        let (net, peers) = (self.net.clone(), crate::daemon::epoch_peers(&list));
        tokio::spawn(async move { net.set_members(peers).await });
        self.network_members = keys;
    }

    /// After a commit: a new epoch at the next height, or a newly adopted
    /// one, changes the validator set or the network's members.
    fn check_epoch(&mut self) -> anyhow::Result<()> {
        let next = Height(self.chain.height() + 1);
        let epoch = self.chain.with_state(|s| s.epoch_at(next).number);
        if epoch != self.epoch {
            tracing::info!(height = next.0, epoch, "a new federation epoch is in force");
            self.enter_epoch(crate::wal::WalContents::default())?;
        } else {
            self.update_network_members();
        }
        Ok(())
    }

    /// Votes `rate` (sat/vB) instead of the bitcoind estimate, if set.
    pub fn with_fee_pin(mut self, rate: Option<u64>) -> Driver {
        self.fee_pin = rate;
        self
    }

    /// Stops for good once the block at `height` is stored: no input for a
    /// later height ever reaches the engine, and sync applies nothing above
    /// it. [`Driver::run`] then returns [`Stop::Halted`].
    pub fn with_halt_height(mut self, height: Option<u64>) -> Driver {
        self.halt_height = height;
        self
    }

    /// An observer's driver: follows the chain by block sync only.
    pub fn observer(
        chain: Arc<Chain>,
        net: Network,
        cfg: DriverConfig,
        status: Arc<ConsensusStatus>,
    ) -> anyhow::Result<Driver> {
        let (epoch, validators) = chain.validators_at(Height(chain.height() + 1))?;
        let mut d = Driver::new(chain, net, None, None, None, validators, cfg, status);
        d.epoch = epoch;
        d.update_network_members();
        Ok(d)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        chain: Arc<Chain>,
        net: Network,
        engine: Option<Engine>,
        wal: Option<Wal>,
        me: Option<u32>,
        validators: ValidatorSet,
        cfg: DriverConfig,
        status: Arc<ConsensusStatus>,
    ) -> Driver {
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let (sync_tx, sync_rx) = mpsc::unbounded_channel();
        let (peg_tx, peg_rx) = mpsc::unbounded_channel();
        let (claims_tx, claims_rx) = mpsc::unbounded_channel();
        // A block's Bitcoin checks must be done before the others time out
        // the proposal; later, the vote would be nil anyway.
        let peg_check_bound =
            Duration::from_millis(chain.spec.genesis.consensus.timeout_propose_ms);
        Driver {
            chain_id: ChainId(chain.spec.chain_id.0),
            propose_cap: cfg.heartbeat,
            chain,
            net,
            engine,
            wal,
            me,
            validators,
            epoch: 0,
            key: None,
            network_members: Vec::new(),
            cfg,
            signer: None,
            watcher: None,
            faults: Faults::default(),
            fee_pin: None,
            early_mints_at: None,
            blocks: BlockCache::default(),
            warn_blocks: LogLimiter::default(),
            warn_fed: Arc::default(),
            wal_blocks: Vec::new(),
            pending_validate: HashMap::new(),
            pending_peg: HashMap::new(),
            peg_tx,
            peg_rx,
            peg_checks: Arc::new(tokio::sync::Semaphore::new(MAX_PEG_CHECKS)),
            preverifying: Arc::new(tokio::sync::Semaphore::new(1)),
            peg_check_bound,
            backed_claims: Default::default(),
            claims_inflight: false,
            claims_tx,
            claims_rx,
            pending_propose: None,
            out: Vec::new(),
            tx_out: Vec::new(),
            timer_tx,
            timer_rx,
            sync_tx,
            sync_rx,
            sync_inflight: false,
            last_commit: Instant::now(),
            status,
            halt_height: None,
            halted: None,
            rejoin: None,
        }
    }

    /// Runs until `shutdown` resolves, the halt height is reached, or a
    /// fatal error (WAL or store failure).
    pub async fn run(
        mut self,
        mut net_rx: mpsc::Receiver<NetEvent>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Stop> {
        tokio::pin!(shutdown);
        let (tx_gossip, mut tx_rx) = mpsc::unbounded_channel::<Gossip>();
        self.check_halt();
        if self.key.is_some() {
            self.chain.set_gossip(tx_gossip);
        }
        if self.engine.is_some() {
            let next = Height(self.chain.height() + 1);
            self.input(Input::StartHeight(next))?;
        }
        let mut tx_flush_at: Option<Instant> = None;
        // New Bitcoin blocks (deposits may have reached their depth).
        let mut bitcoin_best = self.watcher.as_ref().map(|w| w.subscribe_best());
        let mut sync_tick = tokio::time::interval(self.cfg.sync_interval);
        sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(height) = self.halted {
                // Transactions received for gossip still reach the others.
                self.flush_txs();
                return Ok(Stop::Halted(height));
            }
            let chain = self.chain.clone();
            let propose_at = self.last_commit + self.propose_cap;
            let waiting_to_propose = self.pending_propose.is_some();
            tokio::select! {
                _ = &mut shutdown => return Ok(Stop::Shutdown),
                ev = net_rx.recv() => match ev {
                    Some(ev) => self.on_net(ev)?,
                    None => anyhow::bail!("network task stopped"),
                },
                Some((height, round, step)) = self.timer_rx.recv() => {
                    self.input(Input::TimeoutElapsed { height, round, step })?;
                }
                Some(tx) = tx_rx.recv() => {
                    // Collect transactions for a few ms: one gossip request
                    // per peer carries many (profiled: per-transaction
                    // requests cost more than the signature checks).
                    self.tx_out.push(gossip_tx(&tx));
                    while self.tx_out.len() < TX_GOSSIP_BATCH {
                        match tx_rx.try_recv() {
                            Ok(tx) => self.tx_out.push(gossip_tx(&tx)),
                            Err(_) => break,
                        }
                    }
                    if self.tx_out.len() >= TX_GOSSIP_BATCH {
                        self.flush_txs();
                    } else if tx_flush_at.is_none() {
                        tx_flush_at = Some(Instant::now() + TX_GOSSIP_DELAY);
                    }
                }
                _ = tokio::time::sleep_until(tx_flush_at.unwrap_or_else(Instant::now).into()), if tx_flush_at.is_some() => {
                    tx_flush_at = None;
                    self.flush_txs();
                }
                Some(res) = self.sync_rx.recv() => self.on_sync(res)?,
                Some(round) = rejoin::next_probe_round(&mut self.rejoin) => self.on_probe_round(round)?,
                Some((height, id, ok)) = self.peg_rx.recv() => self.on_peg_verdict(height, id, ok)?,
                Some(backed) = self.claims_rx.recv() => self.on_claims_checked(backed),
                _ = sync_tick.tick() => self.start_sync(),
                _ = tokio::time::sleep_until(propose_at.into()), if waiting_to_propose => self.propose()?,
                _ = chain.mempool_changed(), if waiting_to_propose => {
                    if self.chain.has_ready_txs() {
                        self.propose()?;
                    }
                }
                _ = best_changed(&mut bitcoin_best), if waiting_to_propose => {
                    if self.new_mints_ready() {
                        self.propose()?;
                    }
                }
            }
        }
    }

    /// Feeds the engine one input and carries out everything that follows.
    fn input(&mut self, first: Input) -> anyhow::Result<()> {
        let mut queue = VecDeque::from([first]);
        while let Some(input) = queue.pop_front() {
            // Halted: the engine gets nothing more (in particular not
            // `StartHeight(H + 1)`); what it already said for H is flushed below.
            if self.halted.is_some() {
                break;
            }
            let Some(engine) = self.engine.as_mut() else {
                return Ok(());
            };
            let outputs = engine.handle(input);
            for o in outputs {
                match o {
                    Output::Persist(entry) => {
                        // Unreachable (the engine signs only at the height it
                        // was started at); checked because signing above the
                        // halt height is what must never happen.
                        if self.halt_height.is_some_and(|h| entry.height().0 > h) {
                            anyhow::bail!(
                                "refusing to sign at height {} above the halt height {:?}",
                                entry.height().0,
                                self.halt_height
                            );
                        }
                        // Durable before anything later leaves the node: the
                        // broadcasts are only flushed after this loop. The
                        // block voted for goes first, once per height.
                        let value = match &entry {
                            fedpeg_consensus::WalEntry::Proposal(p) => Some(p.value_id),
                            fedpeg_consensus::WalEntry::Vote(v)
                            | fedpeg_consensus::WalEntry::Polka(v) => v.value,
                        };
                        let block = value
                            .filter(|v| !self.wal_blocks.contains(v))
                            .and_then(|v| self.blocks.get(&v).map(|c| (v, &c.block)));
                        if let Some(wal) = self.wal.as_mut() {
                            wal.append(block.map(|(_, b)| b), &entry)?;
                        }
                        if let Some((v, _)) = block {
                            self.wal_blocks.push(v);
                        }
                    }
                    Output::Broadcast(msg) => {
                        if let Message::Proposal(p) = &msg {
                            // Send the block with (before) every proposal of it,
                            // so a re-proposed valid value reaches late members.
                            if let Some(c) = self.blocks.get(&p.value_id) {
                                self.out.push(pb::GossipMessage {
                                    kind: Some(pb::gossip_message::Kind::ProposedBlock(
                                        c.block.to_proto(),
                                    )),
                                });
                            }
                        }
                        self.out.push(pb::GossipMessage {
                            kind: Some(pb::gossip_message::Kind::Consensus(pb::ConsensusMessage {
                                signed: msg.encode(),
                            })),
                        });
                    }
                    Output::ScheduleTimeout {
                        height,
                        round,
                        step,
                        duration,
                    } => {
                        let tx = self.timer_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(duration).await;
                            let _ = tx.send((height, round, step));
                        });
                    }
                    Output::RequestValue { height, round } => {
                        self.status.round.store(round.0, Ordering::Relaxed);
                        self.pending_propose = Some((height, round));
                        if self.chain.has_ready_txs()
                            || self.new_mints_ready()
                            || self.last_commit.elapsed() >= self.propose_cap
                        {
                            // Propose right away; the answer joins the queue.
                            if let Some(i) = self.build_proposal()? {
                                queue.push_back(i);
                            }
                        }
                    }
                    Output::Validate {
                        height,
                        round,
                        value_id,
                    } => {
                        self.status.round.store(round.0, Ordering::Relaxed);
                        if self.blocks.contains(&value_id) {
                            // None: answered later, when its Bitcoin checks end.
                            if let Some(valid) = self.validate(height, &value_id) {
                                queue.push_back(Input::ValidationResult {
                                    height,
                                    value_id,
                                    valid,
                                });
                            }
                        } else {
                            self.pending_validate.insert(value_id, height);
                        }
                    }
                    Output::Decide {
                        height,
                        value_id,
                        certificate,
                    } => {
                        if self.commit_decided(height, value_id, &certificate)? {
                            queue.push_back(Input::StartHeight(Height(height.0 + 1)));
                        } else {
                            // We never got the block: fetch it (with a
                            // certificate) from peers; sync restarts the engine.
                            tracing::warn!(
                                height = height.0,
                                "decided a block we do not have; syncing it"
                            );
                            self.start_sync();
                        }
                    }
                    Output::Evidence(ev) => {
                        self.status.equivocations.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(evidence = ?ev, "equivocation detected");
                    }
                }
            }
        }
        self.note_round();
        self.flush();
        Ok(())
    }

    /// Blocks the engine may still need: the ones this member proposed or
    /// voted for (in the WAL), its locked and its valid value.
    fn pinned(&self) -> Vec<ValueId> {
        let mut pinned = self.wal_blocks.clone();
        if let Some(e) = &self.engine {
            pinned.extend(e.locked().map(|(_, v)| v));
            pinned.extend(e.valid_value().map(|(_, v)| v));
        }
        pinned
    }

    /// Lets the block cache drop what a round change made stale.
    fn note_round(&mut self) {
        let Some((height, round)) = self
            .engine
            .as_ref()
            .and_then(|e| Some((e.height()?, e.round()?)))
        else {
            return;
        };
        let pinned = self.pinned();
        self.blocks.on_round(height.0, round, &pinned);
    }

    fn flush_txs(&mut self) {
        if !self.tx_out.is_empty() {
            let messages = std::mem::take(&mut self.tx_out);
            self.net.broadcast(pb::GossipBatch { messages });
        }
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            let messages = std::mem::take(&mut self.out);
            self.net.broadcast(pb::GossipBatch { messages });
        }
    }

    /// Builds a block from the mempool and returns the engine's answer.
    fn build_proposal(&mut self) -> anyhow::Result<Option<Input>> {
        let Some((height, round)) = self.pending_propose.take() else {
            return Ok(None);
        };
        if height.0 != self.chain.height() + 1 {
            return Ok(None);
        }
        let me = self.me.unwrap_or(0);
        let chain = self.chain.clone();
        // Only what is already known: the watcher's snapshot, and the
        // claims bitcoind backed at the last off-task check.
        let mints = self.mint_candidates();
        let backed = self.backed_claims.clone();
        self.refresh_claims();
        let p = tokio::task::block_in_place(|| chain.propose(now_ms(), me, mints, &backed))?;
        let value_id = ValueId(p.block.hash().0);
        tracing::debug!(
            height = height.0,
            round = round.0,
            txs = p.block.txs.len(),
            "proposing"
        );
        self.blocks.insert_own(value_id, p.block, Some(p.outcome));
        Ok(Some(Input::ProposeValue {
            height,
            round,
            value_id,
        }))
    }

    fn propose(&mut self) -> anyhow::Result<()> {
        if let Some(i) = self.build_proposal()? {
            self.input(i)?;
        }
        Ok(())
    }

    /// Checks a cached block: header sanity plus full application on a
    /// copy of state, at once; its Bitcoin checks, if it has peg content,
    /// off the consensus task (None: the verdict comes through `peg_rx`).
    fn validate(&mut self, height: Height, id: &ValueId) -> Option<bool> {
        let Some(c) = self.blocks.get(id) else {
            return Some(false);
        };
        if c.outcome.is_some() {
            return Some(true);
        }
        if self.pending_peg.contains_key(id) {
            return None;
        }
        let valid = self.validate_ledger(id);
        let Some(outcome) = valid else {
            return Some(false);
        };
        let Some(check) = self.blocks.get(id).and_then(|c| self.peg_check(&c.block)) else {
            if let Some(c) = self.blocks.get_mut(id) {
                c.outcome = Some(outcome);
            }
            return Some(true);
        };
        let Ok(permit) = self.peg_checks.clone().try_acquire_owned() else {
            tracing::warn!(
                height = height.0,
                "too many Bitcoin checks pending (bitcoind slow?); voting against a block with peg content"
            );
            return Some(false);
        };
        self.pending_peg.insert(*id, (height, outcome));
        let (tx, id) = (self.peg_tx.clone(), *id);
        tokio::spawn(async move {
            let ok = check.run().await;
            drop(permit);
            let _ = tx.send((height, id, ok));
        });
        None
    }

    /// Feeds the engine the verdict of a block's Bitcoin checks.
    fn on_peg_verdict(&mut self, height: Height, id: ValueId, ok: bool) -> anyhow::Result<()> {
        let Some((h, outcome)) = self.pending_peg.remove(&id) else {
            return Ok(());
        };
        if h != height || height.0 != self.chain.height() + 1 {
            return Ok(());
        }
        let valid = ok
            && match self.blocks.get_mut(&id) {
                Some(c) => {
                    c.outcome = Some(outcome);
                    true
                }
                None => false,
            };
        self.input(Input::ValidationResult {
            height,
            value_id: id,
            valid,
        })
    }

    /// The block's header and its application on a copy of state: the
    /// outcome if it applies.
    fn validate_ledger(&self, id: &ValueId) -> Option<BlockOutcome> {
        let c = self.blocks.get(id)?;
        let block = c.block.clone();
        let h = &block.header;
        let (tip_time, height) = self.chain.with_state(|s| (s.tip_time_ms, s.height));
        if h.height != height.next() || h.proposer as usize >= self.validators.len() {
            return None;
        }
        if h.time_ms < tip_time || h.time_ms > now_ms() + MAX_FUTURE_MS {
            tracing::warn!(
                height = h.height.0,
                time_ms = h.time_ms,
                "proposed block time out of bounds"
            );
            return None;
        }
        let chain = self.chain.clone();
        match tokio::task::block_in_place(|| chain.validate(&block)) {
            Ok(outcome) => Some(outcome),
            Err(e) => {
                tracing::warn!(height = h.height.0, error = %e, "proposed block is invalid");
                None
            }
        }
    }

    /// Stores a decided block; false if we do not have its bytes, or hold
    /// bytes that do not apply (dropped: sync fetches the block with its
    /// certificate). Only a store failure is an error.
    fn commit_decided(
        &mut self,
        height: Height,
        value_id: ValueId,
        cert: &CommitCertificate,
    ) -> anyhow::Result<bool> {
        if height.0 <= self.chain.height() {
            return Ok(true); // already stored (e.g. by sync)
        }
        let Some(c) = self.blocks.remove(&value_id) else {
            return Ok(false);
        };
        let cb = CommittedBlock {
            block: c.block,
            commit: cert.encode(),
        };
        let chain = self.chain.clone();
        let stored = tokio::task::block_in_place(|| {
            let outcome = match c.outcome {
                Some(o) => o,
                None => chain.validate(&cb.block)?,
            };
            chain.commit(cb, outcome)
        });
        match stored {
            Ok(()) => {}
            Err(CommitError::Invalid(e)) => {
                tracing::warn!(height = height.0, error = %e, "the decided block this member holds does not apply; fetching it by sync");
                return Ok(false);
            }
            Err(e @ CommitError::Store(_)) => return Err(e.into()),
        }
        self.after_commit()?;
        Ok(true)
    }

    /// Notes that the chain reached the halt height, if it did.
    fn check_halt(&mut self) {
        let height = self.chain.height();
        if self.halt_height.is_some_and(|h| height >= h) {
            self.halted = Some(height);
        }
    }

    /// Housekeeping once the chain moved to a new height.
    fn after_commit(&mut self) -> anyhow::Result<()> {
        self.check_halt();
        self.check_epoch()?;
        if let Some(wal) = self.wal.as_mut() {
            wal.reset()?;
        }
        self.wal_blocks.clear();
        let h = self.chain.height();
        self.blocks.on_commit(h);
        self.pending_validate.retain(|_, height| height.0 > h);
        self.pending_peg.retain(|_, (height, _)| height.0 > h);
        // Check the pooled claims now, so the next proposal may carry them.
        self.refresh_claims();
        self.pending_propose = None;
        self.last_commit = Instant::now();
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Resolves when the watched best block changes; never without a watcher
/// (or once the watcher is gone).
async fn best_changed(
    rx: &mut Option<tokio::sync::watch::Receiver<Option<fedpeg_peg::bitcoin::BlockHash>>>,
) {
    let Some(r) = rx else {
        return std::future::pending().await;
    };
    if r.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peg_testing::{consensus_key, PegNode};
    use fedpeg_consensus::{SignedVote, ValidatorIndex, VoteKind};
    use fedpeg_ledger::genesis::ConsensusParams;

    fn vote(
        node: &PegNode,
        member: u32,
        kind: VoteKind,
        height: u64,
        value: ValueId,
    ) -> SignedVote {
        SignedVote::sign(
            &ChainId(node.chain.spec.chain_id.0),
            &consensus_key(member),
            ValidatorIndex(member),
            kind,
            Height(height),
            Round(0),
            Some(value),
        )
    }

    /// Heights of the entries in member 0's WAL on disk.
    fn wal_heights(node: &PegNode) -> Vec<u64> {
        let (_, contents) = Wal::open(&node.dir.path().join("consensus.wal")).expect("the WAL");
        let mut h: Vec<u64> = contents.entries.iter().map(|e| e.height().0).collect();
        h.extend(contents.blocks.iter().map(|b| b.header.height.0));
        h
    }

    /// Everything that could make member 0 sign at `height`: a proposal
    /// from that height's proposer and a quorum of prevotes and precommits
    /// for it, its block, and its timeouts.
    fn next_height_traffic(node: &PegNode, drv: &mut Driver, height: u64) {
        let block = empty_block_at(node, height);
        let id = ValueId(block.hash().0);
        let round = (0..4)
            .map(Round)
            .find(|r| drv.validators.proposer(Height(height), *r) != ValidatorIndex(0))
            .expect("another proposer");
        let proposer = drv.validators.proposer(Height(height), round);
        let p = SignedProposal::sign(
            &ChainId(node.chain.spec.chain_id.0),
            &consensus_key(proposer.0),
            proposer,
            Height(height),
            round,
            id,
            None,
        );
        drv.on_block(proposer.as_usize(), &block.to_proto())
            .unwrap();
        drv.input(Input::Proposal(p)).unwrap();
        for kind in [VoteKind::Prevote, VoteKind::Precommit] {
            for m in 1..4 {
                drv.input(Input::Vote(vote(node, m, kind, height, id)))
                    .unwrap();
            }
        }
        for step in [
            TimeoutKind::Propose,
            TimeoutKind::Prevote,
            TimeoutKind::Precommit,
        ] {
            drv.input(Input::TimeoutElapsed {
                height: Height(height),
                round: Round(0),
                step,
            })
            .unwrap();
        }
    }

    /// Runs the driver (no network events, no shutdown) until it returns.
    async fn run_to_stop(drv: Driver) -> Stop {
        let (_events, rx) = mpsc::channel(1);
        tokio::time::timeout(Duration::from_secs(5), drv.run(rx, std::future::pending()))
            .await
            .expect("the driver returns")
            .expect("the driver stops cleanly")
    }

    fn empty_block_at(node: &PegNode, height: u64) -> Block {
        block_cache::empty_block(node.chain.spec.chain_id, height, 1)
    }

    /// Members 0..3 vote at height 1 to drop member 0 and add a newcomer
    /// (key 9) from height 11: member 0's driver keeps its engine up to
    /// height 10 and follows as an observer from 11; the newcomer's driver
    /// has no engine before 11 and one at its index in the new set from 11
    /// on; a certificate of height 11 verifies against the new set only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_federation_change_moves_engines_and_certificates_to_the_new_set_at_activation() {
        use fedpeg_ledger::epoch::EpochMember;
        let node = PegNode::new(4, 3);
        let secp = fedpeg_peg::bitcoin::secp256k1::Secp256k1::signing_only();
        let mut members: Vec<EpochMember> =
            node.chain.with_state(|s| s.epochs[0].members[1..].to_vec());
        members.push(EpochMember {
            name: "newcomer".into(),
            consensus_key: consensus_key(9).verifying_key(),
            peg_key: crate::peg_testing::peg_secret(9).public_key(&secp),
            p2p_address: "/ip4/127.0.0.1/tcp/9".into(),
        });
        assert_eq!(node.adopt_change(members, 3, 3), 11);
        let mut old = node.driver(None).await;
        let mut newcomer = node.driver_keyed(consensus_key(9), None).await;
        assert!(old.engine.is_some() && newcomer.engine.is_none());
        assert_eq!(newcomer.me, None);
        while node.chain.height() < 9 {
            node.commit(vec![]);
            old.after_commit().unwrap();
            newcomer.after_commit().unwrap();
            assert!(old.engine.is_some() && newcomer.engine.is_none());
        }
        // Height 10 is stored: 11, the next, is in the new epoch.
        node.commit(vec![]);
        assert_eq!(node.chain.height(), 10);
        old.after_commit().unwrap();
        newcomer.after_commit().unwrap();
        assert!(old.engine.is_none() && old.me.is_none() && old.signer.is_none());
        assert_eq!(newcomer.me, Some(3));
        assert_eq!(newcomer.epoch, 1);
        let engine = newcomer.engine.as_ref().expect("the newcomer votes");
        assert_eq!(engine.validator_index(), Some(ValidatorIndex(3)));
        assert_eq!(engine.validators().len(), 4);
        // A certificate of height 11: by old members 0..2 (their genesis
        // indices) it does not verify; by members 1, 2 and the newcomer at
        // their new indices 0, 1 and 3 it does.
        let block = empty_block_at(&node, 11);
        let id = ValueId(block.hash().0);
        let cert = |signers: &[(u32, u32)]| CommittedBlock {
            block: block.clone(),
            commit: CommitCertificate {
                height: Height(11),
                round: Round(0),
                value_id: id,
                precommits: signers
                    .iter()
                    .map(|(key, index)| {
                        let v = SignedVote::sign(
                            &ChainId(node.chain.spec.chain_id.0),
                            &consensus_key(*key),
                            ValidatorIndex(*index),
                            VoteKind::Precommit,
                            Height(11),
                            Round(0),
                            Some(id),
                        );
                        (ValidatorIndex(*index), v.signature)
                    })
                    .collect(),
            }
            .encode(),
        };
        assert!(old
            .check_certificate(&cert(&[(0, 0), (1, 1), (2, 2)]))
            .is_err());
        assert!(old
            .check_certificate(&cert(&[(1, 0), (2, 1), (9, 3)]))
            .is_ok());
        assert!(newcomer
            .check_certificate(&cert(&[(1, 0), (2, 1), (9, 3)]))
            .is_ok());
        // Height 10's still belongs to the genesis set.
        let b10 = node.chain.block(10).unwrap().unwrap().block;
        let id10 = ValueId(b10.hash().0);
        let cert10 = CommittedBlock {
            block: b10,
            commit: CommitCertificate {
                height: Height(10),
                round: Round(0),
                value_id: id10,
                precommits: (0..3)
                    .map(|m| {
                        (
                            ValidatorIndex(m),
                            vote(&node, m, VoteKind::Precommit, 10, id10).signature,
                        )
                    })
                    .collect(),
            }
            .encode(),
        };
        assert!(newcomer.check_certificate(&cert10).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_halting_at_h_commits_h_and_never_signs_for_h_plus_1() {
        let node = PegNode::new(4, 3);
        let mut drv = node.driver(None).await.with_halt_height(Some(1));
        let block = node.proposal(vec![]);
        let id = ValueId(block.hash().0);
        drv.blocks.insert_own(id, block, None);
        drv.input(Input::StartHeight(Height(1))).unwrap();
        // Height 2 arrives early (buffered by the engine), then the quorum
        // of precommits decides height 1.
        next_height_traffic(&node, &mut drv, 2);
        for m in 1..4 {
            drv.input(Input::Vote(vote(&node, m, VoteKind::Precommit, 1, id)))
                .unwrap();
        }
        assert_eq!(node.chain.height(), 1);
        assert_eq!(drv.halted, Some(1));
        // And after the halt: more of height 2, even a direct start.
        next_height_traffic(&node, &mut drv, 2);
        drv.input(Input::StartHeight(Height(2))).unwrap();
        let engine = drv.engine.as_ref().expect("a member's engine");
        assert_eq!(engine.height(), Some(Height(1)));
        let heights = wal_heights(&node);
        assert!(heights.iter().all(|h| *h <= 1), "{heights:?}");
        // The run loop returns at once, saying where it halted.
        assert_eq!(run_to_stop(drv).await, Stop::Halted(1));
        assert!(wal_heights(&node).iter().all(|h| *h <= 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_driver_started_at_its_halt_height_stops_without_starting_the_next() {
        let node = PegNode::new(4, 3);
        node.commit(vec![]);
        node.commit(vec![]);
        let drv = node.driver(None).await.with_halt_height(Some(2));
        assert_eq!(run_to_stop(drv).await, Stop::Halted(2));
        assert_eq!(wal_heights(&node), Vec::<u64>::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sync_applies_no_block_above_the_halt_height() {
        // Another member's chain, three blocks ahead, each certified by
        // three of four members.
        let mut nodes = PegNode::federation(4, 3, ConsensusParams::default());
        let ahead = nodes.pop().expect("a node");
        let node = nodes.swap_remove(0);
        let mut blocks = Vec::new();
        for h in 1..=3 {
            let block = ahead.commit(vec![]);
            let id = ValueId(block.hash().0);
            let cert = CommitCertificate {
                height: Height(h),
                round: Round(0),
                value_id: id,
                precommits: (0..3)
                    .map(|m| {
                        let v = vote(&node, m, VoteKind::Precommit, h, id);
                        (ValidatorIndex(m), v.signature)
                    })
                    .collect(),
            };
            blocks.push(pb::CommittedBlock {
                block: Some(block.to_proto()),
                commit: cert.encode(),
            });
        }
        let mut drv = node.driver(None).await.with_halt_height(Some(2));
        let peer = PeerId::random();
        drv.on_sync(Ok((
            peer,
            pb::SyncResponse {
                blocks,
                tip_height: 3,
            },
        )))
        .unwrap();
        assert_eq!(node.chain.height(), 2);
        assert_eq!(drv.halted, Some(2));
        assert!(drv.engine.as_ref().and_then(|e| e.height()).is_none());
        assert!(wal_heights(&node).is_empty());
    }
}
