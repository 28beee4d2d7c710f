//! The consensus write-ahead log: every own proposal and vote is appended
//! and fsynced here *before* it is sent, so a member that crashes and
//! restarts never signs a conflicting message for a (height, round, step)
//! it already signed (see `fedpeg_consensus::Output::Persist`).
//!
//! The block a member proposes or votes for is written too, before the
//! message: a member that restarts after voting can still store the block
//! its own WAL makes it decide, even with no peer to fetch it from.
//!
//! Record format: `len u32 BE || check[4] || kind u8 || body`, where check is
//! the first 4 bytes of SHA-256(kind || body); kind 1 is a consensus
//! `WalEntry` (the consensus crate's encoding), kind 2 a block (protobuf).
//! A torn last record (crash mid-write) was never fsynced, hence never
//! sent: reading stops there and truncates it away.

use fedpeg_consensus::WalEntry;
use fedpeg_ledger::block::Block;
use fedpeg_proto::v1 as pb;
use prost::Message;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Largest record accepted when reading (blocks are at most a few MiB).
const MAX_RECORD: usize = 64 * 1024 * 1024;
const KIND_ENTRY: u8 = 1;
const KIND_BLOCK: u8 = 2;

/// What a WAL holds.
#[derive(Default)]
pub struct WalContents {
    pub entries: Vec<WalEntry>,
    pub blocks: Vec<Block>,
}

/// Why the WAL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("consensus WAL {0}: {1}")]
    Io(String, std::io::Error),
    #[error("consensus WAL {0}: the record at byte {1} is intact but this build cannot read it; refusing to start rather than forget a vote and risk signing twice (run the build that wrote it until its height is final, then remove the WAL)")]
    Unreadable(String, usize),
    #[error("consensus WAL {0}: refusing to record an own message at height {1}, below this member's vote floor {2} (it was restored from a backup and may have signed there before); this is a bug, the message is not sent")]
    BelowVoteFloor(String, u64, u64),
}

/// An open write-ahead log.
pub struct Wal {
    path: PathBuf,
    file: File,
    /// Own messages below this height are refused (a restored member's
    /// vote floor, see [`crate::driver::rejoin`]).
    floor: u64,
}

fn check(payload: &[u8]) -> [u8; 4] {
    let d = Sha256::digest(payload);
    [d[0], d[1], d[2], d[3]]
}

impl Wal {
    /// Opens (or creates) the WAL and returns what it holds.
    pub fn open(path: &Path) -> Result<(Wal, WalContents), WalError> {
        let err = |e| WalError::Io(path.display().to_string(), e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(err)?;
        let mut contents = WalContents::default();
        let mut at = 0usize;
        while let Some(header) = bytes.get(at..at + 8) {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let Some(payload) = bytes
                .get(at + 8..at + 8 + len)
                .filter(|_| len <= MAX_RECORD)
            else {
                break;
            };
            if header[4..8] != check(payload) {
                break;
            }
            // The record is whole (its checksum holds): what it says must
            // not be lost by truncating the file behind it.
            match payload.split_first() {
                Some((&KIND_ENTRY, body)) => match WalEntry::decode(body) {
                    Ok(e) => contents.entries.push(e),
                    // A vote this build cannot read: truncating would forget
                    // it and every later one, and the member could sign
                    // twice. Stop instead.
                    Err(_) => {
                        return Err(WalError::Unreadable(path.display().to_string(), at));
                    }
                },
                // A cached block this build refuses (e.g. stricter checks):
                // it can be fetched again; the votes after it are kept.
                Some((&KIND_BLOCK, body)) => {
                    match pb::Block::decode(body)
                        .ok()
                        .and_then(|b| Block::from_proto(&b).ok())
                    {
                        Some(b) => contents.blocks.push(b),
                        None => {
                            tracing::warn!(path = %path.display(), at, "skipping a block in the consensus WAL that this build cannot read")
                        }
                    }
                }
                _ => return Err(WalError::Unreadable(path.display().to_string(), at)),
            }
            at += 8 + len;
        }
        if at != bytes.len() {
            tracing::warn!(path = %path.display(), valid = at, total = bytes.len(), "truncating torn tail of consensus WAL");
            file.set_len(at as u64).map_err(err)?;
            file.sync_all().map_err(err)?;
        }
        file.seek(SeekFrom::End(0)).map_err(err)?;
        Ok((
            Wal {
                path: path.to_path_buf(),
                file,
                floor: 0,
            },
            contents,
        ))
    }

    fn record(kind: u8, body: &[u8], out: &mut Vec<u8>) {
        let mut payload = Vec::with_capacity(1 + body.len());
        payload.push(kind);
        payload.extend_from_slice(body);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&check(&payload));
        out.extend_from_slice(&payload);
    }

    /// From now on, refuses own entries below `floor`: every own message
    /// is written here before it is sent, so none below it can leave.
    pub fn set_vote_floor(&mut self, floor: u64) {
        self.floor = self.floor.max(floor);
    }

