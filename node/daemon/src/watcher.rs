//! The peg-in watcher: follows this member's own bitcoind, finds outputs to
//! registered deposit addresses, and tracks their depth on the best chain.
//!
//! What it has seen is what this member believes about Bitcoin: it proposes
//! mints for deposits that reached `pegin_confirmations`, and it votes for
//! another member's mint only if it has seen the same deposit (same block,
//! amount and account) at that depth itself. A reorg is handled by walking
//! back to the fork point and rescanning: deposits in blocks that left the
//! best chain are forgotten (and found again if they are mined again).
//!
//! It also records, from the same blocks, every best-chain transaction that
//! spends a federation output (a minted deposit, a change output, a batch
//! input): that is how the peg-out worker learns that a batch version is
//! mined and how deep, without `-txindex` (a pruned bitcoind works). A
//! federation spend that had reached the confirmation depth and then left
//! the best chain is a deep-reorg alert like a minted deposit's.
//!
//! What it has seen in the last [`SCAN_WINDOW`] blocks and its open alerts
//! are saved in the node's store after every poll that changed them, so a
//! restart neither forgets an alert nor misses a reorg that happened while
//! the member was down: the first poll walks back from the saved blocks to
//! the fork point like any other.

use crate::chain::Chain;
use bitcoin::{BlockHash, ScriptBuf, Txid};
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::amount::Sats;
use fedpeg_ledger::fedtx::OutPoint;
use fedpeg_peg::chain::{find_deposits, BitcoinChain, ChainError, NodeInfo};
use fedpeg_peg::federation::Federation;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// How far back from the tip a fresh watcher (or one that learned new
/// addresses) scans; also how many blocks a pruned bitcoind must keep
/// (bitcoind itself never keeps fewer than 288).
pub const SCAN_WINDOW: u64 = 288;

/// Oldest bitcoind this member works with (`getnetworkinfo` version):
/// Bitcoin Core or Knots 25.0.
pub const MIN_BITCOIND_VERSION: u64 = 250_000;

/// How often the watcher re-reads bitcoind's prune height.
const NODE_INFO_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Least time between the starts of two polls of [`Watcher::run`].
const MIN_POLL_GAP: std::time::Duration = std::time::Duration::from_millis(20);

/// A best-chain transaction spending a federation output.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spend {
    pub txid: Txid,
    pub block: BlockHash,
    pub height: u64,
}

/// A deposit seen on the best chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenDeposit {
    pub outpoint: OutPoint,
    pub amount: Sats,
    pub account: AccountId,
    pub block: BlockHash,
    pub height: u64,
    /// The epoch whose deposit script (peg descriptor) the output pays.
    pub epoch: u32,
}

/// What the poller alone touches (behind [`Watcher::scan`]; held across
/// bitcoind RPCs, so nothing on the consensus side ever takes it).
#[derive(Default)]
struct Scan {
    scanned: BTreeMap<u64, BlockHash>,
    scripts: HashMap<ScriptBuf, [u8; 32]>,
    /// The epoch of each script in `scripts`.
    script_epochs: HashMap<ScriptBuf, u32>,
    /// Registered accounts whose script is derived (or failed to derive).
    accounts: HashSet<AccountId>,
    /// Scripts of new registrations whose recent blocks are not rescanned yet.
    backfill: HashMap<ScriptBuf, [u8; 32]>,
    /// Epochs whose deposit scripts are watched: the epoch in force and the
    /// previous one while its deposit grace lasts
    /// ([`fedpeg_ledger::State::deposit_epochs`]).
    watched: BTreeMap<u32, Federation>,
    /// The change scripts of every epoch seen: their outputs are federation
    /// outputs (a batch formed before an activation pays the old one).
    change: HashSet<ScriptBuf>,
    /// bitcoind's node check: None until bitcoind answered once; an error
    /// when it is unusable (wrong network, too old, pruned too far).
    node: Option<Result<NodeInfo, String>>,
    node_checked: Option<std::time::Instant>,
    /// What the store holds: (tip hash, alerts), to save only on change.
    saved: Option<(Option<BlockHash>, Vec<OutPoint>)>,
}

/// What readers see: a snapshot behind [`Watcher::inner`], locked only
/// briefly (never across an RPC).
#[derive(Default)]
struct Inner {
    deposits: HashMap<OutPoint, SeenDeposit>,
    /// Deposits whose block left the best chain (until mined again).
    reorged: HashMap<OutPoint, SeenDeposit>,
    /// Deposits dropped for a rescan that has not completed yet (bitcoind
    /// failed part-way): judged found-again or reorged-out once a scan
    /// reaches the tip, never forgotten in between.
    unresolved: HashMap<OutPoint, SeenDeposit>,
    /// Minted deposits whose block left the best chain, and federation
    /// outputs whose confirmed spend did: a reorg deeper than the
    /// confirmation depth. Never cleared by the watcher.
    deep_reorgs: Vec<OutPoint>,
    /// Federation outputs spent on the best chain, by the spending tx.
    spends: HashMap<OutPoint, Spend>,
    /// Spends dropped for a rescan not completed yet, and whether they had
    /// reached the confirmation depth.
    unresolved_spends: HashMap<OutPoint, (Spend, bool)>,
    /// Federation spends that left the best chain and are not mined again
    /// (the peg-out worker rebroadcasts them).
    reorged_spends: HashMap<OutPoint, Spend>,
    /// Change outputs seen paying the federation (before state knows
    /// them), with their height.
    change_outputs: HashMap<OutPoint, u64>,
    tip: Option<u64>,
    /// The tip saved before a restart, until the first poll.
    saved_tip: Option<u64>,
    reachable: bool,
    /// bitcoind's last answer about the fee rate; None until it answered.
    fee_estimate: Option<FeeEstimate>,
}

/// bitcoind's answer to the watcher's fee-rate question (6 blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeeEstimate {
    /// sat/vB to confirm within 6 blocks.
    Rate(u64),
    /// bitcoind answered without an estimate: it has seen too few
    /// transactions (a fresh node, regtest).
    Unavailable,
}

/// Shared watcher state; `poll` may be called from any thread, and the
/// readers ([`Self::mature`], [`Self::confirms`], ...) never wait on bitcoind.
pub struct Watcher {
    chain: Arc<Chain>,
    btc: Arc<dyn BitcoinChain>,
    fed: Federation,
    confirmations: u64,
    scan: Mutex<Scan>,
    inner: Mutex<Inner>,
    /// Held while the open alerts are written to the store, so that the
    /// last write holds the alerts as they are then.
    alerts_io: Mutex<()>,
    /// Deposit scripts derived so far (one per registration).
    derivations: AtomicU64,
    /// Polls started (numbered from 1).
    polls_started: AtomicU64,
    /// Number of the last poll that finished (reached bitcoind or not).
    polls_done: tokio::sync::watch::Sender<u64>,
    /// Set to make the poller poll now instead of after its interval.
    wake: (Mutex<bool>, Condvar),
    /// The best block the last complete scan reached: changes with every
    /// new block or reorg, so a proposer can act on new deposits at once.
    best: tokio::sync::watch::Sender<Option<BlockHash>>,
    /// Block notifications received from bitcoind ([`crate::block_notify`]).
    notifications: Arc<AtomicU64>,
}

