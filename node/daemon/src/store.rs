//! RocksDB persistence: blocks, indexes and ledger state.
//!
//! Column families: `blocks` (height → CommittedBlock protobuf), `block_index`
//! (hash → height), `tx_index` (txid → height ‖ index), `accounts` (id →
//! balance ‖ nonce), `withdrawals` (id → withdrawal), `registered` (account
//! → height its deposit address was registered), `minted` (outpoint →
//! account ‖ credited ‖ height), `fee_votes`, `utxos` (outpoint → federation
//! UTXO, JSON), `batches` (id → peg-out batch, JSON, kept after
//! confirmation), `paid` (withdrawal id → withdrawal paid by a confirmed
//! batch), `meta` (chain id, tip, the peg-out quote grace list once a fee
//! rise set one, the federation's epochs and the members' votes for a
//! change), and for the explorer feed `events`
//! (height → the block's events) and `account_txs` (account ‖ height ‖ index
//! → ∅), see [`FeedRecord`].
//! Each block is one atomic, synced `WriteBatch`: after a crash the store
//! holds either all of a block (block, indexes, state, tip) or none of it.

use bitcoin::hashes::Hash as _;
use bitcoin::Txid;
use fedpeg_consensus::Height;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::amount::Sats;
use fedpeg_ledger::block::CommittedBlock;
use fedpeg_ledger::epoch::{decode_change_votes, encode_change_votes, Epoch};
use fedpeg_ledger::hash::Hash32;
use fedpeg_ledger::ids::{BatchId, FeeRate, MemberIndex, WithdrawalId};
use fedpeg_ledger::pegout_batch::{Batch, Utxo};
use fedpeg_ledger::{Account, BlockOutcome, QuoteGrace, State, Withdrawal};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use std::path::Path;

mod feed;
pub use feed::FeedRecord;

const CF_BLOCKS: &str = "blocks";
const CF_BLOCK_INDEX: &str = "block_index";
const CF_TX_INDEX: &str = "tx_index";
const CF_ACCOUNTS: &str = "accounts";
const CF_WITHDRAWALS: &str = "withdrawals";
const CF_META: &str = "meta";
const CF_REGISTERED: &str = "registered";
const CF_MINTED: &str = "minted";
const CF_FEE_VOTES: &str = "fee_votes";
const CF_UTXOS: &str = "utxos";
const CF_BATCHES: &str = "batches";
const CF_PAID: &str = "paid";
const ALL_CFS: [&str; 14] = [
    CF_UTXOS,
    CF_BATCHES,
    CF_PAID,
    CF_BLOCKS,
    CF_BLOCK_INDEX,
    CF_TX_INDEX,
    CF_ACCOUNTS,
    CF_WITHDRAWALS,
    CF_META,
    CF_REGISTERED,
    CF_MINTED,
    CF_FEE_VOTES,
    feed::CF_EVENTS,
    feed::CF_ACCOUNT_TXS,
];
const KEY_CHAIN_ID: &[u8] = b"chain_id";
const KEY_TIP: &[u8] = b"tip";
/// The state's quote grace list ([`fedpeg_ledger::quote_grace`]), written
/// by a block that changes it; absent (an empty list) before the first.
const KEY_QUOTE_GRACE: &[u8] = b"quote_grace";
/// The state's epochs ([`Epoch::encode_list`]), written with genesis and by
/// a block that adopts a change; a store written before epochs existed has
/// none, and starts from the genesis epoch.
const KEY_EPOCHS: &[u8] = b"epochs";
/// The state's votes for a federation change
/// ([`fedpeg_ledger::epoch::encode_change_votes`]), written by a block that
/// changes them; absent: none.
const KEY_CHANGE_VOTES: &[u8] = b"change_votes";
/// Layout version of the stored records and of the state root they chain.
const KEY_FORMAT: &[u8] = b"format";
/// 2: canonical binary batches and UTXOs, state root `fedpeg/state/v2`.
/// (Version 1, never written as a key, stored them as JSON.)
const FORMAT: u32 = 2;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("data directory belongs to chain {found}, but genesis is chain {expected}; use another --data-dir or the matching genesis")]
    WrongChain { expected: Hash32, found: Hash32 },
    #[error("data directory was written by an older fedpeg (store format {found}, this build uses {expected}): this build computes state roots differently (fedpeg/state/v2), so it cannot continue that chain, and syncing it from members running the old build would fail too. A whole federation moves to this build together, on a new chain (new genesis time, empty data directories); on a devnet: rm -rf devnet-data")]
    OldFormat { expected: u32, found: u32 },
    #[error("store is corrupt: {0}")]
    Corrupt(String),
}

