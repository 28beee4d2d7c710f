//! What the store keeps for the explorer feed, written in the block's own
//! batch: `events` (height → the block's `ChainEvent`s, see
//! [`fedpeg_ledger::events::encode_events`]) and `account_txs` (account ‖ height ‖
//! index → ∅, the index behind paged account history).

use super::{corrupt, u64_at, Store, StoreError, TxLocation};
use fedpeg_ledger::account::AccountId;
use fedpeg_proto::v1 as pb;
use rocksdb::{Direction, IteratorMode, WriteBatch};

pub(super) const CF_EVENTS: &str = "events";
pub(super) const CF_ACCOUNT_TXS: &str = "account_txs";

/// A block's feed record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedRecord {
    /// Encoded events ([`fedpeg_ledger::events::encode_events`]); `None` records nothing.
    pub events: Option<Vec<u8>>,
    /// (account, transaction index) for each account a user transaction involves.
    pub account_txs: Vec<(AccountId, u32)>,
}

fn account_tx_key(account: &AccountId, height: u64, index: u32) -> [u8; 44] {
    let mut k = [0u8; 44];
    k[..32].copy_from_slice(&account.0);
    k[32..40].copy_from_slice(&height.to_be_bytes());
    k[40..].copy_from_slice(&index.to_be_bytes());
    k
}

impl Store {
    pub(super) fn put_feed_record(
        &self,
        batch: &mut WriteBatch,
        height: u64,
        feed: &FeedRecord,
    ) -> Result<(), StoreError> {
        if let Some(events) = &feed.events {
            batch.put_cf(self.cf(CF_EVENTS)?, height.to_be_bytes(), events);
        }
        let idx = self.cf(CF_ACCOUNT_TXS)?;
        for (account, index) in &feed.account_txs {
            batch.put_cf(idx, account_tx_key(account, height, *index), []);
        }
        Ok(())
    }

    /// The events of the block at `height`; `None` if none were recorded
    /// (no such block, or a block stored before the store kept events).
    pub fn block_events(&self, height: u64) -> Result<Option<Vec<pb::ChainEvent>>, StoreError> {
        match self.db.get_cf(self.cf(CF_EVENTS)?, height.to_be_bytes())? {
            None => Ok(None),
            Some(b) => fedpeg_ledger::events::decode_events(&b)
                .map(Some)
                .map_err(|e| corrupt(format!("events of height {height}: {e}"))),
        }
    }

    /// Up to `limit` locations of `account`'s transactions, newest first,
    /// strictly before `before` (height, index) when given.
    pub fn account_txs(
        &self,
        account: &AccountId,
        before: Option<TxLocation>,
        limit: usize,
    ) -> Result<Vec<TxLocation>, StoreError> {
        let start = match before {
            Some(b) => account_tx_key(account, b.height, b.index),
            None => account_tx_key(account, u64::MAX, u32::MAX),
        };
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_ACCOUNT_TXS)?,
            IteratorMode::From(&start, Direction::Reverse),
        );
        for item in iter {
            let (k, _) = item?;
            if k.len() != 44 || k[..32] != account.0 {
                break;
            }
            if before.is_some() && k[..] == start[..] {
                continue;
            }
            let height = u64_at(&k, 32)?;
            let index = u32::from_be_bytes([k[40], k[41], k[42], k[43]]);
            out.push(TxLocation { height, index });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedpeg_ledger::hash::Hash32;
    use fedpeg_ledger::State;

    #[test]
    fn account_history_pages_newest_first() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path(), Hash32::ZERO, &State::default()).unwrap();
        let (a, b) = (AccountId([1; 32]), AccountId([2; 32]));
        for h in 1..=5u64 {
            let mut batch = WriteBatch::default();
            let rec = FeedRecord {
                events: Some(vec![]),
                account_txs: vec![(a, 0), (a, 1), (b, 0)],
            };
            store.put_feed_record(&mut batch, h, &rec).unwrap();
            store.write_synced(batch).unwrap();
        }
        let first = store.account_txs(&a, None, 3).unwrap();
        let at = |height, index| TxLocation { height, index };
        assert_eq!(first, vec![at(5, 1), at(5, 0), at(4, 1)]);
        let next = store.account_txs(&a, Some(at(4, 1)), 100).unwrap();
        assert_eq!(next.len(), 7);
        assert_eq!(next[0], at(4, 0));
        assert_eq!(next[6], at(1, 0));
        assert!(store
            .account_txs(&AccountId([3; 32]), None, 10)
            .unwrap()
            .is_empty());
        assert_eq!(store.block_events(2).unwrap(), Some(vec![]));
        assert_eq!(store.block_events(9).unwrap(), None);
    }
}
