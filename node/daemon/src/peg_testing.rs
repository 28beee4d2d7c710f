//! Fixtures for the unit tests of the daemon's peg side (the [`watcher`],
//! the [`signer`] and the driver's peg checks): a federation whose keys the
//! tests hold, one member's [`Chain`] over a temporary store, and an
//! in-memory bitcoind ([`MemoryChain`]) that the tests drive.
//!
//! Blocks are committed the way the driver commits a decided proposal
//! ([`Chain::propose`] then [`Chain::commit`]), without consensus: every
//! federation transaction is really signed and checked by the ledger.
//!
//! [`watcher`]: crate::watcher
//! [`signer`]: crate::signer

use crate::chain::Chain;
use crate::driver::{ConsensusStatus, Driver, DriverConfig};
use crate::network::{Network, NetworkConfig};
use crate::signer::PegOutWorker;
use crate::watcher::{SeenDeposit, Watcher};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Amount, ScriptBuf};
use ed25519_dalek::SigningKey;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::block::{Block, CommittedBlock};
use fedpeg_ledger::fedtx::{FedTxKind, FederationTx};
use fedpeg_ledger::genesis::{ChainSpec, ConsensusParams, MemberInfo};
use fedpeg_ledger::hash::Hash32;
use fedpeg_ledger::ids::{BatchId, MemberIndex};
use fedpeg_ledger::pegout_batch::Batch;
use fedpeg_ledger::testing::sats;
use fedpeg_ledger::tx::{Transaction, TxKind};
use fedpeg_peg::chain::{BitcoinChain, ChainError};
use fedpeg_peg::testkit::MemoryChain;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `pegin_confirmations` of the test genesis: also the depth at which a
/// peg-out batch counts as confirmed.
pub(crate) const CONFIRMATIONS: u64 = 3;

/// Sats the peg-out of [`PegNode::peg_out`] pays to Bitcoin.
pub(crate) const PEG_OUT_SATS: u64 = 100_000;

/// Member `i`'s consensus (ed25519) key.
pub(crate) fn consensus_key(member: u32) -> SigningKey {
    SigningKey::from_bytes(&[10 + member as u8; 32])
}

/// Member `i`'s peg (secp256k1) secret key.
pub(crate) fn peg_secret(member: u32) -> SecretKey {
    SecretKey::from_slice(&[20 + member as u8; 32]).expect("a valid secret key")
}

/// User `i`'s account key.
pub(crate) fn user_key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[40 + i; 32])
}

/// A four-member federation (threshold 3) with users 1..=3 funded in genesis.
pub(crate) fn funded_users() -> PegNode {
    PegNode::new_with(4, 3, |g| {
        g.dev_balances = (1..=3)
            .map(|u| fedpeg_ledger::genesis::DevBalance {
                address: account(u).to_address("fprt"),
                amount: sats(1_000_000),
            })
            .collect()
    })
}

/// User `user`'s transfer of 100 sats (fee 10) to user 9.
pub(crate) fn user_transfer(node: &PegNode, user: u8, nonce: u64) -> Transaction {
    Transaction::sign(
        node.chain.spec.chain_id,
        &user_key(user),
        nonce,
        sats(10),
        TxKind::Transfer {
            to: account(9),
            amount: sats(100),
        },
    )
}

/// User `i`'s account.
pub(crate) fn account(i: u8) -> AccountId {
    AccountId(user_key(i).verifying_key().to_bytes())
}

/// A regtest P2WPKH address that is nobody's deposit address.
pub(crate) fn withdrawal_address() -> String {
    let key = SecretKey::from_slice(&[60; 32])
        .expect("a valid secret key")
        .public_key(&Secp256k1::signing_only());
    bitcoin::Address::p2wpkh(
        &bitcoin::CompressedPublicKey(key),
        bitcoin::Network::Regtest,
    )
    .to_string()
}

/// One member's node: the chain it holds and the bitcoind it follows.
pub(crate) struct PegNode {
    pub(crate) chain: Arc<Chain>,
    /// The member's bitcoind; clones share it (the code under test gets one).
    pub(crate) btc: MemoryChain,
    /// This member's connection to [`Self::btc`]: slow or down for this
    /// member alone when a test says so.
    pub(crate) own_btc: Arc<OwnBitcoind>,
    /// Holds the store (and a driver's WAL) until the test ends.
    pub(crate) dir: tempfile::TempDir,
}

/// A regtest genesis of `n` members with peg threshold `m`, member `i`
/// reachable at `addr(i)`, with `consensus` timeouts.
fn test_spec(
    n: u32,
    m: u32,
    addr: impl Fn(u32) -> String,
    consensus: ConsensusParams,
) -> ChainSpec {
    test_spec_with(n, m, addr, consensus, |_| {})
}

