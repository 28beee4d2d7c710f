//! The peg-in watcher: follows this member's own bitcoind, finds outputs to
//! registered deposit addresses, and tracks their depth on the best chain.
//!
//! What it has seen is what this member believes about Bitcoin: it proposes
//! mints for deposits that reached `pegin_confirmations`, and it votes for
//! another member's mint only if it has seen the same deposit (same block,
//! amount and account) at that depth itself. A reorg is handled by walking
//! back to the fork point and rescanning: deposits in blocks that left the
//! best chain are forgotten (and found again if they are mined again).

use crate::chain::Chain;
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, ScriptBuf};
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::amount::Sats;
use fedpeg_ledger::fedtx::OutPoint;
use fedpeg_peg::chain::{find_deposits, BitcoinChain, ChainError};
use fedpeg_peg::federation::Federation;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// How far back from the tip a fresh watcher (or one that learned new
/// addresses) scans.
const SCAN_WINDOW: u64 = 288;

/// A deposit seen on the best chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenDeposit {
    pub outpoint: OutPoint,
    pub amount: Sats,
    pub account: AccountId,
    pub block: [u8; 32],
    pub height: u64,
}

struct Inner {
    scanned: BTreeMap<u64, BlockHash>,
    scripts: HashMap<ScriptBuf, [u8; 32]>,
    deposits: HashMap<OutPoint, SeenDeposit>,
    /// Deposits whose block left the best chain (until mined again).
    reorged: HashMap<OutPoint, SeenDeposit>,
    /// Minted deposits whose block left the best chain: a reorg deeper than
    /// the confirmation depth. Never cleared by the watcher.
    deep_reorgs: Vec<OutPoint>,
    tip: Option<u64>,
    reachable: bool,
    /// bitcoind's fee-rate estimate (6 blocks), sat/vB.
    fee_estimate: Option<u64>,
}

/// Shared watcher state; `poll` may be called from any thread.
pub struct Watcher {
    chain: Arc<Chain>,
    btc: Arc<dyn BitcoinChain>,
    fed: Federation,
    confirmations: u64,
    inner: Mutex<Inner>,
}

impl Watcher {
    /// A watcher over `btc` for the chain's federation.
    pub fn new(chain: Arc<Chain>, btc: Arc<dyn BitcoinChain>) -> anyhow::Result<Watcher> {
        let fed = chain.spec.peg_federation()?;
        let confirmations = chain.spec.genesis.pegin_confirmations.into();
        Ok(Watcher {
            chain,
            btc,
            fed,
            confirmations,
            inner: Mutex::new(Inner {
                scanned: BTreeMap::new(),
                scripts: HashMap::new(),
                deposits: HashMap::new(),
                reorged: HashMap::new(),
                deep_reorgs: Vec::new(),
                tip: None,
                reachable: false,
                fee_estimate: None,
            }),
        })
    }

    /// Brings the view up to date with bitcoind (new blocks, reorgs, newly
    /// registered addresses).
    pub fn poll(&self) -> Result<(), ChainError> {
        let Ok(mut inner) = self.inner.lock() else {
            return Ok(());
        };
        let result = self.poll_locked(&mut inner);
        inner.reachable = result.is_ok();
        result
    }

    fn poll_locked(&self, inner: &mut Inner) -> Result<(), ChainError> {
        // New registrations: watch their scripts and rescan the window.
        let registered: Vec<AccountId> = self
            .chain
            .with_state(|s| s.registered.iter().copied().collect());
        if registered.len() != inner.scripts.len() {
            for a in registered {
                if let Ok(script) = self.fed.deposit_script_pubkey(&a.0) {
                    inner.scripts.insert(script, a.0);
                }
            }
            inner.scanned.clear();
        }
        let (tip, _) = self.btc.tip()?;
        // Walk back to the last block we scanned that is still on the best chain.
        let mut start = tip.saturating_sub(SCAN_WINDOW).max(1);
        while let Some((&h, hash)) = inner.scanned.iter().next_back() {
            if h <= tip && self.btc.block_hash(h)? == *hash {
                start = h + 1;
                break;
            }
            inner.scanned.remove(&h);
        }
        let dropped: Vec<SeenDeposit> = inner
            .deposits
            .values()
            .filter(|d| d.height >= start)
            .cloned()
            .collect();
        inner.deposits.retain(|_, d| d.height < start);
        for h in start..=tip {
            let hash = self.btc.block_hash(h)?;
            let block = self.btc.block(&hash)?;
            for d in find_deposits(&block, &inner.scripts) {
                let outpoint = OutPoint::from_bitcoin(&d.outpoint);
                inner.deposits.insert(
                    outpoint,
                    SeenDeposit {
                        outpoint,
                        amount: Sats(d.amount.to_sat()),
                        account: AccountId(d.account),
                        block: hash.to_byte_array(),
                        height: h,
                    },
                );
            }
            inner.scanned.insert(h, hash);
        }
        // What left the best chain and was not found again is reorged out;
        // what is found again is no longer.
        for d in dropped {
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
        } = &mut *inner;
        reorged.retain(|o, _| !deposits.contains_key(o));
        while inner.scanned.len() as u64 > SCAN_WINDOW {
            inner.scanned.pop_first();
        }
        inner.tip = Some(tip);
        // None until bitcoind has enough data (e.g. a fresh regtest).
        inner.fee_estimate = self.btc.estimate_fee_rate(6).ok().flatten();
        Ok(())
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

    /// The peg federation.
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

    /// Clears acknowledged deep-reorg alerts; returns those still open.
    pub fn acknowledge(&self, outpoints: &[OutPoint]) -> Vec<OutPoint> {
        let Ok(mut inner) = self.inner.lock() else {
            return vec![];
        };
        inner.deep_reorgs.retain(|o| !outpoints.contains(o));
        inner.deep_reorgs.clone()
    }

    /// bitcoind's latest fee-rate estimate, sat/vB.
    pub fn fee_estimate(&self) -> Option<u64> {
        self.inner.lock().ok().and_then(|i| i.fee_estimate)
    }

    /// Whether the last poll reached bitcoind.
    pub fn reachable(&self) -> bool {
        self.inner.lock().map(|i| i.reachable).unwrap_or(false)
    }

    /// Polls every `interval` until `stop` is set.
    pub fn run(
        self: Arc<Self>,
        interval: std::time::Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut warned = false;
        while !*stop.borrow() {
            match self.poll() {
                Ok(()) => warned = false,
                Err(e) if !warned => {
                    tracing::warn!(error = %e, "bitcoind unreachable; peg-in paused, transfers continue");
                    warned = true;
                }
                Err(_) => {}
            }
            std::thread::sleep(interval);
        }
    }
}
