//! What arrives from the network: gossiped consensus messages, blocks and
//! transactions, and peers coming and going.

use super::*;
use fedpeg_ledger::fed_pool::FedAdmitError;
use fedpeg_ledger::FedTxError;

impl Driver {
    pub(super) fn on_net(&mut self, ev: NetEvent) -> anyhow::Result<()> {
        match ev {
            NetEvent::Gossip { from, batch } => self.on_gossip(from, batch),
            NetEvent::PeerConnected { peer, member } => {
                tracing::info!(%peer, ?member, "peer connected");
                Ok(())
            }
            NetEvent::PeerDisconnected { peer, member } => {
                tracing::info!(%peer, ?member, "peer disconnected");
                Ok(())
            }
        }
    }

    pub(super) fn on_gossip(&mut self, from: usize, batch: pb::GossipBatch) -> anyhow::Result<()> {
        let mut txs = Vec::new();
        let mut fed_txs = Vec::new();
        for m in batch.messages {
            match m.kind {
                Some(pb::gossip_message::Kind::Transaction(t)) => match Transaction::from_proto(&t)
                {
                    Ok(tx) => txs.push(tx),
                    Err(e) => {
                        tracing::debug!(from, error = %e, "dropping malformed gossiped transaction")
                    }
                },
                Some(pb::gossip_message::Kind::ProposedBlock(b)) => self.on_block(from, &b)?,
                Some(pb::gossip_message::Kind::FederationTx(f)) => {
                    match FederationTx::from_proto(&f) {
                        Ok(f) => fed_txs.push(f),
                        Err(e) => {
                            tracing::debug!(from, error = %e, "dropping malformed federation transaction")
                        }
                    }
                }
                Some(pb::gossip_message::Kind::Consensus(c)) => match Message::decode(&c.signed) {
                    Ok(msg) => {
                        if msg.height().0 > self.chain.height() + 1 {
                            // Peers are ahead of us: catch up by sync.
                            self.start_sync();
                        }
                        if self.engine.is_some() {
                            let input = match msg {
                                Message::Proposal(p) => self.on_proposal(p),
                                Message::Vote(v) => Some(Input::Vote(v)),
                            };
                            if let Some(input) = input {
                                self.input(input)?;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(from, error = %e, "dropping malformed consensus message")
                    }
                },
                None => {}
            }
        }
        if !txs.is_empty() || !fed_txs.is_empty() {
            let chain = self.chain.clone();
            let warn = self.warn_fed.clone();
            // Signature and state checks are CPU work: off the consensus loop.
            tokio::task::spawn_blocking(move || {
                // One batch per peer message: a peer relaying bad signatures
                // slows only its own batches.
                for r in chain.submit_txs(txs) {
                    if let Err(e) = r {
                        tracing::trace!(from, error = %e, "gossiped transaction not admitted");
                    }
                }
                for f in fed_txs {
                    let member = f.member;
                    let kind = fed_kind_name(&f.kind);
                    match chain.submit_fed_tx(f, false) {
                        // Bad signatures are a member misbehaving (or
                        // misconfigured): its operator should hear of it.
                        Err(
                            e @ FedAdmitError::Invalid(
                                FedTxError::BadSignature(_) | FedTxError::BadPegOutSignatures(_),
                            ),
                        ) => {
                            let check = warn.lock().map(|mut l| l.check());
                            if let Ok(Some(suppressed)) = check {
                                tracing::warn!(from, member = member.0, kind, suppressed, error = %e, "refused {kind} from a member");
                            }
                        }
                        Err(e) => {
                            tracing::debug!(from, member = member.0, kind, error = %e, "gossiped federation transaction not admitted");
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
        Ok(())
    }

    /// A proposal for the height being decided or the next is verified
    /// here, so that the block it names is charged to its signer in the
    /// block cache; others go to the engine, which drops or checks them.
    fn on_proposal(&mut self, p: SignedProposal) -> Option<Input> {
        let next = self.chain.height() + 1;
        if p.height.0 < next || p.height.0 > next + 1 {
            return Some(Input::Proposal(p));
        }
        let (value_id, proposer, round, height) = (p.value_id, p.proposer, p.round, p.height);
        let validators = match self.chain.validators_at(height) {
            Ok((epoch, _)) if epoch == self.epoch => self.validators.clone(),
            // The first height of the next epoch: verified against its set
            // for the block cache; the engine, still on this epoch's set,
            // would not know it (the proposer re-sends it).
            Ok((_, next)) => {
                if next
                    .verify_message(&self.chain_id, Message::Proposal(p))
                    .is_ok()
                {
                    self.blocks.named(&value_id, proposer.as_usize(), round);
                }
                return None;
            }
            Err(_) => return None,
        };
        match validators.verify_message(&self.chain_id, Message::Proposal(p)) {
            Ok(verified) => {
                self.blocks.named(&value_id, proposer.as_usize(), round);
                self.preverify(&value_id);
                Some(Input::Verified(verified))
            }
            Err(e) => {
                tracing::debug!(error = %e, "dropping a proposal that does not verify");
                None
            }
        }
    }

    /// Verifies the signatures of block `id`'s transactions that this
    /// member has not pooled (one batch) on a blocking thread, so that
    /// validating the block on the consensus task finds them checked; once
    /// the block is here and a verified proposal names it (a member that
    /// merely sends blocks gets no signature checks out of this node), once
    /// per block, one block at a time: when one is running, validation
    /// checks the next block's, batched, itself. Not when the engine waits
    /// for this block now: then validation does it at once.
    pub(super) fn preverify(&mut self, id: &ValueId) {
        if !self.blocks.is_named(id) || self.pending_validate.contains_key(id) {
            return;
        }
        let Some(c) = self.blocks.get_mut(id) else {
            return;
        };
        if c.block.txs.is_empty() || c.outcome.is_some() || c.preverify_started {
            return;
        }
        let Ok(permit) = self.preverifying.clone().try_acquire_owned() else {
            return;
        };
        c.preverify_started = true;
        let (chain, block) = (self.chain.clone(), c.block.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if let Err(e) = chain.preverify_block(&block) {
                tracing::debug!(error = %e, "could not pre-verify a proposed block");
            }
        });
    }

    pub(super) fn on_block(&mut self, from: usize, b: &pb::Block) -> anyhow::Result<()> {
        let block = match Block::from_proto(b) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(from, error = %e, "dropping malformed proposed block");
                return Ok(());
            }
        };
        // Keep one height ahead too: the next proposer's block can arrive a
        // moment before this node has stored the current height.
        let next = self.chain.height() + 1;
        let h = &block.header;
        if h.chain_id.0 != self.chain_id.0
            || h.height < Height(next)
            || h.height > Height(next + 1)
            || self
                .chain
                .validators_at(h.height)
                .map_or(true, |(_, v)| h.proposer as usize >= v.len())
        {
            return Ok(());
        }
        let pinned = self.pinned();
        let id = match self.blocks.offer(from, block, &pinned) {
            Ok(id) => id,
            Err(e) => {
                if let Some(suppressed) = self.warn_blocks.check() {
                    tracing::warn!(from, suppressed, "refused a proposed block: {e}");
                }
                return Ok(());
            }
        };
        self.preverify(&id);
        if let Some(height) = self.pending_validate.remove(&id) {
            // None: answered later, when its Bitcoin checks end.
            if let Some(valid) = self.validate(height, &id) {
                self.input(Input::ValidationResult {
                    height,
                    value_id: id,
                    valid,
                })?;
            }
        }
        Ok(())
    }
}

pub(super) fn gossip_tx(item: &Gossip) -> pb::GossipMessage {
    let kind = match item {
        Gossip::Tx(tx) => pb::gossip_message::Kind::Transaction(tx.to_proto()),
        Gossip::Fed(f) => pb::gossip_message::Kind::FederationTx(f.to_proto()),
    };
    pb::GossipMessage { kind: Some(kind) }
}

/// A federation transaction's kind, for logs.
fn fed_kind_name(k: &FedTxKind) -> &'static str {
    match k {
        FedTxKind::RegisterDepositAddress { .. } => "deposit registration",
        FedTxKind::FeeRateVote { .. } => "fee-rate vote",
        FedTxKind::PegInMint { .. } => "mint",
        FedTxKind::PegOutSignatures { .. } => "peg-out signatures",
        FedTxKind::PegOutBump { .. } => "peg-out bump vote",
        FedTxKind::PegOutConfirmed { .. } => "peg-out confirmation",
        FedTxKind::FederationChange { .. } => "federation change vote",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::block_cache::empty_block;
    use crate::peg_testing::{account, PegNode};
    use fedpeg_consensus::ValidatorIndex;
    use fedpeg_ledger::hash::Hash32;

    /// A member that merely sends blocks gets no signature checks out of
    /// this node: a block is pre-verified once a verified proposal names it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_block_a_verified_proposal_names_is_pre_verified() {
        use crate::peg_testing::{consensus_key, funded_users, user_transfer};
        use fedpeg_consensus::{ChainId, Round, SignedProposal};
        let (proposer, follower) = (funded_users(), funded_users());
        let txs: Vec<_> = (0..5).map(|n| user_transfer(&proposer, 1, n)).collect();
        assert!(proposer.chain.submit_txs(txs).iter().all(|r| r.is_ok()));
        let block = proposer.proposal(vec![]);
        assert_eq!(block.txs.len(), 5);
        let mut drv = follower.driver(None).await;
        drv.on_block(3, &block.to_proto()).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(
            follower.chain.preverified_len(),
            0,
            "not named: not checked"
        );
        let height = block.header.height;
        let who = drv.validators.proposer(height, Round(0));
        let p = SignedProposal::sign(
            &ChainId(follower.chain.spec.chain_id.0),
            &consensus_key(who.0),
            who,
            height,
            Round(0),
            ValueId(block.hash().0),
            None,
        );
        assert!(drv.on_proposal(p).is_some());
        for _ in 0..100 {
            if follower.chain.preverified_len() == 5 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("{} pre-verified", follower.chain.preverified_len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_that_does_not_match_its_header_is_not_cached() {
        let node = PegNode::new(4, 3);
        let mut drv = node.driver(None).await;
        let good = node.proposal(vec![]);
        let mut bad = good.clone();
        bad.fed_txs.push(node.fed_tx(
            3,
            FedTxKind::RegisterDepositAddress {
                account: account(9),
            },
        ));
        // The wrong body arrives first, under the right header.
        drv.on_block(3, &bad.to_proto()).unwrap();
        drv.on_block(1, &good.to_proto()).unwrap();
        let id = ValueId(good.hash().0);
        assert_eq!(drv.blocks.get(&id).map(|c| &c.block), Some(&good));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_flooding_blocks_cannot_push_out_another_members_proposal() {
        let node = PegNode::new(4, 3);
        let mut drv = node.driver(None).await;
        let junk = |height, i| empty_block(node.chain.spec.chain_id, height, i);
        for i in 0..100 {
            drv.on_block(3, &junk(1, i).to_proto()).unwrap();
            drv.on_block(3, &junk(2, i).to_proto()).unwrap();
        }
        let good = node.proposal(vec![]);
        drv.on_block(1, &good.to_proto()).unwrap();
        assert!(drv.blocks.contains(&ValueId(good.hash().0)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_decided_block_that_does_not_apply_is_fetched_by_sync_instead_of_stopping() {
        let node = PegNode::new(4, 3);
        let mut drv = node.driver(None).await;
        // A block this member holds under the decided id but cannot apply
        // (a bug, a disk fault, or a faulty quorum).
        let mut bad = node.proposal(vec![]);
        bad.header.state_root = Hash32::ZERO;
        let id = ValueId(bad.hash().0);
        drv.blocks.insert_own(id, bad, None);
        let cert = CommitCertificate {
            height: Height(1),
            round: Round(0),
            value_id: id,
            precommits: vec![(
                ValidatorIndex(0),
                fedpeg_consensus::Signature::from_bytes(&[0; 64]),
            )],
        };
        let stored = drv.commit_decided(Height(1), id, &cert);
        assert!(matches!(stored, Ok(false)), "{stored:?}");
        assert_eq!(node.chain.height(), 0);
        assert!(!drv.blocks.contains(&id));
    }
}