    /// Appends an entry (after `block`, if given) and fsyncs before returning.
    pub fn append(&mut self, block: Option<&Block>, entry: &WalEntry) -> Result<(), WalError> {
        if entry.is_own() && entry.height().0 < self.floor {
            return Err(WalError::BelowVoteFloor(
                self.path.display().to_string(),
                entry.height().0,
                self.floor,
            ));
        }
        let mut rec = Vec::new();
        if let Some(b) = block {
            Self::record(KIND_BLOCK, &b.to_proto().encode_to_vec(), &mut rec);
        }
        Self::record(KIND_ENTRY, &entry.encode(), &mut rec);
        let err = |e| WalError::Io(self.path.display().to_string(), e);
        self.file.write_all(&rec).map_err(err)?;
        self.file.sync_data().map_err(err)
    }

    /// Empties the WAL once its height is decided and stored.
    pub fn reset(&mut self) -> Result<(), WalError> {
        let err = |e| WalError::Io(self.path.display().to_string(), e);
        self.file.set_len(0).map_err(err)?;
        self.file.seek(SeekFrom::Start(0)).map_err(err)?;
        self.file.sync_data().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpeg_consensus::{ChainId, Height, Round, SignedVote, SigningKey, ValueId, VoteKind};

    fn block() -> Block {
        use fedpeg_ledger::block::Header;
        use fedpeg_ledger::hash::Hash32;
        Block {
            header: Header {
                chain_id: Hash32::ZERO,
                height: Height(3),
                parent: Hash32::ZERO,
                time_ms: 5,
                proposer: 0,
                tx_root: fedpeg_ledger::block::tx_root(&[], &[]),
                state_root: Hash32::ZERO,
            },
            txs: vec![],
            fed_txs: vec![],
        }
    }

    fn entry(round: u32) -> WalEntry {
        let key = SigningKey::from_bytes(&[7; 32]);
        WalEntry::Vote(SignedVote::sign(
            &ChainId([1; 32]),
            &key,
            fedpeg_consensus::ValidatorIndex(0),
            VoteKind::Prevote,
            Height(3),
            Round(round),
            Some(ValueId([9; 32])),
        ))
    }

    #[test]
    fn an_own_message_below_the_vote_floor_is_refused_and_not_written() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("wal");
        let (mut w, _) = Wal::open(&p).unwrap();
        w.set_vote_floor(4);
        // Height 3 is below: refused, nothing written.
        assert!(matches!(
            w.append(None, &entry(0)),
            Err(WalError::BelowVoteFloor(_, 3, 4))
        ));
        // The floor never goes down.
        w.set_vote_floor(2);
        assert!(w.append(None, &entry(0)).is_err());
        drop(w);
        let (_, c) = Wal::open(&p).unwrap();
        assert!(c.entries.is_empty());
    }

    #[test]
    fn entries_survive_reopen_and_torn_tail_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("wal");
        let (mut w, c) = Wal::open(&p).unwrap();
        assert!(c.entries.is_empty());
        w.append(Some(&block()), &entry(0)).unwrap();
        w.append(None, &entry(1)).unwrap();
        drop(w);
        // Simulate a crash mid-append: half a record at the end.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[0, 0, 0, 90, 1, 2, 3]).unwrap();
        drop(f);
        let (mut w, c) = Wal::open(&p).unwrap();
        assert_eq!(c.entries, vec![entry(0), entry(1)]);
        assert_eq!(c.blocks, vec![block()]);
        w.append(None, &entry(2)).unwrap();
        drop(w);
        let (mut w, c) = Wal::open(&p).unwrap();
        assert_eq!(c.entries.len(), 3);
        w.reset().unwrap();
        drop(w);
        let c = Wal::open(&p).unwrap().1;
        assert!(c.entries.is_empty() && c.blocks.is_empty());
    }

    #[test]
    fn corrupted_record_stops_reading() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("wal");
        let (mut w, _) = Wal::open(&p).unwrap();
        w.append(None, &entry(0)).unwrap();
        w.append(None, &entry(1)).unwrap();
        drop(w);
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(Wal::open(&p).unwrap().1.entries, vec![entry(0)]);
    }

    /// An intact record, as `append` frames it.
    fn raw_record(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut payload = vec![kind];
        payload.extend_from_slice(body);
        let mut r = (payload.len() as u32).to_be_bytes().to_vec();
        r.extend_from_slice(&check(&payload));
        r.extend_from_slice(&payload);
        r
    }

    /// A WAL holding vote `entry(0)`, then an intact record of `kind` whose
    /// body does not decode.
    fn wal_with_undecodable(kind: u8) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("wal");
        let (mut w, _) = Wal::open(&p).unwrap();
        w.append(None, &entry(0)).unwrap();
        drop(w);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&raw_record(kind, &[0xff, 0xff, 0xff])).unwrap();
        (d, p)
    }

    #[test]
    fn an_unreadable_intact_block_is_skipped_and_the_votes_after_it_are_kept() {
        let (_d, p) = wal_with_undecodable(KIND_BLOCK);
        let (mut w, _) = Wal::open(&p).unwrap();
        w.append(None, &entry(1)).unwrap();
        drop(w);
        let c = Wal::open(&p).unwrap().1;
        assert_eq!(c.entries, vec![entry(0), entry(1)]);
        assert!(c.blocks.is_empty());
    }

    #[test]
    fn an_unreadable_intact_vote_stops_the_node_instead_of_being_forgotten() {
        let (_d, p) = wal_with_undecodable(KIND_ENTRY);
        let before = std::fs::read(&p).unwrap();
        assert!(matches!(Wal::open(&p), Err(WalError::Unreadable(..))));
        assert_eq!(std::fs::read(&p).unwrap(), before, "nothing truncated");
    }
}
