//! What arrives from the network: gossiped consensus messages, blocks and
//! transactions, and peers coming and going.

use super::*;

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
                        // Members only reach us on the gossip protocol; the
                        // signature check ties it to a genesis member anyway.
                        Ok(f) => {
                            self.chain.submit_fed_tx(f, false);
                        }
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
                                Message::Proposal(p) => Input::Proposal(p),
                                Message::Vote(v) => Input::Vote(v),
                            };
                            self.input(input)?;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(from, error = %e, "dropping malformed consensus message")
                    }
                },
                None => {}
            }
        }
        if !txs.is_empty() {
            let chain = self.chain.clone();
            // Signature checks are CPU work: off the consensus loop.
            tokio::task::spawn_blocking(move || {
                for tx in txs {
                    if let Err(e) = chain.submit_tx(tx) {
                        tracing::trace!(error = %e, "gossiped transaction not admitted");
                    }
                }
            });
        }
        Ok(())
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
        let h = block.header.height;
        if block.header.chain_id.0 != self.chain_id.0 || h < next || h > next + 1 {
            return Ok(());
        }
        let id = ValueId(block.hash().0);
        if self.blocks.contains_key(&id) {
            return Ok(());
        }
        if self.blocks.len() >= MAX_CACHED_BLOCKS {
            tracing::warn!(from, "proposed-block cache full; dropping block");
            return Ok(());
        }
        self.blocks.insert(
            id,
            Cached {
                block,
                outcome: None,
            },
        );
        if let Some(height) = self.pending_validate.remove(&id) {
            let valid = self.validate(&id);
            self.input(Input::ValidationResult {
                height,
                value_id: id,
                valid,
            })?;
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
