//! The canonical binary encoding of ledger records that feed the state root
//! or are stored: batches, UTXOs, outpoints, quote grace lists (transactions, federation
//! transactions and blocks have theirs in [`crate::tx`], [`crate::fedtx`]
//! and [`crate::block`]).
//!
//! Rules, fixed for version 1 of every record: integers are big-endian and
//! fixed-width; byte strings and lists carry a `u32` length first; an
//! optional value is a `0`/`1` byte then the value; enums are a tag byte.
//! Maps are written in key order. Each stored record starts with a version
//! byte, so a future layout is a new version, never a silent change. Nothing
//! here is serde: adding a field to a struct cannot change these bytes
//! without a test noticing (see the golden state-root test).

use crate::amount::Sats;
use crate::fedtx::OutPoint;
use crate::ids::{BatchId, FeeRate, MemberIndex, WithdrawalId};
use crate::pegout_batch::{Batch, BatchOutput, BatchVersion, Confirmation, Owner, Utxo};
use crate::quote_grace::QuoteGrace;
use bitcoin::hashes::Hash as _;
use bitcoin::{BlockHash, ScriptBuf, Txid};
use fedpeg_consensus::Height;
use std::collections::{BTreeMap, BTreeSet};

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {why}")]
pub struct RecordError {
    pub what: &'static str,
    pub why: String,
}

/// Most elements any decoded list may claim, so a corrupt length cannot make
/// the decoder allocate without bound.
const MAX_LIST: usize = 1 << 20;

/// Appends canonical bytes.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn sats(&mut self, v: Sats) {
        self.u64(v.to_sat());
    }
    pub fn bytes32(&mut self, v: &[u8; 32]) {
        self.buf.extend_from_slice(v);
    }
    /// A list or byte-string length. Lengths beyond u32 cannot occur in
    /// ledger records (every list is bounded far below by consensus limits).
    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    pub fn var_bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.buf.extend_from_slice(v);
    }
    pub fn outpoint(&mut self, o: &OutPoint) {
        self.bytes32(o.txid.as_byte_array());
        self.u32(o.vout);
    }
}

/// Reads canonical bytes, refusing truncation and absurd lengths.
pub struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { bytes, what }
    }
    /// An error about this record.
    pub fn err(&self, why: impl Into<String>) -> RecordError {
        RecordError {
            what: self.what,
            why: why.into(),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.bytes.len() < n {
            return Err(self.err(format!("truncated: need {n} more bytes")));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, RecordError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }
    pub fn u64(&mut self) -> Result<u64, RecordError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    pub fn sats(&mut self) -> Result<Sats, RecordError> {
        let v = self.u64()?;
        Sats::checked(v).ok_or_else(|| self.err(format!("{v} sats exceeds 21M BTC")))
    }
    pub fn bytes32(&mut self) -> Result<[u8; 32], RecordError> {
        self.array()
    }
    /// `N` bytes.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// A list length, bounded by what the remaining bytes could hold at
    /// `min_size` bytes per element.
    pub fn len(&mut self, min_size: usize) -> Result<usize, RecordError> {
        let n = self.u32()? as usize;
        if n > MAX_LIST || n.saturating_mul(min_size.max(1)) > self.bytes.len() {
            return Err(self.err(format!("list of {n} does not fit the record")));
        }
        Ok(n)
    }
    pub fn var_bytes(&mut self) -> Result<Vec<u8>, RecordError> {
        let n = self.len(1)?;
        Ok(self.take(n)?.to_vec())
    }
    pub fn outpoint(&mut self) -> Result<OutPoint, RecordError> {
        Ok(OutPoint {
            txid: Txid::from_byte_array(self.bytes32()?),
            vout: self.u32()?,
        })
    }
    /// Refuses trailing bytes: one record has one encoding.
    pub fn finish(self) -> Result<(), RecordError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes", self.bytes.len())))
        }
    }
}

/// Version byte of the current record layouts.
const RECORD_V1: u8 = 1;
/// Version byte of a UTXO record that carries its creation time, and of a
/// batch record that carries its epochs.
const RECORD_V2: u8 = 2;
/// Version byte of a UTXO record that carries its creation time and epoch.
const RECORD_V3: u8 = 3;

