//! Node-level Byzantine tests: four full members in one process — each a
//! [`Driver`] over its own [`Chain`] and store, on the real libp2p network on
//! 127.0.0.1, with its own watcher of one shared in-memory bitcoind — and
//! member 3 played by an attacker that holds that member's real keys.
//!
//! Each scenario first measures the fault-free interval between commits,
//! then lets the attacker loose and measures again: the honest members must
//! keep finalizing at most [`MAX_SLOWDOWN`] times slower, none may stop, and
//! no fake mint or peg-out confirmation may ever apply. Run them with
//! `cargo test -p fedpegd --lib byzantine -- --nocapture` (the measured
//! intervals are printed).

use crate::chain::Chain;
use crate::driver::{now_ms, validator_set, ConsensusStatus, Driver, DriverConfig, Stop};
use crate::network::{Network, NetworkConfig};
use crate::peg_testing::{account, consensus_key, PegNode, CONFIRMATIONS};
use crate::watcher::SeenDeposit;
use bitcoin::hashes::Hash as _;
use fedpeg_consensus::{
    ChainId, Height, Message, Round, SignedProposal, SignedVote, SigningKey, ValidatorIndex,
    ValueId, VoteKind,
};
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::block::{tx_root, Block, Header};
use fedpeg_ledger::fedtx::{FedTxKind, FederationTx, OutPoint};
use fedpeg_ledger::genesis::ConsensusParams;
use fedpeg_ledger::hash::Hash32;
use fedpeg_ledger::ids::{BatchId, FeeRate, MemberIndex};
use fedpeg_ledger::testing::{block_hash, sats};
use fedpeg_proto::v1 as pb;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

const MEMBERS: u32 = 4;
/// The member the attacker plays.
const ATTACKER: u32 = 3;
/// An honest member the attacker singles out where a scenario needs one.
const VICTIM: u32 = 2;
/// How long an idle proposer waits before proposing an empty block.
const HEARTBEAT: Duration = Duration::from_millis(200);
/// Heights per measurement.
const HEIGHTS: u64 = 8;
/// Slowest the attacked federation may finalize, relative to fault-free.
const MAX_SLOWDOWN: f64 = 2.0;
/// A measurement that takes longer than this means the chain stopped.
const STALLED: Duration = Duration::from_secs(8);

/// Short timeouts, so a scenario takes seconds. An idle height takes one
/// heartbeat (half the propose timeout); a height whose proposer is silent
/// takes the propose and the precommit timeout (500 ms) and then one more
/// round: with one silent member in four that is about 1.4 times the
/// fault-free interval (with the genesis defaults, 1.5 times).
fn consensus() -> ConsensusParams {
    ConsensusParams {
        timeout_propose_ms: 400,
        timeout_propose_delta_ms: 200,
        timeout_vote_ms: 100,
        timeout_vote_delta_ms: 50,
        ..ConsensusParams::default()
    }
}

/// One member: its node, its network handle and its running driver.
struct Member {
    node: PegNode,
    net: Network,
    status: Arc<ConsensusStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<Stop>>>,
}

