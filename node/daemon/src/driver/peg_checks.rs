//! The peg side of proposing and validating: this member's mints and fee
//! vote for its own proposals, and the check of another proposer's mints and
//! peg-out confirmations against this member's own bitcoind.

use super::*;
use crate::watcher::FeeEstimate;
use fedpeg_ledger::hash::Hash32;
use fedpeg_ledger::ids::{FeeRate, MemberIndex};
use fedpeg_peg::bitcoin::{BlockHash, Txid};
use fedpeg_peg::chain::BitcoinChain;
use std::collections::HashSet;

impl Driver {
    /// Signed mints for deposits this member's watcher saw reach depth.
    pub(super) fn mint_candidates(&self) -> Vec<FederationTx> {
        let mut out = self.fee_vote().into_iter().collect::<Vec<_>>();
        out.extend(self.mints());
        out
    }

    /// This member's fee-rate vote, when it differs from its recorded vote:
    /// the pinned rate, else its bitcoind's estimate, else (bitcoind answered
    /// without one: a fresh node, regtest) the genesis default, so that the
    /// median counts this member too and the few members that can estimate
    /// cannot set the rate alone. Clamped into the genesis min/max, which
    /// the ledger enforces. No vote before bitcoind has answered at all.
    pub(super) fn fee_vote(&self) -> Option<FederationTx> {
        let (me, key) = self.signer.as_ref()?;
        let params = self.chain.params();
        let rate = match self.fee_pin {
            Some(pin) => pin,
            None => match self.watcher.as_ref()?.fee_estimate()? {
                FeeEstimate::Rate(r) => r,
                FeeEstimate::Unavailable => params.default_fee_rate.0,
            },
        };
        // max then min rather than clamp: no panic even if min > max.
        let rate = rate.max(params.min_fee_rate.0).min(params.max_fee_rate.0);
        let (height, recorded) = self.chain.with_state(|s| {
            (
                s.height.next(),
                s.fee_votes.get(&MemberIndex(*me)).map(|(r, _)| *r),
            )
        });
        (recorded != Some(FeeRate(rate))).then(|| {
            FederationTx::sign(
                self.chain.spec.chain_id,
                MemberIndex(*me),
                key,
                FedTxKind::FeeRateVote {
                    sat_per_vbyte: FeeRate(rate),
                    height,
                },
            )
        })
    }

    /// Signed mints for deposits this member's watcher saw reach depth.
    pub(super) fn mints(&self) -> Vec<FederationTx> {
        let (Some(w), Some((me, key))) = (&self.watcher, &self.signer) else {
            return vec![];
        };
        #[cfg_attr(not(feature = "byzantine"), allow(unused_mut))]
        let mut mature = w.mature();
        #[cfg(feature = "byzantine")]
        if self.faults.propose_fake_mints {
            // Test-only Byzantine behaviour: mint a deposit that does not exist.
            if let Some(account) = self
                .chain
                .with_state(|s| s.registered.iter().next().copied())
            {
                mature.insert(
                    0,
                    SeenDeposit {
                        outpoint: fedpeg_ledger::fedtx::OutPoint {
                            txid: {
                                use fedpeg_peg::bitcoin::hashes::Hash as _;
                                Txid::from_byte_array(fedpeg_keys::random_32())
                            },
                            vout: 0,
                        },
                        amount: fedpeg_ledger::amount::Sats::checked(1_000_000).unwrap_or_default(),
                        account,
                        block: {
                            use fedpeg_peg::bitcoin::hashes::Hash as _;
                            BlockHash::from_byte_array([0xfe; 32])
                        },
                        height: 1,
                        epoch: 0,
                    },
                );
            }
        }
        self.mintable(mature)
            .into_iter()
            .map(|d| {
                FederationTx::sign(
                    self.chain.spec.chain_id,
                    MemberIndex(*me),
                    key,
                    FedTxKind::PegInMint {
                        outpoint: d.outpoint,
                        amount: d.amount,
                        account: d.account,
                        bitcoin_block: d.block,
                        epoch: d.epoch,
                    },
                )
            })
            .collect()
    }

