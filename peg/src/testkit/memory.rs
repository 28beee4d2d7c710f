//! [`MemoryChain`]: an in-memory [`BitcoinChain`] for unit tests, in the
//! spirit of LDK's `TestChainSource`, so the watcher, the signer and the
//! driver's peg checks get tests without a bitcoind.
//!
//! It keeps a block tree (the regtest genesis block, every block ever mined,
//! stale ones included), the best chain's UTXO set, a mempool and a
//! `-txindex`, and answers the trait's calls the way `RpcChain` over a
//! regtest bitcoind does. Tests drive it (mine, fork, reorg, fund, set fee
//! estimates) and inject faults (down, slow) through inherent methods.
//!
//! What it emulates:
//! - best chain = most blocks among valid branches, ties kept by the current
//!   tip, then by the first seen (bitcoind's most-work rule with equal
//!   difficulty); `invalidate`/`reconsider` like the RPCs of the same names;
//! - reorgs: disconnected transactions go back to the mempool unless the new
//!   branch confirms them or spends their inputs; mempool transactions whose
//!   inputs vanish are dropped with their descendants;
//! - admission: inputs must be unspent in the best chain or outputs of a
//!   mempool transaction, no input twice, outputs no more than inputs;
//!   conflicts replace only under BIP125 rules 1 (an original signals, or
//!   [`MemoryChain::set_full_rbf`]) and 3 (a higher absolute fee than all it
//!   evicts);
//! - `getrawtransaction` lookups with and without `-txindex`.
//!
//! What it does not: scripts and signatures are never verified (any witness
//! spends any output; tests that need script checks use the real bitcoind of
//! [`super::Bitcoind`]); no proof of work, coinbase maturity, BIP34/segwit
//! commitments, timelocks (BIP65/68/113), dust, standardness, minimum relay
//! fee, BIP125 rule 4, mempool limits or fee estimation from data (the
//! estimate is whatever the test sets).
//!
//! Rejections are `ChainError::Rpc` with bitcoind's bare reject reason, e.g.
//! `"bad-txns-inputs-missingorspent"` (`RpcChain` prefixes the RPC name).

use crate::chain::{BitcoinChain, ChainError, NodeInfo};
use bitcoin::block::{Header, Version};
use bitcoin::blockdata::constants::genesis_block;
use bitcoin::hashes::Hash;
use bitcoin::script::Builder;
use bitcoin::{
    absolute, transaction, Amount, Block, BlockHash, CompactTarget, Network, OutPoint, Script,
    ScriptBuf, Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness,
};
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The [`BitcoinChain`] methods, by name: the keys of [`MemoryChain::calls`].
pub const METHODS: [&str; 11] = [
    "tip",
    "block_hash",
    "block",
    "best_chain_height",
    "transaction",
    "estimate_fee_rate",
    "broadcast",
    "test_accept",
    "mempool_entry_height",
    "unspent",
    "node_info",
];

/// bitcoind's reject reason for a spent or unknown input.
pub const MISSING_OR_SPENT: &str = "bad-txns-inputs-missingorspent";

/// What every coinbase pays (50 BTC, no halving).
const SUBSIDY: Amount = Amount::from_sat(50 * 100_000_000);
/// Fee of the transactions made by [`MemoryChain::fund`] and
/// [`MemoryChain::send`].
pub const FUNDING_FEE: Amount = Amount::from_sat(1_000);
/// Seconds between block timestamps.
const BLOCK_INTERVAL: u32 = 600;

/// An in-memory Bitcoin node (see the module docs for what it emulates).
///
/// Cloning is cheap and clones share one chain (an `Arc<Mutex<_>>` inside),
/// like several RPC clients of one bitcoind: hand a clone to the code under
/// test (`Arc::new(chain.clone())` as an `Arc<dyn BitcoinChain>`) and drive
/// the chain through the other. `Send + Sync`.
///
/// Fault injection ([`Self::set_unavailable`], [`Self::set_delay`]) and the
/// call counters apply to the [`BitcoinChain`] methods only; the inherent
/// methods a test drives the chain with always work and are not counted.
#[derive(Clone)]
pub struct MemoryChain {
    state: Arc<Mutex<State>>,
}

/// A known block.
struct Node {
    block: Block,
    height: u64,
    /// Order in which blocks were first seen (ties of the best-chain rule).
    seq: u64,
}

/// A mempool transaction.
struct Entry {
    tx: Transaction,
    fee: Amount,
    /// Best height when it entered the mempool.
    height: u64,
    /// Arrival order, so blocks list parents before children.
    seq: u64,
}

/// What broadcasting a transaction would do.
enum Admission {
    /// Already in the mempool (`in_mempool`) or the best chain's UTXO set.
    Known { in_mempool: bool },
    /// Accepted, evicting these mempool transactions (conflicts and their
    /// descendants).
    New { fee: Amount, evict: HashSet<Txid> },
}

struct State {
    blocks: HashMap<BlockHash, Node>,
    /// Best chain, index = height.
    best: Vec<BlockHash>,
    /// Blocks marked invalid by `invalidate` (their descendants are too).
    invalid: HashSet<BlockHash>,
    /// The best chain's unspent outputs, `premine` included.
    utxos: HashMap<OutPoint, TxOut>,
    /// Best-chain transactions and their block.
    confirmed: HashMap<Txid, BlockHash>,
    /// Like bitcoind's -txindex: the block each transaction was last
    /// connected in; not cleared on disconnect.
    txindex: HashMap<Txid, BlockHash>,
    /// Coins that exist before genesis on every branch: the fake inputs of
    /// `fund` and `send`.
    premine: HashMap<OutPoint, TxOut>,
    mempool: HashMap<Txid, Entry>,
    next_seq: u64,
    /// Makes coinbases and premine coins unique.
    next_nonce: u64,
    fee_rate: Option<u64>,
    has_txindex: bool,
    /// What `node_info` reports: client version and prune height.
    version: u64,
    prune_height: Option<u64>,
    full_rbf: bool,
    unavailable: bool,
    delay: Duration,
    calls: HashMap<&'static str, u64>,
}

fn reject(reason: impl Into<String>) -> ChainError {
    ChainError::Rpc(reason.into())
}

/// Anyone-can-spend P2WSH(OP_TRUE): what coinbases pay.
fn miner_script() -> ScriptBuf {
    ScriptBuf::new_p2wsh(&Script::from_bytes(&[0x51]).wscript_hash())
}