/// What a store holds at its tip: enough to name a backup and to check that
/// a restored copy is the one the manifest describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSummary {
    pub chain_id: Hash32,
    /// Layout version ([`FORMAT`] for this build).
    pub format: u32,
    pub height: u64,
    /// Hash of the block at `height` (the genesis state's tip at height 0).
    pub tip: Hash32,
    pub state_root: Hash32,
}

/// Where a finalized transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLocation {
    pub height: u64,
    pub index: u32,
}

/// The node's database.
pub struct Store {
    db: DB,
    /// The genesis state's epochs: what a store without an epoch record
    /// (written before epochs existed) holds. Empty when opened without
    /// genesis.
    genesis_epochs: Vec<Epoch>,
}

fn corrupt(s: impl Into<String>) -> StoreError {
    StoreError::Corrupt(s.into())
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, StoreError> {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt("short integer field"))
}

/// An amount at `at`: corrupt if above 21M BTC (no valid state holds one).
fn sats_at(b: &[u8], at: usize) -> Result<Sats, StoreError> {
    let v = u64_at(b, at)?;
    Sats::from_sat(v).map_err(|e| corrupt(e.to_string()))
}

fn hash_at(b: &[u8], at: usize) -> Result<Hash32, StoreError> {
    b.get(at..at + 32)
        .and_then(|s| Hash32::from_slice(s).ok())
        .ok_or_else(|| corrupt("short hash field"))
}

fn encode_account(a: &Account) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&a.balance.to_sat().to_be_bytes());
    v[8..].copy_from_slice(&a.nonce.to_be_bytes());
    v
}

/// Withdrawal record: account ‖ amount ‖ height ‖ txid ‖ time ‖ address
/// length (u16) ‖ address ‖ output script (the rest).
fn encode_withdrawal(w: &Withdrawal) -> Vec<u8> {
    let address = w.bitcoin_address.as_bytes();
    let mut v = Vec::with_capacity(90 + address.len() + w.script_pubkey.len());
    v.extend_from_slice(&w.account.0);
    v.extend_from_slice(&w.amount.to_sat().to_be_bytes());
    v.extend_from_slice(&w.height.0.to_be_bytes());
    v.extend_from_slice(&w.txid.0);
    v.extend_from_slice(&w.time_ms.to_be_bytes());
    // Addresses are at most MAX_BITCOIN_ADDRESS_LEN (< u16::MAX) long.
    v.extend_from_slice(&(address.len() as u16).to_be_bytes());
    v.extend_from_slice(address);
    v.extend_from_slice(w.script_pubkey.as_bytes());
    v
}

fn outpoint_key(o: &fedpeg_ledger::fedtx::OutPoint) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(o.txid.as_byte_array());
    k[32..].copy_from_slice(&o.vout.to_be_bytes());
    k
}

fn outpoint_at(k: &[u8]) -> Result<fedpeg_ledger::fedtx::OutPoint, StoreError> {
    let vout = k
        .get(32..36)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| corrupt("short outpoint"))?;
    Ok(fedpeg_ledger::fedtx::OutPoint {
        txid: Txid::from_byte_array(hash_at(k, 0)?.0),
        vout,
    })
}

fn decode_withdrawal(id: u64, v: &[u8]) -> Result<Withdrawal, StoreError> {
    let account = AccountId(hash_at(v, 0)?.0);
    let len = v
        .get(88..90)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| corrupt("short withdrawal record"))?;
    let (address, script) = v
        .get(90..)
        .filter(|rest| rest.len() >= len)
        .map(|rest| rest.split_at(len))
        .ok_or_else(|| corrupt("short withdrawal record"))?;
    Ok(Withdrawal {
        id: WithdrawalId(id),
        account,
        amount: sats_at(v, 32)?,
        height: Height(u64_at(v, 40)?),
        txid: hash_at(v, 48)?,
        time_ms: u64_at(v, 80)?,
        bitcoin_address: String::from_utf8(address.to_vec())
            .map_err(|_| corrupt("withdrawal address is not UTF-8"))?,
        script_pubkey: bitcoin::ScriptBuf::from_bytes(script.to_vec()),
    })
}

/// Tip record: height ‖ hash ‖ time ‖ state_root ‖ fee_pool ‖ supply ‖ next_withdrawal_id.
fn encode_tip(s: &State) -> Vec<u8> {
    let mut v = Vec::with_capacity(112);
    v.extend_from_slice(&s.height.0.to_be_bytes());
    v.extend_from_slice(&s.tip.0);
    v.extend_from_slice(&s.tip_time_ms.to_be_bytes());
    v.extend_from_slice(&s.state_root.0);
    v.extend_from_slice(&s.fee_pool.to_sat().to_be_bytes());
    v.extend_from_slice(&s.supply.to_sat().to_be_bytes());
    v.extend_from_slice(&s.next_withdrawal_id.0.to_be_bytes());
    v.extend_from_slice(&s.next_batch_id.0.to_be_bytes());
    v
}

