//! The proposed-block cache: block bodies gossiped for the height being
//! decided (and the next one), kept until they are decided or stale.
//!
//! - A block enters only if its body matches its header's `tx_root`: the
//!   hash a proposal or vote names then pins the exact transactions, so a
//!   wrong body under the right header is refused, never cached in place
//!   of the right one.
//! - Each member has its own quota ([`BLOCKS_PER_SENDER`]). A block is
//!   charged to whoever sent it until a signed proposal names it; then to
//!   that proposal's signer. A member flooding blocks evicts only its own.
//! - A new round drops the blocks older than the previous round, a new
//!   height everything at or below it; never the blocks the engine still
//!   needs (voted for, locked, valid: the `pinned` ids the driver passes).

use fedpeg_consensus::{Height, Round, ValueId};
use fedpeg_ledger::block::{tx_root, Block};
use fedpeg_ledger::BlockOutcome;
use std::collections::HashMap;

/// Most cached blocks charged to one member (an honest member proposes at
/// most one new block per round, and rounds older than the previous one
/// are dropped).
pub(super) const BLOCKS_PER_SENDER: usize = 4;

/// Who a cached block is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// This member's own proposal, or a block restored from the WAL.
    Own,
    /// A member, by genesis index.
    Member(usize),
}

/// A cached block and, once checked, its outcome.
pub(super) struct Cached {
    pub(super) block: Block,
    pub(super) outcome: Option<BlockOutcome>,
    owner: Owner,
    /// Round of the proposal naming it, else the round it arrived in.
    round: Round,
    /// True once a verified proposal names it.
    named: bool,
    /// Arrival order.
    seq: u64,
    /// Its signatures were handed to a pre-verification already.
    pub(super) preverify_started: bool,
}

/// Why a gossiped block was not cached.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refused {
    #[error("its body does not match the tx_root of its header")]
    TxRoot,
    #[error("the sender's quota of {BLOCKS_PER_SENDER} blocks holds blocks the engine needs")]
    Quota,
}

/// Proposed blocks by id (header hash).
#[derive(Default)]
pub(super) struct BlockCache {
    blocks: HashMap<ValueId, Cached>,
    seq: u64,
    /// The engine's round, as last reported.
    round: Round,
}

impl BlockCache {
    pub(super) fn get(&self, id: &ValueId) -> Option<&Cached> {
        self.blocks.get(id)
    }

    pub(super) fn get_mut(&mut self, id: &ValueId) -> Option<&mut Cached> {
        self.blocks.get_mut(id)
    }

    pub(super) fn contains(&self, id: &ValueId) -> bool {
        self.blocks.contains_key(id)
    }

    pub(super) fn remove(&mut self, id: &ValueId) -> Option<Cached> {
        self.blocks.remove(id)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.blocks.len()
    }

    /// This member's own proposal (with its outcome) or a block it wrote to
    /// its WAL: charged to no quota.
    pub(super) fn insert_own(&mut self, id: ValueId, block: Block, outcome: Option<BlockOutcome>) {
        let c = self.entry(block, outcome, Owner::Own);
        self.blocks.insert(id, c);
    }

    /// A block member `from` gossiped. Already cached: nothing changes.
    /// Over the sender's quota: its oldest block the engine does not need
    /// (not `pinned`, preferably one no proposal named) makes room.
    pub(super) fn offer(
        &mut self,
        from: usize,
        block: Block,
        pinned: &[ValueId],
    ) -> Result<ValueId, Refused> {
        if tx_root(&block.txs, &block.fed_txs) != block.header.tx_root {
            return Err(Refused::TxRoot);
        }
        let id = ValueId(block.hash().0);
        if self.blocks.contains_key(&id) {
            return Ok(id);
        }
        let owner = Owner::Member(from);
        let charged = self.blocks.values().filter(|c| c.owner == owner).count();
        if charged >= BLOCKS_PER_SENDER {
            let victim = self
                .blocks
                .iter()
                .filter(|(id, c)| c.owner == owner && !pinned.contains(id))
                .min_by_key(|(_, c)| (c.named, c.seq))
                .map(|(id, _)| *id)
                .ok_or(Refused::Quota)?;
            self.blocks.remove(&victim);
        }
        let c = self.entry(block, None, owner);
        self.blocks.insert(id, c);
        Ok(id)
    }

    /// True once a verified proposal names `id`.
    pub(super) fn is_named(&self, id: &ValueId) -> bool {
        self.blocks.get(id).is_some_and(|c| c.named)
    }

    /// A verified proposal of `proposer` names `id` in `round`: the block
    /// is now charged to the proposer (not to whoever relayed it).
    pub(super) fn named(&mut self, id: &ValueId, proposer: usize, round: Round) {
        if let Some(c) = self.blocks.get_mut(id) {
            if c.owner != Owner::Own {
                c.owner = Owner::Member(proposer);
            }
            c.named = true;
            c.round = c.round.max(round);
        }
    }