impl Watcher {
    /// A watcher over `btc` for the chain's federation, resuming from what
    /// the store saved (blocks seen, deposits, spends, open alerts).
    pub fn new(chain: Arc<Chain>, btc: Arc<dyn BitcoinChain>) -> anyhow::Result<Watcher> {
        let fed = chain.spec.peg_federation()?;
        let confirmations = chain.spec.genesis.pegin_confirmations.into();
        let saved = Saved::load(&chain)?;
        let mut scan = Scan::default();
        scan.change.extend(fed.change_script_pubkey().ok());
        let mut inner = Inner::default();
        if let Some(saved) = saved {
            scan.scanned = saved.scanned.into_iter().collect();
            // Readers wait for a first poll; the saved tip only judges depth
            // of what a reorg while down took away.
            inner.saved_tip = saved.tip;
            for d in saved.deposits {
                inner.deposits.insert(d.outpoint, d.into());
            }
            inner.spends = saved.spends.into_iter().collect();
            inner.deep_reorgs = saved.alerts;
            if !inner.deep_reorgs.is_empty() {
                tracing::error!(
                    alerts = inner.deep_reorgs.len(),
                    "deep-reorg alerts from before the restart are still open: peg-outs stay halted on this member until an operator acknowledges them (fedpeg acknowledge-alerts)"
                );
            }
        }
        Ok(Watcher {
            chain,
            btc,
            fed,
            confirmations,
            scan: Mutex::new(scan),
            inner: Mutex::new(inner),
            alerts_io: Mutex::new(()),
            derivations: AtomicU64::new(0),
            polls_started: AtomicU64::new(0),
            polls_done: tokio::sync::watch::channel(0).0,
            wake: (Mutex::new(false), Condvar::new()),
            best: tokio::sync::watch::channel(None).0,
            notifications: Arc::default(),
        })
    }

    /// Brings the view up to date with bitcoind (new blocks, reorgs, newly
    /// registered addresses). The reader lock is taken only to publish.
    pub fn poll(&self) -> Result<(), ChainError> {
        let Ok(mut scan) = self.scan.lock() else {
            return Ok(());
        };
        let number = self.polls_started.fetch_add(1, Ordering::SeqCst) + 1;
        let result = self.poll_scan(&mut scan);
        drop(scan);
        self.view(|i| i.reachable = result.is_ok());
        self.polls_done.send_modify(|n| *n = (*n).max(number));
        result
    }