/// [`test_spec`], then `tweak` on the genesis before it is validated.
fn test_spec_with(
    n: u32,
    m: u32,
    addr: impl Fn(u32) -> String,
    consensus: ConsensusParams,
    tweak: impl FnOnce(&mut fedpeg_ledger::genesis::Genesis),
) -> ChainSpec {
    let mut g = fedpeg_ledger::testing::sample_genesis("regtest", vec![]);
    let secp = Secp256k1::signing_only();
    g.members = (0..n)
        .map(|i| MemberInfo {
            name: format!("member-{i}"),
            consensus_key: hex::encode(consensus_key(i).verifying_key().to_bytes()),
            peg_key: peg_secret(i).public_key(&secp).to_string(),
            p2p_address: addr(i),
        })
        .collect();
    g.peg_threshold = m;
    g.pegin_confirmations = CONFIRMATIONS as u32;
    g.consensus = consensus;
    tweak(&mut g);
    g.validate().expect("a valid test genesis")
}

/// A loopback TCP port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl PegNode {
    /// A federation of `n` members with peg threshold `m` on regtest.
    pub(crate) fn new(n: u32, m: u32) -> PegNode {
        let spec = test_spec(
            n,
            m,
            |i| format!("/ip4/127.0.0.1/tcp/{}", i + 1),
            ConsensusParams::default(),
        );
        PegNode::open(spec, MemoryChain::without_txindex())
    }

    /// [`Self::new`] with `tweak` applied to the genesis (e.g. its peg-out
    /// parameters).
    pub(crate) fn new_with(
        n: u32,
        m: u32,
        tweak: impl FnOnce(&mut fedpeg_ledger::genesis::Genesis),
    ) -> PegNode {
        let spec = test_spec_with(
            n,
            m,
            |i| format!("/ip4/127.0.0.1/tcp/{}", i + 1),
            ConsensusParams::default(),
            tweak,
        );
        PegNode::open(spec, MemoryChain::without_txindex())
    }

    /// Every member's node of one federation of `n` members (threshold
    /// `m`) on free loopback ports, all following one bitcoind.
    pub(crate) fn federation(n: u32, m: u32, consensus: ConsensusParams) -> Vec<PegNode> {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let spec = test_spec(
            n,
            m,
            |i| format!("/ip4/127.0.0.1/tcp/{}", ports[i as usize]),
            consensus,
        );
        let btc = MemoryChain::without_txindex();
        (0..n)
            .map(|_| PegNode::open(spec.clone(), btc.clone()))
            .collect()
    }

    fn open(spec: ChainSpec, btc: MemoryChain) -> PegNode {
        let dir = tempfile::tempdir().expect("a temp dir");
        let chain = Arc::new(Chain::open(spec, dir.path(), 1000).expect("the chain opens"));
        let own_btc = Arc::new(OwnBitcoind::new(btc.clone()));
        PegNode {
            chain,
            btc,
            own_btc,
            dir,
        }
    }

    /// The member's bitcoind as the code under test sees it.
    pub(crate) fn bitcoind(&self) -> Arc<dyn BitcoinChain> {
        self.own_btc.clone()
    }

    /// A watcher of this chain over [`Self::bitcoind`] (not yet polled).
    pub(crate) fn watcher(&self) -> Arc<Watcher> {
        Arc::new(Watcher::new(self.chain.clone(), self.bitcoind()).expect("a valid federation"))
    }

    /// Member `member`'s peg-out worker, following `watcher`.
    pub(crate) fn worker(&self, watcher: &Arc<Watcher>, member: u32) -> PegOutWorker {
        PegOutWorker::new(
            self.chain.clone(),
            watcher.clone(),
            consensus_key(member),
            peg_secret(member),
        )
    }

    /// Member 0's driver of this chain with `watcher`, on a loopback
    /// network that reaches nobody.
    pub(crate) async fn driver(&self, watcher: Option<Arc<Watcher>>) -> Driver {
        self.driver_keyed(consensus_key(0), watcher).await
    }

    /// The driver of a node keyed with `key` (a member or not), as
    /// [`Self::driver`].
    pub(crate) async fn driver_keyed(
        &self,
        key: SigningKey,
        watcher: Option<Arc<Watcher>>,
    ) -> Driver {
        let members = crate::daemon::member_peers(&self.chain.spec).expect("genesis peers");
        let (events, _) = tokio::sync::mpsc::channel(16);
        let (sync_requests, _) = tokio::sync::mpsc::channel(16);
        let listen = "/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddress");
        let cfg = NetworkConfig::new(Some(key.to_bytes()), listen, members);
        let net = Network::start(cfg, events, sync_requests)
            .await
            .expect("the network starts");
        Driver::member(
            self.chain.clone(),
            net,
            key,
            self.dir.path(),
            DriverConfig {
                heartbeat: Duration::from_secs(1),
                sync_interval: Duration::from_secs(1),
            },
            Arc::new(ConsensusStatus::default()),
            watcher,
        )
        .expect("the driver starts")
    }

    /// Commits the votes of members `0..voters` (genesis keys) for a change
    /// to `members` with peg threshold `m`, activating as early as allowed
    /// (the next height + MIN_ACTIVATION_LEAD); returns that height.
    pub(crate) fn adopt_change(
        &self,
        members: Vec<fedpeg_ledger::epoch::EpochMember>,
        m: u32,
        voters: u32,
    ) -> u64 {
        let activation = self.chain.height() + 1 + fedpeg_ledger::epoch::MIN_ACTIVATION_LEAD;
        let change = fedpeg_ledger::epoch::FederationChange {
            members,
            peg_threshold: m,
            activation: fedpeg_consensus::Height(activation),
            base_epoch: self.chain.with_state(|s| s.peg_epoch().number),
        };
        let epochs = self.chain.with_state(|s| s.epochs.len());
        let votes = (0..voters)
            .map(|v| {
                self.fed_tx(
                    v,
                    FedTxKind::FederationChange {
                        change: change.clone(),
                    },
                )
            })
            .collect();
        self.commit(votes);
        assert_eq!(
            self.chain.with_state(|s| s.epochs.len()),
            epochs + 1,
            "adopted"
        );
        activation
    }

    /// A federation transaction signed by `member`.
    pub(crate) fn fed_tx(&self, member: u32, kind: FedTxKind) -> FederationTx {
        FederationTx::sign(
            self.chain.spec.chain_id,
            MemberIndex(member),
            &consensus_key(member),
            kind,
        )
    }

    /// What the next block would carry from the pool now: the federation
    /// transactions submitted and not yet final.
    pub(crate) fn pooled(&self) -> Vec<FederationTx> {
        self.proposal(vec![]).fed_txs
    }

    /// Every pooled claim about Bitcoin, as if bitcoind backed them all
    /// (no driver asks bitcoind here).
    fn backed_claims(&self) -> HashSet<Hash32> {
        self.chain
            .pooled_bitcoin_claims()
            .iter()
            .map(FederationTx::id)
            .collect()
    }

    /// The block member 0 would propose next, with `extra` federation txs.
    pub(crate) fn proposal(&self, extra: Vec<FederationTx>) -> Block {
        let time = 1_000 * (self.chain.height() + 1);
        self.chain
            .propose(time, 0, extra, &self.backed_claims())
            .expect("a proposal")
            .block
    }

    /// Commits the next block: the pools plus `extra` federation
    /// transactions, each of which must apply.
    pub(crate) fn commit(&self, extra: Vec<FederationTx>) -> Block {
        let time = 1_000 * (self.chain.height() + 1);
        let p = self
            .chain
            .propose(time, 0, extra.clone(), &self.backed_claims())
            .expect("a proposal");
        for tx in &extra {
            assert!(
                p.block.fed_txs.iter().any(|t| t.id() == tx.id()),
                "the ledger refused {:?}",
                tx.kind
            );
        }
        let block = p.block.clone();
        let cb = CommittedBlock {
            block: p.block,
            commit: vec![],
        };
        self.chain.commit(cb, p.outcome).expect("the block commits");
        block
    }

    /// Registers `account`'s deposit address in a committed block.
    pub(crate) fn register(&self, account: AccountId) {
        self.commit(vec![
            self.fed_tx(0, FedTxKind::RegisterDepositAddress { account })
        ]);
    }

    /// The script of `account`'s deposit address.
    pub(crate) fn deposit_script(&self, account: AccountId) -> ScriptBuf {
        self.chain
            .params()
            .federation
            .deposit_script_pubkey(&account.0)
            .expect("a deposit script")
    }

    /// Mines a block on bitcoind paying `value` sats to `account`'s deposit
    /// address; the deposit as a watcher sees it there.
    pub(crate) fn deposit(&self, account: AccountId, value: u64) -> SeenDeposit {
        let script = self.deposit_script(account);
        let outpoint = self.btc.fund(&script, Amount::from_sat(value));
        let (height, block) = self.btc.best_tip();
        SeenDeposit {
            outpoint,
            amount: sats(value),
            account,
            block,
            height,
            epoch: 0,
        }
    }

    /// The mint of `d`, signed by member 0.
    pub(crate) fn mint_tx(&self, d: &SeenDeposit) -> FederationTx {
        self.fed_tx(
            0,
            FedTxKind::PegInMint {
                outpoint: d.outpoint,
                amount: d.amount,
                account: d.account,
                bitcoin_block: d.block,
                epoch: d.epoch,
            },
        )
    }

    /// Commits the mint of `d`.
    pub(crate) fn mint(&self, d: &SeenDeposit) {
        self.commit(vec![self.mint_tx(d)]);
    }

    /// Registers user `user`, mines a deposit of `sats` to it on bitcoind
    /// and commits its mint (as the federation would at depth; no watcher
    /// is asked). The deposit as minted.
    pub(crate) fn pegged_in(&self, user: u8, sats: u64) -> SeenDeposit {
        self.register(account(user));
        let d = self.deposit(account(user), sats);
        self.mint(&d);
        d
    }

    /// User `user` pegs out [`PEG_OUT_SATS`]; the batch the block forms.
    pub(crate) fn peg_out(&self, user: u8) -> Batch {
        self.chain
            .submit_tx(self.peg_out_tx(user))
            .expect("the peg-out is admitted");
        let before = self.chain.with_state(|s| s.next_batch_id);
        self.commit(vec![]);
        self.chain
            .with_state(|s| s.batches.get(&before).cloned())
            .expect("the peg-out formed a batch")
    }

    /// User `user`'s peg-out of [`PEG_OUT_SATS`] at its next nonce.
    pub(crate) fn peg_out_tx(&self, user: u8) -> Transaction {
        let nonce = self.chain.account(&account(user)).effective.nonce;
        Transaction::sign(
            self.chain.spec.chain_id,
            &user_key(user),
            nonce,
            sats(5_000),
            TxKind::PegOut {
                bitcoin_address: withdrawal_address(),
                amount: sats(PEG_OUT_SATS),
            },
        )
    }

    /// Batch `id` as committed state holds it (None once confirmed).
    pub(crate) fn batch(&self, id: u64) -> Option<Batch> {
        self.chain
            .with_state(|s| s.batches.get(&BatchId(id)).cloned())
    }
}

