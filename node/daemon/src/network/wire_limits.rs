//! Element counts of a message, checked on its raw protobuf bytes before
//! prost allocates anything for it.
//!
//! prost decodes a repeated message field by pushing one struct (a few
//! hundred bytes) per entry, and an empty entry is two bytes on the wire: a
//! 16 MiB batch of empty entries costs gigabytes once decoded. So before
//! decoding, [`WireChecked::check`] walks the tags and lengths of the
//! message (no allocation) and counts the entries of every repeated field
//! against a cap per field and against a density bound: at most one entry
//! per [`MIN_ENTRY_BYTES`] bytes of the message (plus a little slack), which
//! every real message meets (the smallest real entry, a peg-out signature,
//! is 74 bytes) and which keeps a decoded message within a small multiple
//! of its size.
//!
//! The walk follows the field numbers of `proto/fedpeg/v1/types.proto`; the
//! tests encode real messages with prost to keep the two in step.

use super::*;

/// A real entry of a repeated field takes at least this many bytes of the
/// message (a transaction ~130, a vote ~100, a DER signature 72).
pub(crate) const MIN_ENTRY_BYTES: usize = 64;
/// Entries allowed beyond the density bound (small messages).
const ENTRY_SLACK: usize = 16;

/// Caps that depend on the chain (genesis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WireLimits {
    /// Most transactions in one block (genesis `max_block_txs`).
    pub(crate) max_block_txs: usize,
}

/// Why a message was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// Not protobuf framing (bad varint, truncated field, groups).
    #[error("malformed protobuf framing ({0})")]
    Malformed(&'static str),
    /// A repeated field has more entries than its cap.
    #[error("more than {max} {what}")]
    TooMany {
        /// Which field.
        what: &'static str,
        /// Its cap.
        max: usize,
    },
    /// More entries than the message's size allows.
    #[error("more than {max} repeated entries in a {bytes}-byte message (at most one per {MIN_ENTRY_BYTES} bytes)")]
    TooDense {
        /// Size of the message.
        bytes: usize,
        /// Entries it may hold.
        max: usize,
    },
}

/// A message the network reads: its element counts can be checked on the
/// raw bytes.
pub(crate) trait WireChecked: prost::Message + Default {
    /// `Ok` if decoding `bytes` allocates at most what the caps allow.
    fn check(bytes: &[u8], limits: &WireLimits) -> Result<(), WireError>;
}

impl WireChecked for pb::GossipBatch {
    fn check(bytes: &[u8], limits: &WireLimits) -> Result<(), WireError> {
        Walk::new(bytes, limits).gossip_batch(bytes)
    }
}

impl WireChecked for pb::SyncResponse {
    fn check(bytes: &[u8], limits: &WireLimits) -> Result<(), WireError> {
        Walk::new(bytes, limits).sync_response(bytes)
    }
}

impl WireChecked for pb::SyncRequest {
    // Scalars only: nothing to count (its size limit is 1 KiB).
    fn check(_: &[u8], _: &WireLimits) -> Result<(), WireError> {
        Ok(())
    }
}

impl WireChecked for () {
    fn check(_: &[u8], _: &WireLimits) -> Result<(), WireError> {
        Ok(())
    }
}

/// One field of a message on the wire.
enum Value<'a> {
    /// Length-delimited (bytes, string, message, packed).
    Len(&'a [u8]),
    /// Varint or fixed-width scalar.
    Scalar,
}

/// The fields of one message, in wire order.
struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The next field (number, value), reading only tags and lengths.
    fn next_field(&mut self) -> Option<Result<(u32, Value<'a>), WireError>> {
        if self.buf.is_empty() {
            return None;
        }
        Some(self.read_field())
    }

    fn read_field(&mut self) -> Result<(u32, Value<'a>), WireError> {
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| WireError::Malformed("field number"))?;
        if field == 0 {
            return Err(WireError::Malformed("field number 0"));
        }
        match key & 7 {
            0 => self.varint().map(|_| (field, Value::Scalar)),
            1 => self.skip(8).map(|_| (field, Value::Scalar)),
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| WireError::Malformed("length"))?;
                self.skip(len).map(|v| (field, Value::Len(v)))
            }
            5 => self.skip(4).map(|_| (field, Value::Scalar)),
            _ => Err(WireError::Malformed("unsupported wire type")),
        }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        prost::encoding::decode_varint(&mut self.buf).map_err(|_| WireError::Malformed("varint"))
    }

    fn skip(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Malformed("field runs past the end"));
        }
        let (value, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(value)
    }
}

/// Counts the repeated entries of one message against the caps.
struct Walk<'l> {
    limits: &'l WireLimits,
    entries: usize,
    max_entries: usize,
    bytes: usize,
}