impl Utxo {
    /// Writes the UTXO (amount, owner) without a version byte: the form
    /// the state root hashes and batch records embed (no creation time).
    pub fn write(&self, w: &mut Writer) {
        w.sats(self.amount);
        match &self.owner {
            Owner::Deposit(a) => {
                w.u8(0);
                w.bytes32(a);
            }
            Owner::Change => w.u8(1),
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Utxo, RecordError> {
        let amount = r.sats()?;
        let owner = match r.u8()? {
            0 => Owner::Deposit(r.bytes32()?),
            1 => Owner::Change,
            t => return Err(r.err(format!("unknown owner tag {t}"))),
        };
        Ok(Utxo {
            amount,
            owner,
            created_ms: 0,
            epoch: 0,
        })
    }

    /// The stored record: version byte 3, fields, creation time (u64 ms),
    /// epoch (u32).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(RECORD_V3);
        self.write(&mut w);
        w.u64(self.created_ms);
        w.u32(self.epoch);
        w.buf
    }

    /// Parses [`Utxo::encode`]'s bytes; a version-1 record (before the
    /// creation time existed) reads with `created_ms` 0, a version-1 or 2
    /// record (before epochs had descriptors) with `epoch` 0.
    pub fn decode(bytes: &[u8]) -> Result<Utxo, RecordError> {
        let mut r = Reader::new(bytes, "utxo");
        let v = r.u8()?;
        if !(RECORD_V1..=RECORD_V3).contains(&v) {
            return Err(r.err(format!("unknown record version {v}")));
        }
        let mut u = Utxo::read(&mut r)?;
        if v >= RECORD_V2 {
            u.created_ms = r.u64()?;
        }
        if v >= RECORD_V3 {
            u.epoch = r.u32()?;
        }
        r.finish()?;
        Ok(u)
    }
}

fn version(r: &mut Reader<'_>) -> Result<(), RecordError> {
    match r.u8()? {
        RECORD_V1 => Ok(()),
        v => Err(r.err(format!("unknown record version {v}"))),
    }
}

impl QuoteGrace {
    /// Writes a quote grace list (count, then rate and until-time of each)
    /// without a version byte (as the state root hashes it).
    pub fn write_list(list: &[QuoteGrace], w: &mut Writer) {
        w.len(list.len());
        for g in list {
            w.u64(g.rate.0);
            w.u64(g.until_ms);
        }
    }

    /// The stored record of a quote grace list: version byte + list.
    pub fn encode_list(list: &[QuoteGrace]) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(RECORD_V1);
        QuoteGrace::write_list(list, &mut w);
        w.buf
    }

    /// Parses [`QuoteGrace::encode_list`]'s bytes.
    pub fn decode_list(bytes: &[u8]) -> Result<Vec<QuoteGrace>, RecordError> {
        let mut r = Reader::new(bytes, "quote grace");
        version(&mut r)?;
        let n = r.len(16)?;
        let mut list = Vec::with_capacity(n);
        for _ in 0..n {
            list.push(QuoteGrace {
                rate: FeeRate(r.u64()?),
                until_ms: r.u64()?,
            });
        }
        r.finish()?;
        Ok(list)
    }
}