/// One member's view of a shared [`MemoryChain`] with faults of its own
/// (the shared chain's `set_delay`/`set_unavailable` hit every member).
pub(crate) struct OwnBitcoind {
    btc: MemoryChain,
    delay_ms: AtomicU64,
    down: AtomicBool,
}

impl OwnBitcoind {
    fn new(btc: MemoryChain) -> OwnBitcoind {
        OwnBitcoind {
            btc,
            delay_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
        }
    }

    /// Every call of this member sleeps `delay` first (slow or hung).
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every call of this member fails until set back.
    pub(crate) fn set_unavailable(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn fault(&self) -> Result<&MemoryChain, ChainError> {
        let ms = self.delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(ChainError::Unavailable(
                "this member's bitcoind is down".into(),
            ));
        }
        Ok(&self.btc)
    }
}

impl BitcoinChain for OwnBitcoind {
    fn tip(&self) -> Result<(u64, bitcoin::BlockHash), ChainError> {
        self.fault()?.tip()
    }
    fn block_hash(&self, height: u64) -> Result<bitcoin::BlockHash, ChainError> {
        self.fault()?.block_hash(height)
    }
    fn block(&self, hash: &bitcoin::BlockHash) -> Result<bitcoin::Block, ChainError> {
        self.fault()?.block(hash)
    }
    fn best_chain_height(&self, hash: &bitcoin::BlockHash) -> Result<Option<u64>, ChainError> {
        self.fault()?.best_chain_height(hash)
    }
    fn transaction(
        &self,
        txid: &bitcoin::Txid,
        hint: Option<&bitcoin::BlockHash>,
    ) -> Result<Option<(bitcoin::Transaction, Option<bitcoin::BlockHash>)>, ChainError> {
        self.fault()?.transaction(txid, hint)
    }
    fn estimate_fee_rate(&self, blocks: u16) -> Result<Option<u64>, ChainError> {
        self.fault()?.estimate_fee_rate(blocks)
    }
    fn broadcast(&self, tx: &bitcoin::Transaction) -> Result<bitcoin::Txid, ChainError> {
        self.fault()?.broadcast(tx)
    }
    fn test_accept(&self, tx: &bitcoin::Transaction) -> Result<(), ChainError> {
        self.fault()?.test_accept(tx)
    }
    fn mempool_entry_height(&self, txid: &bitcoin::Txid) -> Result<Option<u64>, ChainError> {
        self.fault()?.mempool_entry_height(txid)
    }
    fn unspent(
        &self,
        outpoint: &bitcoin::OutPoint,
    ) -> Result<Option<(bitcoin::TxOut, u64)>, ChainError> {
        self.fault()?.unspent(outpoint)
    }
    fn node_info(&self) -> Result<fedpeg_peg::chain::NodeInfo, ChainError> {
        self.fault()?.node_info()
    }
}