/// A version-2 transaction with final (non-RBF) inputs and empty witnesses.
fn plain_tx(inputs: &[OutPoint], script_sig: ScriptBuf, outputs: Vec<TxOut>) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: inputs
            .iter()
            .map(|p| TxIn {
                previous_output: *p,
                script_sig: script_sig.clone(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    }
}

/// Checks `tx` on its own (bitcoind's `CheckTransaction`, then "no
/// coinbase outside a block"); the total of its outputs.
fn check_shape(tx: &Transaction) -> Result<Amount, ChainError> {
    if tx.is_coinbase() {
        return Err(reject("coinbase"));
    }
    if tx.input.is_empty() {
        return Err(reject("bad-txns-vin-empty"));
    }
    if tx.output.is_empty() {
        return Err(reject("bad-txns-vout-empty"));
    }
    let mut seen = HashSet::new();
    if !tx.input.iter().all(|i| seen.insert(i.previous_output)) {
        return Err(reject("bad-txns-inputs-duplicate"));
    }
    tx.output
        .iter()
        .try_fold(Amount::ZERO, |sum, o| sum.checked_add(o.value))
        .filter(|t| *t <= Amount::MAX_MONEY)
        .ok_or_else(|| reject("bad-txns-txouttotal-toolarge"))
}

/// Checks `tx` on its own and against `coin` (the value of an output it may
/// spend); its fee.
fn check_tx(
    tx: &Transaction,
    coin: impl Fn(&OutPoint) -> Option<Amount>,
) -> Result<Amount, ChainError> {
    let out_total = check_shape(tx)?;
    let mut in_total = Amount::ZERO;
    for i in &tx.input {
        let value = coin(&i.previous_output).ok_or_else(|| reject(MISSING_OR_SPENT))?;
        in_total = in_total
            .checked_add(value)
            .ok_or_else(|| reject("bad-txns-inputvalues-outofrange"))?;
    }
    in_total
        .checked_sub(out_total)
        .ok_or_else(|| reject("bad-txns-in-belowout"))
}

/// Checks `txs`, in order, as the non-coinbase transactions of a block on
/// top of the UTXO set `view`.
fn check_block_txs(view: &HashMap<OutPoint, TxOut>, txs: &[Transaction]) -> Result<(), ChainError> {
    let mut spent = HashSet::new();
    let mut created = HashMap::new();
    for tx in txs {
        check_tx(tx, |op| {
            if spent.contains(op) {
                return None;
            }
            created
                .get(op)
                .copied()
                .or_else(|| view.get(op).map(|o| o.value))
        })?;
        spent.extend(tx.input.iter().map(|i| i.previous_output));
        let txid = tx.compute_txid();
        for (vout, out) in (0u32..).zip(&tx.output) {
            created.insert(OutPoint::new(txid, vout), out.value);
        }
    }
    Ok(())
}

/// Applies `block`'s transactions to a UTXO set.
fn apply(utxos: &mut HashMap<OutPoint, TxOut>, block: &Block) {
    for tx in &block.txdata {
        if !tx.is_coinbase() {
            for i in &tx.input {
                utxos.remove(&i.previous_output);
            }
        }
        let txid = tx.compute_txid();
        for (vout, out) in (0u32..).zip(&tx.output) {
            // bitcoind never adds provably unspendable outputs.
            if !out.script_pubkey.is_op_return() {
                utxos.insert(OutPoint::new(txid, vout), out.clone());
            }
        }
    }
}

impl State {
    fn new(has_txindex: bool) -> State {
        let genesis = genesis_block(Network::Regtest);
        let hash = genesis.block_hash();
        let node = Node {
            block: genesis,
            height: 0,
            seq: 0,
        };
        State {
            blocks: HashMap::from([(hash, node)]),
            best: vec![hash],
            invalid: HashSet::new(),
            // The genesis coinbase is unspendable, as in Bitcoin.
            utxos: HashMap::new(),
            confirmed: HashMap::new(),
            txindex: HashMap::new(),
            premine: HashMap::new(),
            mempool: HashMap::new(),
            next_seq: 1,
            next_nonce: 0,
            fee_rate: None,
            has_txindex,
            version: 280_000,
            prune_height: None,
            full_rbf: false,
            unavailable: false,
            delay: Duration::ZERO,
            calls: HashMap::new(),
        }
    }

    fn height(&self) -> u64 {
        self.best.len() as u64 - 1
    }

    fn tip(&self) -> BlockHash {
        // `best` always holds at least genesis.
        self.best[self.best.len() - 1]
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn nonce(&mut self) -> u64 {
        self.next_nonce += 1;
        self.next_nonce
    }

    fn on_best(&self, hash: &BlockHash) -> bool {
        self.blocks.get(hash).is_some_and(|n| {
            usize::try_from(n.height).is_ok_and(|h| self.best.get(h) == Some(hash))
        })
    }

    fn node(&self, hash: &BlockHash) -> Result<&Node, ChainError> {
        self.blocks.get(hash).ok_or(ChainError::NotFound)
    }

    /// Hashes from genesis to `tip` (a known block).
    fn ancestry(&self, tip: BlockHash) -> Vec<BlockHash> {
        let mut chain = vec![tip];
        let mut at = tip;
        while let Some(node) = self.blocks.get(&at).filter(|n| n.height > 0) {
            at = node.block.header.prev_blockhash;
            chain.push(at);
        }
        chain.reverse();
        chain
    }

    /// The UTXO set after the known block `tip`.
    fn utxos_at(&self, tip: BlockHash) -> HashMap<OutPoint, TxOut> {
        if tip == self.tip() {
            return self.utxos.clone();
        }
        let mut utxos = self.premine.clone();
        for hash in self.ancestry(tip).iter().skip(1) {
            apply(&mut utxos, &self.blocks[hash].block);
        }
        utxos
    }

    /// A block at `height` on `parent`: a unique coinbase, then `txs`.
    fn make_block(&mut self, parent: BlockHash, height: u64, txs: Vec<Transaction>) -> Block {
        let nonce = self.nonce();
        // BIP34-style height push, then the nonce that makes it unique.
        // Heights and nonces of a test chain stay far below i64::MAX.
        let script_sig = Builder::new()
            .push_int(height as i64)
            .push_int(nonce as i64)
            .into_script();
        let coinbase = plain_tx(
            &[OutPoint::null()],
            script_sig,
            vec![TxOut {
                value: SUBSIDY,
                script_pubkey: miner_script(),
            }],
        );
        let genesis_time = self.blocks[&self.best[0]].block.header.time;
        let offset = u32::try_from(height)
            .unwrap_or(u32::MAX)
            .saturating_mul(BLOCK_INTERVAL);
        let mut block = Block {
            header: Header {
                version: Version::from_consensus(0x2000_0000),
                prev_blockhash: parent,
                merkle_root: TxMerkleNode::all_zeros(),
                time: genesis_time.saturating_add(offset),
                bits: CompactTarget::from_consensus(0x207f_ffff),
                nonce: 0,
            },
            txdata: std::iter::once(coinbase).chain(txs).collect(),
        };
        // Some: txdata holds the coinbase.
        block.header.merkle_root = block
            .compute_merkle_root()
            .unwrap_or_else(TxMerkleNode::all_zeros);
        block
    }

    /// Validates `blocks` (transactions of each, coinbase excluded) as a
    /// branch on `parent` and builds it, without adding it.
    fn build_branch(
        &mut self,
        parent: BlockHash,
        blocks: Vec<Vec<Transaction>>,
    ) -> Result<Vec<Block>, ChainError> {
        let mut height = self.node(&parent)?.height;
        let mut view = self.utxos_at(parent);
        let mut built = Vec::with_capacity(blocks.len());
        let mut at = parent;
        for txs in blocks {
            check_block_txs(&view, &txs)?;
            height += 1;
            let block = self.make_block(at, height, txs);
            apply(&mut view, &block);
            at = block.block_hash();
            built.push(block);
        }
        Ok(built)
    }

    /// Adds built blocks to the tree and moves to the best chain.
    fn add_blocks(&mut self, blocks: Vec<Block>) -> Vec<BlockHash> {
        let mut hashes = Vec::with_capacity(blocks.len());
        for block in blocks {
            let hash = block.block_hash();
            let height = self.blocks[&block.header.prev_blockhash].height + 1;
            let seq = self.seq();
            self.blocks.insert(hash, Node { block, height, seq });
            hashes.push(hash);
        }
        self.activate_best();
        hashes
    }

    /// One block on the tip holding `txs` (valid by construction).
    fn extend_tip(&mut self, txs: Vec<Transaction>) -> BlockHash {
        let block = self.make_block(self.tip(), self.height() + 1, txs);
        let hash = block.block_hash();
        self.add_blocks(vec![block]);
        hash
    }

    /// The valid block with the most blocks behind it; ties go to the
    /// current tip, then to the block seen first.
    fn select_best(&self) -> BlockHash {
        let mut nodes: Vec<(&BlockHash, &Node)> = self.blocks.iter().collect();
        nodes.sort_by_key(|(_, n)| n.height);
        let current = self.tip();
        let mut valid = HashSet::new();
        let mut best = (0, true, Reverse(0), self.best[0]);
        for (hash, node) in nodes {
            let parent_ok = node.height == 0 || valid.contains(&node.block.header.prev_blockhash);
            if parent_ok && !self.invalid.contains(hash) {
                valid.insert(*hash);
                best = best.max((node.height, *hash == current, Reverse(node.seq), *hash));
            }
        }
        best.3
    }

    /// Switches to the best chain: UTXO set, indexes, mempool.
    fn activate_best(&mut self) {
        let new_tip = self.select_best();
        if new_tip == self.tip() {
            return;
        }
        let new_chain = self.ancestry(new_tip);
        let fork = self
            .best
            .iter()
            .zip(&new_chain)
            .take_while(|(a, b)| a == b)
            .count();
        let disconnected = self.best.split_off(fork);
        self.best = new_chain;
        let connected = self.best[fork..].to_vec();
        if disconnected.is_empty() {
            for hash in &connected {
                apply(&mut self.utxos, &self.blocks[hash].block);
            }
        } else {
            self.utxos = self.utxos_at_from_scratch();
            self.confirmed.clear();
            for hash in self.best.clone().iter().skip(1) {
                self.index(*hash, false);
            }
        }
        for hash in connected {
            self.index(hash, true);
        }
        let returned = disconnected
            .iter()
            .flat_map(|h| self.blocks[h].block.txdata.iter().skip(1).cloned())
            .collect();
        self.resync_mempool(returned);
    }

    /// Records the best-chain block `hash` in `confirmed` (and in `txindex`
    /// when it is being connected).
    fn index(&mut self, hash: BlockHash, connecting: bool) {
        for tx in &self.blocks[&hash].block.txdata {
            let txid = tx.compute_txid();
            self.confirmed.insert(txid, hash);
            if connecting {
                self.txindex.insert(txid, hash);
            }
        }
    }

    fn utxos_at_from_scratch(&self) -> HashMap<OutPoint, TxOut> {
        let mut utxos = self.premine.clone();
        for hash in self.best.iter().skip(1) {
            apply(&mut utxos, &self.blocks[hash].block);
        }
        utxos
    }

    /// Rebuilds the mempool after the tip moved: `returned` (transactions of
    /// disconnected blocks, oldest first) then the old mempool, keeping what
    /// is not confirmed and still spends available, unspent outputs.
    fn resync_mempool(&mut self, returned: Vec<Transaction>) {
        let height = self.height();
        let mut old: Vec<Entry> = self.mempool.drain().map(|(_, e)| e).collect();
        old.sort_by_key(|e| e.seq);
        let mut pending: Vec<(Transaction, u64, Option<u64>)> = returned
            .into_iter()
            .map(|tx| (tx, height, None))
            .chain(old.into_iter().map(|e| (e.tx, e.height, Some(e.seq))))
            .collect();
        // Several passes: a child may come before its returned parent.
        loop {
            let before = pending.len();
            pending.retain(|(tx, height, seq)| !self.readmit(tx, *height, *seq));
            if pending.len() == before {
                break;
            }
        }
    }

    /// Puts `tx` back into the mempool if it can go there now (no
    /// replacement). True when it is done with: re-added or confirmed.
    fn readmit(&mut self, tx: &Transaction, height: u64, seq: Option<u64>) -> bool {
        let txid = tx.compute_txid();
        if self.confirmed.contains_key(&txid) {
            return true;
        }
        let conflicted = tx
            .input
            .iter()
            .any(|i| self.mempool_spender(&i.previous_output).is_some());
        let Ok(fee) = check_tx(tx, |op| self.coin(op)) else {
            return false;
        };
        if conflicted {
            return false;
        }
        let seq = seq.unwrap_or_else(|| self.seq());
        self.mempool.insert(
            txid,
            Entry {
                tx: tx.clone(),
                fee,
                height,
                seq,
            },
        );
        true
    }

    /// Value of an unspent best-chain output or of a mempool output.
    fn coin(&self, op: &OutPoint) -> Option<Amount> {
        self.utxos.get(op).map(|o| o.value).or_else(|| {
            let entry = self.mempool.get(&op.txid)?;
            let out = entry.tx.output.get(usize::try_from(op.vout).ok()?)?;
            Some(out.value)
        })
    }

    fn mempool_spender(&self, op: &OutPoint) -> Option<Txid> {
        self.mempool
            .iter()
            .find(|(_, e)| e.tx.input.iter().any(|i| i.previous_output == *op))
            .map(|(txid, _)| *txid)
    }

    /// `roots` and every mempool transaction that spends from them.
    fn with_descendants(&self, roots: HashSet<Txid>) -> HashSet<Txid> {
        let mut stack: Vec<Txid> = roots.iter().copied().collect();
        let mut out = roots;
        while let Some(parent) = stack.pop() {
            for (txid, e) in &self.mempool {
                let child = e.tx.input.iter().any(|i| i.previous_output.txid == parent);
                if child && out.insert(*txid) {
                    stack.push(*txid);
                }
            }
        }
        out
    }

    /// Mempool transactions in arrival order, parents before children.
    fn mempool_in_block_order(&self) -> Vec<Transaction> {
        let mut waiting: Vec<(&Txid, &Entry)> = self.mempool.iter().collect();
        waiting.sort_by_key(|(_, e)| e.seq);
        let mut done = HashSet::new();
        let mut order = Vec::with_capacity(waiting.len());
        while !waiting.is_empty() {
            waiting.retain(|(txid, e)| {
                let ready = e.tx.input.iter().all(|i| {
                    let parent = &i.previous_output.txid;
                    !self.mempool.contains_key(parent) || done.contains(parent)
                });
                if ready {
                    done.insert(**txid);
                    order.push(e.tx.clone());
                }
                !ready
            });
        }
        order
    }

    /// What broadcasting `tx` would do, or why it is rejected.
    fn admission(&self, tx: &Transaction) -> Result<Admission, ChainError> {
        let txid = tx.compute_txid();
        if self.mempool.contains_key(&txid) {
            return Ok(Admission::Known { in_mempool: true });
        }
        if (0u32..)
            .take(tx.output.len())
            .any(|vout| self.utxos.contains_key(&OutPoint::new(txid, vout)))
        {
            return Ok(Admission::Known { in_mempool: false });
        }
        let fee = check_tx(tx, |op| self.coin(op))?;
        let conflicts: HashSet<Txid> = tx
            .input
            .iter()
            .filter_map(|i| self.mempool_spender(&i.previous_output))
            .collect();
        if conflicts.is_empty() {
            return Ok(Admission::New {
                fee,
                evict: HashSet::new(),
            });
        }
        // BIP125 rule 1 (explicit signalling only, as Bitcoin Core does).
        let signalled = conflicts
            .iter()
            .all(|c| self.mempool[c].tx.is_explicitly_rbf());
        if !signalled && !self.full_rbf {
            return Err(reject("txn-mempool-conflict"));
        }
        let evict = self.with_descendants(conflicts);
        if tx
            .input
            .iter()
            .any(|i| evict.contains(&i.previous_output.txid))
        {
            return Err(reject("bad-txns-spends-conflicting-tx"));
        }
        // BIP125 rule 3: more than everything it evicts.
        let replaced = evict
            .iter()
            .map(|t| self.mempool[t].fee)
            .fold(Amount::ZERO, |sum, f| {
                sum.checked_add(f).unwrap_or(Amount::MAX)
            });
        if fee <= replaced {
            return Err(reject(format!(
                "insufficient fee, rejecting replacement {txid}; new tx pays {fee}, the {} it replaces pay {replaced}",
                evict.len()
            )));
        }
        Ok(Admission::New { fee, evict })
    }

    /// Adds an admitted `tx` to the mempool.
    fn accept(&mut self, tx: &Transaction, fee: Amount, evict: HashSet<Txid>) {
        for txid in evict {
            self.mempool.remove(&txid);
        }
        let entry = Entry {
            tx: tx.clone(),
            fee,
            height: self.height(),
            seq: self.seq(),
        };
        self.mempool.insert(tx.compute_txid(), entry);
    }

    /// A transaction paying `amount` to `script` from a fresh premine coin,
    /// and its fee ([`FUNDING_FEE`], or zero for amounts near `u64::MAX`).
    fn funding_tx(&mut self, script: &Script, amount: Amount) -> (Transaction, Amount) {
        let nonce = self.nonce();
        let coin = OutPoint::new(
            Txid::hash(format!("fedpeg memory chain premine {nonce}").as_bytes()),
            0,
        );
        let fee = amount
            .checked_add(FUNDING_FEE)
            .map_or(Amount::ZERO, |_| FUNDING_FEE);
        let out = TxOut {
            value: amount + fee,
            script_pubkey: miner_script(),
        };
        self.premine.insert(coin, out.clone());
        // Premine coins exist on every branch, so also in the UTXO set now.
        self.utxos.insert(coin, out);
        let pay = TxOut {
            value: amount,
            script_pubkey: script.to_owned(),
        };
        (plain_tx(&[coin], ScriptBuf::new(), vec![pay]), fee)
    }
}

impl Default for MemoryChain {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("MemoryChain")
            .field("height", &s.height())
            .field("tip", &s.tip())
            .field("blocks", &s.blocks.len())
            .field("mempool", &s.mempool.len())
            .field("txindex", &s.has_txindex)
            .field("unavailable", &s.unavailable)
            .finish()
    }
}

impl MemoryChain {
    /// A chain holding only the regtest genesis block (height 0), with
    /// `-txindex`, an empty mempool and no fee estimate.
    pub fn new() -> Self {
        Self::with_state(State::new(true))
    }

    /// Like [`Self::new`] but emulating a node without `-txindex`: a
    /// confirmed transaction is found only with its block as hint (or while
    /// it is in the mempool).
    pub fn without_txindex() -> Self {
        Self::with_state(State::new(false))
    }

    fn with_state(state: State) -> Self {
        MemoryChain {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while locked already fails the test that caused it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a trait call, applies the injected delay and outage, then
    /// locks. The delay is slept without the lock, as a slow node keeps
    /// other clients waiting only on itself.
    fn enter(&self, method: &'static str) -> Result<MutexGuard<'_, State>, ChainError> {
        let (delay, unavailable) = {
            let mut s = self.lock();
            *s.calls.entry(method).or_default() += 1;
            (s.delay, s.unavailable)
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if unavailable {
            return Err(ChainError::Unavailable(format!(
                "{method}: the in-memory chain is down (MemoryChain::set_unavailable)"
            )));
        }
        Ok(self.lock())
    }

    /// What `node_info` reports as the client version (280000 at first)
    /// and prune height (None: not pruned). Blocks stay readable: only the
    /// report changes.
    pub fn set_node_info(&self, version: u64, prune_height: Option<u64>) {
        let mut s = self.lock();
        s.version = version;
        s.prune_height = prune_height;
    }

    /// Turns `-txindex` emulation on or off (see [`Self::without_txindex`]).
    pub fn set_txindex(&self, on: bool) {
        self.lock().has_txindex = on;
    }

    /// Lets a conflicting transaction replace mempool transactions that do
    /// not signal BIP125 (`-mempoolfullrbf`, the default of Core 28+). Off
    /// at first: only signalling transactions are replaced.
    pub fn set_full_rbf(&self, on: bool) {
        self.lock().full_rbf = on;
    }

    /// What `estimate_fee_rate` answers for every target, in sat/vB; None
    /// (no estimate, like a fresh regtest) at first.
    pub fn set_fee_rate(&self, sat_per_vb: Option<u64>) {
        self.lock().fee_rate = sat_per_vb;
    }

    /// While true, every [`BitcoinChain`] call fails with
    /// [`ChainError::Unavailable`] (bitcoind down).
    pub fn set_unavailable(&self, down: bool) {
        self.lock().unavailable = down;
    }

    /// Every [`BitcoinChain`] call sleeps `delay` first (a slow or hung
    /// bitcoind; unlike `RpcChain` there is no timeout). Zero at first.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// How many times the [`BitcoinChain`] method named `method` (one of
    /// [`METHODS`]) was called, failed calls included.
    ///
    /// # Panics
    /// On a name not in [`METHODS`], so a typo cannot pass as "no call".
    pub fn calls(&self, method: &str) -> u64 {
        assert!(
            METHODS.contains(&method),
            "MemoryChain::calls: no BitcoinChain method is named {method:?}; use one of {METHODS:?}"
        );
        self.lock().calls.get(method).copied().unwrap_or(0)
    }

    /// Sets every call counter back to zero.
    pub fn reset_calls(&self) {
        self.lock().calls.clear();
    }

    /// Best height and tip hash (not counted, works while "down").
    pub fn best_tip(&self) -> (u64, BlockHash) {
        let s = self.lock();
        (s.height(), s.tip())
    }

    /// Mines `n` blocks on the tip; the first takes the whole mempool
    /// (parents before children), like `generatetoaddress`. Their hashes.
    pub fn mine(&self, n: u64) -> Vec<BlockHash> {
        let mut s = self.lock();
        (0..n)
            .map(|_| {
                let txs = s.mempool_in_block_order();
                s.extend_tip(txs)
            })
            .collect()
    }

    /// Mines `n` blocks holding only their coinbase; the mempool stays
    /// (like `generateblock ADDR []`, to keep a transaction unconfirmed).
    pub fn mine_empty(&self, n: u64) -> Vec<BlockHash> {
        let mut s = self.lock();
        (0..n).map(|_| s.extend_tip(Vec::new())).collect()
    }

    /// Mines one block on the tip holding a coinbase then exactly `txs`
    /// (mempool or not; the rest of the mempool stays), like
    /// `generateblock ADDR [txs]`. `Rpc` with bitcoind's reason, and
    /// nothing mined, if a transaction does not fit on the tip.
    pub fn mine_with(&self, txs: Vec<Transaction>) -> Result<BlockHash, ChainError> {
        let mut s = self.lock();
        let tip = s.tip();
        let blocks = s.build_branch(tip, vec![txs])?;
        Ok(s.add_blocks(blocks)[0])
    }

    /// Builds a branch on the known block `parent`, one block per element of
    /// `blocks` (its transactions after the coinbase), as if another miner
    /// had found it. It becomes the best chain only if it is longer (a
    /// reorg, with the mempool updated as bitcoind does). Its hashes;
    /// `NotFound` for an unknown parent, `Rpc` for an invalid transaction.
    pub fn fork(
        &self,
        parent: &BlockHash,
        blocks: Vec<Vec<Transaction>>,
    ) -> Result<Vec<BlockHash>, ChainError> {
        let mut s = self.lock();
        let built = s.build_branch(*parent, blocks)?;
        Ok(s.add_blocks(built))
    }

    /// Replaces the last `depth` best-chain blocks with a branch of
    /// `blocks` (as in [`Self::fork`]), the way a bitcoind test does it:
    /// `invalidateblock` on the first replaced block, then mine. The
    /// replaced blocks stay known (stale; [`Self::reconsider`] revives
    /// them). Disconnected transactions go back to the mempool unless the
    /// branch confirms them or spends their inputs; the branch never takes
    /// the mempool. A longer valid branch known from before would still win.
    pub fn reorg(
        &self,
        depth: u64,
        blocks: Vec<Vec<Transaction>>,
    ) -> Result<Vec<BlockHash>, ChainError> {
        let mut s = self.lock();
        let height = s.height();
        let Some(fork_height) = height.checked_sub(depth) else {
            return Err(reject(format!(
                "reorg: cannot replace {depth} blocks of a chain of height {height} (genesis stays)"
            )));
        };
        // In range: fork_height <= height.
        let fork = s.best[fork_height as usize];
        let built = s.build_branch(fork, blocks)?;
        if depth > 0 {
            // As with invalidateblock, disconnected transactions re-enter
            // the mempool at the fork height, before the branch arrives.
            let first = s.best[fork_height as usize + 1];
            s.invalid.insert(first);
            s.activate_best();
        }
        Ok(s.add_blocks(built))
    }

    /// `invalidateblock`: `hash` and its descendants leave the best chain
    /// (the best valid branch takes over). `NotFound` if unknown, `Rpc` for
    /// genesis.
    pub fn invalidate(&self, hash: &BlockHash) -> Result<(), ChainError> {
        let mut s = self.lock();
        if s.node(hash)?.height == 0 {
            return Err(reject(
                "invalidate: the genesis block cannot be invalidated",
            ));
        }
        s.invalid.insert(*hash);
        s.activate_best();
        Ok(())
    }

    /// `reconsiderblock`: clears the invalid mark of `hash`, its ancestors
    /// and descendants, then moves to the best chain. `NotFound` if unknown.
    pub fn reconsider(&self, hash: &BlockHash) -> Result<(), ChainError> {
        let mut s = self.lock();
        s.node(hash)?;
        let line: HashSet<BlockHash> = s.ancestry(*hash).into_iter().collect();
        let mut cleared = Vec::new();
        for bad in &s.invalid {
            let related = line.contains(bad) || s.ancestry(*bad).contains(hash);
            if related {
                cleared.push(*bad);
            }
        }
        for bad in cleared {
            s.invalid.remove(&bad);
        }
        s.activate_best();
        Ok(())
    }

    /// Mines one block on the tip holding a transaction that pays `amount`
    /// to `script` (output 0, the outpoint returned), and not the mempool.
    /// The transaction spends a fake coin that exists on every branch (so a
    /// reorg puts it back in the mempool) and pays [`FUNDING_FEE`].
    pub fn fund(&self, script: &Script, amount: Amount) -> OutPoint {
        let mut s = self.lock();
        let (tx, _) = s.funding_tx(script, amount);
        let txid = tx.compute_txid();
        s.extend_tip(vec![tx]);
        OutPoint::new(txid, 0)
    }

    /// Like [`Self::fund`] but the transaction goes to the mempool (it does
    /// not signal RBF).
    pub fn send(&self, script: &Script, amount: Amount) -> OutPoint {
        let mut s = self.lock();
        let (tx, fee) = s.funding_tx(script, amount);
        let txid = tx.compute_txid();
        // The premine coin is fresh: nothing conflicts.
        s.accept(&tx, fee, HashSet::new());
        OutPoint::new(txid, 0)
    }

    /// Mempool txids in arrival order.
    pub fn mempool(&self) -> Vec<Txid> {
        let s = self.lock();
        let mut entries: Vec<(&Txid, &Entry)> = s.mempool.iter().collect();
        entries.sort_by_key(|(_, e)| e.seq);
        entries.into_iter().map(|(txid, _)| *txid).collect()
    }

    /// Drops `txid` and its descendants from the mempool (expiry, a
    /// restarted node without its mempool); false if it was not there.
    pub fn evict(&self, txid: &Txid) -> bool {
        let mut s = self.lock();
        if !s.mempool.contains_key(txid) {
            return false;
        }
        for t in s.with_descendants(HashSet::from([*txid])) {
            s.mempool.remove(&t);
        }
        true
    }

    /// The unspent best-chain output at `outpoint` (mempool spends aside).
    pub fn utxo(&self, outpoint: &OutPoint) -> Option<TxOut> {
        self.lock().utxos.get(outpoint).cloned()
    }
}

impl BitcoinChain for MemoryChain {
    fn tip(&self) -> Result<(u64, BlockHash), ChainError> {
        let s = self.enter("tip")?;
        Ok((s.height(), s.tip()))
    }

    fn block_hash(&self, height: u64) -> Result<BlockHash, ChainError> {
        let s = self.enter("block_hash")?;
        usize::try_from(height)
            .ok()
            .and_then(|h| s.best.get(h).copied())
            .ok_or(ChainError::NotFound)
    }

    fn block(&self, hash: &BlockHash) -> Result<Block, ChainError> {
        let s = self.enter("block")?;
        Ok(s.node(hash)?.block.clone())
    }

    fn best_chain_height(&self, hash: &BlockHash) -> Result<Option<u64>, ChainError> {
        let s = self.enter("best_chain_height")?;
        let height = s.node(hash)?.height;
        Ok(s.on_best(hash).then_some(height))
    }

    /// As `getrawtransaction`: with a hint, only that block is read; without,
    /// the mempool, then (with `-txindex`) the block the transaction was last
    /// connected in, which may be stale now.
    fn transaction(
        &self,
        txid: &Txid,
        block_hint: Option<&BlockHash>,
    ) -> Result<Option<(Transaction, Option<BlockHash>)>, ChainError> {
        let s = self.enter("transaction")?;
        let block = match block_hint {
            Some(hint) => *hint,
            None => {
                if let Some(e) = s.mempool.get(txid) {
                    return Ok(Some((e.tx.clone(), None)));
                }
                match s.txindex.get(txid) {
                    Some(b) if s.has_txindex => *b,
                    _ => return Ok(None),
                }
            }
        };
        let Some(node) = s.blocks.get(&block) else {
            return Ok(None);
        };
        // bitcoind does not serve the genesis coinbase as a transaction.
        let found = node
            .block
            .txdata
            .iter()
            .skip(usize::from(node.height == 0))
            .find(|tx| tx.compute_txid() == *txid);
        Ok(found.map(|tx| (tx.clone(), s.on_best(&block).then_some(block))))
    }

    fn estimate_fee_rate(&self, blocks: u16) -> Result<Option<u64>, ChainError> {
        let s = self.enter("estimate_fee_rate")?;
        if !(1..=1008).contains(&blocks) {
            return Err(reject(format!(
                "Invalid conf_target, must be between 1 and 1008 (got {blocks})"
            )));
        }
        Ok(s.fee_rate)
    }

    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        let mut s = self.enter("broadcast")?;
        if let Admission::New { fee, evict } = s.admission(tx)? {
            s.accept(tx, fee, evict);
        }
        Ok(tx.compute_txid())
    }

    fn test_accept(&self, tx: &Transaction) -> Result<(), ChainError> {
        let s = self.enter("test_accept")?;
        // testmempoolaccept checks the shape before what the node knows;
        // sendrawtransaction first accepts what is already in the UTXO set.
        check_shape(tx)?;
        match s.admission(tx)? {
            Admission::Known { in_mempool: true } => Err(reject("txn-already-in-mempool")),
            Admission::Known { in_mempool: false } => Err(reject("txn-already-known")),
            Admission::New { .. } => Ok(()),
        }
    }

    fn mempool_entry_height(&self, txid: &Txid) -> Result<Option<u64>, ChainError> {
        let s = self.enter("mempool_entry_height")?;
        Ok(s.mempool.get(txid).map(|e| e.height))
    }

    /// As `gettxout` with `include_mempool`: a mempool spend hides the
    /// output, a mempool output shows with 0 confirmations.
    fn unspent(&self, outpoint: &OutPoint) -> Result<Option<(TxOut, u64)>, ChainError> {
        let s = self.enter("unspent")?;
        let spent = s
            .mempool
            .values()
            .any(|e| e.tx.input.iter().any(|i| i.previous_output == *outpoint));
        if spent {
            return Ok(None);
        }
        if let Some(out) = s.utxos.get(outpoint) {
            let height = s
                .confirmed
                .get(&outpoint.txid)
                .and_then(|b| s.blocks.get(b))
                .map(|n| n.height)
                .unwrap_or(0);
            return Ok(Some((out.clone(), s.height() + 1 - height)));
        }
        Ok(s.mempool.get(&outpoint.txid).and_then(|e| {
            e.tx.output
                .get(outpoint.vout as usize)
                .map(|o| (o.clone(), 0))
        }))
    }

    fn node_info(&self) -> Result<NodeInfo, ChainError> {
        let s = self.enter("node_info")?;
        Ok(NodeInfo {
            chain: "regtest".into(),
            version: s.version,
            subversion: format!("/MemoryChain:{}/", s.version),
            blocks: s.height(),
            prune_height: s.prune_height,
            initial_block_download: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::find_deposits;
    use std::time::Instant;

    fn script(tag: u8) -> ScriptBuf {
        ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([tag; 32]))
    }

    fn sats(n: u64) -> Amount {
        Amount::from_sat(n)
    }

    /// Spends `inputs` to one output of `value` to `script(tag)`; signals
    /// RBF when `rbf`.
    fn spend(inputs: &[OutPoint], tag: u8, value: u64, rbf: bool) -> Transaction {
        let mut tx = plain_tx(
            inputs,
            ScriptBuf::new(),
            vec![TxOut {
                value: sats(value),
                script_pubkey: script(tag),
            }],
        );
        if rbf {
            for i in &mut tx.input {
                i.sequence = Sequence::ENABLE_RBF_NO_LOCKTIME;
            }
        }
        tx
    }

    fn rpc_reason(r: Result<impl fmt::Debug, ChainError>) -> String {
        match r {
            Err(ChainError::Rpc(m)) => m,
            other => panic!("expected an Rpc rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_new_chain_is_the_regtest_genesis_at_height_zero() {
        let c = MemoryChain::new();
        let genesis = genesis_block(Network::Regtest).block_hash();
        assert_eq!(c.tip(), Ok((0, genesis)));
        assert_eq!(c.block_hash(0), Ok(genesis));
        assert_eq!(c.block_hash(1), Err(ChainError::NotFound));
        assert_eq!(c.best_chain_height(&genesis), Ok(Some(0)));
        let unknown = BlockHash::from_byte_array([7; 32]);
        assert_eq!(c.block(&unknown), Err(ChainError::NotFound));
        assert_eq!(c.best_chain_height(&unknown), Err(ChainError::NotFound));
        assert_eq!(c.estimate_fee_rate(6), Ok(None));
        // The genesis coinbase is not an ordinary transaction.
        let cb = genesis_block(Network::Regtest).txdata[0].compute_txid();
        assert_eq!(c.transaction(&cb, Some(&genesis)), Ok(None));
    }

    #[test]
    fn mine_appends_linked_blocks_with_distinct_hashes_and_real_merkle_roots() {
        let c = MemoryChain::new();
        let hashes = c.mine(3);
        assert_eq!(c.tip(), Ok((3, hashes[2])));
        let mut parent = c.block_hash(0).unwrap();
        for (h, hash) in (1u64..).zip(&hashes) {
            assert_eq!(c.block_hash(h), Ok(*hash));
            let block = c.block(hash).unwrap();
            assert_eq!(block.block_hash(), *hash);
            assert_eq!(block.header.prev_blockhash, parent);
            assert!(block.check_merkle_root());
            assert!(block.txdata[0].is_coinbase());
            assert_eq!(c.best_chain_height(hash), Ok(Some(h)));
            parent = *hash;
        }
        assert_eq!(c.block_hash(4), Err(ChainError::NotFound));
    }

    #[test]
    fn mine_takes_the_mempool_and_mine_empty_leaves_it() {
        let c = MemoryChain::new();
        c.mine(2);
        let paid = c.send(&script(1), sats(10_000));
        assert_eq!(c.mempool(), vec![paid.txid]);
        assert_eq!(c.mempool_entry_height(&paid.txid), Ok(Some(2)));
        c.mine_empty(3);
        // Entry height stays the height it entered at.
        assert_eq!(c.mempool_entry_height(&paid.txid), Ok(Some(2)));
        let (tx, block) = c.transaction(&paid.txid, None).unwrap().unwrap();
        assert_eq!((tx.output[0].value, block), (sats(10_000), None));
        let mined = c.mine(1)[0];
        assert!(c.mempool().is_empty());
        assert_eq!(c.mempool_entry_height(&paid.txid), Ok(None));
        assert_eq!(
            c.transaction(&paid.txid, None).unwrap().map(|(_, b)| b),
            Some(Some(mined))
        );
        assert_eq!(c.utxo(&paid).map(|o| o.value), Some(sats(10_000)));
    }

    #[test]
    fn mine_with_confirms_exactly_the_given_transactions() {
        let c = MemoryChain::new();
        let a = c.fund(&script(1), sats(50_000));
        let waiting = c.send(&script(2), sats(7_000));
        let pay = spend(&[a], 3, 49_000, false);
        let hash = c.mine_with(vec![pay.clone()]).unwrap();
        let block = c.block(&hash).unwrap();
        assert_eq!(block.txdata.len(), 2);
        assert_eq!(block.txdata[1], pay);
        assert_eq!(c.mempool(), vec![waiting.txid]);
        // The same output again, or more out than in: nothing is mined.
        let height = c.best_tip().0;
        let again = spend(&[a], 4, 1_000, false);
        assert_eq!(rpc_reason(c.mine_with(vec![again])), MISSING_OR_SPENT);
        let b = c.fund(&script(1), sats(1_000));
        let too_much = spend(&[b], 4, 2_000, false);
        assert_eq!(
            rpc_reason(c.mine_with(vec![too_much])),
            "bad-txns-in-belowout"
        );
        assert_eq!(c.best_tip().0, height + 1);
    }

    #[test]
    fn a_chain_of_mempool_transactions_is_mined_parents_first() {
        let c = MemoryChain::new();
        let a = c.send(&script(1), sats(20_000));
        let child = spend(&[a], 2, 19_000, false);
        c.broadcast(&child).unwrap();
        let grandchild = spend(&[OutPoint::new(child.compute_txid(), 0)], 3, 18_000, false);
        c.broadcast(&grandchild).unwrap();
        let block = c.block(&c.mine(1)[0]).unwrap();
        let order: Vec<Txid> = block.txdata[1..].iter().map(|t| t.compute_txid()).collect();
        assert_eq!(
            order,
            vec![a.txid, child.compute_txid(), grandchild.compute_txid()]
        );
    }

    #[test]
    fn reorged_out_blocks_stay_known_but_leave_the_best_chain() {
        let c = MemoryChain::new();
        let old = c.mine(5);
        let new = c.reorg(2, vec![vec![], vec![], vec![]]).unwrap();
        assert_eq!(c.tip(), Ok((6, new[2])));
        for (h, hash) in (3u64..).zip(&old[3..]) {
            assert_eq!(c.block(hash).unwrap().block_hash(), *hash);
            assert_eq!(c.best_chain_height(hash), Ok(None), "old block at {h}");
        }
        assert_eq!(c.best_chain_height(&old[2]), Ok(Some(3)));
        assert_eq!(c.best_chain_height(&new[0]), Ok(Some(4)));
        assert_eq!(c.block_hash(4), Ok(new[0]));
        assert_eq!(c.block(&new[0]).unwrap().header.prev_blockhash, old[2]);
        // Same height, another block.
        assert_ne!(new[0], old[3]);
        assert!(c.reorg(7, vec![]).is_err());
    }

    #[test]
    fn transactions_of_disconnected_blocks_return_to_the_mempool() {
        let c = MemoryChain::new();
        c.mine(3);
        let paid = c.fund(&script(1), sats(30_000));
        c.mine_empty(1);
        assert_eq!(c.mempool(), vec![]);
        c.reorg(2, vec![vec![], vec![], vec![]]).unwrap();
        assert_eq!(c.mempool(), vec![paid.txid]);
        // It re-entered when the old blocks left: on top of block 3.
        assert_eq!(c.mempool_entry_height(&paid.txid), Ok(Some(3)));
        assert_eq!(c.utxo(&paid), None);
        let (_, block) = c.transaction(&paid.txid, None).unwrap().unwrap();
        assert_eq!(block, None);
        let confirmed = c.mine(1)[0];
        assert_eq!(
            c.transaction(&paid.txid, None).unwrap().unwrap().1,
            Some(confirmed)
        );
    }

    #[test]
    fn a_reorg_that_confirms_or_conflicts_keeps_the_transaction_out_of_the_mempool() {
        let c = MemoryChain::new();
        let paid = c.fund(&script(1), sats(30_000));
        let funding = c.transaction(&paid.txid, None).unwrap().unwrap().0;
        // The new branch confirms it again.
        let new = c.reorg(1, vec![vec![funding.clone()]]).unwrap();
        assert!(c.mempool().is_empty());
        assert_eq!(
            c.transaction(&paid.txid, None).unwrap().unwrap().1,
            Some(new[0])
        );
        // The new branch spends its input elsewhere, and a mempool child of
        // it goes too.
        let child = spend(&[paid], 2, 29_000, false);
        c.broadcast(&child).unwrap();
        let mut rival = funding.clone();
        rival.output[0].script_pubkey = script(9);
        c.reorg(1, vec![vec![rival]]).unwrap();
        assert!(c.mempool().is_empty(), "{:?}", c.mempool());
        // Only in a stale block now: known, not confirmed.
        assert_eq!(
            c.transaction(&paid.txid, None).unwrap().map(|(_, b)| b),
            Some(None)
        );
        assert_eq!(c.transaction(&child.compute_txid(), None), Ok(None));
    }

    #[test]
    fn a_mempool_child_of_a_reorged_parent_is_kept_and_mined_after_it() {
        let c = MemoryChain::new();
        let paid = c.fund(&script(1), sats(30_000));
        let child = spend(&[paid], 2, 29_000, false);
        c.broadcast(&child).unwrap();
        c.reorg(1, vec![vec![]]).unwrap();
        assert_eq!(c.mempool().len(), 2);
        let block = c.block(&c.mine(1)[0]).unwrap();
        assert_eq!(block.txdata[1].compute_txid(), paid.txid);
        assert_eq!(block.txdata[2], child);
    }

    #[test]
    fn invalidate_and_reconsider_move_the_tip_back_and_forth() {
        let c = MemoryChain::new();
        let blocks = c.mine(4);
        c.invalidate(&blocks[2]).unwrap();
        assert_eq!(c.tip(), Ok((2, blocks[1])));
        assert_eq!(c.best_chain_height(&blocks[3]), Ok(None));
        // Mining goes on from the new tip.
        let other = c.mine(1)[0];
        assert_eq!(c.block(&other).unwrap().header.prev_blockhash, blocks[1]);
        c.reconsider(&blocks[3]).unwrap();
        assert_eq!(c.tip(), Ok((4, blocks[3])));
        assert_eq!(c.best_chain_height(&other), Ok(None));
        let genesis = c.block_hash(0).unwrap();
        assert!(c.invalidate(&genesis).is_err());
        let unknown = BlockHash::from_byte_array([3; 32]);
        assert_eq!(c.invalidate(&unknown), Err(ChainError::NotFound));
    }

    #[test]
    fn a_fork_becomes_best_only_when_it_is_longer() {
        let c = MemoryChain::new();
        let main = c.mine(3);
        let side = c.fork(&main[0], vec![vec![], vec![]]).unwrap();
        // Two blocks on height 1 reach height 3: a tie keeps the tip.
        assert_eq!(c.tip(), Ok((3, main[2])));
        assert_eq!(c.best_chain_height(&side[1]), Ok(None));
        let longer = c.fork(&side[1], vec![vec![]]).unwrap();
        assert_eq!(c.tip(), Ok((4, longer[0])));
        assert_eq!(c.best_chain_height(&main[2]), Ok(None));
        assert_eq!(c.best_chain_height(&main[0]), Ok(Some(1)));
        let unknown = BlockHash::from_byte_array([3; 32]);
        assert_eq!(c.fork(&unknown, vec![vec![]]), Err(ChainError::NotFound));
    }

    #[test]
    fn with_txindex_confirmed_transactions_are_found_without_a_hint() {
        let c = MemoryChain::new();
        let paid = c.fund(&script(1), sats(1_000));
        let block = c.best_tip().1;
        let found = c.transaction(&paid.txid, None).unwrap().unwrap();
        assert_eq!(found.1, Some(block));
        assert_eq!(
            c.transaction(&paid.txid, Some(&block)).unwrap(),
            Some(found)
        );
        let missing = Txid::from_byte_array([5; 32]);
        assert_eq!(c.transaction(&missing, None), Ok(None));
    }

    #[test]
    fn without_txindex_confirmed_transactions_need_their_block_as_hint() {
        let c = MemoryChain::without_txindex();
        let paid = c.fund(&script(1), sats(1_000));
        let block = c.best_tip().1;
        c.mine(1);
        let other = c.best_tip().1;
        assert_eq!(c.transaction(&paid.txid, None), Ok(None));
        assert_eq!(c.transaction(&paid.txid, Some(&other)), Ok(None));
        assert_eq!(
            c.transaction(&paid.txid, Some(&BlockHash::from_byte_array([1; 32]))),
            Ok(None)
        );
        let (tx, at) = c.transaction(&paid.txid, Some(&block)).unwrap().unwrap();
        assert_eq!((tx.compute_txid(), at), (paid.txid, Some(block)));
        // Mempool transactions need no index, but a hint reads only its block.
        let waiting = c.send(&script(2), sats(2_000));
        assert_eq!(
            c.transaction(&waiting.txid, None).unwrap().map(|(_, b)| b),
            Some(None)
        );
        assert_eq!(c.transaction(&waiting.txid, Some(&block)), Ok(None));
        // A hint to a stale block finds the transaction, unconfirmed.
        c.reorg(2, vec![vec![], vec![], vec![]]).unwrap();
        c.evict(&paid.txid);
        let (_, at) = c.transaction(&paid.txid, Some(&block)).unwrap().unwrap();
        assert_eq!(at, None);
        c.set_txindex(true);
        assert_eq!(
            c.transaction(&paid.txid, None).unwrap().map(|(_, b)| b),
            Some(None)
        );
    }

    #[test]
    fn a_signalling_transaction_is_replaced_by_one_paying_a_higher_fee() {
        let c = MemoryChain::new();
        let coin = c.fund(&script(1), sats(100_000));
        let v1 = spend(&[coin], 2, 99_000, true);
        c.broadcast(&v1).unwrap();
        let child = spend(&[OutPoint::new(v1.compute_txid(), 0)], 3, 98_500, false);
        c.broadcast(&child).unwrap();
        // 1_000 + 500 are evicted: 1_500 is not enough, 1_501 is.
        let low = spend(&[coin], 2, 98_500, true);
        assert!(rpc_reason(c.test_accept(&low)).contains("insufficient fee"));
        assert!(rpc_reason(c.broadcast(&low)).contains("insufficient fee"));
        let v2 = spend(&[coin], 2, 98_499, true);
        assert_eq!(c.test_accept(&v2), Ok(()));
        assert_eq!(c.broadcast(&v2), Ok(v2.compute_txid()));
        assert_eq!(c.mempool(), vec![v2.compute_txid()]);
        assert_eq!(c.mempool_entry_height(&v1.compute_txid()), Ok(None));
        // A replacement may not spend what it evicts.
        let v3 = spend(&[coin, OutPoint::new(v2.compute_txid(), 0)], 2, 1, true);
        assert_eq!(
            rpc_reason(c.broadcast(&v3)),
            "bad-txns-spends-conflicting-tx"
        );
    }

    #[test]
    fn a_non_signalling_transaction_is_replaced_only_with_full_rbf() {
        let c = MemoryChain::new();
        let coin = c.fund(&script(1), sats(100_000));
        let v1 = spend(&[coin], 2, 99_000, false);
        c.broadcast(&v1).unwrap();
        let v2 = spend(&[coin], 2, 90_000, true);
        assert_eq!(rpc_reason(c.broadcast(&v2)), "txn-mempool-conflict");
        assert_eq!(c.mempool(), vec![v1.compute_txid()]);
        c.set_full_rbf(true);
        c.broadcast(&v2).unwrap();
        assert_eq!(c.mempool(), vec![v2.compute_txid()]);
    }

    #[test]
    fn spending_a_spent_or_unknown_output_is_refused_and_rebroadcast_is_harmless() {
        let c = MemoryChain::new();
        let coin = c.fund(&script(1), sats(100_000));
        let pay = spend(&[coin], 2, 90_000, true);
        assert_eq!(c.broadcast(&pay), Ok(pay.compute_txid()));
        // Already in the mempool: broadcast says yes, testmempoolaccept no.
        assert_eq!(c.broadcast(&pay), Ok(pay.compute_txid()));
        assert_eq!(rpc_reason(c.test_accept(&pay)), "txn-already-in-mempool");
        c.mine(1);
        // Confirmed with an unspent output: still harmless.
        assert_eq!(c.broadcast(&pay), Ok(pay.compute_txid()));
        assert_eq!(rpc_reason(c.test_accept(&pay)), "txn-already-known");
        let double = spend(&[coin], 3, 80_000, true);
        assert_eq!(rpc_reason(c.test_accept(&double)), MISSING_OR_SPENT);
        assert_eq!(rpc_reason(c.broadcast(&double)), MISSING_OR_SPENT);
        let unknown = spend(
            &[OutPoint::new(Txid::from_byte_array([8; 32]), 0)],
            3,
            1,
            false,
        );
        assert_eq!(rpc_reason(c.broadcast(&unknown)), MISSING_OR_SPENT);
        // Confirmed and fully spent: looks like a double spend (trait doc).
        let next = spend(&[OutPoint::new(pay.compute_txid(), 0)], 4, 89_000, false);
        c.mine_with(vec![next]).unwrap();
        assert_eq!(rpc_reason(c.broadcast(&pay)), MISSING_OR_SPENT);
        assert!(c.mempool().is_empty());
    }

    #[test]
    fn malformed_transactions_are_refused() {
        let c = MemoryChain::new();
        let coin = c.fund(&script(1), sats(10_000));
        let mut no_out = spend(&[coin], 2, 1, false);
        no_out.output.clear();
        assert_eq!(rpc_reason(c.broadcast(&no_out)), "bad-txns-vout-empty");
        assert_eq!(
            rpc_reason(c.broadcast(&spend(&[coin, coin], 2, 1, false))),
            "bad-txns-inputs-duplicate"
        );
        assert_eq!(
            rpc_reason(c.broadcast(&spend(&[coin], 2, 10_001, false))),
            "bad-txns-in-belowout"
        );
        let coinbase = c.block(&c.best_tip().1).unwrap().txdata[0].clone();
        assert_eq!(rpc_reason(c.test_accept(&coinbase)), "coinbase");
        // sendrawtransaction finds its outputs in the UTXO set first.
        assert_eq!(c.broadcast(&coinbase), Ok(coinbase.compute_txid()));
        assert!(c.mempool().is_empty());
    }

    #[test]
    fn an_unavailable_chain_fails_every_call_until_it_is_back() {
        let c = MemoryChain::new();
        let coin = c.fund(&script(1), sats(10_000));
        let tx = spend(&[coin], 2, 9_000, false);
        let hash = c.best_tip().1;
        c.set_unavailable(true);
        let down = |r: Result<(), ChainError>| matches!(r, Err(ChainError::Unavailable(_)));
        assert!(down(c.tip().map(drop)));
        assert!(down(c.block_hash(0).map(drop)));
        assert!(down(c.block(&hash).map(drop)));
        assert!(down(c.best_chain_height(&hash).map(drop)));
        assert!(down(c.transaction(&coin.txid, None).map(drop)));
        assert!(down(c.estimate_fee_rate(6).map(drop)));
        assert!(down(c.broadcast(&tx).map(drop)));
        assert!(down(c.test_accept(&tx)));
        assert!(down(c.mempool_entry_height(&coin.txid).map(drop)));
        // The test still drives the chain; nothing was broadcast.
        c.mine(1);
        assert!(c.mempool().is_empty());
        c.set_unavailable(false);
        assert_eq!(c.tip().map(|t| t.0), Ok(2));
        assert_eq!(c.broadcast(&tx), Ok(tx.compute_txid()));
    }

    #[test]
    fn calls_are_counted_per_method_and_delayed_when_asked() {
        let c = MemoryChain::new();
        c.mine(2);
        assert_eq!(c.calls("block"), 0);
        let hash = c.tip().unwrap().1;
        c.block(&hash).unwrap();
        c.block(&hash).unwrap();
        c.set_unavailable(true);
        let _ = c.block(&hash);
        assert_eq!((c.calls("tip"), c.calls("block")), (1, 3));
        assert_eq!(c.calls("broadcast"), 0);
        c.reset_calls();
        assert_eq!(c.calls("block"), 0);
        c.set_unavailable(false);
        c.set_delay(Duration::from_millis(50));
        let started = Instant::now();
        c.tip().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    #[should_panic(expected = "no BitcoinChain method")]
    fn counting_calls_of_a_misspelled_method_panics() {
        MemoryChain::new().calls("get_block");
    }

    #[test]
    fn fee_estimates_are_what_the_test_sets() {
        let c = MemoryChain::new();
        assert_eq!(c.estimate_fee_rate(6), Ok(None));
        c.set_fee_rate(Some(12));
        assert_eq!(c.estimate_fee_rate(1), Ok(Some(12)));
        assert_eq!(c.estimate_fee_rate(1008), Ok(Some(12)));
        assert!(matches!(c.estimate_fee_rate(0), Err(ChainError::Rpc(_))));
        assert!(matches!(c.estimate_fee_rate(1009), Err(ChainError::Rpc(_))));
    }

    #[test]
    fn find_deposits_sees_a_funded_output_but_not_the_coinbase() {
        let c = MemoryChain::new();
        let account = [0xaa; 32];
        let watched = HashMap::from([(script(1), account), (miner_script(), [0xbb; 32])]);
        let paid = c.fund(&script(1), sats(25_000));
        let block = c.block(&c.tip().unwrap().1).unwrap();
        let found = find_deposits(&block, &watched);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].outpoint, paid);
        assert_eq!(found[0].amount, sats(25_000));
        assert_eq!(found[0].account, account);
    }

    #[test]
    fn clones_share_one_chain_across_threads() {
        let c = MemoryChain::new();
        let shared: Arc<dyn BitcoinChain> = Arc::new(c.clone());
        let reader = std::thread::spawn(move || shared.tip().map(|t| t.0));
        c.mine(1);
        let seen = reader.join().unwrap().unwrap();
        assert!(seen <= 1);
        let other: Arc<dyn BitcoinChain> = Arc::new(c.clone());
        assert_eq!(other.tip().map(|t| t.0), Ok(1));
        assert_eq!(c.calls("tip"), 2);
    }
}