    /// The engine is in `round` of `height`: drops the blocks of `height`
    /// older than the previous round, unless `pinned`.
    pub(super) fn on_round(&mut self, height: u64, round: Round, pinned: &[ValueId]) {
        if round == self.round {
            return;
        }
        self.round = round;
        self.blocks.retain(|id, c| {
            c.block.header.height != Height(height)
                || c.round.0.saturating_add(1) >= round.0
                || pinned.contains(id)
        });
    }

    /// `height` is final: drops every block at or below it.
    pub(super) fn on_commit(&mut self, height: u64) {
        self.blocks
            .retain(|_, c| c.block.header.height > Height(height));
        self.round = Round(0);
        // What arrived early for the next height arrived, for it, in round 0.
        for c in self.blocks.values_mut().filter(|c| !c.named) {
            c.round = Round(0);
        }
    }

    fn entry(&mut self, block: Block, outcome: Option<BlockOutcome>, owner: Owner) -> Cached {
        self.seq += 1;
        Cached {
            block,
            outcome,
            owner,
            round: self.round,
            named: false,
            seq: self.seq,
            preverify_started: false,
        }
    }
}

/// A well-formed empty block (its body matches its tx_root) at `height`
/// that is nobody's proposal, made distinct by `i`.
#[cfg(test)]
pub(super) fn empty_block(chain_id: fedpeg_ledger::hash::Hash32, height: u64, i: u64) -> Block {
    use fedpeg_ledger::block::Header;
    use fedpeg_ledger::hash::Hash32;
    Block {
        header: Header {
            chain_id,
            height: Height(height),
            parent: Hash32::ZERO,
            time_ms: 1,
            proposer: 3,
            tx_root: tx_root(&[], &[]),
            state_root: Hash32::tagged("junk", &[&i.to_be_bytes()]),
        },
        txs: vec![],
        fed_txs: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpeg_ledger::hash::Hash32;

    fn block(height: u64, i: u64) -> Block {
        empty_block(Hash32::ZERO, height, i)
    }

    fn id(b: &Block) -> ValueId {
        ValueId(b.hash().0)
    }

    #[test]
    fn a_flooding_member_evicts_only_its_own_blocks() {
        let mut cache = BlockCache::default();
        let honest = block(1, 0);
        cache.offer(1, honest.clone(), &[]).unwrap();
        for i in 1..100 {
            cache.offer(3, block(1, i), &[]).unwrap();
        }
        assert!(cache.contains(&id(&honest)));
        assert_eq!(cache.len(), 1 + BLOCKS_PER_SENDER);
    }

    #[test]
    fn a_block_named_by_a_proposal_is_charged_to_its_proposer() {
        let mut cache = BlockCache::default();
        // Member 3 relays member 1's block first, then floods.
        let honest = block(1, 0);
        cache.offer(3, honest.clone(), &[]).unwrap();
        cache.named(&id(&honest), 1, Round(0));
        for i in 1..100 {
            cache.offer(3, block(1, i), &[]).unwrap();
        }
        assert!(cache.contains(&id(&honest)));
    }

    #[test]
    fn pinned_blocks_are_never_evicted() {
        let mut cache = BlockCache::default();
        let first = block(1, 0);
        let pinned = [id(&first)];
        cache.offer(3, first, &pinned).unwrap();
        for i in 1..100 {
            let _ = cache.offer(3, block(1, i), &pinned);
        }
        assert!(cache.contains(&pinned[0]));
        // Round 5 drops all but what the engine needs.
        cache.on_round(1, Round(5), &pinned);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_new_round_keeps_the_previous_rounds_blocks_and_a_commit_drops_its_height() {
        let mut cache = BlockCache::default();
        let (r0, r1, next) = (block(1, 0), block(1, 1), block(2, 2));
        cache.offer(0, r0.clone(), &[]).unwrap();
        cache.on_round(1, Round(1), &[]);
        cache.offer(1, r1.clone(), &[]).unwrap();
        cache.offer(2, next.clone(), &[]).unwrap();
        cache.on_round(1, Round(2), &[]);
        assert!(!cache.contains(&id(&r0)));
        assert!(cache.contains(&id(&r1)) && cache.contains(&id(&next)));
        cache.on_commit(1);
        assert!(!cache.contains(&id(&r1)) && cache.contains(&id(&next)));
    }

    #[test]
    fn a_body_that_does_not_match_its_tx_root_is_refused() {
        let mut cache = BlockCache::default();
        let mut b = block(1, 0);
        b.header.tx_root = Hash32::ZERO;
        assert_eq!(cache.offer(0, b, &[]), Err(Refused::TxRoot));
        assert_eq!(cache.len(), 0);
    }
}
