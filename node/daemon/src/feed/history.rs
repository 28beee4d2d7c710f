//! Paged history (ListBlocks, ListAccountTransactions) with opaque cursors
//! bound to their query.

use super::*;

/// Opaque page token: version, kind, position; hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// Next block height.
    Blocks(u64),
    /// Last transaction returned, and a tag of the account it pages
    /// (a cursor of one account is refused for another).
    AccountTxs(TxLocation, [u8; 4]),
}

/// The 4-byte tag of `account` in its history cursors.
pub(crate) fn account_tag(account: &AccountId) -> [u8; 4] {
    let h = fedpeg_ledger::hash::Hash32::tagged("fedpeg/history-cursor", &[&account.0]);
    [h.0[0], h.0[1], h.0[2], h.0[3]]
}

impl Cursor {
    pub(crate) fn encode(self) -> String {
        let mut b = vec![1u8];
        match self {
            Cursor::Blocks(h) => {
                b.push(b'b');
                b.extend_from_slice(&h.to_be_bytes());
            }
            Cursor::AccountTxs(l, tag) => {
                b.push(b'a');
                b.extend_from_slice(&l.height.to_be_bytes());
                b.extend_from_slice(&l.index.to_be_bytes());
                b.extend_from_slice(&tag);
            }
        }
        hex::encode(b)
    }

    pub(crate) fn decode(s: &str) -> Result<Cursor, Status> {
        let bad = || {
            Status::invalid_argument(
                "page_token is not one this node issued; pass next_page_token unchanged, or leave it empty for the first page",
            )
        };
        let b = hex::decode(s).map_err(|_| bad())?;
        let u64_at = |at: usize| {
            b.get(at..at + 8)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_be_bytes)
        };
        match (b.first(), b.get(1), b.len()) {
            (Some(1), Some(b'b'), 10) => u64_at(2).map(Cursor::Blocks).ok_or_else(bad),
            (Some(1), Some(b'a'), 18) => {
                let height = u64_at(2).ok_or_else(bad)?;
                let index = u32::from_be_bytes([b[10], b[11], b[12], b[13]]);
                Ok(Cursor::AccountTxs(
                    TxLocation { height, index },
                    [b[14], b[15], b[16], b[17]],
                ))
            }
            _ => Err(bad()),
        }
    }
}

impl Feed {
    pub(super) fn page_size(&self, requested: u32) -> Result<usize, Status> {
        match requested {
            0 => Ok(DEFAULT_PAGE_SIZE.min(self.cfg.max_page_size) as usize),
            n if n > self.cfg.max_page_size => Err(Status::invalid_argument(format!(
                "page_size {n} is above this node's limit of {} (explorer.max_page_size)",
                self.cfg.max_page_size
            ))),
            n => Ok(n as usize),
        }
    }

    /// ListBlocks.
    pub fn list_blocks(
        &self,
        req: &pb::ListBlocksRequest,
    ) -> Result<pb::ListBlocksResponse, Status> {
        let size = self.page_size(req.page_size)?;
        let tip = self.chain.height();
        let from = req.from_height.max(1);
        if from > tip.saturating_add(1) {
            return Err(Status::out_of_range(format!(
                "from_height {from} is beyond the next block (the tip is at height {tip})"
            )));
        }
        let to = if req.to_height == 0 {
            tip
        } else {
            req.to_height
        };
        if to > tip {
            return Err(Status::out_of_range(format!(
                "to_height {to} is beyond the tip at height {tip}"
            )));
        }
        if from > to {
            // Polling from last + 1 with nothing new: an empty page.
            if req.to_height == 0 {
                return Ok(pb::ListBlocksResponse::default());
            }
            return Err(Status::invalid_argument(format!(
                "from_height {from} is above to_height {to}"
            )));
        }
        let start = match req.page_token.as_str() {
            "" => from,
            t => match Cursor::decode(t)? {
                Cursor::Blocks(h) if (from..=to).contains(&h) => h,
                _ => {
                    return Err(Status::invalid_argument(
                        "page_token belongs to another query; repeat the query it came from, or leave it empty",
                    ))
                }
            },
        };
        let end = to.min(start.saturating_add(size as u64 - 1));
        let mut blocks = Vec::with_capacity((end + 1 - start) as usize);
        for h in start..=end {
            let (cb, events) = self.load(h)?;
            blocks.push(self.feed_block(&cb, events, req.include_raw, tip));
        }
        Ok(pb::ListBlocksResponse {
            blocks,
            next_page_token: if end < to {
                Cursor::Blocks(end + 1).encode()
            } else {
                String::new()
            },
        })
    }

    /// ListAccountTransactions.
    pub fn list_account_transactions(
        &self,
        req: &pb::ListAccountTransactionsRequest,
    ) -> Result<pb::ListAccountTransactionsResponse, Status> {
        let hrp = self.hrp();
        if req.address.trim().is_empty() {
            return Err(Status::invalid_argument(
                "address is empty; pass a fedpeg address (fprt1…)",
            ));
        }
        let id = AccountId::from_address(&req.address, hrp)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let size = self.page_size(req.page_size)?;
        let before =
            match req.page_token.as_str() {
                "" => None,
                t => match Cursor::decode(t)? {
                    Cursor::AccountTxs(l, tag) if tag == account_tag(&id) => Some(l),
                    Cursor::AccountTxs(..) => return Err(Status::invalid_argument(
                        "page_token belongs to another address; pass the token this address's previous page returned",
                    )),
                    Cursor::Blocks(_) => return Err(Status::invalid_argument(
                        "page_token came from ListBlocks; pass this query's own next_page_token",
                    )),
                },
            };
        // One more than a page tells whether another page follows.
        let mut locs = self.chain.account_txs(&id, before, size + 1)?;
        if locs.is_empty()
            && before.is_none()
            && !self.chain.with_state(|s| s.accounts.contains_key(&id))
        {
            return Err(Status::not_found(format!(
                "account {} has no transactions and no balance on this chain",
                req.address
            )));
        }
        let more = locs.len() > size;
        locs.truncate(size);
        let mut out = Vec::with_capacity(locs.len());
        let mut cached: Option<CommittedBlock> = None;
        for l in &locs {
            if cached.as_ref().map(|b| b.block.header.height)
                != Some(fedpeg_consensus::Height(l.height))
            {
                cached = Some(self.chain.block(l.height)?.ok_or_else(|| {
                    Status::internal(format!("indexed block {} is missing", l.height))
                })?);
            }
            let Some(cb) = cached.as_ref() else { continue };
            let tx = cb
                .block
                .txs
                .get(l.index as usize)
                .ok_or_else(|| Status::internal("account index points outside its block"))?;
            out.push(pb::AccountTransaction {
                transaction: Some(tx_view(tx, hrp)),
                height: l.height,
                index: l.index,
                block_hash: cb.block.hash().to_hex(),
                time_ms: cb.block.header.time_ms,
            });
        }
        Ok(pb::ListAccountTransactionsResponse {
            next_page_token: match (more, locs.last()) {
                (true, Some(l)) => Cursor::AccountTxs(*l, account_tag(&id)).encode(),
                _ => String::new(),
            },
            transactions: out,
        })
    }
}