/// Opens the database at `dir` with every column family; `create`: the
/// database and missing column families too.
fn open_db(dir: &Path, create: bool) -> Result<DB, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(create);
    opts.create_missing_column_families(create);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let cfs = ALL_CFS
        .iter()
        .map(|n| ColumnFamilyDescriptor::new(*n, Options::default()));
    Ok(DB::open_cf_descriptors(&opts, dir, cfs)?)
}

impl Store {
    /// Opens (or creates) the store at `dir` for chain `chain_id`, writing the
    /// genesis state on first use.
    pub fn open(dir: &Path, chain_id: Hash32, genesis: &State) -> Result<Store, StoreError> {
        let db = open_db(dir, true)?;
        let store = Store {
            db,
            genesis_epochs: genesis.epochs.clone(),
        };
        let meta = store.cf(CF_META)?;
        match store.db.get_cf(meta, KEY_CHAIN_ID)? {
            Some(found) => {
                let found = Hash32::from_slice(&found).map_err(corrupt)?;
                if found != chain_id {
                    return Err(StoreError::WrongChain {
                        expected: chain_id,
                        found,
                    });
                }
                let format = store.summary()?.format;
                if format != FORMAT {
                    return Err(StoreError::OldFormat {
                        expected: FORMAT,
                        found: format,
                    });
                }
            }
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, KEY_CHAIN_ID, chain_id.0);
                batch.put_cf(meta, KEY_FORMAT, FORMAT.to_be_bytes());
                let accounts = store.cf(CF_ACCOUNTS)?;
                for (id, a) in &genesis.accounts {
                    batch.put_cf(accounts, id.0, encode_account(a));
                }
                batch.put_cf(meta, KEY_TIP, encode_tip(genesis));
                batch.put_cf(meta, KEY_EPOCHS, Epoch::encode_list(&genesis.epochs));
                store.write_synced(batch)?;
            }
        }
        Ok(store)
    }

    /// Opens an existing store of this build's format without writing
    /// genesis, creating nothing: for this node's own records of a copy
    /// (the restore marker). The caller checks the chain.
    pub fn open_existing(dir: &Path) -> Result<Store, StoreError> {
        let store = Store {
            db: open_db(dir, false)?,
            genesis_epochs: Vec::new(),
        };
        let format = store.summary()?.format;
        if format != FORMAT {
            return Err(StoreError::OldFormat {
                expected: FORMAT,
                found: format,
            });
        }
        Ok(store)
    }

    /// Reads the summary of the store at `dir` without writing to it or
    /// taking its lock (a backup being checked).
    pub fn read_summary(dir: &Path) -> Result<StoreSummary, StoreError> {
        let db = DB::open_cf_for_read_only(&Options::default(), dir, ALL_CFS, false)?;
        Store {
            db,
            genesis_epochs: Vec::new(),
        }
        .summary()
    }

    /// True if another process (or this one) holds the store at `dir` open:
    /// RocksDB's `LOCK` file is taken. A store that does not open for
    /// another reason (damaged) is not in use.
    pub fn in_use(dir: &Path) -> bool {
        let Ok(cfs) = DB::list_cf(&Options::default(), dir) else {
            return false;
        };
        match DB::open_cf(&Options::default(), dir, cfs) {
            Ok(_) => false,
            Err(e) => e.to_string().to_ascii_lowercase().contains("lock"),
        }
    }

    /// The chain, layout and tip this store holds.
    pub fn summary(&self) -> Result<StoreSummary, StoreError> {
        let meta = self.cf(CF_META)?;
        let chain_id = self
            .db
            .get_cf(meta, KEY_CHAIN_ID)?
            .ok_or_else(|| corrupt("no chain id record"))?;
        let format = match self.db.get_cf(meta, KEY_FORMAT)? {
            None => 1,
            Some(v) => <[u8; 4]>::try_from(v.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| corrupt("format key is not 4 bytes"))?,
        };
        let tip = self
            .db
            .get_cf(meta, KEY_TIP)?
            .ok_or_else(|| corrupt("no tip record"))?;
        Ok(StoreSummary {
            chain_id: Hash32::from_slice(&chain_id).map_err(corrupt)?,
            format,
            height: u64_at(&tip, 0)?,
            tip: hash_at(&tip, 8)?,
            state_root: hash_at(&tip, 48)?,
        })
    }

    /// Writes a consistent copy of the store (a RocksDB checkpoint: hard
    /// links where `dir` is on the same filesystem, copies elsewhere) to
    /// `dir`, which must not exist. Commits go on meanwhile; the copy holds
    /// whole blocks only (each is one atomic batch).
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StoreError> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| corrupt(format!("column family {name} missing")))
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// A record of this node's own (not replicated) bookkeeping, such as the
    /// peg watcher's view of Bitcoin, under `key` in `meta`.
    pub fn local_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_META)?, format!("local/{key}"))?)
    }

    /// Replaces the local records `(key, value)` in one synced write (they
    /// may hold an alert).
    pub fn put_local_records(&self, records: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let meta = self.cf(CF_META)?;
        for (key, value) in records {
            batch.put_cf(meta, format!("local/{key}"), value);
        }
        self.write_synced(batch)
    }

    /// Loads the full ledger state as of the stored tip.
    pub fn load_state(&self) -> Result<State, StoreError> {
        let tip = self
            .db
            .get_cf(self.cf(CF_META)?, KEY_TIP)?
            .ok_or_else(|| corrupt("no tip record"))?;
        let mut s = State {
            height: Height(u64_at(&tip, 0)?),
            tip: hash_at(&tip, 8)?,
            tip_time_ms: u64_at(&tip, 40)?,
            state_root: hash_at(&tip, 48)?,
            fee_pool: sats_at(&tip, 80)?,
            supply: sats_at(&tip, 88)?,
            next_withdrawal_id: WithdrawalId(u64_at(&tip, 96)?),
            next_batch_id: BatchId(u64_at(&tip, 104)?),
            ..State::default()
        };
        if let Some(v) = self.db.get_cf(self.cf(CF_META)?, KEY_QUOTE_GRACE)? {
            s.quote_grace = QuoteGrace::decode_list(&v).map_err(|e| corrupt(e.to_string()))?;
        }
        s.epochs = match self.db.get_cf(self.cf(CF_META)?, KEY_EPOCHS)? {
            Some(v) => Epoch::decode_list(&v).map_err(|e| corrupt(e.to_string()))?,
            None => self.genesis_epochs.clone(),
        };
        if let Some(v) = self.db.get_cf(self.cf(CF_META)?, KEY_CHANGE_VOTES)? {
            s.change_votes = decode_change_votes(&v).map_err(|e| corrupt(e.to_string()))?;
        }
        for item in self.db.iterator_cf(self.cf(CF_UTXOS)?, IteratorMode::Start) {
            let (k, v) = item?;
            let u = Utxo::decode(&v).map_err(|e| corrupt(e.to_string()))?;
            s.utxos.insert(outpoint_at(&k)?, u);
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_BATCHES)?, IteratorMode::Start)
        {
            let (_, v) = item?;
            let b = Batch::decode(&v).map_err(|e| corrupt(e.to_string()))?;
            if b.confirmed.is_none() {
                for o in &b.outputs {
                    s.withdrawal_batch.insert(o.withdrawal, b.id);
                }
                s.batches.insert(b.id, b);
            } else {
                // Ascending ids: the last SETTLED_KEPT stay, as in commit.
                s.settled.insert(b.id, b);
                while s.settled.len() > fedpeg_ledger::SETTLED_KEPT {
                    s.settled.pop_first();
                }
            }
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_ACCOUNTS)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let id = AccountId(hash_at(&k, 0)?.0);
            s.accounts.insert(
                id,
                Account {
                    balance: sats_at(&v, 0)?,
                    nonce: u64_at(&v, 8)?,
                },
            );
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_WITHDRAWALS)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let id = u64_at(&k, 0)?;
            s.withdrawals
                .insert(WithdrawalId(id), decode_withdrawal(id, &v)?);
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_REGISTERED)?, IteratorMode::Start)
        {
            let (k, _) = item?;
            s.registered.insert(AccountId(hash_at(&k, 0)?.0));
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_MINTED)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let vout = k
                .get(32..36)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| corrupt("short outpoint"))?;
            let outpoint = fedpeg_ledger::fedtx::OutPoint {
                txid: Txid::from_byte_array(hash_at(&k, 0)?.0),
                vout,
            };
            s.minted.insert(
                outpoint,
                (
                    AccountId(hash_at(&v, 0)?.0),
                    sats_at(&v, 32)?,
                    Height(u64_at(&v, 40)?),
                    sats_at(&v, 48)?,
                ),
            );
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_FEE_VOTES)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            let m = k
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| corrupt("short fee vote key"))?;
            s.fee_votes.insert(
                MemberIndex(m),
                (FeeRate(u64_at(&v, 0)?), Height(u64_at(&v, 8)?)),
            );
        }
        Ok(s)
    }

    /// Persists a finalized block with its effects in one synced batch.
    /// `after` is the state once `outcome` is committed.
    pub fn commit_block(
        &self,
        cb: &CommittedBlock,
        outcome: &BlockOutcome,
        after: &State,
    ) -> Result<(), StoreError> {
        self.commit_block_with(cb, outcome, after, &FeedRecord::default())
    }

    /// [`Store::commit_block`] plus the block's explorer feed record, in
    /// the same batch: the feed never sees a block without its events.
    pub fn commit_block_with(
        &self,
        cb: &CommittedBlock,
        outcome: &BlockOutcome,
        after: &State,
        feed: &FeedRecord,
    ) -> Result<(), StoreError> {
        let h = &cb.block.header;
        let hash = h.hash();
        let mut batch = WriteBatch::default();
        self.put_feed_record(&mut batch, h.height.0, feed)?;
        batch.put_cf(self.cf(CF_BLOCKS)?, h.height.0.to_be_bytes(), cb.encode());
        batch.put_cf(self.cf(CF_BLOCK_INDEX)?, hash.0, h.height.0.to_be_bytes());
        let txi = self.cf(CF_TX_INDEX)?;
        for (i, tx) in cb.block.txs.iter().enumerate() {
            let mut loc = [0u8; 12];
            loc[..8].copy_from_slice(&h.height.0.to_be_bytes());
            loc[8..].copy_from_slice(&(i as u32).to_be_bytes());
            batch.put_cf(txi, tx.id().0, loc);
        }
        let accounts = self.cf(CF_ACCOUNTS)?;
        for (id, a) in &outcome.delta.accounts {
            batch.put_cf(accounts, id.0, encode_account(a));
        }
        let wd = self.cf(CF_WITHDRAWALS)?;
        for w in &outcome.delta.new_withdrawals {
            batch.put_cf(wd, w.id.0.to_be_bytes(), encode_withdrawal(w));
        }
        let votes = self.cf(CF_FEE_VOTES)?;
        if outcome.delta.epoch_start {
            // The old epoch's votes go before this block's are written
            // (a batch applies in order).
            for item in self.db.iterator_cf(votes, IteratorMode::Start) {
                let (k, _) = item?;
                batch.delete_cf(votes, k);
            }
        }
        for (m, rate, at) in &outcome.delta.new_fee_votes {
            let mut v = [0u8; 16];
            v[..8].copy_from_slice(&rate.0.to_be_bytes());
            v[8..].copy_from_slice(&at.0.to_be_bytes());
            batch.put_cf(votes, m.0.to_be_bytes(), v);
        }
        let minted = self.cf(CF_MINTED)?;
        for (o, a, credit, amount) in &outcome.delta.new_mints {
            let mut k = [0u8; 36];
            k[..32].copy_from_slice(o.txid.as_byte_array());
            k[32..].copy_from_slice(&o.vout.to_be_bytes());
            let mut v = Vec::with_capacity(56);
            v.extend_from_slice(&a.0);
            v.extend_from_slice(&credit.to_sat().to_be_bytes());
            v.extend_from_slice(&h.height.0.to_be_bytes());
            v.extend_from_slice(&amount.to_sat().to_be_bytes());
            batch.put_cf(minted, k, v);
        }
        let utxos = self.cf(CF_UTXOS)?;
        for (o, u) in &outcome.delta.new_utxos {
            batch.put_cf(utxos, outpoint_key(o), u.encode());
        }
        for o in &outcome.delta.spent_utxos {
            batch.delete_cf(utxos, outpoint_key(o));
        }
        let batches = self.cf(CF_BATCHES)?;
        let paid = self.cf(CF_PAID)?;
        for (id, b) in &outcome.delta.batches {
            batch.put_cf(batches, id.0.to_be_bytes(), b.encode());
            if b.confirmed.is_some() {
                for o in &b.outputs {
                    let key = o.withdrawal.0.to_be_bytes();
                    if let Some(w) = self.db.get_cf(wd, key)? {
                        batch.put_cf(paid, key, w);
                    }
                    batch.delete_cf(wd, key);
                }
            }
        }
        let reg = self.cf(CF_REGISTERED)?;
        for a in &outcome.delta.new_registrations {
            batch.put_cf(reg, a.0, h.height.0.to_be_bytes());
        }
        batch.put_cf(self.cf(CF_META)?, KEY_TIP, encode_tip(after));
        if outcome.delta.quote_grace.is_some() {
            batch.put_cf(
                self.cf(CF_META)?,
                KEY_QUOTE_GRACE,
                QuoteGrace::encode_list(&after.quote_grace),
            );
        }
        if outcome.delta.adopted.is_some() {
            batch.put_cf(
                self.cf(CF_META)?,
                KEY_EPOCHS,
                Epoch::encode_list(&after.epochs),
            );
        }
        if outcome.delta.epoch_start || outcome.delta.change_votes.is_some() {
            batch.put_cf(
                self.cf(CF_META)?,
                KEY_CHANGE_VOTES,
                encode_change_votes(&after.change_votes),
            );
        }
        self.write_synced(batch)
    }

    /// The finalized block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<CommittedBlock>, StoreError> {
        match self.db.get_cf(self.cf(CF_BLOCKS)?, height.to_be_bytes())? {
            None => Ok(None),
            Some(b) => CommittedBlock::decode(&b)
                .map(Some)
                .map_err(|e| corrupt(e.to_string())),
        }
    }

    /// Height of the block with this hash.
    pub fn height_of(&self, hash: &Hash32) -> Result<Option<u64>, StoreError> {
        match self.db.get_cf(self.cf(CF_BLOCK_INDEX)?, hash.0)? {
            None => Ok(None),
            Some(v) => u64_at(&v, 0).map(Some),
        }
    }

    /// Where a finalized transaction is.
    /// A peg-out batch by id (confirmed ones too).
    pub fn batch(&self, id: u64) -> Result<Option<Batch>, StoreError> {
        match self.db.get_cf(self.cf(CF_BATCHES)?, id.to_be_bytes())? {
            None => Ok(None),
            Some(v) => Batch::decode(&v)
                .map(Some)
                .map_err(|e| corrupt(e.to_string())),
        }
    }

    /// The newest `limit` batches, newest first.
    pub fn recent_batches(&self, limit: usize) -> Result<Vec<Batch>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_BATCHES)?, IteratorMode::End) {
            if out.len() >= limit {
                break;
            }
            let (_, v) = item?;
            out.push(Batch::decode(&v).map_err(|e| corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    /// The batch that paid withdrawal `id` (scans batches, newest first).
    pub fn batch_paying(&self, id: u64) -> Result<Option<u64>, StoreError> {
        for item in self.db.iterator_cf(self.cf(CF_BATCHES)?, IteratorMode::End) {
            let (_, v) = item?;
            let b = Batch::decode(&v).map_err(|e| corrupt(e.to_string()))?;
            if b.confirmed.is_some() && b.outputs.iter().any(|o| o.withdrawal == WithdrawalId(id)) {
                return Ok(Some(b.id.0));
            }
        }
        Ok(None)
    }

    /// A paid withdrawal by the sidechain txid of its PegOut (scan).
    pub fn paid_withdrawal_by_txid(&self, txid: &Hash32) -> Result<Option<Withdrawal>, StoreError> {
        for item in self.db.iterator_cf(self.cf(CF_PAID)?, IteratorMode::End) {
            let (k, v) = item?;
            if v.get(48..80) == Some(&txid.0[..]) {
                return decode_withdrawal(u64_at(&k, 0)?, &v).map(Some);
            }
        }
        Ok(None)
    }

    /// A withdrawal already paid by a confirmed batch.
    pub fn paid_withdrawal(&self, id: u64) -> Result<Option<Withdrawal>, StoreError> {
        match self.db.get_cf(self.cf(CF_PAID)?, id.to_be_bytes())? {
            None => Ok(None),
            Some(v) => decode_withdrawal(id, &v).map(Some),
        }
    }

    pub fn tx_location(&self, txid: &Hash32) -> Result<Option<TxLocation>, StoreError> {
        match self.db.get_cf(self.cf(CF_TX_INDEX)?, txid.0)? {
            None => Ok(None),
            Some(v) => {
                let height = u64_at(&v, 0)?;
                let index = v
                    .get(8..12)
                    .and_then(|s| <[u8; 4]>::try_from(s).ok())
                    .map(u32::from_be_bytes)
                    .ok_or_else(|| corrupt("short tx location"))?;
                Ok(Some(TxLocation { height, index }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpeg_ledger::block::{tx_root, Block, CommittedBlock, Header};
    use fedpeg_ledger::fedtx::OutPoint;
    use fedpeg_ledger::testing::sats;
    use fedpeg_ledger::{BlockOutcome, Delta};

    #[test]
    fn withdrawal_records_round_trip_and_damage_is_an_error_not_a_panic() {
        let w = Withdrawal {
            id: WithdrawalId(7),
            account: AccountId([3; 32]),
            bitcoin_address: "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".into(),
            script_pubkey: bitcoin::ScriptBuf::from_bytes(vec![0, 20, 1, 2, 3]),
            amount: sats(5_000),
            txid: Hash32([9; 32]),
            height: Height(4),
            time_ms: 11,
        };
        let v = encode_withdrawal(&w);
        assert_eq!(decode_withdrawal(7, &v).unwrap(), w);
        for cut in [0, 40, 88, 89, 100] {
            assert!(decode_withdrawal(7, &v[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// A confirmed one-input, no-output batch (enough for the store).
    fn settled_batch() -> fedpeg_ledger::pegout_batch::Batch {
        use fedpeg_ledger::pegout_batch::{Batch, BatchVersion, Confirmation, Owner, Utxo};
        Batch {
            id: BatchId(4),
            inputs: vec![(
                OutPoint {
                    txid: fedpeg_ledger::testing::txid(8),
                    vout: 0,
                },
                Utxo {
                    amount: sats(10_000),
                    owner: Owner::Change,
                    created_ms: 0,
                    epoch: 0,
                },
            )],
            outputs: vec![],
            versions: vec![BatchVersion {
                fee_rate: FeeRate(2),
                fee: sats(500),
                change: sats(9_500),
                txid: fedpeg_ledger::testing::txid(9),
                height: Height(1),
                signatures: Default::default(),
                bump_votes: Default::default(),
            }],
            created_height: Height(1),
            fee_reserved: sats(500),
            confirmed: Some(Confirmation {
                version: 0,
                bitcoin_block: fedpeg_ledger::testing::block_hash(3),
                height: Height(1),
            }),
            epoch: 0,
            change_epoch: 0,
        }
    }

    #[test]
    fn everything_a_block_changes_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let chain_id = Hash32::tagged("c", &[]);
        let genesis = State::default();
        let acct = AccountId([9; 32]);
        let outpoint = OutPoint {
            txid: fedpeg_ledger::testing::txid(3),
            vout: 7,
        };
        let header = Header {
            chain_id,
            height: Height(1),
            parent: Hash32::ZERO,
            time_ms: 5,
            proposer: 0,
            tx_root: tx_root(&[], &[]),
            state_root: Hash32::tagged("s", &[]),
        };
        let outcome = BlockOutcome {
            delta: Delta {
                accounts: [(
                    acct,
                    Account {
                        balance: sats(42),
                        nonce: 3,
                    },
                )]
                .into_iter()
                .collect(),
                fee_pool: sats(2),
                supply: sats(42),
                new_registrations: vec![acct],
                new_mints: vec![(outpoint, acct, sats(42), sats(50))],
                new_fee_votes: vec![(MemberIndex(2), FeeRate(17), Height(1))],
                quote_grace: Some(vec![QuoteGrace {
                    rate: FeeRate(12),
                    until_ms: 600_005,
                }]),
                batches: [(BatchId(4), settled_batch())].into_iter().collect(),
                ..Delta::default()
            },
            events: vec![],
            state_root: header.state_root,
        };
        let mut after = genesis.clone();
        after.commit(&header, &outcome);
        {
            let store = Store::open(d.path(), chain_id, &genesis).unwrap();
            let cb = CommittedBlock {
                block: Block {
                    header: header.clone(),
                    txs: vec![],
                    fed_txs: vec![],
                },
                commit: vec![1],
            };
            store.commit_block(&cb, &outcome, &after).unwrap();
        }
        let store = Store::open(d.path(), chain_id, &genesis).unwrap();
        let s = store.load_state().unwrap();
        assert_eq!(
            s.account(&acct),
            Account {
                balance: sats(42),
                nonce: 3
            }
        );
        assert!(s.registered.contains(&acct));
        assert_eq!(
            s.fee_votes.get(&MemberIndex(2)),
            Some(&(FeeRate(17), Height(1)))
        );
        assert_eq!(
            s.quote_grace,
            vec![QuoteGrace {
                rate: FeeRate(12),
                until_ms: 600_005
            }],
            "the quote grace a fee rise set"
        );
        assert_eq!(
            s.minted.get(&outpoint),
            Some(&(acct, sats(42), Height(1), sats(50)))
        );
        // A confirmed batch is kept as settled (a deep reorg may bring
        // another of its versions), not as unconfirmed.
        assert!(s.batches.is_empty());
        assert_eq!(s.settled.get(&BatchId(4)), Some(&settled_batch()));
        assert_eq!(s.settled, after.settled);
        assert_eq!(
            (s.height, s.tip, s.state_root, s.fee_pool, s.supply),
            (
                Height(1),
                header.hash(),
                after.state_root,
                sats(2),
                sats(42)
            )
        );
        assert_eq!(store.block(1).unwrap().unwrap().commit, vec![1]);
        // Another chain's genesis is refused.
        drop(store);
        assert!(matches!(
            Store::open(d.path(), Hash32::ZERO, &genesis),
            Err(StoreError::WrongChain { .. })
        ));
    }

    /// Epochs and change votes survive a reopen; an epoch's first block
    /// drops the old fee votes on disk too; a store written before epochs
    /// existed starts from the genesis epoch.
    #[test]
    fn epochs_and_change_votes_survive_reopen_and_old_stores_start_from_genesis() {
        use ed25519_dalek::SigningKey;
        use fedpeg_ledger::epoch::FederationChange;
        use fedpeg_ledger::testing::epoch_member;
        let d = tempfile::tempdir().unwrap();
        let chain_id = Hash32::tagged("c", &[]);
        let member = |i: u8| epoch_member(i, SigningKey::from_bytes(&[i + 60; 32]).verifying_key());
        let e0 = Epoch {
            number: 0,
            activation: Height(0),
            adopted: Height(0),
            members: vec![member(0), member(1)],
            peg_threshold: 1,
        };
        let genesis = State {
            epochs: vec![e0.clone()],
            ..State::default()
        };
        let change = FederationChange {
            members: vec![member(1), member(2)],
            peg_threshold: 1,
            activation: Height(12),
            base_epoch: 0,
        };
        let e1 = Epoch {
            number: 1,
            activation: Height(12),
            adopted: Height(1),
            members: change.members.clone(),
            peg_threshold: 1,
        };
        let header = |height: u64, parent: Hash32| Header {
            chain_id,
            height: Height(height),
            parent,
            time_ms: 5,
            proposer: 0,
            tx_root: tx_root(&[], &[]),
            state_root: Hash32::tagged("s", &[&height.to_be_bytes()]),
        };
        let commit = |store: &Store, s: &mut State, h: &Header, delta: Delta| {
            let outcome = BlockOutcome {
                delta,
                events: vec![],
                state_root: h.state_root,
            };
            s.commit(h, &outcome);
            let cb = CommittedBlock {
                block: Block {
                    header: h.clone(),
                    txs: vec![],
                    fed_txs: vec![],
                },
                commit: vec![1],
            };
            store.commit_block(&cb, &outcome, &s.clone_meta()).unwrap();
        };
        let mut s = genesis.clone();
        let h1 = header(1, Hash32::ZERO);
        {
            let store = Store::open(d.path(), chain_id, &genesis).unwrap();
            assert_eq!(store.load_state().unwrap().epochs, vec![e0.clone()]);
            let votes = [(MemberIndex(1), (change.id(), change.clone()))]
                .into_iter()
                .collect();
            commit(
                &store,
                &mut s,
                &h1,
                Delta {
                    new_fee_votes: vec![(MemberIndex(0), FeeRate(9), Height(1))],
                    change_votes: Some(votes),
                    adopted: Some(e1.clone()),
                    ..Delta::default()
                },
            );
        }
        let store = Store::open(d.path(), chain_id, &genesis).unwrap();
        let loaded = store.load_state().unwrap();
        assert_eq!(loaded.epochs, vec![e0.clone(), e1.clone()]);
        assert_eq!(loaded.change_votes, s.change_votes);
        assert_eq!(loaded.change_votes.len(), 1);
        // The first block of epoch 1 drops fee and change votes.
        commit(
            &store,
            &mut s,
            &header(2, h1.hash()),
            Delta {
                epoch_start: true,
                new_fee_votes: vec![(MemberIndex(1), FeeRate(7), Height(2))],
                ..Delta::default()
            },
        );
        drop(store);
        let store = Store::open(d.path(), chain_id, &genesis).unwrap();
        let loaded = store.load_state().unwrap();
        assert!(loaded.change_votes.is_empty());
        assert_eq!(
            loaded.fee_votes.into_iter().collect::<Vec<_>>(),
            vec![(MemberIndex(1), (FeeRate(7), Height(2)))]
        );
        assert_eq!(loaded.epochs, s.epochs);
        // A store from before epochs (no record) starts from genesis's.
        store
            .db
            .delete_cf(store.cf(CF_META).unwrap(), KEY_EPOCHS)
            .unwrap();
        drop(store);
        let store = Store::open(d.path(), chain_id, &genesis).unwrap();
        assert_eq!(store.load_state().unwrap().epochs, vec![e0]);
        // A damaged record is an error, not a panic.
        store
            .db
            .put_cf(store.cf(CF_META).unwrap(), KEY_CHANGE_VOTES, [1, 0, 0])
            .unwrap();
        assert!(matches!(store.load_state(), Err(StoreError::Corrupt(_))));
    }
}