    /// Of `mature`, what a block may mint: deposits to the descriptor of
    /// an epoch the next block credits ([`fedpeg_ledger::State::deposit_epochs`]:
    /// the epoch in force, the previous one during its grace) and above
    /// what spending them costs under it. Deposits below cost are never
    /// minted (GetPegIns reports them BELOW_COST), and they are skipped
    /// before the block's share is taken, so a pile of dust cannot crowd
    /// out the deposits behind it.
    fn mintable(&self, mature: Vec<SeenDeposit>) -> Vec<SeenDeposit> {
        let params = self.chain.params();
        let costs: Vec<(u32, fedpeg_ledger::amount::Sats)> = self.chain.with_state(|s| {
            s.deposit_epochs(s.height.next())
                .into_iter()
                .filter_map(|e| {
                    let fed = params.federation_of(e).ok()?;
                    Some((e.number, s.pegin_spend_cost_of(params, &fed)))
                })
                .collect()
        });
        mature
            .into_iter()
            .filter(|d| {
                costs
                    .iter()
                    .any(|(e, cost)| *e == d.epoch && d.amount > *cost)
            })
            .take(MAX_MINTS_PER_BLOCK)
            .collect()
    }

    /// True once per Bitcoin best block, when that block left deposits to
    /// mint: the proposer then proposes at once instead of waiting out the
    /// heartbeat. Once per block, so a deposit that cannot be minted (the
    /// others refuse it) never makes every height propose early.
    pub(super) fn new_mints_ready(&mut self) -> bool {
        let Some(w) = &self.watcher else {
            return false;
        };
        let best = w.best();
        if best.is_none() || best == self.early_mints_at || self.signer.is_none() {
            return false;
        }
        if self.mintable(w.mature()).is_empty() {
            return false;
        }
        self.early_mints_at = best;
        true
    }

    /// The Bitcoin checks `block` needs before this member may vote for
    /// it; None when it has no peg content (mints, peg-out confirmations).
    pub(super) fn peg_check(&self, block: &Block) -> Option<PegCheck> {
        let mints: Vec<SeenDeposit> = block.fed_txs.iter().filter_map(mint).collect();
        let claims: Vec<(Txid, BlockHash)> = block.fed_txs.iter().filter_map(claim).collect();
        if mints.is_empty() && claims.is_empty() {
            return None;
        }
        Some(PegCheck {
            watcher: self.watcher.clone(),
            depth: self.chain.params().confirmations as u64,
            mints,
            claims,
            within: self.peg_check_bound,
        })
    }

    /// Starts checking the pooled peg-out confirmations against this
    /// member's bitcoind off the consensus task (one check at a time): the
    /// ones it refutes are evicted, the ones it backs are what the next
    /// proposal may include ([`Self::backed_claims`]).
    pub(super) fn refresh_claims(&mut self) {
        if self.claims_inflight {
            return;
        }
        let Some(w) = self.watcher.clone() else {
            return;
        };
        self.claims_inflight = true;
        let (chain, tx) = (self.chain.clone(), self.claims_tx.clone());
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(backed_pooled_claims(&chain, &w));
        });
    }

    /// Takes in the result of [`Self::refresh_claims`].
    pub(super) fn on_claims_checked(&mut self, backed: HashSet<Hash32>) {
        self.claims_inflight = false;
        self.backed_claims = backed;
    }
}

/// How long a peg check waits for its bitcoind's next block before
/// polling again.
const RECHECK_EVERY: Duration = Duration::from_millis(100);

/// The Bitcoin checks of one proposed block, run off the consensus task
/// ([`PegCheck::run`]): every mint must be a deposit this member's watcher
/// saw at depth, every peg-out confirmation a transaction its bitcoind shows
/// at depth in the named block. What cannot be checked within the bound
/// (bitcoind slow or down, no bitcoind) is refused.
pub(super) struct PegCheck {
    watcher: Option<Arc<Watcher>>,
    depth: u64,
    mints: Vec<SeenDeposit>,
    claims: Vec<(Txid, BlockHash)>,
    within: Duration,
}