    /// Runs `f` on the reader snapshot (a brief lock).
    fn view<R: Default>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        self.inner.lock().map(|mut i| f(&mut i)).unwrap_or_default()
    }

    /// Derives the scripts of accounts registered since the last poll
    /// (only those: one derivation per registration and watched epoch), and
    /// of every registered account when an epoch starts being watched (an
    /// activation); drops the scripts of an epoch no longer watched (its
    /// deposit grace is over).
    fn add_registrations(&self, scan: &mut Scan) {
        let params = self.chain.params();
        let (new, epochs) = self.chain.with_state(|s| {
            let epochs: Vec<(u32, Option<Federation>)> = s
                .deposit_epochs(s.height.next())
                .into_iter()
                .map(|e| (e.number, params.federation_of(e).ok()))
                .collect();
            if s.registered.len() == scan.accounts.len() {
                return (vec![], epochs);
            }
            let new = s
                .registered
                .iter()
                .filter(|a| !scan.accounts.contains(*a))
                .copied()
                .collect();
            (new, epochs)
        });
        let gone: Vec<u32> = scan
            .watched
            .keys()
            .filter(|n| !epochs.iter().any(|(e, _)| e == *n))
            .copied()
            .collect();
        for n in gone {
            scan.watched.remove(&n);
            let Scan {
                scripts,
                script_epochs,
                ..
            } = scan;
            script_epochs.retain(|script, e| {
                let keep = *e != n;
                if !keep {
                    scripts.remove(script);
                }
                keep
            });
        }
        for (n, fed) in epochs {
            let Some(fed) = fed.filter(|_| !scan.watched.contains_key(&n)) else {
                continue;
            };
            scan.change.extend(fed.change_script_pubkey().ok());
            let known: Vec<AccountId> = scan.accounts.iter().copied().collect();
            for a in known {
                self.derive(scan, &fed, n, a);
            }
            scan.watched.insert(n, fed);
        }
        for a in new {
            let feds: Vec<(u32, Federation)> =
                scan.watched.iter().map(|(n, f)| (*n, f.clone())).collect();
            for (n, fed) in feds {
                self.derive(scan, &fed, n, a);
            }
            scan.accounts.insert(a);
        }
    }

    /// Watches account `a`'s deposit script under `fed` (epoch `n`), and
    /// rescans the recent blocks for it.
    fn derive(&self, scan: &mut Scan, fed: &Federation, n: u32, a: AccountId) {
        self.derivations.fetch_add(1, Ordering::Relaxed);
        if let Ok(script) = fed.deposit_script_pubkey(&a.0) {
            scan.scripts.insert(script.clone(), a.0);
            // Two epochs with the same peg keys and threshold share every
            // script: label it with the newest, on every node alike (what
            // a mint names and peers check), and keep it while that one is
            // watched.
            let e = scan.script_epochs.entry(script.clone()).or_insert(n);
            *e = (*e).max(n);
            scan.backfill.insert(script, a.0);
        }
    }

    /// Notes `block`'s outputs to `scripts` as deposits at height `h`, its
    /// change outputs and its spends of federation outputs.
    fn record(
        &self,
        block: &bitcoin::Block,
        hash: BlockHash,
        h: u64,
        scripts: &HashMap<ScriptBuf, [u8; 32]>,
        script_epochs: &HashMap<ScriptBuf, u32>,
        change: &HashSet<ScriptBuf>,
    ) {
        let found = find_deposits(block, scripts);
        let mut change_outputs = Vec::new();
        let mut inputs = Vec::new();
        for tx in block.txdata.iter().filter(|tx| !tx.is_coinbase()) {
            let txid = tx.compute_txid();
            for (vout, out) in tx.output.iter().enumerate() {
                if change.contains(&out.script_pubkey) {
                    change_outputs.push((OutPoint::new(txid, vout as u32), h));
                }
            }
            inputs.extend(tx.input.iter().map(|i| (i.previous_output, txid)));
        }
        self.view(|inner| {
            for d in found {
                let outpoint = d.outpoint;
                // More than 21M BTC in one output: not from a valid chain.
                let Some(amount) = Sats::checked(d.amount.to_sat()) else {
                    tracing::warn!(%outpoint, "ignoring a deposit above 21M BTC");
                    continue;
                };
                let Some(epoch) = script_epochs.get(&d.script_pubkey).copied() else {
                    continue;
                };
                inner.deposits.insert(
                    outpoint,
                    SeenDeposit {
                        outpoint,
                        amount,
                        account: AccountId(d.account),
                        block: hash,
                        height: h,
                        epoch,
                    },
                );
            }
            inner.change_outputs.extend(change_outputs);
            // Federation outputs: what this watcher saw paid to the
            // federation, and what state holds (in case state knew a coin
            // before this watcher did, e.g. after a restart).
            let spends: Vec<(OutPoint, Txid)> = self.chain.with_state(|s| {
                // Settled batches too: a reorg may bring another version.
                let in_batches: HashSet<&OutPoint> = s
                    .batches
                    .values()
                    .chain(s.settled.values())
                    .flat_map(|b| b.inputs.iter().map(|(o, _)| o))
                    .collect();
                inputs
                    .into_iter()
                    .filter(|(o, _)| {
                        inner.deposits.contains_key(o)
                            || inner.change_outputs.contains_key(o)
                            || s.utxos.contains_key(o)
                            || in_batches.contains(o)
                    })
                    .collect()
            });
            for (o, txid) in spends {
                inner.spends.insert(
                    o,
                    Spend {
                        txid,
                        block: hash,
                        height: h,
                    },
                );
            }
        })
    }

    /// Checks bitcoind once (and its prune height every
    /// [`NODE_INFO_EVERY`]); an unusable node stops the scan with the reason.
    fn node(&self, scan: &mut Scan) -> Result<NodeInfo, ChainError> {
        let fresh = scan
            .node_checked
            .is_some_and(|t| t.elapsed() < NODE_INFO_EVERY)
            && !matches!(&scan.node, Some(Ok(i)) if i.initial_block_download);
        if !fresh || scan.node.is_none() {
            let info = self.btc.node_info()?;
            let verdict = check_node(&info, self.chain.spec.network, self.confirmations);
            if let Err(why) = &verdict {
                if !matches!(&scan.node, Some(Err(w)) if w == why) {
                    tracing::error!("{why}");
                }
            }
            scan.node = Some(verdict.map(|()| info));
            scan.node_checked = Some(std::time::Instant::now());
        }
        match &scan.node {
            Some(Ok(info)) => Ok(info.clone()),
            Some(Err(why)) => Err(ChainError::Rpc(why.clone())),
            None => Err(ChainError::Unavailable("bitcoind not checked yet".into())),
        }
    }

    fn poll_scan(&self, scan: &mut Scan) -> Result<(), ChainError> {
        let info = self.node(scan)?;
        // Headers ahead of blocks would look like a reorg: wait.
        if info.initial_block_download {
            return Err(ChainError::Unavailable(
                "bitcoind is in initial block download: waiting for it to finish".into(),
            ));
        }
        self.add_registrations(scan);
        let (tip, _) = self.btc.tip()?;
        // Walk back to the last block we scanned that is still on the best
        // chain (however long ago: a member down for days scans every block
        // it missed); never below what a pruned node still has.
        let kept = info.prune_height.unwrap_or(0);
        let low = tip.saturating_sub(SCAN_WINDOW).max(1).max(kept);
        let mut start = low;
        while let Some((&h, hash)) = scan.scanned.iter().next_back() {
            let on_best = if h <= tip {
                self.btc.block_hash(h)? == *hash
            } else {
                // Above bitcoind's tip: reorged out only if bitcoind knows
                // the block off its best chain; unknown means bitcoind is
                // behind (resyncing, a restored or failover node): wait.
                match self.btc.best_chain_height(hash) {
                    Ok(_) => false,
                    Err(ChainError::NotFound) => {
                        return Err(ChainError::Unavailable(format!(
                            "bitcoind is at height {tip} and does not know block {hash} at height {h} that this member saw: waiting for it to catch up"
                        )))
                    }
                    Err(e) => return Err(e),
                }
            };
            if on_best {
                start = h + 1;
                if start < kept {
                    tracing::error!(
                        from = start,
                        to = kept - 1,
                        "bitcoind pruned blocks this member never scanned: deposits and batch spends in them are not seen (keep fedpegd running, or prune less)"
                    );
                    start = kept;
                }
                break;
            }
            scan.scanned.remove(&h);
        }
        let confirmations = self.confirmations;
        self.view(|inner| {
            let dropped: Vec<SeenDeposit> = inner
                .deposits
                .values()
                .filter(|d| d.height >= start)
                .cloned()
                .collect();
            inner.deposits.retain(|_, d| d.height < start);
            inner
                .unresolved
                .extend(dropped.into_iter().map(|d| (d.outpoint, d)));
            // A spend that had reached the depth when it left counts as
            // confirmed (the federation may have acted on it).
            let last_tip = inner.tip.or(inner.saved_tip).unwrap_or(0);
            let dropped: Vec<(OutPoint, Spend)> = inner
                .spends
                .iter()
                .filter(|(_, sp)| sp.height >= start)
                .map(|(o, sp)| (*o, sp.clone()))
                .collect();
            inner.spends.retain(|_, sp| sp.height < start);
            for (o, sp) in dropped {
                let deep = last_tip + 1 >= sp.height + confirmations;
                inner.unresolved_spends.insert(o, (sp, deep));
            }
        });
        // New scripts only: the recent blocks already scanned for the others.
        if !scan.backfill.is_empty() {
            for h in low..start {
                let hash = match scan.scanned.get(&h) {
                    Some(hash) => *hash,
                    None => self.btc.block_hash(h)?,
                };
                let block = self.btc.block(&hash)?;
                self.record(
                    &block,
                    hash,
                    h,
                    &scan.backfill,
                    &scan.script_epochs,
                    &HashSet::new(),
                );
            }
            scan.backfill.clear();
        }
        for h in start..=tip {
            let hash = self.btc.block_hash(h)?;
            let block = self.btc.block(&hash)?;
            self.record(
                &block,
                hash,
                h,
                &scan.scripts,
                &scan.script_epochs,
                &scan.change,
            );
            scan.scanned.insert(h, hash);
        }
        // The scan reached the tip. What left the best chain and was not
        // found again is reorged out; what is found again is no longer.
        self.view(|inner| self.resolve(inner));
        while scan.scanned.len() as u64 > SCAN_WINDOW {
            scan.scanned.pop_first();
        }
        self.prune(scan.scanned.keys().next().copied().unwrap_or(0));
        // Unavailable until bitcoind has enough data (e.g. a fresh regtest);
        // a failed call keeps the last answer.
        self.view(|inner| inner.tip = Some(tip));
        let best = scan.scanned.values().next_back().copied();
        self.best
            .send_if_modified(|b| std::mem::replace(b, best) != best);
        // After the tip is published: proposers act on new deposits
        // without waiting for this answer.
        let fee_estimate = self
            .btc
            .estimate_fee_rate(6)
            .ok()
            .map(|e| e.map_or(FeeEstimate::Unavailable, FeeEstimate::Rate));
        if fee_estimate.is_some() {
            self.view(|inner| inner.fee_estimate = fee_estimate);
        }
        self.save(scan);
        Ok(())
    }

    /// Forgets spends and change outputs below `oldest` (the window), but
    /// not spends of an unconfirmed or settled batch's inputs, whatever
    /// their age.
    fn prune(&self, oldest: u64) {
        let open: HashSet<OutPoint> = self.chain.with_state(|s| {
            s.batches
                .values()
                .chain(s.settled.values())
                .flat_map(|b| b.inputs.iter().map(|(o, _)| *o))
                .collect()
        });
        self.view(|inner| {
            inner
                .spends
                .retain(|o, sp| sp.height >= oldest || open.contains(o));
            inner.change_outputs.retain(|_, h| *h >= oldest);
        });
    }

    /// Saves the view to the store if the tip or the alerts changed.
    fn save(&self, scan: &mut Scan) {
        let tip_hash = scan.scanned.values().next_back().copied();
        let alerts = self.deep_reorgs();
        if scan.saved.as_ref() == Some(&(tip_hash, alerts.clone())) {
            return;
        }
        let oldest = scan.scanned.keys().next().copied().unwrap_or(0);
        let saved = self.view(|inner| Saved {
            scanned: scan.scanned.iter().map(|(h, b)| (*h, *b)).collect(),
            tip: inner.tip,
            deposits: inner
                .deposits
                .values()
                .chain(inner.unresolved.values())
                .filter(|d| d.height >= oldest)
                .map(SavedDeposit::from)
                .collect(),
            // In memory only what prune keeps: the window and open batches.
            spends: inner
                .spends
                .iter()
                .map(|(o, sp)| (*o, sp.clone()))
                .collect(),
            alerts: vec![],
        });
        match self.write(Some(&saved)) {
            Ok(()) => scan.saved = Some((tip_hash, alerts)),
            Err(e) => tracing::error!(error = %e, "cannot save the peg watcher's view"),
        }
    }

    /// Writes the open alerts, as they are now, to the store, with `view`
    /// if given: one synced write, so a crash never keeps a view without
    /// the alerts it raised.
    fn write(&self, view: Option<&Saved>) -> anyhow::Result<()> {
        let _io = self
            .alerts_io
            .lock()
            .map_err(|_| anyhow::anyhow!("alert writer poisoned"))?;
        let alerts = serde_json::to_vec(&self.deep_reorgs())?;
        let mut records = vec![(SAVED_ALERTS, alerts)];
        if let Some(v) = view {
            records.push((SAVED_VIEW, serde_json::to_vec(v)?));
        }
        let r = self.chain.put_local_records(&records);
        if let Err(e) = &r {
            tracing::error!(error = %e, "cannot save the open deep-reorg alerts");
        }
        Ok(r?)
    }

    /// Judges the deposits and spends dropped for a rescan that reached
    /// the tip.
    fn resolve(&self, inner: &mut Inner) {
        let dropped = std::mem::take(&mut inner.unresolved_spends);
        for (o, (sp, deep)) in dropped {
            let now = inner.spends.get(&o);
            if now.is_some_and(|n| n.txid == sp.txid) {
                continue;
            }
            if deep {
                tracing::error!(
                    outpoint = %o,
                    txid = %sp.txid,
                    height = sp.height,
                    "ALERT: a confirmed spend of a federation output left the best chain (reorg deeper than the confirmation depth)"
                );
                if !inner.deep_reorgs.contains(&o) {
                    inner.deep_reorgs.push(o);
                }
            }
            if now.is_none() {
                tracing::warn!(outpoint = %o, txid = %sp.txid, "a federation spend was reorged out of the best chain; it will be rebroadcast");
                inner.reorged_spends.insert(o, sp);
            }
        }
        let Inner {
            reorged_spends,
            spends,
            ..
        } = inner;
        reorged_spends.retain(|o, _| !spends.contains_key(o));
        let dropped = std::mem::take(&mut inner.unresolved);
        for d in dropped.into_values() {
            if !inner.deposits.contains_key(&d.outpoint)
                && self
                    .chain
                    .with_state(|s| s.minted.contains_key(&d.outpoint))
            {
                tracing::error!(
                    outpoint = %d.outpoint,
                    height = d.height,
                    "ALERT: a minted deposit left the best chain (reorg deeper than pegin_confirmations); reserves may not cover supply"
                );
                if !inner.deep_reorgs.contains(&d.outpoint) {
                    inner.deep_reorgs.push(d.outpoint);
                }
            }
            if !inner.deposits.contains_key(&d.outpoint) {
                tracing::warn!(outpoint = %d.outpoint, height = d.height, "deposit reorged out of the best chain");
                inner.reorged.insert(d.outpoint, d);
            }
        }
        let Inner {
            reorged, deposits, ..
        } = inner;
        reorged.retain(|o, _| !deposits.contains_key(o));
    }

    /// Deposit scripts derived so far: one per registration, however many
    /// polls and registrations there were.
    pub fn derivations(&self) -> u64 {
        self.derivations.load(Ordering::Relaxed)
    }

    /// The best block the last complete scan reached (None before one).
    pub fn best(&self) -> Option<BlockHash> {
        *self.best.borrow()
    }

    /// Changes whenever [`Self::best`] does.
    pub fn subscribe_best(&self) -> tokio::sync::watch::Receiver<Option<BlockHash>> {
        self.best.subscribe()
    }

    /// The counter of block notifications (for [`crate::block_notify::run`]).
    pub fn notification_counter(&self) -> Arc<AtomicU64> {
        self.notifications.clone()
    }

    /// Block notifications received from bitcoind so far.
    pub fn block_notifications(&self) -> u64 {
        self.notifications.load(Ordering::Relaxed)
    }

    /// Asks the poller ([`Self::run`]) to poll now.
    pub fn request_poll(&self) {
        if let Ok(mut wake) = self.wake.0.lock() {
            *wake = true;
            self.wake.1.notify_all();
        }
    }

    /// Waits (without blocking a thread) for the poll running now, if any,
    /// to finish; false after `within`. Cheaper than [`Self::fresh_poll`]
    /// when a block notification already started the poll that matters.
    pub async fn running_poll(&self, within: std::time::Duration) -> bool {
        let mut done = self.polls_done.subscribe();
        let started = self.polls_started.load(Ordering::SeqCst);
        tokio::time::timeout(within, done.wait_for(|n| *n >= started))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits (without blocking a thread) for a poll that starts after this
    /// call to finish, asking the poller for one; false after `within`.
    pub async fn fresh_poll(&self, within: std::time::Duration) -> bool {
        let mut done = self.polls_done.subscribe();
        let after = self.polls_started.load(Ordering::SeqCst);
        self.request_poll();
        tokio::time::timeout(within, done.wait_for(|n| *n > after))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Deposits at or past the confirmation depth and not yet minted.
    pub fn mature(&self) -> Vec<SeenDeposit> {
        let Ok(inner) = self.inner.lock() else {
            return vec![];
        };
        let Some(tip) = inner.tip else { return vec![] };
        let mut out: Vec<SeenDeposit> = self.chain.with_state(|s| {
            inner
                .deposits
                .values()
                .filter(|d| {
                    tip + 1 >= d.height + self.confirmations && !s.minted.contains_key(&d.outpoint)
                })
                .cloned()
                .collect()
        });
        out.sort_by_key(|d| (d.height, d.outpoint));
        out
    }

    /// True if this member saw exactly this deposit at depth on its bitcoind.
    pub fn confirms(&self, d: &SeenDeposit) -> bool {
        let Ok(inner) = self.inner.lock() else {
            return false;
        };
        match (inner.tip, inner.deposits.get(&d.outpoint)) {
            (Some(tip), Some(seen)) => {
                seen.amount == d.amount
                    && seen.account == d.account
                    && seen.epoch == d.epoch
                    && seen.block == d.block
                    && tip + 1 >= seen.height + self.confirmations
            }
            _ => false,
        }
    }

    /// Deposits matching `filter`: (on the best chain, reorged out), and the tip height.
    #[allow(clippy::type_complexity)]
    pub fn deposits(
        &self,
        filter: impl Fn(&SeenDeposit) -> bool,
    ) -> (Vec<SeenDeposit>, Vec<SeenDeposit>, Option<u64>) {
        let Ok(inner) = self.inner.lock() else {
            return (vec![], vec![], None);
        };
        (
            inner
                .deposits
                .values()
                .filter(|d| filter(d))
                .cloned()
                .collect(),
            inner
                .reorged
                .values()
                .filter(|d| filter(d))
                .cloned()
                .collect(),
            inner.tip,
        )
    }

    /// The bitcoind this watcher follows.
    pub fn bitcoin(&self) -> &Arc<dyn BitcoinChain> {
        &self.btc
    }

    /// The peg federation of genesis (epoch 0).
    pub fn federation(&self) -> &Federation {
        &self.fed
    }

    /// Minted deposits whose block left the best chain (deep reorgs).
    pub fn deep_reorgs(&self) -> Vec<OutPoint> {
        self.inner
            .lock()
            .map(|i| i.deep_reorgs.clone())
            .unwrap_or_default()
    }

    /// Bitcoin tip height at the last poll.
    pub fn tip(&self) -> Option<u64> {
        self.inner.lock().ok().and_then(|i| i.tip)
    }

    /// Clears acknowledged deep-reorg alerts (in the store too); returns
    /// those still open.
    pub fn acknowledge(&self, outpoints: &[OutPoint]) -> Vec<OutPoint> {
        let open = {
            let Ok(mut inner) = self.inner.lock() else {
                return vec![];
            };
            inner.deep_reorgs.retain(|o| !outpoints.contains(o));
            inner.deep_reorgs.clone()
        };
        // On failure the next poll writes them again (its record differs).
        let _ = self.write(None);
        open
    }

    /// The best-chain spend of federation output `outpoint`, if seen.
    pub fn spend(&self, outpoint: &OutPoint) -> Option<Spend> {
        self.inner
            .lock()
            .ok()
            .and_then(|i| i.spends.get(outpoint).cloned())
    }

    /// The best-chain spend by transaction `txid` of a federation output,
    /// and its depth at the last poll.
    pub fn mined(&self, txid: &Txid) -> Option<(Spend, u64)> {
        let inner = self.inner.lock().ok()?;
        let tip = inner.tip?;
        let sp = inner.spends.values().find(|sp| sp.txid == *txid)?;
        Some((sp.clone(), (tip + 1).saturating_sub(sp.height)))
    }

    /// Federation spends that left the best chain and are not mined again.
    pub fn reorged_spends(&self) -> Vec<Spend> {
        self.inner
            .lock()
            .map(|i| i.reorged_spends.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The last check of bitcoind: its facts, or why it is unusable; None
    /// before bitcoind answered.
    #[cfg(test)]
    pub fn node_check(&self) -> Option<Result<NodeInfo, String>> {
        self.scan.try_lock().ok().and_then(|s| s.node.clone())
    }

    /// bitcoind's latest answer about the fee rate (None before it answered).
    pub fn fee_estimate(&self) -> Option<FeeEstimate> {
        self.inner.lock().ok().and_then(|i| i.fee_estimate)
    }

    /// Whether the last poll reached bitcoind.
    pub fn reachable(&self) -> bool {
        self.inner.lock().map(|i| i.reachable).unwrap_or(false)
    }

    /// Sleeps `interval` or until [`Self::request_poll`].
    fn sleep(&self, interval: std::time::Duration) {
        let Ok(wake) = self.wake.0.lock() else {
            return std::thread::sleep(interval);
        };
        if let Ok((mut wake, _)) = self.wake.1.wait_timeout_while(wake, interval, |w| !*w) {
            *wake = false;
        }
    }

    /// Polls every `interval` (or at once when asked) until `stop` is set.
    pub fn run(
        self: Arc<Self>,
        interval: std::time::Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut warned = false;
        while !*stop.borrow() {
            let started = std::time::Instant::now();
            match self.poll() {
                Ok(()) => warned = false,
                Err(e) if !warned => {
                    tracing::warn!(error = %e, "bitcoind unreachable; peg-in paused, transfers continue");
                    warned = true;
                }
                Err(_) => {}
            }
            self.sleep(interval);
            // However often it is asked (block notifications, peer checks),
            // polls start at least MIN_POLL_GAP apart.
            if let Some(rest) = MIN_POLL_GAP.checked_sub(started.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }
}

/// Store key of the watcher's view (JSON [`Saved`]).
const SAVED_VIEW: &str = "peg_watch";
/// Store key of the open deep-reorg alerts (JSON list of outpoints).
const SAVED_ALERTS: &str = "peg_alerts";

/// What the store keeps of a watcher between runs.
#[derive(Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct Saved {
    /// The last [`SCAN_WINDOW`] blocks scanned: height and hash.
    scanned: Vec<(u64, BlockHash)>,
    tip: Option<u64>,
    /// Deposits and spends seen in those blocks.
    deposits: Vec<SavedDeposit>,
    spends: Vec<(OutPoint, Spend)>,
    /// Written under [`SAVED_ALERTS`], not here.
    #[serde(skip)]
    alerts: Vec<OutPoint>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedDeposit {
    outpoint: OutPoint,
    amount: Sats,
    account: [u8; 32],
    block: BlockHash,
    height: u64,
    /// Absent in views saved before epochs had descriptors: epoch 0.
    #[serde(default)]
    epoch: u32,
}

impl From<&SeenDeposit> for SavedDeposit {
    fn from(d: &SeenDeposit) -> Self {
        SavedDeposit {
            outpoint: d.outpoint,
            amount: d.amount,
            account: d.account.0,
            block: d.block,
            height: d.height,
            epoch: d.epoch,
        }
    }
}

impl From<SavedDeposit> for SeenDeposit {
    fn from(d: SavedDeposit) -> Self {
        SeenDeposit {
            outpoint: d.outpoint,
            amount: d.amount,
            account: AccountId(d.account),
            block: d.block,
            height: d.height,
            epoch: d.epoch,
        }
    }
}

impl Saved {
    /// What the store holds; None for a node that never saved one. An
    /// unreadable record is an error: starting without it could forget an
    /// alert.
    fn load(chain: &Chain) -> anyhow::Result<Option<Saved>> {
        let view = chain.local_record(SAVED_VIEW)?;
        let alerts = chain.local_record(SAVED_ALERTS)?;
        if view.is_none() && alerts.is_none() {
            return Ok(None);
        }
        // The view is a cache of what bitcoind shows: unreadable, it is
        // rebuilt by a rescan. The alerts are not: see below.
        let mut saved: Saved = match view.map(|b| serde_json::from_slice(&b)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the saved peg watcher view is unreadable: rescanning the recent blocks instead");
                Saved::default()
            }
            None => Saved::default(),
        };
        if let Some(bytes) = alerts {
            saved.alerts = serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!("the store's record of open deep-reorg alerts is unreadable ({e}); restore the data directory from a backup")
            })?;
        }
        Ok(Some(saved))
    }
}

/// Whether a member can run its peg on this bitcoind: the genesis network,
/// at least [`MIN_BITCOIND_VERSION`], and, when pruned, the last
/// [`SCAN_WINDOW`] blocks on disk (bitcoind's own minimum is 288, which
/// `-prune=550` gives). `-txindex` is not needed.
pub fn check_node(
    info: &NodeInfo,
    network: bitcoin::Network,
    confirmations: u64,
) -> Result<(), String> {
    let want = match network {
        bitcoin::Network::Bitcoin => "main",
        bitcoin::Network::Testnet => "test",
        bitcoin::Network::Signet => "signet",
        bitcoin::Network::Regtest => "regtest",
        _ => "testnet4",
    };
    if info.chain != want {
        return Err(format!(
            "bitcoind runs chain `{}` but the genesis pegs to `{want}`: point --bitcoin-rpc-url at a bitcoind started with the matching network",
            info.chain
        ));
    }
    if info.version < MIN_BITCOIND_VERSION {
        return Err(format!(
            "bitcoind {} (version {}) is too old: fedpeg needs Bitcoin Core or Knots 25.0 or newer",
            info.subversion, info.version
        ));
    }
    if let Some(pruned_below) = info.prune_height {
        let kept = info.blocks.saturating_sub(pruned_below) + 1;
        let need = SCAN_WINDOW.max(confirmations).min(info.blocks + 1);
        if kept < need {
            return Err(format!(
                "bitcoind is pruned to its last {kept} blocks but the peg needs the last {need} to check deposits and reorgs: use -prune=550 or more (bitcoind keeps at least 288 blocks then) and let it finish syncing"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peg_testing::{account, PegNode, CONFIRMATIONS};
    use bitcoin::Amount;
    use fedpeg_ledger::testing::sats;

    /// A one-member federation with user 1 registered, and its watcher.
    fn registered() -> (PegNode, Arc<Watcher>) {
        let node = PegNode::new(1, 1);
        node.register(account(1));
        let w = node.watcher();
        w.poll().unwrap();
        (node, w)
    }

    /// Deposits on the best chain, then reorged out, sorted by height.
    fn seen(w: &Watcher) -> (Vec<SeenDeposit>, Vec<SeenDeposit>) {
        let (mut best, mut gone, _) = w.deposits(|_| true);
        best.sort_by_key(|d| d.height);
        gone.sort_by_key(|d| d.height);
        (best, gone)
    }

    #[test]
    fn deposit_becomes_mature_exactly_at_the_confirmation_depth() {
        let (node, w) = registered();
        node.btc.mine(5);
        let d = node.deposit(account(1), 250_000);
        w.poll().unwrap();
        let (best, _) = seen(&w);
        assert_eq!(best, vec![d.clone()]);
        for depth in 1..CONFIRMATIONS {
            assert_eq!(w.tip().unwrap() + 1 - d.height, depth);
            assert!(w.mature().is_empty(), "mature at depth {depth}");
            assert!(!w.confirms(&d), "confirmed at depth {depth}");
            node.btc.mine(1);
            w.poll().unwrap();
        }
        assert_eq!(w.tip().unwrap() + 1 - d.height, CONFIRMATIONS);
        assert_eq!(w.mature(), vec![d.clone()]);
        assert!(w.confirms(&d));
        // Deeper it stays mature, until minted.
        node.btc.mine(1);
        w.poll().unwrap();
        assert_eq!(w.mature(), vec![d.clone()]);
        node.mint(&d);
        assert!(w.mature().is_empty());
    }

    #[test]
    fn confirms_refuses_a_deposit_that_differs_from_the_one_seen() {
        let (node, w) = registered();
        node.register(account(2));
        node.deposit(account(1), 250_000);
        node.btc.mine(CONFIRMATIONS);
        w.poll().unwrap();
        let d = w.mature().pop().unwrap();
        // Another member's mint does not know the height: it is not compared.
        assert!(w.confirms(&SeenDeposit {
            height: 0,
            ..d.clone()
        }));
        let wrong = [
            SeenDeposit {
                amount: sats(250_001),
                ..d.clone()
            },
            SeenDeposit {
                account: account(2),
                ..d.clone()
            },
            SeenDeposit {
                block: fedpeg_ledger::testing::block_hash(7),
                ..d.clone()
            },
            SeenDeposit {
                outpoint: OutPoint {
                    vout: 1,
                    ..d.outpoint
                },
                ..d.clone()
            },
            // Another epoch's descriptor: another script than the one paid.
            SeenDeposit {
                epoch: 1,
                ..d.clone()
            },
        ];
        assert_eq!(d.epoch, 0);
        for bad in wrong {
            assert!(!w.confirms(&bad), "confirmed {bad:?}");
        }
    }

    #[test]
    fn after_a_change_deposits_to_the_new_and_the_previous_descriptor_are_seen_with_their_epoch() {
        use fedpeg_ledger::epoch::EpochMember;
        let (node, w) = registered();
        let secp = bitcoin::secp256k1::Secp256k1::signing_only();
        let newcomer = EpochMember {
            name: "m1".into(),
            consensus_key: crate::peg_testing::consensus_key(1).verifying_key(),
            peg_key: crate::peg_testing::peg_secret(1).public_key(&secp),
            p2p_address: "/ip4/127.0.0.1/tcp/9".into(),
        };
        let genesis = node.chain.with_state(|s| s.epochs[0].members[0].clone());
        let activation = node.adopt_change(vec![genesis, newcomer], 2, 1);
        while node.chain.height() + 1 < activation {
            node.commit(vec![]);
        }
        // The next block is the activation's: the new descriptor is the
        // peg's, the old one is in its deposit grace.
        let params = node.chain.params();
        let fed1 = node
            .chain
            .with_state(|s| params.federation_of(&s.epochs[1]))
            .unwrap();
        let new_script = fed1.deposit_script_pubkey(&account(1).0).unwrap();
        assert_ne!(new_script, node.deposit_script(account(1)));
        let old = node.deposit(account(1), 200_000);
        let new = node.btc.fund(&new_script, Amount::from_sat(300_000));
        node.btc.mine(CONFIRMATIONS);
        w.poll().unwrap();
        let epoch_of = |o: &OutPoint| {
            w.mature()
                .into_iter()
                .find(|d| d.outpoint == *o)
                .map(|d| d.epoch)
        };
        assert_eq!(epoch_of(&old.outpoint), Some(0));
        assert_eq!(epoch_of(&new), Some(1));
        let seen_new = w.mature().into_iter().find(|d| d.outpoint == new).unwrap();
        assert!(w.confirms(&SeenDeposit {
            height: 0,
            ..seen_new.clone()
        }));
        assert!(!w.confirms(&SeenDeposit {
            epoch: 0,
            ..seen_new
        }));
    }

    /// A change that keeps the peg keys and threshold (here: a new p2p
    /// address) gives the new epoch the old descriptor: its deposits are
    /// labelled with the newer epoch, on every node alike.
    #[test]
    fn a_descriptor_shared_by_two_epochs_labels_deposits_with_the_newer() {
        let (node, w) = registered();
        let mut members = node.chain.with_state(|s| s.epochs[0].members.clone());
        members[0].p2p_address = "/ip4/127.0.0.1/tcp/9".into();
        let activation = node.adopt_change(members, 1, 1);
        while node.chain.height() + 1 < activation {
            node.commit(vec![]);
        }
        let d = node.deposit(account(1), 200_000);
        node.btc.mine(CONFIRMATIONS);
        w.poll().unwrap();
        let seen = w
            .mature()
            .into_iter()
            .find(|s| s.outpoint == d.outpoint)
            .expect("the deposit is seen");
        assert_eq!(seen.epoch, 1);
        assert!(w.confirms(&seen));
    }

    #[test]
    fn outputs_to_unregistered_scripts_are_ignored_until_the_account_registers() {
        let (node, w) = registered();
        node.deposit(account(2), 300_000);
        let other = ScriptBuf::new_p2wsh(&bitcoin::Script::from_bytes(&[0x52]).wscript_hash());
        node.btc.fund(&other, Amount::from_sat(400_000));
        node.btc.mine(CONFIRMATIONS);
        w.poll().unwrap();
        assert_eq!(seen(&w), (vec![], vec![]));
        assert!(w.mature().is_empty());
        // Registering the account rescans the recent blocks.
        node.register(account(2));
        w.poll().unwrap();
        let (best, _) = seen(&w);
        assert_eq!(best.len(), 1);
        assert_eq!(best[0].account, account(2));
        assert_eq!(best[0].amount, sats(300_000));
        assert_eq!(w.mature(), best);
    }

    /// A lying bitcoind (or a broken chain) that shows an output above 21M
    /// BTC: the watcher never turns it into a deposit to mint.
    #[test]
    fn an_output_above_21_million_btc_is_not_a_deposit() {
        let (node, w) = registered();
        let script = node.deposit_script(account(1));
        let too_much = fedpeg_ledger::amount::Sats::MAX.to_sat() + 1;
        node.btc.fund(&script, Amount::from_sat(too_much));
        let real = node.deposit(account(1), 250_000);
        node.btc.mine(CONFIRMATIONS);
        w.poll().unwrap();
        let (best, _) = seen(&w);
        assert_eq!(best.len(), 1, "{best:?}");
        assert_eq!(best[0].outpoint, real.outpoint);
    }

    #[test]
    fn a_reorg_before_depth_drops_the_deposit_until_it_is_mined_again() {
        let (node, w) = registered();
        node.deposit(account(1), 250_000);
        node.btc.mine(1);
        w.poll().unwrap();
        let (before, _) = seen(&w);
        assert_eq!(before.len(), 1);
        // Replace the deposit's block and the one on it with three empty
        // blocks: the old height is now deep enough, but the deposit is gone
        // (back in the mempool).
        node.btc.reorg(2, vec![vec![]; 3]).unwrap();
        w.poll().unwrap();
        assert!(w.tip().unwrap() + 1 >= before[0].height + CONFIRMATIONS);
        assert_eq!(seen(&w), (vec![], before.clone()));
        assert!(w.mature().is_empty());
        assert!(!w.confirms(&before[0]));
        // Not minted: no alert.
        assert!(w.deep_reorgs().is_empty());
        // Mined again on the new branch: found again, counted from there.
        node.btc.mine(1);
        w.poll().unwrap();
        let (again, gone) = seen(&w);
        assert_eq!(gone, vec![]);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].outpoint, before[0].outpoint);
        assert_eq!(again[0].height, node.btc.best_tip().0);
        assert_ne!(again[0].block, before[0].block);
        assert!(w.mature().is_empty());
        node.btc.mine(CONFIRMATIONS - 1);
        w.poll().unwrap();
        assert_eq!(w.mature(), again);
        assert!(!w.confirms(&before[0]), "the stale block is not confirmed");
    }

    /// A minted deposit at depth, seen by `w`.
    fn minted(node: &PegNode, w: &Watcher) -> SeenDeposit {
        node.btc.mine(5);
        node.deposit(account(1), 250_000);
        node.btc.mine(CONFIRMATIONS - 1);
        w.poll().unwrap();
        let d = w.mature().pop().unwrap();
        node.mint(&d);
        d
    }

    /// A reorg one deeper than the confirmation depth, longer by one.
    fn deep_reorg(node: &PegNode) {
        node.btc
            .reorg(CONFIRMATIONS + 1, vec![vec![]; CONFIRMATIONS as usize + 2])
            .unwrap();
    }

    #[test]
    fn an_open_alert_survives_a_restart_until_acknowledged() {
        let (node, w) = registered();
        let d = minted(&node, &w);
        deep_reorg(&node);
        w.poll().unwrap();
        assert_eq!(w.deep_reorgs(), vec![d.outpoint]);
        drop(w);
        // The restarted member: open before its first poll, and after.
        let w = node.watcher();
        assert_eq!(w.deep_reorgs(), vec![d.outpoint]);
        w.poll().unwrap();
        assert_eq!(w.deep_reorgs(), vec![d.outpoint]);
        // Acknowledged, it stays closed across the next restart.
        assert_eq!(w.acknowledge(&[d.outpoint]), vec![]);
        drop(w);
        let w = node.watcher();
        assert!(w.deep_reorgs().is_empty());
        w.poll().unwrap();
        assert!(w.deep_reorgs().is_empty());
    }

    /// A damaged store record: the view is only a cache of what bitcoind
    /// shows (rescanned, nothing lost), the alerts are not (refused: a
    /// start without them could resume peg-outs nobody acknowledged).
    #[test]
    fn a_damaged_saved_view_is_rescanned_and_damaged_alerts_refuse_to_start() {
        let (node, w) = registered();
        let d = minted(&node, &w);
        drop(w);
        node.chain
            .put_local_records(&[(SAVED_VIEW, b"{not json".to_vec())])
            .unwrap();
        let w = node.watcher();
        w.poll().unwrap();
        assert!(w.confirms(&d), "the rescan found the deposit again");
        drop(w);
        node.chain
            .put_local_records(&[(SAVED_ALERTS, vec![0xff, 0x00])])
            .unwrap();
        let e = Watcher::new(node.chain.clone(), node.bitcoind())
            .err()
            .expect("refused");
        assert!(e.to_string().contains("alerts is unreadable"), "{e}");
    }

    #[test]
    fn a_deep_reorg_while_the_member_was_down_is_alerted_at_start() {
        let (node, w) = registered();
        let d = minted(&node, &w);
        node.btc.mine(2);
        w.poll().unwrap();
        drop(w);
        // Down: the deposit's block leaves the best chain.
        node.btc
            .reorg(CONFIRMATIONS + 3, vec![vec![]; CONFIRMATIONS as usize + 4])
            .unwrap();
        let w = node.watcher();
        w.poll().unwrap();
        assert_eq!(w.deep_reorgs(), vec![d.outpoint]);
        // A restart without a reorg raises nothing.
        let (node, w) = registered();
        minted(&node, &w);
        drop(w);
        node.btc.mine(3);
        let w = node.watcher();
        w.poll().unwrap();
        assert!(w.deep_reorgs().is_empty());
    }

    /// A restarted member whose bitcoind is behind what it saw (resyncing,
    /// a restored or failover node) waits for it: no false alert, and
    /// nothing saved is served as mature before a poll succeeds.
    #[test]
    fn a_restart_on_a_bitcoind_that_is_behind_waits_instead_of_alerting() {
        let (node, w) = registered();
        minted(&node, &w);
        node.btc.mine(1);
        w.poll().unwrap();
        drop(w);
        let behind = Arc::new(fedpeg_peg::testkit::MemoryChain::without_txindex());
        let w = Watcher::new(node.chain.clone(), behind).unwrap();
        assert!(w.mature().is_empty(), "served before a poll");
        let e = w.poll().unwrap_err();
        assert!(
            matches!(&e, ChainError::Unavailable(m) if m.contains("catch up")),
            "{e}"
        );
        assert!(w.deep_reorgs().is_empty());
        // Back on the member's own bitcoind: nothing happened.
        let w = node.watcher();
        w.poll().unwrap();
        assert!(w.deep_reorgs().is_empty());
    }

    #[test]
    fn a_bitcoind_on_another_network_too_old_or_pruned_too_far_is_refused() {
        use bitcoin::Network::{Bitcoin, Regtest};
        let info = NodeInfo {
            chain: "regtest".into(),
            version: 280_100,
            subversion: "/Satoshi:28.1.0/".into(),
            blocks: 10_000,
            prune_height: None,
            initial_block_download: false,
        };
        assert_eq!(check_node(&info, Regtest, 6), Ok(()));
        let err = |i: &NodeInfo, n| check_node(i, n, 6).unwrap_err();
        assert!(err(&info, Bitcoin)
            .contains("bitcoind runs chain `regtest` but the genesis pegs to `main`"));
        let old = NodeInfo {
            version: 240_000,
            ..info.clone()
        };
        assert!(err(&old, Regtest).contains("too old"));
        // -prune=550 keeps at least 288 blocks: enough.
        let pruned = NodeInfo {
            prune_height: Some(10_000 - 287),
            ..info.clone()
        };
        assert_eq!(check_node(&pruned, Regtest, 6), Ok(()));
        let too_far = NodeInfo {
            prune_height: Some(10_000 - 100),
            ..info.clone()
        };
        assert!(err(&too_far, Regtest).contains("pruned to its last 101 blocks"));
        // A young chain has all its blocks.
        let young = NodeInfo {
            blocks: 50,
            prune_height: Some(0),
            ..info
        };
        assert_eq!(check_node(&young, Regtest, 6), Ok(()));
    }

    #[test]
    fn an_unusable_bitcoind_stops_the_scan_with_the_reason() {
        let (node, w) = registered();
        node.btc.set_node_info(200_000, None);
        // The check is cached for a minute: a fresh watcher sees it.
        let w2 = node.watcher();
        let e = w2.poll().unwrap_err();
        assert!(e.to_string().contains("too old"), "{e}");
        assert!(matches!(w2.node_check(), Some(Err(_))));
        drop(w);
    }

    #[test]
    fn a_reorg_under_a_minted_deposit_is_alerted_until_acknowledged() {
        let (node, w) = registered();
        node.deposit(account(1), 250_000);
        node.btc.mine(CONFIRMATIONS - 1);
        w.poll().unwrap();
        let d = w.mature().pop().unwrap();
        node.mint(&d);
        // A shallow reorg above the deposit's block does not touch it.
        node.btc.reorg(1, vec![vec![]; 2]).unwrap();
        w.poll().unwrap();
        assert!(w.deep_reorgs().is_empty());
        // One deeper than the confirmation depth takes the minted deposit.
        node.btc
            .reorg(CONFIRMATIONS + 1, vec![vec![]; CONFIRMATIONS as usize + 2])
            .unwrap();
        w.poll().unwrap();
        assert_eq!(w.deep_reorgs(), vec![d.outpoint]);
        // It stays open across polls, even once the deposit is mined again.
        node.btc.mine(1);
        w.poll().unwrap();
        assert_eq!(w.deep_reorgs(), vec![d.outpoint]);
        assert_eq!(w.acknowledge(&[d.outpoint]), vec![]);
        assert!(w.deep_reorgs().is_empty());
    }

    /// A bitcoind that goes down after serving `blocks` more blocks: a
    /// failure in the middle of a scan, which `MemoryChain` alone cannot
    /// time.
    struct DownAfterBlocks {
        btc: fedpeg_peg::testkit::MemoryChain,
        blocks: std::sync::atomic::AtomicU64,
    }

    impl BitcoinChain for DownAfterBlocks {
        fn tip(&self) -> Result<(u64, BlockHash), ChainError> {
            self.btc.tip()
        }
        fn block_hash(&self, height: u64) -> Result<BlockHash, ChainError> {
            self.btc.block_hash(height)
        }
        fn block(&self, hash: &BlockHash) -> Result<bitcoin::Block, ChainError> {
            use std::sync::atomic::Ordering;
            let left = self.blocks.load(Ordering::SeqCst);
            if left == 0 {
                return Err(ChainError::Unavailable("down mid-scan".into()));
            }
            self.blocks.store(left - 1, Ordering::SeqCst);
            self.btc.block(hash)
        }
        fn best_chain_height(&self, hash: &BlockHash) -> Result<Option<u64>, ChainError> {
            self.btc.best_chain_height(hash)
        }
        fn transaction(
            &self,
            txid: &bitcoin::Txid,
            hint: Option<&BlockHash>,
        ) -> Result<Option<(bitcoin::Transaction, Option<BlockHash>)>, ChainError> {
            self.btc.transaction(txid, hint)
        }
        fn estimate_fee_rate(&self, blocks: u16) -> Result<Option<u64>, ChainError> {
            self.btc.estimate_fee_rate(blocks)
        }
        fn broadcast(&self, tx: &bitcoin::Transaction) -> Result<bitcoin::Txid, ChainError> {
            self.btc.broadcast(tx)
        }
        fn test_accept(&self, tx: &bitcoin::Transaction) -> Result<(), ChainError> {
            self.btc.test_accept(tx)
        }
        fn mempool_entry_height(&self, txid: &bitcoin::Txid) -> Result<Option<u64>, ChainError> {
            self.btc.mempool_entry_height(txid)
        }
        fn unspent(
            &self,
            outpoint: &bitcoin::OutPoint,
        ) -> Result<Option<(bitcoin::TxOut, u64)>, ChainError> {
            self.btc.unspent(outpoint)
        }
        fn node_info(&self) -> Result<fedpeg_peg::chain::NodeInfo, ChainError> {
            self.btc.node_info()
        }
    }

    #[test]
    fn a_deep_reorg_is_alerted_even_if_bitcoind_fails_during_the_rescan() {
        let node = PegNode::new(1, 1);
        node.register(account(1));
        let btc = Arc::new(DownAfterBlocks {
            btc: node.btc.clone(),
            blocks: u64::MAX.into(),
        });
        let w = Watcher::new(node.chain.clone(), btc.clone()).unwrap();
        node.deposit(account(1), 250_000);
        node.btc.mine(CONFIRMATIONS - 1);
        w.poll().unwrap();
        let d = w.mature().pop().unwrap();
        node.mint(&d);
        node.btc
            .reorg(CONFIRMATIONS, vec![vec![]; CONFIRMATIONS as usize + 1])
            .unwrap();
        // The rescan from the fork point gets one block, then bitcoind fails.
        btc.blocks.store(1, std::sync::atomic::Ordering::SeqCst);
        assert!(w.poll().is_err());
        btc.blocks
            .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
        w.poll().unwrap();
        assert_eq!(w.deep_reorgs(), vec![d.outpoint]);
    }

    #[test]
    fn an_unavailable_bitcoind_fails_the_poll_and_the_watcher_recovers() {
        let (node, w) = registered();
        assert!(w.reachable());
        let tip = w.tip();
        node.btc.set_unavailable(true);
        assert!(matches!(w.poll(), Err(ChainError::Unavailable(_))));
        assert!(!w.reachable());
        node.deposit(account(1), 250_000);
        node.btc.mine(CONFIRMATIONS);
        assert!(w.poll().is_err());
        assert_eq!(w.tip(), tip, "nothing was learned while down");
        assert!(w.mature().is_empty());
        node.btc.set_unavailable(false);
        w.poll().unwrap();
        assert!(w.reachable());
        assert_eq!(w.tip(), Some(node.btc.best_tip().0));
        assert_eq!(w.mature().len(), 1);
    }

    #[test]
    fn a_poll_without_a_new_block_fetches_no_block() {
        let (node, w) = registered();
        node.btc.mine(10);
        w.poll().unwrap();
        node.btc.reset_calls();
        w.poll().unwrap();
        assert_eq!(node.btc.calls("block"), 0);
        // One tip and one hash to see that the last scanned block still is
        // the best chain's.
        assert_eq!(node.btc.calls("tip"), 1);
        assert_eq!(node.btc.calls("block_hash"), 1);
        node.btc.mine(2);
        node.btc.reset_calls();
        w.poll().unwrap();
        assert_eq!(node.btc.calls("block"), 2, "only the two new blocks");
    }

    #[test]
    fn the_fee_estimate_follows_bitcoind() {
        let node = PegNode::new(1, 1);
        let w = node.watcher();
        assert_eq!(w.fee_estimate(), None, "not asked yet");
        w.poll().unwrap();
        assert_eq!(w.fee_estimate(), Some(FeeEstimate::Unavailable));
        node.btc.set_fee_rate(Some(7));
        w.poll().unwrap();
        assert_eq!(w.fee_estimate(), Some(FeeEstimate::Rate(7)));
    }

    #[test]
    fn a_registration_derives_only_its_own_script() {
        let (node, w) = registered();
        node.btc.mine(10);
        w.poll().unwrap();
        assert_eq!(w.derivations(), 1);
        let d1 = node.deposit(account(1), 250_000);
        // Deposits to accounts that register later.
        let d3 = node.deposit(account(3), 100_000);
        node.register(account(2));
        node.register(account(3));
        node.btc.reset_calls();
        w.poll().unwrap();
        // Two new scripts derived, not three (the old watcher re-derived
        // every registered script on each registration).
        assert_eq!(w.derivations(), 3);
        // The recent blocks are fetched once for the new scripts; the
        // deposit seen before never left the view.
        let tip = node.btc.best_tip().0;
        assert_eq!(node.btc.calls("block"), tip);
        let (best, gone) = seen(&w);
        assert_eq!(best, vec![d1.clone(), d3.clone()]);
        assert!(gone.is_empty());
        // Later polls derive nothing.
        node.btc.mine(1);
        w.poll().unwrap();
        assert_eq!(w.derivations(), 3);
    }

    #[test]
    fn readers_never_wait_for_a_poll_stuck_in_a_slow_bitcoind() {
        let (node, w) = registered();
        let d = node.deposit(account(1), 250_000);
        node.btc.mine(CONFIRMATIONS - 1);
        w.poll().unwrap();
        node.btc.set_delay(std::time::Duration::from_secs(2));
        node.btc.mine(1);
        let poller = {
            let w = w.clone();
            std::thread::spawn(move || w.poll())
        };
        // Let the poll get into its first (2 s) RPC.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let t0 = std::time::Instant::now();
        assert_eq!(w.mature(), vec![d.clone()]);
        assert!(w.confirms(&d));
        assert!(w.tip().is_some());
        assert_eq!(w.deposits(|_| true).0.len(), 1);
        let _ = (w.fee_estimate(), w.reachable(), w.deep_reorgs());
        let waited = t0.elapsed();
        assert!(
            waited < std::time::Duration::from_millis(200),
            "readers waited {waited:?}"
        );
        node.btc.set_delay(std::time::Duration::ZERO);
        poller.join().unwrap().unwrap();
    }
}