impl Batch {
    /// Writes the batch without a version byte (as the state root hashes it).
    pub fn write(&self, w: &mut Writer) {
        w.u64(self.id.0);
        w.len(self.inputs.len());
        for (o, u) in &self.inputs {
            w.outpoint(o);
            u.write(w);
        }
        w.len(self.outputs.len());
        for o in &self.outputs {
            w.u64(o.withdrawal.0);
            w.var_bytes(o.address.as_bytes());
            w.var_bytes(o.script_pubkey.as_bytes());
            w.sats(o.amount);
            w.bytes32(&o.account);
        }
        w.len(self.versions.len());
        for v in &self.versions {
            w.u64(v.fee_rate.0);
            w.sats(v.fee);
            w.sats(v.change);
            w.bytes32(v.txid.as_byte_array());
            w.u64(v.height.0);
            w.len(v.signatures.len());
            for (member, sigs) in &v.signatures {
                w.u32(member.0);
                w.len(sigs.len());
                for s in sigs {
                    w.var_bytes(s);
                }
            }
            w.len(v.bump_votes.len());
            for m in &v.bump_votes {
                w.u32(m.0);
            }
        }
        w.u64(self.created_height.0);
        w.sats(self.fee_reserved);
        match &self.confirmed {
            None => w.u8(0),
            Some(c) => {
                w.u8(1);
                w.u32(c.version);
                w.bytes32(c.bitcoin_block.as_byte_array());
                w.u64(c.height.0);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Batch, RecordError> {
        let id = r.u64()?;
        let n = r.len(36 + 9)?;
        let mut inputs = Vec::with_capacity(n);
        for _ in 0..n {
            inputs.push((r.outpoint()?, Utxo::read(r)?));
        }
        let n = r.len(8 + 4 + 4 + 8 + 32)?;
        let mut outputs = Vec::with_capacity(n);
        for _ in 0..n {
            let withdrawal = r.u64()?;
            let address = String::from_utf8(r.var_bytes()?)
                .map_err(|_| r.err("withdrawal address is not UTF-8"))?;
            outputs.push(BatchOutput {
                withdrawal: WithdrawalId(withdrawal),
                address,
                script_pubkey: ScriptBuf::from_bytes(r.var_bytes()?),
                amount: r.sats()?,
                account: r.bytes32()?,
            });
        }
        let n = r.len(8 * 3 + 32 + 8 + 8)?;
        let mut versions = Vec::with_capacity(n);
        for _ in 0..n {
            let fee_rate = r.u64()?;
            let fee = r.sats()?;
            let change = r.sats()?;
            let txid = Txid::from_byte_array(r.bytes32()?);
            let height = r.u64()?;
            let mut signatures = BTreeMap::new();
            for _ in 0..r.len(8)? {
                let member = MemberIndex(r.u32()?);
                let k = r.len(4)?;
                let mut sigs = Vec::with_capacity(k);
                for _ in 0..k {
                    sigs.push(r.var_bytes()?);
                }
                signatures.insert(member, sigs);
            }
            let mut bump_votes = BTreeSet::new();
            for _ in 0..r.len(4)? {
                bump_votes.insert(MemberIndex(r.u32()?));
            }
            versions.push(BatchVersion {
                fee_rate: FeeRate(fee_rate),
                fee,
                change,
                txid,
                height: Height(height),
                signatures,
                bump_votes,
            });
        }
        if versions.is_empty() {
            return Err(r.err("a batch has at least one version"));
        }
        let created_height = r.u64()?;
        let fee_reserved = r.sats()?;
        let confirmed = match r.u8()? {
            0 => None,
            1 => Some(Confirmation {
                version: r.u32()?,
                bitcoin_block: BlockHash::from_byte_array(r.bytes32()?),
                height: Height(r.u64()?),
            }),
            t => return Err(r.err(format!("bad option tag {t}"))),
        };
        if confirmed
            .as_ref()
            .is_some_and(|c| c.version as usize >= versions.len())
        {
            return Err(r.err("confirmed version is not one of the batch's versions"));
        }
        Ok(Batch {
            id: BatchId(id),
            inputs,
            outputs,
            versions,
            created_height: Height(created_height),
            fee_reserved,
            confirmed,
            epoch: 0,
            change_epoch: 0,
        })
    }

    /// Writes the epochs of the inputs and of the change (after
    /// [`Batch::write`] in a stored record; the state root writes them
    /// only when not 0, see [`crate::state_root`]).
    pub fn write_epochs(&self, w: &mut Writer) {
        w.u32(self.epoch);
        w.u32(self.change_epoch);
    }

    /// The stored record: version byte 2, fields, epoch of the inputs and
    /// of the change (u32 each).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(RECORD_V2);
        self.write(&mut w);
        self.write_epochs(&mut w);
        w.buf
    }

    /// Parses [`Batch::encode`]'s bytes; a version-1 record (before epochs
    /// had descriptors) reads as epoch 0 (inputs and change).
    pub fn decode(bytes: &[u8]) -> Result<Batch, RecordError> {
        let mut r = Reader::new(bytes, "peg-out batch");
        let v = r.u8()?;
        if v != RECORD_V1 && v != RECORD_V2 {
            return Err(r.err(format!("unknown record version {v}")));
        }
        let mut b = Batch::read(&mut r)?;
        if v == RECORD_V2 {
            b.epoch = r.u32()?;
            b.change_epoch = r.u32()?;
            for (_, u) in &mut b.inputs {
                u.epoch = b.epoch;
            }
        }
        r.finish()?;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn outpoint() -> impl Strategy<Value = OutPoint> {
        (any::<[u8; 32]>(), any::<u32>()).prop_map(|(t, vout)| OutPoint {
            txid: Txid::from_byte_array(t),
            vout,
        })
    }

    fn amount() -> impl Strategy<Value = Sats> {
        (0..=Sats::MAX.to_sat()).prop_map(crate::testing::sats)
    }

    fn utxo() -> impl Strategy<Value = Utxo> {
        // Batch records embed inputs without their creation time: 0 here.
        (
            amount(),
            proptest::option::of(any::<[u8; 32]>()),
            any::<u32>(),
        )
            .prop_map(|(amount, a, epoch)| Utxo {
                amount,
                owner: a.map_or(Owner::Change, Owner::Deposit),
                created_ms: 0,
                epoch,
            })
    }

    fn version() -> impl Strategy<Value = BatchVersion> {
        (
            any::<u64>(),
            amount(),
            amount(),
            any::<[u8; 32]>(),
            any::<u64>(),
            proptest::collection::btree_map(
                any::<u32>(),
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..4),
                0..4,
            ),
            proptest::collection::btree_set(any::<u32>(), 0..4),
        )
            .prop_map(
                |(fee_rate, fee, change, txid, height, signatures, bump_votes)| BatchVersion {
                    fee_rate: FeeRate(fee_rate),
                    fee,
                    change,
                    txid: Txid::from_byte_array(txid),
                    height: Height(height),
                    signatures: signatures
                        .into_iter()
                        .map(|(m, s)| (MemberIndex(m), s))
                        .collect(),
                    bump_votes: bump_votes.into_iter().map(MemberIndex).collect(),
                },
            )
    }

    fn batch() -> impl Strategy<Value = Batch> {
        (
            any::<u64>(),
            proptest::collection::vec((outpoint(), utxo()), 0..5),
            proptest::collection::vec(
                (any::<u64>(), "[a-z0-9]{0,70}", amount(), any::<[u8; 32]>()),
                0..5,
            ),
            proptest::collection::vec(version(), 1..4),
            any::<u64>(),
            amount(),
            proptest::option::of((any::<u32>(), any::<[u8; 32]>(), any::<u64>())),
            (any::<u32>(), any::<u32>()),
        )
            .prop_map(
                |(id, inputs, outputs, versions, created_height, fee_reserved, c, epochs)| {
                    let n_versions = versions.len() as u32;
                    Batch {
                        id: BatchId(id),
                        // Inputs carry the batch's epoch.
                        inputs: inputs
                            .into_iter()
                            .map(|(o, u)| {
                                (
                                    o,
                                    Utxo {
                                        epoch: epochs.0,
                                        ..u
                                    },
                                )
                            })
                            .collect(),
                        outputs: outputs
                            .into_iter()
                            .map(|(withdrawal, address, amount, account)| BatchOutput {
                                withdrawal: WithdrawalId(withdrawal),
                                script_pubkey: ScriptBuf::from_bytes(address.as_bytes().to_vec()),
                                address,
                                amount,
                                account,
                            })
                            .collect(),
                        versions,
                        created_height: Height(created_height),
                        fee_reserved,
                        confirmed: c.map(|(version, block, height)| Confirmation {
                            // Some version of this batch (1..4 of them).
                            version: version % n_versions,
                            bitcoin_block: BlockHash::from_byte_array(block),
                            height: Height(height),
                        }),
                        epoch: epochs.0,
                        change_epoch: epochs.1,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn batches_round_trip(b in batch()) {
            prop_assert_eq!(Batch::decode(&b.encode()).unwrap(), b);
        }

        #[test]
        fn utxos_round_trip(u in utxo()) {
            prop_assert_eq!(Utxo::decode(&u.encode()).unwrap(), u);
        }

        #[test]
        fn quote_grace_lists_round_trip_and_refuse_cuts(
            list in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let list: Vec<QuoteGrace> = list
                .into_iter()
                .map(|(rate, until_ms)| QuoteGrace { rate: FeeRate(rate), until_ms })
                .collect();
            let bytes = QuoteGrace::encode_list(&list);
            prop_assert_eq!(QuoteGrace::decode_list(&bytes).unwrap(), list);
            let n = cut.index(bytes.len());
            prop_assert!(QuoteGrace::decode_list(&bytes[..n]).is_err());
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(QuoteGrace::decode_list(&longer).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Batch::decode(&bytes);
            let _ = Utxo::decode(&bytes);
            let _ = QuoteGrace::decode_list(&bytes);
        }

        #[test]
        fn any_cut_of_a_batch_is_refused(b in batch(), cut in any::<prop::sample::Index>()) {
            let bytes = b.encode();
            let n = cut.index(bytes.len());
            prop_assert!(Batch::decode(&bytes[..n]).is_err());
        }
    }

    /// Versions without signatures or bump votes are the smallest records
    /// (72 bytes each): the length bound must still admit many of them.
    #[test]
    fn a_batch_of_many_bare_versions_round_trips() {
        let v = BatchVersion {
            fee_rate: FeeRate(2),
            fee: crate::testing::sats(300),
            change: Sats::ZERO,
            txid: Txid::from_byte_array([4; 32]),
            height: Height(9),
            signatures: BTreeMap::new(),
            bump_votes: BTreeSet::new(),
        };
        let b = Batch {
            id: BatchId(1),
            inputs: vec![],
            outputs: vec![],
            versions: vec![v; 16],
            created_height: Height(9),
            fee_reserved: crate::testing::sats(300),
            confirmed: None,
            epoch: 0,
            change_epoch: 0,
        };
        assert_eq!(Batch::decode(&b.encode()).unwrap(), b);
    }

    #[test]
    fn a_confirmation_naming_a_version_the_batch_lacks_is_refused() {
        let mut b = Batch {
            id: BatchId(1),
            inputs: vec![],
            outputs: vec![],
            versions: vec![BatchVersion {
                fee_rate: FeeRate(2),
                fee: Sats::ZERO,
                change: Sats::ZERO,
                txid: Txid::from_byte_array([4; 32]),
                height: Height(9),
                signatures: BTreeMap::new(),
                bump_votes: BTreeSet::new(),
            }],
            created_height: Height(9),
            fee_reserved: Sats::ZERO,
            confirmed: Some(Confirmation {
                version: 0,
                bitcoin_block: BlockHash::from_byte_array([5; 32]),
                height: Height(10),
            }),
            epoch: 0,
            change_epoch: 0,
        };
        assert!(Batch::decode(&b.encode()).is_ok());
        if let Some(c) = &mut b.confirmed {
            c.version = 1;
        }
        assert!(Batch::decode(&b.encode()).is_err());
    }

    /// A version-1 UTXO record (before the creation time) still reads, as
    /// created at 0 in epoch 0; a version-2 one (before epochs had
    /// descriptors) reads its time, in epoch 0; version 3 round-trips
    /// both; others are refused.
    #[test]
    fn utxo_records_of_every_version_read() {
        let u = Utxo {
            amount: crate::testing::sats(5),
            owner: Owner::Deposit([3; 32]),
            created_ms: 1_700_000_000_000,
            epoch: 7,
        };
        assert_eq!(u.encode()[0], RECORD_V3);
        assert_eq!(Utxo::decode(&u.encode()).unwrap(), u);
        let mut w = Writer::default();
        w.u8(RECORD_V1);
        u.write(&mut w);
        let v1 = Utxo::decode(&w.buf).unwrap();
        assert_eq!(
            v1,
            Utxo {
                created_ms: 0,
                epoch: 0,
                ..u
            }
        );
        let mut w = Writer::default();
        w.u8(RECORD_V2);
        u.write(&mut w);
        w.u64(u.created_ms);
        assert_eq!(Utxo::decode(&w.buf).unwrap(), Utxo { epoch: 0, ..u });
        let mut bad = u.encode();
        bad[0] = 4;
        assert!(Utxo::decode(&bad).is_err());
        let mut short = u.encode();
        short.pop();
        assert!(Utxo::decode(&short).is_err());
    }

    #[test]
    fn amounts_above_21_million_btc_are_refused() {
        let u = Utxo {
            amount: Sats::MAX,
            owner: Owner::Change,
            created_ms: 7,
            epoch: 0,
        };
        let mut bytes = u.encode();
        assert!(Utxo::decode(&bytes).is_ok());
        bytes[1..9].copy_from_slice(&(Sats::MAX.to_sat() + 1).to_be_bytes());
        assert!(Utxo::decode(&bytes)
            .unwrap_err()
            .to_string()
            .contains("21M"));
    }
}
