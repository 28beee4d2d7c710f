//! Sidechain blocks: header, hash, transaction root, wire conversion.
//!
//! Block hash = `H_tag("fedpeg/block/v1", chain_id[32] || height u64 ||
//! parent[32] || time_ms u64 || proposer u32 || tx_root[32] || state_root[32])`
//! (integers big-endian). tx_root = `H_tag("fedpeg/txroot", txid_1 || sig_1 || … || txid_k || sig_k)`.

use crate::fedtx::FederationTx;
use crate::hash::Hash32;
use crate::tx::{DecodeError, Transaction};
use fedpeg_consensus::Height;
use fedpeg_proto::v1 as pb;
use prost::Message;

/// Block header; its hash identifies the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub chain_id: Hash32,
    pub height: Height,
    pub parent: Hash32,
    pub time_ms: u64,
    pub proposer: u32,
    pub tx_root: Hash32,
    pub state_root: Hash32,
}

/// A block: header plus ordered user and federation transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub header: Header,
    pub txs: Vec<Transaction>,
    pub fed_txs: Vec<FederationTx>,
}

/// Why block bytes are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockDecodeError {
    #[error("block does not decode: {0}")]
    Protobuf(String),
    #[error("block has no header")]
    MissingHeader,
    #[error("block header field '{0}' must be 32 bytes")]
    FieldLength(&'static str),
    #[error("transaction {0}: {1}")]
    Tx(usize, DecodeError),
    #[error("federation transaction {0}: {1}")]
    FedTx(usize, DecodeError),
}

impl Header {
    /// The block hash.
    pub fn hash(&self) -> Hash32 {
        Hash32::tagged(
            "fedpeg/block/v1",
            &[
                &self.chain_id.0,
                &self.height.0.to_be_bytes(),
                &self.parent.0,
                &self.time_ms.to_be_bytes(),
                &self.proposer.to_be_bytes(),
                &self.tx_root.0,
                &self.state_root.0,
            ],
        )
    }
}

/// Commitment to the ordered transactions, signatures included, so the block
/// hash pins the exact bytes every member validated: `H_tag("fedpeg/txroot",
/// count u32 || (txid || sig)* || (fedtxid || sig)*)`.
pub fn tx_root(txs: &[Transaction], fed_txs: &[FederationTx]) -> Hash32 {
    let mut buf = Vec::with_capacity(4 + (txs.len() + fed_txs.len()) * 96);
    buf.extend_from_slice(&(txs.len() as u32).to_be_bytes());
    for tx in txs {
        buf.extend_from_slice(&tx.id().0);
        buf.extend_from_slice(&tx.signature);
    }
    for f in fed_txs {
        buf.extend_from_slice(&f.id().0);
        buf.extend_from_slice(&f.signature);
    }
    Hash32::tagged("fedpeg/txroot", &[&buf])
}

impl Block {
    /// The block hash (hash of the header).
    pub fn hash(&self) -> Hash32 {
        self.header.hash()
    }

    /// Wire form.
    pub fn to_proto(&self) -> pb::Block {
        let h = &self.header;
        pb::Block {
            header: Some(pb::BlockHeader {
                chain_id: h.chain_id.0.to_vec(),
                height: h.height.0,
                parent_hash: h.parent.0.to_vec(),
                time_ms: h.time_ms,
                proposer: h.proposer,
                tx_root: h.tx_root.0.to_vec(),
                state_root: h.state_root.0.to_vec(),
            }),
            transactions: self.txs.iter().map(Transaction::to_proto).collect(),
            federation_txs: self.fed_txs.iter().map(FederationTx::to_proto).collect(),
        }
    }

    /// From the wire form, validating field lengths (not contents).
    pub fn from_proto(p: &pb::Block) -> Result<Block, BlockDecodeError> {
        let h = p.header.as_ref().ok_or(BlockDecodeError::MissingHeader)?;
        let f =
            |b: &[u8], name| Hash32::from_slice(b).map_err(|_| BlockDecodeError::FieldLength(name));
        let header = Header {
            chain_id: f(&h.chain_id, "chain_id")?,
            height: Height(h.height),
            parent: f(&h.parent_hash, "parent_hash")?,
            time_ms: h.time_ms,
            proposer: h.proposer,
            tx_root: f(&h.tx_root, "tx_root")?,
            state_root: f(&h.state_root, "state_root")?,
        };
        let txs = p
            .transactions
            .iter()
            .enumerate()
            .map(|(i, t)| Transaction::from_proto(t).map_err(|e| BlockDecodeError::Tx(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let fed_txs = p
            .federation_txs
            .iter()
            .enumerate()
            .map(|(i, t)| FederationTx::from_proto(t).map_err(|e| BlockDecodeError::FedTx(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Block {
            header,
            txs,
            fed_txs,
        })
    }
}

/// A block and the (consensus-encoded) certificate that finalized it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedBlock {
    pub block: Block,
    pub commit: Vec<u8>,
}

impl CommittedBlock {
    /// Protobuf bytes as stored on disk and sent by block sync.
    pub fn encode(&self) -> Vec<u8> {
        pb::CommittedBlock {
            block: Some(self.block.to_proto()),
            commit: self.commit.clone(),
        }
        .encode_to_vec()
    }

    /// Decodes stored or synced bytes.
    pub fn decode(bytes: &[u8]) -> Result<CommittedBlock, BlockDecodeError> {
        let p = pb::CommittedBlock::decode(bytes)
            .map_err(|e| BlockDecodeError::Protobuf(e.to_string()))?;
        let block = Block::from_proto(p.block.as_ref().ok_or(BlockDecodeError::MissingHeader)?)?;
        Ok(CommittedBlock {
            block,
            commit: p.commit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_commits_to_every_header_field() {
        let h = Header {
            chain_id: Hash32::tagged("c", &[]),
            height: Height(5),
            parent: Hash32::tagged("p", &[]),
            time_ms: 1000,
            proposer: 0,
            tx_root: tx_root(&[], &[]),
            state_root: Hash32::tagged("s", &[]),
        };
        let base = h.hash();
        let variants = [
            Header {
                height: Height(6),
                ..h.clone()
            },
            Header {
                time_ms: 1001,
                ..h.clone()
            },
            Header {
                proposer: 1,
                ..h.clone()
            },
            Header {
                parent: Hash32::ZERO,
                ..h.clone()
            },
            Header {
                tx_root: Hash32::ZERO,
                ..h.clone()
            },
            Header {
                state_root: Hash32::ZERO,
                ..h.clone()
            },
            Header {
                chain_id: Hash32::ZERO,
                ..h.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.hash(), base);
        }
    }

    #[test]
    fn committed_block_round_trip_and_garbage() {
        let b = CommittedBlock {
            block: Block {
                header: Header {
                    chain_id: Hash32::ZERO,
                    height: Height(1),
                    parent: Hash32::ZERO,
                    time_ms: 1,
                    proposer: 0,
                    tx_root: tx_root(&[], &[]),
                    state_root: Hash32::ZERO,
                },
                txs: vec![],
                fed_txs: vec![],
            },
            commit: vec![1, 2, 3],
        };
        assert_eq!(CommittedBlock::decode(&b.encode()).unwrap(), b);
        assert!(CommittedBlock::decode(&[0xff, 0x00, 0x12]).is_err());
        assert_eq!(
            CommittedBlock::decode(&[]),
            Err(BlockDecodeError::MissingHeader)
        );
    }
}