impl Member {
    async fn start(
        node: PegNode,
        index: u32,
        watchers: &watch::Receiver<bool>,
        halt_height: Option<u64>,
    ) -> Member {
        let peers = crate::daemon::member_peers(&node.chain.spec).expect("genesis peers");
        let (events, net_rx) = mpsc::channel(1024);
        let listen = peers[index as usize].addr.clone();
        let cfg = NetworkConfig::new(Some(consensus_key(index).to_bytes()), listen, peers);
        let (sync_tx, sync_rx) = mpsc::channel(64);
        let net = Network::start(cfg, events, sync_tx)
            .await
            .expect("the network starts");
        tokio::spawn(
            crate::sync_server::SyncServer::new(
                node.chain.clone(),
                &crate::sync_server::SyncServerConfig::default(),
            )
            .run(sync_rx),
        );
        let watcher = node.watcher();
        let (w, stop) = (watcher.clone(), watchers.clone());
        std::thread::spawn(move || w.run(Duration::from_millis(50), stop));
        let status = Arc::new(ConsensusStatus::default());
        let driver = Driver::member(
            node.chain.clone(),
            net.clone(),
            consensus_key(index),
            node.dir.path(),
            DriverConfig {
                heartbeat: HEARTBEAT,
                sync_interval: Duration::from_millis(200),
            },
            status.clone(),
            Some(watcher),
        )
        .expect("the driver starts")
        .with_halt_height(halt_height);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(driver.run(net_rx, async move {
            let _ = stop_rx.await;
        }));
        Member {
            node,
            net,
            status,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    fn chain(&self) -> &Arc<Chain> {
        &self.node.chain
    }

    fn height(&self) -> u64 {
        self.chain().height()
    }
}

/// Four members on loopback, member [`ATTACKER`] running honestly until a
/// scenario turns it.
struct Federation {
    members: Vec<Member>,
    watchers: watch::Sender<bool>,
    /// Deposits really made on bitcoind (the only ones that may be minted).
    deposits: Vec<SeenDeposit>,
}

impl Drop for Federation {
    fn drop(&mut self) {
        let _ = self.watchers.send(true);
    }
}

impl Federation {
    /// Starts the members and waits until they finalize.
    async fn start() -> Federation {
        Self::start_halting(None).await
    }

    /// Like [`Federation::start`], the honest members with a halt height
    /// (the attacker's driver runs without one).
    async fn start_halting(halt_height: Option<u64>) -> Federation {
        let (watchers, stop) = watch::channel(false);
        let mut members = Vec::new();
        for (i, node) in PegNode::federation(MEMBERS, 3, consensus())
            .into_iter()
            .enumerate()
        {
            let halt = halt_height.filter(|_| i as u32 != ATTACKER);
            members.push(Member::start(node, i as u32, &stop, halt).await);
        }
        let mut fed = Federation {
            members,
            watchers,
            deposits: Vec::new(),
        };
        fed.wait_for("the federation to start", Duration::from_secs(20), |f| {
            f.honest().all(|m| m.height() >= 2)
        })
        .await;
        fed
    }

    fn honest(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 != ATTACKER)
            .map(|(_, m)| m)
    }

    fn member(&self, i: u32) -> &Member {
        &self.members[i as usize]
    }

    fn min_height(&self) -> u64 {
        self.honest().map(Member::height).min().unwrap_or(0)
    }

    /// The attacker: member [`ATTACKER`]'s keys and network identity; it
    /// reads the chain through an honest member's store (what it could
    /// compute itself).
    fn attacker(&self) -> Attacker {
        let chain = self.member(0).chain().clone();
        Attacker {
            net: self.member(ATTACKER).net.clone(),
            key: consensus_key(ATTACKER),
            chain_id: chain.spec.chain_id,
            view: chain,
            counter: 0,
        }
    }

    /// Stops the attacker's honest driver: from now on it sends only what a
    /// scenario crafts (its network stays up).
    async fn silence_attacker(&mut self) {
        let m = &mut self.members[ATTACKER as usize];
        if let Some(stop) = m.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = m.task.take() {
            let _ = task.await;
        }
    }

    /// Panics if an honest member's driver stopped (with its error).
    async fn check_alive(&mut self) {
        for (i, m) in self.members.iter_mut().enumerate() {
            if i as u32 == ATTACKER {
                continue;
            }
            if m.task.as_ref().is_some_and(|t| t.is_finished()) {
                let res = m.task.take().expect("checked above").await;
                panic!("honest member {i} stopped: {res:?}");
            }
        }
    }

    /// Waits until `done`, checking that honest members stay up.
    async fn wait_for(&mut self, what: &str, within: Duration, done: impl Fn(&Federation) -> bool) {
        let t0 = Instant::now();
        while !done(self) {
            self.check_alive().await;
            let heights: Vec<u64> = self.members.iter().map(Member::height).collect();
            assert!(
                t0.elapsed() < within,
                "timed out after {within:?} waiting for {what}; heights {heights:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Mean time per height over the next [`HEIGHTS`] heights of every
    /// honest member (counted from a fresh commit).
    async fn measure(&mut self, what: &str) -> Duration {
        let h = self.min_height();
        self.wait_for(&format!("{what}: a commit"), STALLED, |f| {
            f.min_height() > h
        })
        .await;
        let (t0, from) = (Instant::now(), self.min_height());
        self.wait_for(&format!("{what}: {HEIGHTS} heights"), STALLED, |f| {
            f.min_height() >= from + HEIGHTS
        })
        .await;
        let per = t0.elapsed() / HEIGHTS as u32;
        eprintln!("{what}: {per:?} per height over {HEIGHTS} heights");
        per
    }

    /// The fault-free baseline, then the same measurement under attack.
    async fn assert_latency_under(&mut self, scenario: &str, baseline: Duration) {
        let attacked = self.measure(&format!("{scenario} (attacked)")).await;
        assert!(
            attacked.as_secs_f64() <= MAX_SLOWDOWN * baseline.as_secs_f64(),
            "{scenario}: {attacked:?} per height under attack, {baseline:?} without"
        );
    }

    /// What every scenario ends with: honest members up, agreeing on every
    /// block, and no mint of anything but a real deposit.
    async fn assert_sound(&mut self) {
        self.check_alive().await;
        let real: HashSet<OutPoint> = self.deposits.iter().map(|d| d.outpoint).collect();
        for m in self.honest() {
            m.chain().with_state(|s| {
                for outpoint in s.minted.keys() {
                    assert!(
                        real.contains(outpoint),
                        "a fake deposit {outpoint} was minted"
                    );
                }
            });
        }
        let top = self.min_height();
        let reference = self.member(0).chain();
        for h in 1..=top {
            let hash = |c: &Chain| c.block(h).ok().flatten().map(|b| b.block.hash());
            let expected = hash(reference);
            for m in self.honest() {
                assert_eq!(hash(m.chain()), expected, "members disagree at height {h}");
            }
        }
    }

    /// Registers user 1's deposit address (member 0 submits it) and waits
    /// until every member has it.
    async fn register_user_1(&mut self) {
        let node = &self.member(0).node;
        let register = node.fed_tx(
            0,
            FedTxKind::RegisterDepositAddress {
                account: account(1),
            },
        );
        let _ = self.member(0).chain().submit_fed_tx(register, true);
        self.wait_for("the registration", Duration::from_secs(10), |f| {
            f.members
                .iter()
                .all(|m| m.chain().with_state(|s| s.registered.contains(&account(1))))
        })
        .await;
    }

    /// Registers user 1, pegs in a real deposit through the watchers and
    /// pegs part of it out: the batch the federation forms (unsigned: no
    /// signer runs here).
    async fn peg_out_batch(&mut self) -> fedpeg_ledger::pegout_batch::Batch {
        self.register_user_1().await;
        let node = &self.member(0).node;
        let d = node.deposit(account(1), 1_000_000);
        node.btc.mine(CONFIRMATIONS - 1);
        self.deposits.push(d.clone());
        self.wait_for("the mint", Duration::from_secs(10), |f| {
            f.honest()
                .all(|m| m.chain().with_state(|s| s.minted.contains_key(&d.outpoint)))
        })
        .await;
        let tx = self.member(0).node.peg_out_tx(1);
        self.member(0)
            .chain()
            .submit(&tx.encode())
            .expect("the peg-out is admitted");
        self.wait_for("the batch", Duration::from_secs(10), |f| {
            f.honest()
                .all(|m| m.chain().with_state(|s| !s.batches.is_empty()))
        })
        .await;
        self.member(0)
            .chain()
            .with_state(|s| s.batches.values().next().cloned())
            .expect("a batch")
    }
}

/// Member [`ATTACKER`]'s keys and network identity.
#[derive(Clone)]
struct Attacker {
    net: Network,
    key: SigningKey,
    chain_id: Hash32,
    /// An honest member's chain: what the attacker knows.
    view: Arc<Chain>,
    counter: u64,
}

impl Attacker {
    /// A fresh pseudo-random 32 bytes.
    fn fresh(&mut self) -> [u8; 32] {
        self.counter += 1;
        Hash32::tagged("fedpeg/test/attacker", &[&self.counter.to_be_bytes()]).0
    }

    fn fed_tx(&self, kind: FedTxKind) -> FederationTx {
        FederationTx::sign(self.chain_id, MemberIndex(ATTACKER), &self.key, kind)
    }

    /// A well-formed empty block (its body matches its tx_root) at `height`
    /// on `parent`, with a state root that never applies.
    fn junk_block(&mut self, height: Height, parent: Hash32) -> Block {
        Block {
            header: Header {
                chain_id: self.chain_id,
                height,
                parent,
                time_ms: now_ms(),
                proposer: ATTACKER,
                tx_root: tx_root(&[], &[]),
                state_root: Hash32(self.fresh()),
            },
            txs: vec![],
            fed_txs: vec![],
        }
    }

    fn consensus_id(&self) -> ChainId {
        ChainId(self.chain_id.0)
    }

    fn vote(
        &self,
        kind: VoteKind,
        height: u64,
        round: u32,
        value: Option<ValueId>,
    ) -> pb::GossipMessage {
        let v = SignedVote::sign(
            &self.consensus_id(),
            &self.key,
            ValidatorIndex(ATTACKER),
            kind,
            Height(height),
            Round(round),
            value,
        );
        consensus_message(Message::Vote(v))
    }

    fn proposal(&self, height: u64, value: ValueId) -> pb::GossipMessage {
        let p = SignedProposal::sign(
            &self.consensus_id(),
            &self.key,
            ValidatorIndex(ATTACKER),
            Height(height),
            Round(0),
            value,
            None,
        );
        consensus_message(Message::Proposal(p))
    }

    fn broadcast(&self, messages: Vec<pb::GossipMessage>) {
        self.net.broadcast(pb::GossipBatch { messages });
    }

    fn send_to(&self, member: u32, messages: Vec<pb::GossipMessage>) {
        self.net
            .send_to(member as usize, pb::GossipBatch { messages });
    }
}

fn consensus_message(m: Message) -> pb::GossipMessage {
    pb::GossipMessage {
        kind: Some(pb::gossip_message::Kind::Consensus(pb::ConsensusMessage {
            signed: m.encode(),
        })),
    }
}

fn fed_message(tx: &FederationTx) -> pb::GossipMessage {
    pb::GossipMessage {
        kind: Some(pb::gossip_message::Kind::FederationTx(tx.to_proto())),
    }
}

fn block_message(b: &Block) -> pb::GossipMessage {
    pb::GossipMessage {
        kind: Some(pb::gossip_message::Kind::ProposedBlock(b.to_proto())),
    }
}

/// Runs `step` every `every` until the handle is dropped.
struct Attack(JoinHandle<()>);

impl Drop for Attack {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn every(
    period: Duration,
    mut a: Attacker,
    mut step: impl FnMut(&mut Attacker) + Send + 'static,
) -> Attack {
    Attack(tokio::spawn(async move {
        loop {
            step(&mut a);
            tokio::time::sleep(period).await;
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_gossiping_fake_mints_cannot_halt_the_chain() {
    let mut fed = Federation::start().await;
    let batch = fed.peg_out_batch().await;
    let baseline = fed.measure("fake mints (fault-free)").await;
    let (batch, txid) = (batch.id, batch.latest().txid);
    let attack = every(Duration::from_millis(100), fed.attacker(), move |a| {
        // A mint of a deposit that does not exist, to a registered account
        // and to an unregistered one; a confirmation of the real batch in a
        // Bitcoin block that does not exist.
        let fake = |a: &mut Attacker, to: AccountId| {
            let txid = bitcoin::Txid::from_byte_array(a.fresh());
            a.fed_tx(FedTxKind::PegInMint {
                outpoint: OutPoint { txid, vout: 0 },
                amount: sats(50_000_000),
                account: to,
                bitcoin_block: block_hash(0xfe),
                epoch: 0,
            })
        };
        let stranger = AccountId(a.fresh());
        let nowhere = bitcoin::BlockHash::from_byte_array(a.fresh());
        let msgs = [
            fake(a, account(1)),
            fake(a, stranger),
            a.fed_tx(FedTxKind::PegOutConfirmed {
                batch,
                txid,
                bitcoin_block: nowhere,
            }),
        ];
        a.broadcast(msgs.iter().map(fed_message).collect());
    });
    fed.assert_latency_under("fake mints", baseline).await;
    // Its fakes still pooled elsewhere, the attacker falls silent: honest
    // proposers alone must still make blocks others accept.
    fed.silence_attacker().await;
    fed.assert_latency_under("fake mints, then silence", baseline)
        .await;
    drop(attack);
    fed.assert_sound().await;
    for m in fed.honest() {
        let confirmed = m.chain().with_state(|s| !s.batches.contains_key(&batch));
        assert!(!confirmed, "a fake peg-out confirmation applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_flooding_the_pool_with_junk_cannot_starve_real_federation_transactions() {
    let mut fed = Federation::start().await;
    let baseline = fed.measure("pool junk (fault-free)").await;
    // 12,000 federation transactions that can never apply: fee votes for
    // the last possible heights, mints to accounts nobody registered,
    // signatures and bumps of batches that do not exist. Signed once (the
    // attacker's own CPU is not what is measured), sent every second.
    let mut a = fed.attacker();
    let junk: Vec<Vec<pb::GossipMessage>> = (0..12u64)
        .map(|chunk| {
            (0..1000u64)
                .map(|i| {
                    let n = chunk * 1000 + i;
                    let kind = match n % 4 {
                        0 => FedTxKind::FeeRateVote {
                            sat_per_vbyte: FeeRate(1 + n % 1000),
                            height: Height(u64::MAX - n),
                        },
                        1 => FedTxKind::PegInMint {
                            outpoint: OutPoint {
                                txid: fedpeg_ledger::testing::txid(7),
                                vout: n as u32,
                            },
                            amount: sats(100_000),
                            account: AccountId(a.fresh()),
                            bitcoin_block: block_hash(0xfe),
                            epoch: 0,
                        },
                        2 => FedTxKind::PegOutSignatures {
                            batch: BatchId(1_000_000 + n),
                            version: 0,
                            signatures: vec![vec![0x30; 72]],
                        },
                        _ => FedTxKind::PegOutBump {
                            batch: BatchId(1_000_000 + n),
                            version: 0,
                        },
                    };
                    fed_message(&a.fed_tx(kind))
                })
                .collect()
        })
        .collect();
    let attack = every(Duration::from_secs(1), a, move |a| {
        for msgs in &junk {
            a.broadcast(msgs.clone());
        }
    });
    // Let the junk arrive, then a member registers a real account.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let real = account(7);
    let node = &fed.member(0).node;
    let register = node.fed_tx(0, FedTxKind::RegisterDepositAddress { account: real });
    let _ = fed.member(0).chain().submit_fed_tx(register, true);
    fed.wait_for("the real registration", Duration::from_secs(5), |f| {
        f.honest()
            .all(|m| m.chain().with_state(|s| s.registered.contains(&real)))
    })
    .await;
    fed.assert_latency_under("pool junk", baseline).await;
    drop(attack);
    fed.assert_sound().await;
    for m in fed.honest() {
        let votes = m
            .chain()
            .with_state(|s| s.fee_votes.get(&MemberIndex(ATTACKER)).copied());
        assert!(
            votes.is_none_or(|(_, h)| h < Height(u64::MAX / 2)),
            "a future fee vote applied"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proposer_sending_wrong_bodies_under_the_right_header_cannot_stop_a_member() {
    let mut fed = Federation::start().await;
    let baseline = fed.measure("wrong bodies (fault-free)").await;
    fed.silence_attacker().await;
    let a = fed.attacker();
    let validators = validator_set(&a.view).expect("validators");
    let attack = Attack(tokio::spawn(async move {
        // At each height it proposes, the attacker sends its valid block
        // to two members and, under the same header, a different body to
        // the victim; it votes for the block, so the others decide it.
        let mut tip = a.view.subscribe_tip();
        loop {
            let h = a.view.height() + 1;
            if validators.proposer(Height(h), Round(0)) == ValidatorIndex(ATTACKER) {
                if let Ok(p) = a.view.propose(now_ms(), ATTACKER, vec![], &HashSet::new()) {
                    let good = p.block;
                    let mut bad = good.clone();
                    bad.fed_txs.push(a.fed_tx(FedTxKind::FeeRateVote {
                        sat_per_vbyte: FeeRate(9),
                        height: Height(h),
                    }));
                    let id = ValueId(good.hash().0);
                    let consensus = [
                        a.proposal(h, id),
                        a.vote(VoteKind::Prevote, h, 0, Some(id)),
                        a.vote(VoteKind::Precommit, h, 0, Some(id)),
                    ];
                    for member in 0..MEMBERS {
                        let body = if member == VICTIM { &bad } else { &good };
                        let mut msgs = vec![block_message(body)];
                        msgs.extend(consensus.iter().cloned());
                        a.send_to(member, msgs);
                    }
                }
            }
            if tip.changed().await.is_err() {
                return;
            }
        }
    }));
    fed.assert_latency_under("wrong bodies", baseline).await;
    drop(attack);
    fed.assert_sound().await;
    // The victim refused the wrong bodies and fetched the decided blocks.
    let synced = fed
        .member(VICTIM)
        .status
        .synced_blocks
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        synced > 0,
        "the victim never needed to sync: no attack happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_flooding_junk_blocks_cannot_crowd_out_honest_proposals() {
    let mut fed = Federation::start().await;
    let baseline = fed.measure("junk blocks (fault-free)").await;
    let attack = every(Duration::from_millis(100), fed.attacker(), |a| {
        // 70 well-formed blocks (their bodies match their tx_root) at each
        // of the next two heights.
        let (tip, height) = a.view.with_state(|s| (s.tip, s.height));
        let mut msgs = Vec::new();
        for h in [height.next(), height.next().next()] {
            for _ in 0..70 {
                msgs.push(block_message(&a.junk_block(h, tip)));
            }
        }
        a.broadcast(msgs);
    });
    fed.assert_latency_under("junk blocks", baseline).await;
    drop(attack);
    fed.assert_sound().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_equivocating_votes_cannot_halt_the_chain() {
    let mut fed = Federation::start().await;
    let baseline = fed.measure("equivocation (fault-free)").await;
    let attack = every(Duration::from_millis(50), fed.attacker(), |a| {
        // Besides its honest driver's votes: a different vote to each
        // honest member for every step of the next height's first rounds.
        let h = a.view.height() + 1;
        for round in 0..2 {
            for kind in [VoteKind::Prevote, VoteKind::Precommit] {
                let x = ValueId(a.fresh());
                let y = ValueId(a.fresh());
                a.send_to(0, vec![a.vote(kind, h, round, Some(x))]);
                a.send_to(1, vec![a.vote(kind, h, round, Some(y))]);
                a.send_to(2, vec![a.vote(kind, h, round, None)]);
            }
        }
    });
    fed.assert_latency_under("equivocation", baseline).await;
    drop(attack);
    fed.assert_sound().await;
    let seen: u64 = fed
        .honest()
        .map(|m| {
            m.status
                .equivocations
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert!(seen > 0, "no honest member noticed the equivocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_member_cannot_halt_the_chain() {
    let mut fed = Federation::start().await;
    let baseline = fed.measure("silence (fault-free)").await;
    fed.silence_attacker().await;
    fed.assert_latency_under("silence", baseline).await;
    fed.assert_sound().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_whose_bitcoind_hangs_does_not_stall_the_chain() {
    // Every call of its bitcoind takes 30 s.
    bitcoind_fault("hung bitcoind", |b| b.set_delay(Duration::from_secs(30))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_whose_bitcoind_is_down_does_not_stall_the_chain() {
    bitcoind_fault("bitcoind down", |b| b.set_unavailable(true)).await;
}

/// Member [`ATTACKER`]'s driver keeps running honestly; only its bitcoind
/// fails (`fault`) while deposits reach depth all along, so most blocks
/// carry a mint it cannot check.
async fn bitcoind_fault(scenario: &str, fault: impl Fn(&crate::peg_testing::OwnBitcoind)) {
    let mut fed = Federation::start().await;
    // Deposits to user 1 reach depth all along: most blocks carry a mint.
    fed.register_user_1().await;
    let made = Arc::new(std::sync::Mutex::new(Vec::new()));
    let depositing = {
        let (btc, script, made) = (
            fed.member(0).node.btc.clone(),
            fed.member(0).node.deposit_script(account(1)),
            made.clone(),
        );
        Attack(tokio::spawn(async move {
            for i in 0u64.. {
                let outpoint = btc.fund(&script, bitcoin::Amount::from_sat(100_000 + i));
                if let Ok(mut m) = made.lock() {
                    m.push(outpoint);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }))
    };
    let minted = |f: &Federation| f.member(0).chain().with_state(|s| s.minted.len());
    let baseline = fed.measure(&format!("{scenario} (fault-free)")).await;
    let before = minted(&fed);
    assert!(before > 0, "no mint in the fault-free run");
    let faulty = fed.member(ATTACKER).node.own_btc.clone();
    fault(&faulty);
    fed.assert_latency_under(scenario, baseline).await;
    let during = minted(&fed) - before;
    assert!(during > 0, "no block with peg content was decided");
    // The faulty member still follows (it votes for blocks without peg
    // content and fetches the ones it could not check) and never stops.
    let h = fed.min_height();
    fed.wait_for("the faulty member to keep up", STALLED, |f| {
        f.member(ATTACKER).height() >= h
    })
    .await;
    assert!(
        !fed.member(ATTACKER)
            .task
            .as_ref()
            .is_some_and(|t| t.is_finished()),
        "the member with the faulty bitcoind stopped"
    );
    eprintln!("{scenario}: {during} mints decided during the measurement");
    drop(depositing);
    faulty.set_delay(Duration::ZERO);
    faulty.set_unavailable(false);
    let made = made.lock().map(|m| m.clone()).unwrap_or_default();
    fed.deposits
        .extend(made.into_iter().map(|outpoint| SeenDeposit {
            outpoint,
            amount: sats(0),
            account: account(1),
            block: block_hash(0),
            height: 0,
            epoch: 0,
        }));
    fed.assert_sound().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_pushing_past_the_halt_height_cannot_make_the_others_sign_above_it() {
    const HALT: u64 = 6;
    let mut fed = Federation::start_halting(Some(HALT)).await;
    // The attacker's driver has no halt height: it proposes and votes for
    // HALT + 1 on its own. On top, for the halt height and the two after
    // it, in every round it is proposer of: a block (the next valid one
    // when the chain is at the halt height), its proposal, and its
    // prevote and precommit.
    let validators = validator_set(&fed.member(0).node.chain).expect("validators");
    let attack = every(Duration::from_millis(50), fed.attacker(), move |a| {
        let (tip, height) = a.view.with_state(|s| (s.tip, s.height));
        for h in HALT..=HALT + 2 {
            let block = match a.view.propose(now_ms(), ATTACKER, vec![], &HashSet::new()) {
                Ok(p) if p.block.header.height.0 == h => p.block,
                _ => {
                    let parent = if height.0 + 1 == h {
                        tip
                    } else {
                        Hash32(a.fresh())
                    };
                    a.junk_block(Height(h), parent)
                }
            };
            let id = ValueId(block.hash().0);
            let mut msgs = vec![block_message(&block)];
            for r in 0..8 {
                let round = Round(r);
                if validators.proposer(Height(h), round) == ValidatorIndex(ATTACKER) {
                    let p = SignedProposal::sign(
                        &a.consensus_id(),
                        &a.key,
                        ValidatorIndex(ATTACKER),
                        Height(h),
                        round,
                        id,
                        None,
                    );
                    msgs.push(consensus_message(Message::Proposal(p)));
                }
                msgs.push(a.vote(VoteKind::Prevote, h, r, Some(id)));
                msgs.push(a.vote(VoteKind::Precommit, h, r, Some(id)));
            }
            a.broadcast(msgs);
        }
    });
    // Every honest member stops at the halt height, by itself.
    let t0 = Instant::now();
    for i in 0..MEMBERS {
        if i == ATTACKER {
            continue;
        }
        let task = fed.members[i as usize]
            .task
            .take()
            .expect("a running driver");
        let left = Duration::from_secs(30).saturating_sub(t0.elapsed());
        let stop = tokio::time::timeout(left, task)
            .await
            .unwrap_or_else(|_| panic!("member {i} did not halt"))
            .expect("the driver task")
            .expect("the driver stops cleanly");
        assert_eq!(stop, Stop::Halted(HALT), "member {i}");
    }
    // Still under attack a while later: nothing above the halt height was
    // stored or signed (every own signed message is in the WAL before it
    // leaves the node), and the attacker alone got nowhere.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(attack);
    for m in fed.honest() {
        assert_eq!(m.height(), HALT);
        let (_, wal) =
            crate::wal::Wal::open(&m.node.dir.path().join("consensus.wal")).expect("the WAL");
        assert!(
            wal.entries.iter().all(|e| e.height().0 <= HALT),
            "signed above the halt height: {:?}",
            wal.entries
        );
    }
    assert!(fed.member(ATTACKER).height() <= HALT);
    fed.assert_sound().await;
}