impl<'l> Walk<'l> {
    fn new(message: &[u8], limits: &'l WireLimits) -> Self {
        Walk {
            limits,
            entries: 0,
            max_entries: message.len() / MIN_ENTRY_BYTES + ENTRY_SLACK,
            bytes: message.len(),
        }
    }

    /// Calls `f` with every length-delimited field of `buf` (number, bytes).
    fn each_len(
        &mut self,
        buf: &[u8],
        mut f: impl FnMut(&mut Self, u32, &[u8]) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        let mut fields = Fields { buf };
        while let Some(field) = fields.next_field() {
            if let (number, Value::Len(value)) = field? {
                f(self, number, value)?;
            }
        }
        Ok(())
    }

    /// Counts one more entry of a field already holding `*n` (cap `max`).
    fn entry(&mut self, n: &mut usize, max: usize, what: &'static str) -> Result<(), WireError> {
        *n += 1;
        if *n > max {
            return Err(WireError::TooMany { what, max });
        }
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(WireError::TooDense {
                bytes: self.bytes,
                max: self.max_entries,
            });
        }
        Ok(())
    }

    /// `GossipBatch { repeated GossipMessage messages = 1; }`
    fn gossip_batch(&mut self, buf: &[u8]) -> Result<(), WireError> {
        let mut n = 0;
        self.each_len(buf, |w, field, value| match field {
            1 => {
                w.entry(&mut n, MAX_GOSSIP_MESSAGES, "messages in a gossip batch")?;
                w.gossip_message(value)
            }
            _ => Ok(()),
        })
    }

    /// `GossipMessage { oneof { ..., Block proposed_block = 3; FederationTx federation_tx = 4; } }`
    fn gossip_message(&mut self, buf: &[u8]) -> Result<(), WireError> {
        self.each_len(buf, |w, field, value| match field {
            3 => w.block(value),
            4 => w.federation_tx(value),
            _ => Ok(()),
        })
    }

    /// `Block { repeated Transaction transactions = 2; repeated FederationTx federation_txs = 3; }`
    fn block(&mut self, buf: &[u8]) -> Result<(), WireError> {
        let (mut txs, mut fed_txs) = (0, 0);
        let max_txs = self.limits.max_block_txs;
        self.each_len(buf, |w, field, value| match field {
            2 => w.entry(&mut txs, max_txs, "transactions in a block"),
            3 => {
                w.entry(
                    &mut fed_txs,
                    fedpeg_ledger::MAX_BLOCK_FED_TXS,
                    "federation transactions in a block",
                )?;
                w.federation_tx(value)
            }
            _ => Ok(()),
        })
    }

    /// `FederationTx { oneof { ..., PegOutSignatures peg_out_signatures = 6;
    /// ... FederationChange federation_change = 9; } }`
    fn federation_tx(&mut self, buf: &[u8]) -> Result<(), WireError> {
        self.each_len(buf, |w, field, value| match field {
            6 => w.peg_out_signatures(value),
            9 => w.federation_change(value),
            _ => Ok(()),
        })
    }

    /// `FederationChange { repeated EpochMember members = 1; }` (a real
    /// member entry is about 100 bytes: two keys, a name, an address).
    fn federation_change(&mut self, buf: &[u8]) -> Result<(), WireError> {
        let mut n = 0;
        self.each_len(buf, |w, field, _| match field {
            1 => w.entry(
                &mut n,
                fedpeg_ledger::epoch::MAX_EPOCH_MEMBERS,
                "members in a federation change",
            ),
            _ => Ok(()),
        })
    }

    /// `PegOutSignatures { repeated bytes signatures = 3; }`
    fn peg_out_signatures(&mut self, buf: &[u8]) -> Result<(), WireError> {
        let mut n = 0;
        self.each_len(buf, |w, field, _| match field {
            3 => w.entry(
                &mut n,
                fedpeg_ledger::fedtx::MAX_PEGOUT_SIGNATURES,
                "signatures in a peg-out signature set",
            ),
            _ => Ok(()),
        })
    }

    /// `SyncResponse { repeated CommittedBlock blocks = 1; }`
    fn sync_response(&mut self, buf: &[u8]) -> Result<(), WireError> {
        let mut n = 0;
        self.each_len(buf, |w, field, value| match field {
            1 => {
                w.entry(
                    &mut n,
                    SYNC_MAX_BLOCKS as usize,
                    "blocks in a sync response",
                )?;
                w.committed_block(value)
            }
            _ => Ok(()),
        })
    }

    /// `CommittedBlock { Block block = 1; bytes commit = 2; }`
    fn committed_block(&mut self, buf: &[u8]) -> Result<(), WireError> {
        self.each_len(buf, |w, field, value| match field {
            1 => w.block(value),
            _ => Ok(()),
        })
    }
}