impl PegCheck {
    /// The verdict: true only if every peg claim of the block is backed.
    pub(super) async fn run(self) -> bool {
        let Some(w) = self.watcher else {
            tracing::warn!(
                "block has peg content but this member has no bitcoind to check it; voting against"
            );
            return false;
        };
        let deadline = tokio::time::Instant::now() + self.within;
        let confirmed = |w: &Watcher| self.mints.iter().all(|m| w.confirms(m));
        // The poll a block notification started, if one is running, is
        // usually the one that shows the deposit.
        let mut seen = confirmed(&w) || (w.running_poll(self.within).await && confirmed(&w));
        // Our watcher may be a poll behind the proposer's, and our bitcoind
        // a block behind the proposer's (blocks reach separate nodes tens of
        // ms apart): poll again, then wait for our bitcoind's next block,
        // until the bound. A bitcoind that does not answer is not waited on.
        let mut best = w.subscribe_best();
        while !seen {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let polled = w.fresh_poll(left).await;
            seen = polled && confirmed(&w);
            if seen || !polled || !w.reachable() {
                break;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            best.mark_unchanged();
            let _ = tokio::time::timeout(left.min(RECHECK_EVERY), best.changed()).await;
            seen = confirmed(&w);
        }
        if !seen {
            tracing::warn!(
                "block mints a deposit this member's bitcoind does not show at depth (or could not be asked in time); voting against"
            );
            return false;
        }
        if self.claims.is_empty() {
            return true;
        }
        let (claims, depth, btc) = (self.claims, self.depth, w.bitcoin().clone());
        let check = tokio::task::spawn_blocking(move || claims_backed(&*btc, depth, &claims));
        match tokio::time::timeout_at(deadline, check).await {
            Ok(Ok(Some(backed))) if backed.iter().all(|b| *b) => true,
            Ok(Ok(Some(_))) => {
                tracing::warn!("block confirms a peg-out this member's bitcoind does not show at depth; voting against");
                false
            }
            _ => {
                tracing::warn!("block confirms a peg-out but this member's bitcoind cannot be asked in time; voting against");
                false
            }
        }
    }
}

/// The pooled peg-out confirmations this member's bitcoind backs; the ones
/// it refutes are evicted from the pool. With bitcoind unreachable none is
/// backed and none evicted. Blocking: runs off the consensus task.
fn backed_pooled_claims(chain: &Chain, w: &Watcher) -> HashSet<Hash32> {
    let pooled = chain.pooled_bitcoin_claims();
    let claims: Vec<(Hash32, (Txid, BlockHash))> = pooled
        .iter()
        .filter_map(|f| Some((f.id(), claim(f)?)))
        .collect();
    if claims.is_empty() {
        return HashSet::new();
    }
    let pairs: Vec<(Txid, BlockHash)> = claims.iter().map(|(_, c)| *c).collect();
    let depth = chain.params().confirmations as u64;
    let Some(backed) = claims_backed(&**w.bitcoin(), depth, &pairs) else {
        return HashSet::new();
    };
    let (yes, no): (Vec<_>, Vec<_>) = claims.iter().zip(backed).partition(|(_, b)| *b);
    if !no.is_empty() {
        tracing::debug!(
            refuted = no.len(),
            "pooled peg-out confirmations this member's bitcoind does not show at depth; evicted"
        );
        chain.evict_fed_txs(&no.iter().map(|((id, _), _)| *id).collect::<Vec<_>>());
    }
    yes.into_iter().map(|((id, _), _)| *id).collect()
}

/// Whether `btc` shows each `(txid, block)` at `depth` in that block on its
/// best chain; None when it cannot be reached. Blocking.
fn claims_backed(
    btc: &dyn BitcoinChain,
    depth: u64,
    claims: &[(Txid, BlockHash)],
) -> Option<Vec<bool>> {
    let (tip, _) = btc.tip().ok()?;
    Some(
        claims
            .iter()
            .map(|(txid, hint)| {
                crate::signer::confirmed_at_depth(btc, txid, Some(hint), tip, depth) == Some(*hint)
            })
            .collect(),
    )
}

/// The deposit a mint claims (its height is not part of the claim).
fn mint(f: &FederationTx) -> Option<SeenDeposit> {
    match &f.kind {
        FedTxKind::PegInMint {
            outpoint,
            amount,
            account,
            bitcoin_block,
            epoch,
        } => Some(SeenDeposit {
            outpoint: *outpoint,
            amount: *amount,
            account: *account,
            block: *bitcoin_block,
            height: 0,
            epoch: *epoch,
        }),
        _ => None,
    }
}

/// The Bitcoin claim of a peg-out confirmation: (txid, block).
fn claim(f: &FederationTx) -> Option<(Txid, BlockHash)> {
    match &f.kind {
        FedTxKind::PegOutConfirmed {
            txid,
            bitcoin_block,
            ..
        } => Some((*txid, *bitcoin_block)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peg_testing::{account, PegNode, CONFIRMATIONS};
    use fedpeg_ledger::fedtx::OutPoint;
    use fedpeg_ledger::ids::BatchId;
    use fedpeg_ledger::testing::sats;

    /// A proposal carrying exactly `fed_txs` (the checks read only those).
    fn block_with(node: &PegNode, fed_txs: Vec<FederationTx>) -> Block {
        Block {
            fed_txs,
            ..node.proposal(vec![])
        }
    }

    /// The watcher's poller, polling only when asked (as the daemon's
    /// does every `bitcoin.poll_ms`); stopped on drop.
    struct Poller(Arc<Watcher>, tokio::sync::watch::Sender<bool>);

    impl Poller {
        fn start(w: &Arc<Watcher>) -> Poller {
            let (stop, rx) = tokio::sync::watch::channel(false);
            let w2 = w.clone();
            std::thread::spawn(move || w2.run(Duration::from_secs(60), rx));
            Poller(w.clone(), stop)
        }
    }

    impl Drop for Poller {
        fn drop(&mut self) {
            let _ = self.1.send(true);
            self.0.request_poll();
        }
    }

    /// A one-member federation with user 1 registered, its watcher, and a
    /// deposit of 250k sats to user 1 at `depth` (seen by the watcher).
    fn deposited(depth: u64) -> (PegNode, Arc<Watcher>, SeenDeposit, Poller) {
        let node = PegNode::new(1, 1);
        node.register(account(1));
        let d = node.deposit(account(1), 250_000);
        node.btc.mine(depth - 1);
        let w = node.watcher();
        w.poll().unwrap();
        let poller = Poller::start(&w);
        (node, w, d, poller)
    }

    /// The verdict of `block`'s Bitcoin checks (true without peg content).
    async fn checked(drv: &Driver, block: &Block) -> bool {
        match drv.peg_check(block) {
            None => true,
            Some(c) => c.run().await,
        }
    }

    /// A peg-out confirmation claim of `txid` in `block`.
    fn confirmation(node: &PegNode, txid: Txid, block: BlockHash) -> FederationTx {
        node.fed_tx(
            0,
            FedTxKind::PegOutConfirmed {
                batch: BatchId(0),
                txid,
                bitcoin_block: block,
            },
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dust_deposits_in_an_earlier_block_do_not_crowd_out_a_real_one() {
        let node = PegNode::new(1, 1);
        node.register(account(1));
        let script = node.deposit_script(account(1));
        let dust = fedpeg_peg::bitcoin::Amount::from_sat(600);
        for _ in 0..=MAX_MINTS_PER_BLOCK {
            node.btc.send(&script, dust);
        }
        node.btc.mine(1);
        let real = node.deposit(account(1), 250_000);
        node.btc.mine(CONFIRMATIONS);
        let w = node.watcher();
        w.poll().unwrap();
        assert!(
            w.mature().len() > MAX_MINTS_PER_BLOCK,
            "the dust is mature too"
        );
        let drv = node.driver(Some(w)).await;
        let minted: Vec<OutPoint> = drv
            .mints()
            .iter()
            .filter_map(|f| match &f.kind {
                FedTxKind::PegInMint { outpoint, .. } => Some(*outpoint),
                _ => None,
            })
            .collect();
        assert_eq!(
            minted,
            vec![real.outpoint],
            "only the deposit worth minting"
        );
    }

    /// A Bitcoin block that brings a deposit to depth makes the proposer
    /// propose at once, but only once per block: a deposit that stays
    /// unminted (the others refuse it) is no reason to propose early at
    /// every height; the next Bitcoin block may trigger one more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deposit_reaching_depth_asks_for_one_early_proposal_per_bitcoin_block() {
        let node = PegNode::new(1, 1);
        node.register(account(1));
        let w = node.watcher();
        let mut drv = node.driver(Some(w.clone())).await;
        let mut best = w.subscribe_best();
        node.btc.mine(1);
        w.poll().unwrap();
        assert!(w.best().is_some(), "a scan publishes its best block");
        best.mark_unchanged();
        assert!(!drv.new_mints_ready(), "nothing to mint");
        node.deposit(account(1), 250_000);
        node.btc.mine(CONFIRMATIONS - 1);
        w.poll().unwrap();
        assert!(best.has_changed().unwrap(), "new blocks are published");
        best.mark_unchanged();
        assert!(drv.new_mints_ready(), "the deposit is at depth");
        assert!(!drv.new_mints_ready(), "once per Bitcoin block");
        w.poll().unwrap();
        assert!(
            !best.has_changed().unwrap(),
            "no new block, nothing published"
        );
        assert!(!drv.new_mints_ready());
        node.btc.mine(1);
        w.poll().unwrap();
        assert!(best.has_changed().unwrap());
        assert!(drv.new_mints_ready(), "still unminted at the next block");
        // Dust is never worth an early proposal.
        let node = PegNode::new(1, 1);
        node.register(account(2));
        let w = node.watcher();
        let mut drv = node.driver(Some(w.clone())).await;
        node.deposit(account(2), 600);
        node.btc.mine(CONFIRMATIONS);
        w.poll().unwrap();
        assert_eq!(w.mature().len(), 1);
        assert!(!drv.new_mints_ready(), "below the spend cost");
    }

    /// The rate in a fee vote.
    fn voted(f: &FederationTx) -> Option<FeeRate> {
        match f.kind {
            FedTxKind::FeeRateVote { sat_per_vbyte, .. } => Some(sat_per_vbyte),
            _ => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_whose_bitcoind_cannot_estimate_votes_the_genesis_default_once() {
        let node = PegNode::new(1, 1);
        let w = node.watcher();
        let drv = node.driver(Some(w.clone())).await;
        assert!(drv.fee_vote().is_none(), "no vote before bitcoind answered");
        // A fresh bitcoind answers without an estimate.
        w.poll().unwrap();
        let default = FeeRate(node.chain.spec.genesis.fees.default_fee_rate_sat_vb);
        let vote = drv.fee_vote().expect("the fallback vote");
        assert_eq!(voted(&vote), Some(default));
        node.commit(vec![vote]);
        assert!(
            drv.fee_vote().is_none(),
            "an unchanged rate is not voted again"
        );
        // An estimate beyond the genesis bounds is voted at the bound.
        let max = node.chain.spec.genesis.fees.max_fee_rate_sat_vb;
        node.btc.set_fee_rate(Some(max * 10));
        w.poll().unwrap();
        let vote = drv.fee_vote().expect("a vote for the new estimate");
        assert_eq!(voted(&vote), Some(FeeRate(max)));
        node.commit(vec![vote]);
        // bitcoind loses its estimate again: back to the fallback.
        node.btc.set_fee_rate(None);
        w.poll().unwrap();
        assert_eq!(drv.fee_vote().as_ref().and_then(voted), Some(default));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mint_of_a_deposit_seen_at_depth_is_accepted() {
        let (node, w, d, _poller) = deposited(CONFIRMATIONS);
        let drv = node.driver(Some(w)).await;
        assert!(checked(&drv, &block_with(&node, vec![node.mint_tx(&d)])).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mint_of_a_deposit_bitcoind_does_not_show_is_refused() {
        let (node, w, d, _poller) = deposited(CONFIRMATIONS);
        let drv = node.driver(Some(w)).await;
        // What a Byzantine proposer mints: an outpoint that does not exist.
        let fake = SeenDeposit {
            outpoint: OutPoint {
                txid: fedpeg_ledger::testing::txid(0xab),
                vout: 0,
            },
            block: fedpeg_ledger::testing::block_hash(0xfe),
            ..d.clone()
        };
        let different = [
            fake,
            SeenDeposit {
                amount: sats(2_500_000),
                ..d.clone()
            },
            SeenDeposit {
                block: node.btc.best_tip().1,
                ..d.clone()
            },
        ];
        for bad in different {
            // One bad mint spoils a block with a good one.
            let block = block_with(&node, vec![node.mint_tx(&d), node.mint_tx(&bad)]);
            assert!(!checked(&drv, &block).await, "accepted {bad:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mint_below_depth_is_refused_until_bitcoind_shows_it_at_depth() {
        let (node, w, d, _poller) = deposited(CONFIRMATIONS - 1);
        let drv = node.driver(Some(w.clone())).await;
        let block = block_with(&node, vec![node.mint_tx(&d)]);
        assert!(!checked(&drv, &block).await);
        // The proposer's bitcoind is one block ahead of our last poll: the
        // check has the poller look again instead of refusing.
        node.btc.mine(1);
        assert!(!w.confirms(&d));
        assert!(checked(&drv, &block).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peg_out_confirmation_bitcoind_does_not_back_at_depth_is_refused() {
        let (node, w, _, _poller) = deposited(1);
        let drv = node.driver(Some(w)).await;
        // Any confirmed transaction stands for the batch: the ledger, not
        // this check, ties the txid to a batch.
        let script = node.deposit_script(account(1));
        let paid = node
            .btc
            .fund(&script, fedpeg_peg::bitcoin::Amount::from_sat(1000));
        let txid = paid.txid;
        let block = node.btc.best_tip().1;
        let claim = |blk: BlockHash| block_with(&node, vec![confirmation(&node, txid, blk)]);
        node.btc.mine(CONFIRMATIONS - 2);
        assert!(!checked(&drv, &claim(block)).await, "one block short");
        node.btc.mine(1);
        assert!(checked(&drv, &claim(block)).await);
        // Not in the named block, or unknown: refused.
        let tip = node.btc.best_tip().1;
        assert!(!checked(&drv, &claim(tip)).await);
        let unknown = block_with(
            &node,
            vec![confirmation(
                &node,
                fedpeg_ledger::testing::txid(0xab),
                fedpeg_ledger::testing::block_hash(0xfe),
            )],
        );
        assert!(!checked(&drv, &unknown).await);
        // Reorged out of the best chain: refused again.
        node.btc
            .reorg(CONFIRMATIONS, vec![vec![]; CONFIRMATIONS as usize + 1])
            .unwrap();
        assert!(!checked(&drv, &claim(block)).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peg_content_is_refused_without_a_reachable_bitcoind() {
        let (node, w, d, _poller) = deposited(CONFIRMATIONS);
        let txid = d.outpoint.txid;
        let claim = block_with(&node, vec![confirmation(&node, txid, d.block)]);
        let mint = block_with(&node, vec![node.mint_tx(&d)]);
        let plain = block_with(&node, vec![]);
        // With bitcoind up both are backed.
        let drv = node.driver(Some(w)).await;
        assert!(checked(&drv, &claim).await);
        assert!(checked(&drv, &mint).await);
        // Down: the confirmation cannot be checked.
        node.btc.set_unavailable(true);
        assert!(!checked(&drv, &claim).await);
        assert!(drv.peg_check(&plain).is_none());
        drop(drv);
        // No bitcoind configured at all: every peg claim is refused, blocks
        // without one need no check.
        let blind = node.driver(None).await;
        assert!(!checked(&blind, &mint).await);
        assert!(!checked(&blind, &claim).await);
        assert!(blind.peg_check(&plain).is_none());
    }

    /// Another proposer's blocks at the next height, and the member that
    /// checks them.
    struct PegBlocks {
        node: PegNode,
        w: Arc<Watcher>,
        _poller: Poller,
        /// Mints a deposit one block short of depth in this member's view.
        mint: Block,
        /// Mints a deposit two blocks short.
        later_mint: Block,
        /// Confirms a real batch in a block that does not hold it (only
        /// bitcoind can tell).
        claim: Block,
        /// No peg content.
        plain: Block,
    }

    fn peg_blocks() -> PegBlocks {
        let node = PegNode::new(1, 1);
        node.pegged_in(1, 1_000_000);
        let batch = node.peg_out(1);
        node.register(account(2));
        let d = node.deposit(account(2), 250_000);
        // (each deposit is mined in a block of its own)
        let later = node.deposit(account(2), 150_000);
        assert_eq!(CONFIRMATIONS, 3, "the depths below assume it");
        let w = node.watcher();
        w.poll().unwrap();
        let _poller = Poller::start(&w);
        let one = |tx: FederationTx| {
            let b = node.proposal(vec![tx]);
            assert_eq!(b.fed_txs.len(), 1);
            b
        };
        let claim = node.fed_tx(
            0,
            FedTxKind::PegOutConfirmed {
                batch: batch.id,
                txid: batch.latest().txid,
                bitcoin_block: node.btc.best_tip().1,
            },
        );
        PegBlocks {
            mint: one(node.mint_tx(&d)),
            later_mint: one(node.mint_tx(&later)),
            claim: one(claim),
            plain: node.proposal(vec![]),
            node,
            w,
            _poller,
        }
    }

    /// Puts `block` in the driver's cache as another member's proposal.
    fn offered(drv: &mut Driver, block: &Block) -> ValueId {
        let id = ValueId(block.hash().0);
        drv.blocks.insert_own(id, block.clone(), None);
        id
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn validating_a_block_with_peg_content_does_not_wait_for_a_slow_bitcoind() {
        let f = peg_blocks();
        let mut drv = f.node.driver(Some(f.w.clone())).await;
        let height = Height(f.node.chain.height() + 1);
        let (m, later, c, p) = (
            offered(&mut drv, &f.mint),
            offered(&mut drv, &f.later_mint),
            offered(&mut drv, &f.claim),
            offered(&mut drv, &f.plain),
        );
        // A slow but timely bitcoind (20 ms a call), a block ahead of our
        // watcher: the mint's verdict comes later, and passes.
        f.node.btc.mine(1);
        f.node.btc.set_delay(Duration::from_millis(20));
        let t0 = Instant::now();
        assert_eq!(drv.validate(height, &m), None);
        assert!(t0.elapsed() < Duration::from_millis(100));
        let (_, id, ok) = drv.peg_rx.recv().await.expect("a verdict");
        assert_eq!((id, ok), (m, true));
        // Now one more block ahead, and ours answers in 5 s a call.
        f.node.btc.mine(1);
        f.node.btc.set_delay(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(drv.validate(height, &later), None, "checked later");
        assert_eq!(drv.validate(height, &c), None, "checked later");
        assert_eq!(drv.validate(height, &p), Some(true), "no peg content");
        let waited = t0.elapsed();
        assert!(
            waited < Duration::from_millis(100),
            "validate waited {waited:?}"
        );
        // What cannot be checked within the bound is refused: nil for
        // those two blocks only.
        for _ in 0..2 {
            let (h, id, ok) = tokio::time::timeout(
                drv.peg_check_bound + Duration::from_secs(1),
                drv.peg_rx.recv(),
            )
            .await
            .expect("a verdict within the bound")
            .expect("a verdict");
            assert_eq!(h, height);
            assert!([later, c].contains(&id));
            assert!(!ok, "a check bitcoind could not answer in time passed");
        }
        f.node.btc.set_delay(Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_whose_bitcoind_is_down_accepts_blocks_without_peg_content_only() {
        let f = peg_blocks();
        let mut drv = f.node.driver(Some(f.w.clone())).await;
        let height = Height(f.node.chain.height() + 1);
        f.node.btc.mine(1);
        f.node.btc.set_unavailable(true);
        let (m, c, p) = (
            offered(&mut drv, &f.mint),
            offered(&mut drv, &f.claim),
            offered(&mut drv, &f.plain),
        );
        assert_eq!(drv.validate(height, &p), Some(true));
        assert_eq!(drv.validate(height, &m), None);
        assert_eq!(drv.validate(height, &c), None);
        for _ in 0..2 {
            let (_, id, ok) = tokio::time::timeout(drv.peg_check_bound, drv.peg_rx.recv())
                .await
                .expect("a down bitcoind is refused at once, not at the bound")
                .expect("a verdict");
            assert!([m, c].contains(&id));
            assert!(!ok);
        }
        f.node.btc.set_unavailable(false);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pooled_peg_out_confirmation_bitcoind_does_not_back_is_never_proposed() {
        let node = PegNode::new(1, 1);
        node.pegged_in(1, 1_000_000);
        let batch = node.peg_out(1);
        // The ledger accepts the claim (the batch and txid are real); only
        // bitcoind can tell that the named block does not hold it.
        let claim = node.fed_tx(
            0,
            FedTxKind::PegOutConfirmed {
                batch: batch.id,
                txid: batch.latest().txid,
                bitcoin_block: fedpeg_ledger::testing::block_hash(0xfe),
            },
        );
        let _ = node.chain.submit_fed_tx(claim.clone(), false);
        // Pooled, it is no reason to propose before the heartbeat.
        assert!(!node.chain.has_ready_txs());
        let w = node.watcher();
        w.poll().unwrap();
        let mut drv = node.driver(Some(w)).await;
        let propose = |drv: &mut Driver| {
            drv.pending_propose = Some((Height(node.chain.height() + 1), Round(0)));
            let Ok(Some(Input::ProposeValue { value_id, .. })) = drv.build_proposal() else {
                panic!("no proposal");
            };
            drv.blocks.get(&value_id).unwrap().block.clone()
        };
        // The claims are checked off the consensus task; a proposal uses
        // the last verdicts.
        async fn claims_checked(drv: &mut Driver) {
            if drv.claims_inflight {
                // The one the last proposal started.
                let backed = drv.claims_rx.recv().await.expect("a check");
                drv.on_claims_checked(backed);
            }
            drv.refresh_claims();
            let backed = drv.claims_rx.recv().await.expect("a check");
            drv.on_claims_checked(backed);
        }
        // bitcoind down: not proposed, kept for later.
        node.btc.set_unavailable(true);
        claims_checked(&mut drv).await;
        let block = propose(&mut drv);
        assert!(block.fed_txs.iter().all(|t| t.id() != claim.id()));
        assert_eq!(node.chain.mempool_len(), 1);
        // bitcoind says no: not proposed, dropped from the pool.
        node.btc.set_unavailable(false);
        claims_checked(&mut drv).await;
        let block = propose(&mut drv);
        assert!(block.fed_txs.iter().all(|t| t.id() != claim.id()));
        assert_eq!(node.chain.mempool_len(), 0);
    }
}
