//! The peg side of proposing and validating: this member's mints and fee
//! vote for its own proposals, and the check of another proposer's mints and
//! peg-out confirmations against this member's own bitcoind.

use super::*;

impl Driver {
    /// Signed mints for deposits this member's watcher saw reach depth.
    pub(super) fn mint_candidates(&self) -> Vec<FederationTx> {
        let mut out = self.fee_vote().into_iter().collect::<Vec<_>>();
        out.extend(self.mints());
        out
    }

    /// This member's fee-rate vote, when its estimate differs from its
    /// recorded vote.
    pub(super) fn fee_vote(&self) -> Option<FederationTx> {
        let (me, key) = self.signer.as_ref()?;
        let rate = self
            .fee_pin
            .or_else(|| self.watcher.as_ref().and_then(|w| w.fee_estimate()))?;
        let rate = rate.clamp(1, fedpeg_ledger::MAX_FEE_RATE);
        let (height, recorded) = self
            .chain
            .with_state(|s| (s.height + 1, s.fee_votes.get(me).map(|(r, _)| *r)));
        (recorded != Some(rate)).then(|| {
            FederationTx::sign(
                self.chain.spec.chain_id,
                *me,
                key,
                FedTxKind::FeeRateVote {
                    sat_per_vbyte: rate,
                    height,
                },
            )
        })
    }

    /// Signed mints for deposits this member's watcher saw reach depth.
    pub(super) fn mints(&self) -> Vec<FederationTx> {
        let (Some(w), Some((me, key))) = (&self.watcher, &self.signer) else {
            return vec![];
        };
        #[cfg_attr(not(feature = "byzantine"), allow(unused_mut))]
        let mut mature = w.mature();
        #[cfg(feature = "byzantine")]
        if self.faults.propose_fake_mints {
            // Test-only Byzantine behaviour: mint a deposit that does not exist.
            if let Some(account) = self
                .chain
                .with_state(|s| s.registered.iter().next().copied())
            {
                mature.insert(
                    0,
                    SeenDeposit {
                        outpoint: fedpeg_ledger::fedtx::OutPoint {
                            txid: fedpeg_keys::random_32(),
                            vout: 0,
                        },
                        amount: fedpeg_ledger::amount::Sats(1_000_000),
                        account,
                        block: [0xfe; 32],
                        height: 1,
                    },
                );
            }
        }
        mature
            .into_iter()
            .take(MAX_MINTS_PER_BLOCK)
            .map(|d| {
                FederationTx::sign(
                    self.chain.spec.chain_id,
                    *me,
                    key,
                    FedTxKind::PegInMint {
                        outpoint: d.outpoint,
                        amount: d.amount,
                        account: d.account,
                        bitcoin_block: d.block,
                    },
                )
            })
            .collect()
    }

    /// Every mint in `block` must be a deposit this member's own bitcoind
    /// shows at depth; without a reachable bitcoind, no mint is confirmed.
    pub(super) fn mints_confirmed(&self, block: &Block) -> bool {
        let mints: Vec<SeenDeposit> = block
            .fed_txs
            .iter()
            .filter_map(|f| match &f.kind {
                FedTxKind::PegInMint {
                    outpoint,
                    amount,
                    account,
                    bitcoin_block,
                } => Some(SeenDeposit {
                    outpoint: *outpoint,
                    amount: *amount,
                    account: *account,
                    block: *bitcoin_block,
                    height: 0,
                }),
                _ => None,
            })
            .collect();
        if mints.is_empty() {
            return true;
        }
        let Some(w) = &self.watcher else {
            tracing::warn!(
                "block mints a deposit but this member has no bitcoind to check it; voting against"
            );
            return false;
        };
        if mints.iter().all(|m| w.confirms(m)) {
            return true;
        }
        // Our watcher may be a poll behind the proposer's: look again now.
        let _ = tokio::task::block_in_place(|| w.poll());
        let ok = mints.iter().all(|m| w.confirms(m));
        if !ok {
            tracing::warn!("block mints a deposit this member's bitcoind does not show at depth; voting against");
        }
        ok
    }

    /// Every peg-out confirmation in `block` must be a transaction this
    /// member's own bitcoind shows at depth in the named block.
    pub(super) fn pegouts_confirmed(&self, block: &Block) -> bool {
        let claims: Vec<([u8; 32], [u8; 32])> = block
            .fed_txs
            .iter()
            .filter_map(|f| match &f.kind {
                FedTxKind::PegOutConfirmed {
                    txid,
                    bitcoin_block,
                    ..
                } => Some((*txid, *bitcoin_block)),
                _ => None,
            })
            .collect();
        if claims.is_empty() {
            return true;
        }
        let Some(w) = &self.watcher else {
            tracing::warn!("block confirms a peg-out but this member has no bitcoind to check it; voting against");
            return false;
        };
        let depth = self.chain.params().confirmations as u64;
        let ok = tokio::task::block_in_place(|| {
            use fedpeg_peg::bitcoin::hashes::Hash;
            let btc = w.bitcoin();
            let Ok((tip, _)) = btc.tip() else {
                return false;
            };
            claims.iter().all(|(txid, blk)| {
                let hint = fedpeg_peg::bitcoin::BlockHash::from_byte_array(*blk);
                crate::signer::confirmed_at_depth(&**btc, txid, Some(&hint), tip, depth)
                    == Some(hint)
            })
        });
        if !ok {
            tracing::warn!("block confirms a peg-out this member's bitcoind does not show at depth; voting against");
        }
        ok
    }
}
