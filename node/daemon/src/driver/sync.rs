//! Block sync: catching up from peers, verifying every certificate against
//! the validator set (serving others is [`crate::sync_server`]'s job).

use super::*;

impl Driver {
    pub(super) fn start_sync(&mut self) {
        if self.halted.is_some() {
            return;
        }
        if self.probing() {
            // Restored, floor not fixed: ask every member at once.
            self.start_probe();
            return;
        }
        if self.sync_inflight || self.net.peers().is_empty() {
            return;
        }
        self.sync_inflight = true;
        let net = self.net.clone();
        let tx = self.sync_tx.clone();
        // Observers long-poll: the peer answers as soon as the next block is
        // final, so they follow the tip without polling delay.
        let wait_ms = if self.engine.is_none() {
            MAX_SYNC_WAIT.as_millis() as u32
        } else {
            0
        };
        let req = pb::SyncRequest {
            from_height: self.chain.height() + 1,
            max_blocks: SYNC_MAX_BLOCKS,
            wait_ms,
        };
        tokio::spawn(async move {
            let res = net.sync(None, req).await.map_err(|e| e.to_string());
            let _ = tx.send(res);
        });
    }

    /// Verifies and applies synced blocks; restarts consensus if we moved.
    pub(super) fn on_sync(&mut self, res: SyncResult) -> anyhow::Result<()> {
        self.sync_inflight = false;
        let (peer, resp) = match res {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "sync request failed");
                return Ok(());
            }
        };
        let before = self.chain.height();
        self.apply_synced(peer, resp.blocks)?;
        let after = self.chain.height();
        if after > before {
            tracing::info!(from = before + 1, to = after, %peer, "synced blocks");
            self.after_commit()?;
            if self.halted.is_some() {
                return Ok(());
            }
            // A restored member that reached its vote floor gets its engine back.
            self.maybe_rejoin()?;
            if let Some(engine) = &self.engine {
                if engine.height().is_none_or(|h| h.0 <= after) {
                    self.input(Input::StartHeight(Height(after + 1)))?;
                }
            }
            if resp.tip_height > after {
                self.start_sync();
            }
        }
        if self.engine.is_none() {
            self.start_sync();
        }
        Ok(())
    }

    /// Verifies and applies synced blocks in height order, up to the first
    /// one that is malformed, uncertified or does not apply.
    pub(super) fn apply_synced(
        &mut self,
        peer: PeerId,
        blocks: Vec<pb::CommittedBlock>,
    ) -> anyhow::Result<()> {
        for p in blocks {
            let h = self.chain.height();
            let cb = match p.block.as_ref().map(Block::from_proto) {
                Some(Ok(block)) => CommittedBlock {
                    block,
                    commit: p.commit,
                },
                _ => {
                    tracing::warn!(%peer, "sync peer sent a malformed block");
                    break;
                }
            };
            if cb.block.header.height <= Height(h) {
                continue;
            }
            if self
                .halt_height
                .is_some_and(|halt| cb.block.header.height.0 > halt)
            {
                // Whatever peers committed above the halt height waits for
                // the next binary (it syncs them once restarted).
                break;
            }
            let cert = match self.check_certificate(&cb) {
                Ok(cert) => cert,
                Err(e) => {
                    tracing::warn!(%peer, height = cb.block.header.height.0, error = %e, "sync peer sent a block without a valid commit certificate");
                    break;
                }
            };
            let chain = self.chain.clone();
            let applied = tokio::task::block_in_place(|| {
                let outcome = chain.validate(&cb.block)?;
                chain.commit(cb, outcome)
            });
            if let Err(e) = applied {
                tracing::warn!(%peer, error = %e, "certified block does not apply");
                break;
            }
            self.status.synced_blocks.fetch_add(1, Ordering::Relaxed);
            self.rejoin_on_certificate(&cert)?;
        }
        Ok(())
    }

    /// A synced block must carry a certificate of a quorum for its own hash.
    pub(super) fn check_certificate(
        &self,
        cb: &CommittedBlock,
    ) -> anyhow::Result<CommitCertificate> {
        let cert = CommitCertificate::decode(&cb.commit)?;
        anyhow::ensure!(
            cert.height == cb.block.header.height,
            "certificate is for height {}",
            cert.height.0
        );
        anyhow::ensure!(
            cert.value_id.0 == cb.block.hash().0,
            "certificate is for another block"
        );
        // Signed by the members in force at that height (the state up to
        // the block before knows them: sets are adopted ahead of time).
        let (_, validators) = self.chain.validators_at(cert.height)?;
        cert.verify(&self.chain_id, &validators)?;
        Ok(cert)
    }
}
