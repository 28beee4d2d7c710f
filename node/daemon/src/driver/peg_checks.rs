//! The peg side of proposing and validating: this member's mints and fee
//! vote for its own proposals, and the check of another proposer's mints and
//! peg-out confirmations against this member's own bitcoind.

use super::*;
use fedpeg_peg::bitcoin::{BlockHash, Txid};

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
                            txid: {
                                use fedpeg_peg::bitcoin::hashes::Hash as _;
                                Txid::from_byte_array(fedpeg_keys::random_32())
                            },
                            vout: 0,
                        },
                        amount: fedpeg_ledger::amount::Sats::checked(1_000_000).unwrap_or_default(),
                        account,
                        block: {
                            use fedpeg_peg::bitcoin::hashes::Hash as _;
                            BlockHash::from_byte_array([0xfe; 32])
                        },
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
        let claims: Vec<(Txid, BlockHash)> = block
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
            let btc = w.bitcoin();
            let Ok((tip, _)) = btc.tip() else {
                return false;
            };
            claims.iter().all(|(txid, hint)| {
                crate::signer::confirmed_at_depth(&**btc, txid, Some(hint), tip, depth)
                    == Some(*hint)
            })
        });
        if !ok {
            tracing::warn!("block confirms a peg-out this member's bitcoind does not show at depth; voting against");
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::NetworkConfig;
    use crate::peg_testing::{account, consensus_key, PegNode, CONFIRMATIONS};
    use fedpeg_ledger::fedtx::OutPoint;
    use fedpeg_ledger::testing::sats;

    /// Member 0's driver of `node`'s chain with `watcher`, on a loopback
    /// network that reaches nobody.
    async fn driver(node: &PegNode, watcher: Option<Arc<Watcher>>) -> Driver {
        let members = crate::daemon::member_peers(&node.chain.spec).unwrap();
        let (events, _) = mpsc::channel(16);
        let (sync_requests, _) = mpsc::channel(16);
        let net = Network::start(
            NetworkConfig::new(
                Some(consensus_key(0).to_bytes()),
                "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
                members,
            ),
            events,
            sync_requests,
        )
        .await
        .unwrap();
        Driver::member(
            node.chain.clone(),
            net,
            consensus_key(0),
            node.dir.path(),
            DriverConfig {
                heartbeat: Duration::from_secs(1),
                sync_interval: Duration::from_secs(1),
            },
            Arc::new(ConsensusStatus::default()),
            watcher,
        )
        .unwrap()
    }

    /// A proposal carrying exactly `fed_txs` (the checks read only those).
    fn block_with(node: &PegNode, fed_txs: Vec<FederationTx>) -> Block {
        Block {
            fed_txs,
            ..node.proposal(vec![])
        }
    }

    /// A one-member federation with user 1 registered, its watcher, and a
    /// deposit of 250k sats to user 1 at `depth` (seen by the watcher).
    fn deposited(depth: u64) -> (PegNode, Arc<Watcher>, SeenDeposit) {
        let node = PegNode::new(1, 1);
        node.register(account(1));
        let d = node.deposit(account(1), 250_000);
        node.btc.mine(depth - 1);
        let w = node.watcher();
        w.poll().unwrap();
        (node, w, d)
    }

    /// A peg-out confirmation claim of `txid` in `block`.
    fn confirmation(node: &PegNode, txid: Txid, block: BlockHash) -> FederationTx {
        node.fed_tx(
            0,
            FedTxKind::PegOutConfirmed {
                batch: 0,
                txid,
                bitcoin_block: block,
            },
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mint_of_a_deposit_seen_at_depth_is_accepted() {
        let (node, w, d) = deposited(CONFIRMATIONS);
        let drv = driver(&node, Some(w)).await;
        assert!(drv.mints_confirmed(&block_with(&node, vec![node.mint_tx(&d)])));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mint_of_a_deposit_bitcoind_does_not_show_is_refused() {
        let (node, w, d) = deposited(CONFIRMATIONS);
        let drv = driver(&node, Some(w)).await;
        // What a Byzantine proposer mints: an outpoint that does not exist.
        let fake = SeenDeposit {
            outpoint: OutPoint {
                txid: fedpeg_ledger::testing::txid(0xab),
                vout: 0,
            },
            block: fedpeg_ledger::testing::block_hash(0xfe),
            ..d.clone()
        };
        let different = [
            fake,
            SeenDeposit {
                amount: sats(2_500_000),
                ..d.clone()
            },
            SeenDeposit {
                block: node.btc.best_tip().1,
                ..d.clone()
            },
        ];
        for bad in different {
            // One bad mint spoils a block with a good one.
            let block = block_with(&node, vec![node.mint_tx(&d), node.mint_tx(&bad)]);
            assert!(!drv.mints_confirmed(&block), "accepted {bad:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mint_below_depth_is_refused_until_bitcoind_shows_it_at_depth() {
        let (node, w, d) = deposited(CONFIRMATIONS - 1);
        let drv = driver(&node, Some(w.clone())).await;
        let block = block_with(&node, vec![node.mint_tx(&d)]);
        assert!(!drv.mints_confirmed(&block));
        // The proposer's bitcoind is one block ahead of our last poll: the
        // check polls again instead of refusing.
        node.btc.mine(1);
        assert!(!w.confirms(&d));
        assert!(drv.mints_confirmed(&block));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peg_out_confirmation_bitcoind_does_not_back_at_depth_is_refused() {
        let (node, w, _) = deposited(1);
        let drv = driver(&node, Some(w)).await;
        // Any confirmed transaction stands for the batch: the ledger, not
        // this check, ties the txid to a batch.
        let script = node.deposit_script(account(1));
        let paid = node
            .btc
            .fund(&script, fedpeg_peg::bitcoin::Amount::from_sat(1000));
        let txid = paid.txid;
        let block = node.btc.best_tip().1;
        let claim = |blk: BlockHash| block_with(&node, vec![confirmation(&node, txid, blk)]);
        node.btc.mine(CONFIRMATIONS - 2);
        assert!(!drv.pegouts_confirmed(&claim(block)), "one block short");
        node.btc.mine(1);
        assert!(drv.pegouts_confirmed(&claim(block)));
        // Not in the named block, or unknown: refused.
        let tip = node.btc.best_tip().1;
        assert!(!drv.pegouts_confirmed(&claim(tip)));
        let unknown = block_with(
            &node,
            vec![confirmation(
                &node,
                fedpeg_ledger::testing::txid(0xab),
                fedpeg_ledger::testing::block_hash(0xfe),
            )],
        );
        assert!(!drv.pegouts_confirmed(&unknown));
        // Reorged out of the best chain: refused again.
        node.btc
            .reorg(CONFIRMATIONS, vec![vec![]; CONFIRMATIONS as usize + 1])
            .unwrap();
        assert!(!drv.pegouts_confirmed(&claim(block)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peg_content_is_refused_without_a_reachable_bitcoind() {
        let (node, w, d) = deposited(CONFIRMATIONS);
        let txid = d.outpoint.txid;
        let claim = block_with(&node, vec![confirmation(&node, txid, d.block)]);
        let mint = block_with(&node, vec![node.mint_tx(&d)]);
        let plain = block_with(&node, vec![]);
        // With bitcoind up both are backed.
        let drv = driver(&node, Some(w)).await;
        assert!(drv.pegouts_confirmed(&claim));
        assert!(drv.mints_confirmed(&mint));
        // Down: the confirmation cannot be checked.
        node.btc.set_unavailable(true);
        assert!(!drv.pegouts_confirmed(&claim));
        assert!(drv.pegouts_confirmed(&plain) && drv.mints_confirmed(&plain));
        drop(drv);
        // No bitcoind configured at all: every peg claim is refused, blocks
        // without one pass.
        let blind = driver(&node, None).await;
        assert!(!blind.mints_confirmed(&mint));
        assert!(!blind.pegouts_confirmed(&claim));
        assert!(blind.mints_confirmed(&plain) && blind.pegouts_confirmed(&plain));
    }
}
