//! Rejoining consensus after a restore from a backup, without ever signing
//! twice.
//!
//! `fedpegd restore` leaves a marker in the store ([`RejoinRecord`]). A
//! member that finds it does not run its engine: like an observer, it
//! follows the chain by block sync, checking every certificate. Every sync
//! interval it asks each connected member for its committed tip (a sync
//! request from its own next height, so the answer brings the blocks it
//! lacks), and [`Rejoin`] judges the answers (why that is safe:
//! [`fedpeg_consensus::rejoin`]). Once the vote floor is fixed it is
//! persisted (a synced write) before anything else, the WAL refuses own
//! messages below it, and the member keeps following until it holds
//! `floor - 1`; then the marker is cleared and the engine starts at the
//! floor. A crash at any point resumes from the persisted record.

use super::*;
use fedpeg_consensus::{Rejoin, TipReport, ValidatorIndex, Verdict};

/// Key of the [`RejoinRecord`] among the store's local records.
pub const REJOIN_RECORD: &str = "rejoin";
const RECORD_VERSION: u8 = 1;
const RECORD_LEN: usize = 26;

/// Where a restored member is on its way back to voting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejoinPhase {
    /// Following the chain; the floor is not fixed yet.
    Following,
    /// The floor is fixed: never sign below this height.
    Floor(u64),
    /// Voting again (the marker is cleared).
    Rejoined,
}

/// The restore marker, kept in the store (so a copy of the store is never
/// without it). Encoding, version 1 (26 bytes, big-endian):
/// `1 ‖ phase u8 (0 rejoined, 1 following, 2 floor fixed) ‖ floor u64 (0
/// unless fixed) ‖ backup height u64 ‖ restored at, unix ms u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejoinRecord {
    pub phase: RejoinPhase,
    /// Height of the backup that was restored.
    pub backup_height: u64,
    pub restored_unix_ms: u64,
}

impl RejoinRecord {
    /// A store just restored from a backup at `backup_height`.
    pub fn restored(backup_height: u64, now_ms: u64) -> RejoinRecord {
        RejoinRecord {
            phase: RejoinPhase::Following,
            backup_height,
            restored_unix_ms: now_ms,
        }
    }

    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (phase, floor) = match self.phase {
            RejoinPhase::Rejoined => (0u8, 0u64),
            RejoinPhase::Following => (1, 0),
            RejoinPhase::Floor(f) => (2, f),
        };
        let mut v = Vec::with_capacity(RECORD_LEN);
        v.push(RECORD_VERSION);
        v.push(phase);
        v.extend_from_slice(&floor.to_be_bytes());
        v.extend_from_slice(&self.backup_height.to_be_bytes());
        v.extend_from_slice(&self.restored_unix_ms.to_be_bytes());
        v
    }

    /// Reads a record written by [`RejoinRecord::encode`]; never panics.
    pub fn decode(b: &[u8]) -> Result<RejoinRecord, String> {
        if b.len() != RECORD_LEN || b[0] != RECORD_VERSION {
            return Err(format!(
                "{} bytes, version {:?}; this build reads version {RECORD_VERSION}, {RECORD_LEN} bytes",
                b.len(),
                b.first()
            ));
        }
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(x)
        };
        let phase = match (b[1], u64_at(2)) {
            (0, _) => RejoinPhase::Rejoined,
            (1, _) => RejoinPhase::Following,
            (2, f) => RejoinPhase::Floor(f),
            (p, _) => return Err(format!("unknown phase {p}")),
        };
        Ok(RejoinRecord {
            phase,
            backup_height: u64_at(10),
            restored_unix_ms: u64_at(18),
        })
    }
}

/// One probe round's answers: (peer, its member index, its answer).
pub(super) type ProbeRound = Vec<(PeerId, usize, Result<pb::SyncResponse, String>)>;

/// A restored member on its way back: its engine, held back until the floor.
pub(super) struct Rejoining {
    pub(super) guard: Rejoin,
    /// The engine held until the vote floor (replaced when an epoch
    /// changes the validator set meanwhile).
    pub(super) engine: Engine,
    record: RejoinRecord,
    probing: bool,
    round_tx: mpsc::UnboundedSender<ProbeRound>,
    round_rx: mpsc::UnboundedReceiver<ProbeRound>,
    warn: LogLimiter,
}

/// The next probe round's answers (never, when not rejoining).
pub(super) async fn next_probe_round(r: &mut Option<Rejoining>) -> Option<ProbeRound> {
    match r {
        Some(r) => r.round_rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// At start: a member whose store carries the restore marker holds its
    /// engine back (and rejoins at once if it reached its floor before a
    /// restart).
    pub(super) fn hold_engine_if_restored(&mut self) -> anyhow::Result<()> {
        let Some(bytes) = self.chain.local_record(REJOIN_RECORD)? else {
            return Ok(());
        };
        let record = RejoinRecord::decode(&bytes).map_err(|e| {
            anyhow::anyhow!("the restore marker in the store is unreadable ({e}); refusing to start rather than risk signing twice: restore the backup again with this build")
        })?;
        let floor = match record.phase {
            RejoinPhase::Rejoined => return Ok(()),
            RejoinPhase::Following => None,
            RejoinPhase::Floor(f) => Some(Height(f)),
        };
        if self.faults.ignore_vote_floor {
            tracing::error!(
                "test-only fault: ignoring the restore marker, voting at once (may sign twice)"
            );
            return Ok(());
        }
        let (Some(me), Some(engine)) = (self.me, self.engine.take()) else {
            return Ok(());
        };
        let (round_tx, round_rx) = mpsc::unbounded_channel();
        self.rejoin = Some(Rejoining {
            guard: Rejoin::new(ValidatorIndex(me), floor),
            engine,
            record,
            probing: false,
            round_tx,
            round_rx,
            warn: LogLimiter::default(),
        });
        self.status.rejoining.store(true, Ordering::Relaxed);
        if let Some(f) = floor {
            self.note_floor(f);
        }
        tracing::warn!(
            backup_height = record.backup_height,
            vote_floor = floor.map(|f| f.0),
            height = self.chain.height(),
            "restored from a backup: following the chain without voting until the vote floor is fixed and reached"
        );
        self.maybe_rejoin()
    }

    /// While the floor is not fixed, sync means asking every member.
    pub(super) fn probing(&self) -> bool {
        self.rejoin
            .as_ref()
            .is_some_and(|r| r.guard.floor().is_none())
    }

    /// Asks every connected member for its tip (and the blocks after ours).
    pub(super) fn start_probe(&mut self) {
        let me = self.me.map(|m| m as usize);
        let peers: Vec<(PeerId, usize)> = self
            .net
            .peers()
            .into_iter()
            .filter_map(|(peer, _, member)| member.filter(|m| Some(*m) != me).map(|m| (peer, m)))
            .collect();
        let Some(r) = self.rejoin.as_mut() else {
            return;
        };
        if r.probing {
            return;
        }
        if peers.is_empty() {
            // Nobody to ask: judged as no answer (it says what it waits for).
            if let Err(e) = self.on_probe_round(Vec::new()) {
                tracing::warn!(error = %e, "rejoining");
            }
            return;
        }
        r.probing = true;
        let req = pb::SyncRequest {
            from_height: self.chain.height() + 1,
            max_blocks: SYNC_MAX_BLOCKS,
            wait_ms: 0,
        };
        let (net, tx) = (self.net.clone(), r.round_tx.clone());
        tokio::spawn(async move {
            let asks = peers.into_iter().map(|(peer, member)| {
                let net = net.clone();
                async move {
                    let answer = net
                        .sync(Some(peer), req)
                        .await
                        .map(|(_, resp)| resp)
                        .map_err(|e| e.to_string());
                    (peer, member, answer)
                }
            });
            let _ = tx.send(futures::future::join_all(asks).await);
        });
    }

    /// Applies the blocks of a probe round, then judges the tips reported.
    pub(super) fn on_probe_round(&mut self, round: ProbeRound) -> anyhow::Result<()> {
        match self.rejoin.as_mut() {
            Some(r) => r.probing = false,
            None => return Ok(()),
        }
        let before = self.chain.height();
        let mut reports = Vec::new();
        for (peer, member, answer) in round {
            let resp = match answer {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::debug!(%peer, member, error = %e, "no tip from a member");
                    continue;
                }
            };
            let at = self.chain.height();
            self.apply_synced(peer, resp.blocks)?;
            reports.push(TipReport {
                member: ValidatorIndex(member as u32),
                tip: Height(resp.tip_height),
                advanced: self.chain.height() > at,
            });
        }
        let after = self.chain.height();
        if after > before {
            tracing::info!(from = before + 1, to = after, "synced blocks (rejoining)");
            self.after_commit()?;
        }
        let verdict = match self.rejoin.as_mut() {
            Some(r) => r.guard.judge(&self.validators, Height(after), &reports),
            None => return Ok(()),
        };
        match verdict {
            Verdict::FloorFixed(floor) => {
                self.persist_phase(RejoinPhase::Floor(floor.0))?;
                self.note_floor(floor);
                tracing::info!(
                    height = after,
                    vote_floor = floor.0,
                    "caught up after the restore: vote floor fixed; following until the height before it, then voting"
                );
                self.start_sync();
            }
            // Progress was made (junk cannot get here): ask again at once.
            Verdict::Behind => self.start_sync(),
            Verdict::TooFew { have, need } => {
                if let Some(suppressed) = self.rejoin.as_mut().and_then(|r| r.warn.check()) {
                    match need {
                        Some(need) => tracing::info!(
                            have,
                            need,
                            suppressed,
                            "rejoining: waiting until members holding {need} voting power report their tip"
                        ),
                        None => tracing::error!(
                            "rejoining: the other members hold too little voting power to ever show this restored member where it may sign safely (a one-member federation); it stays an observer"
                        ),
                    }
                }
            }
            Verdict::AlreadyFixed(_) => {}
        }
        Ok(())
    }

    /// A certificate verified while rejoining: an own precommit in it may
    /// raise the floor (persisted at once).
    pub(super) fn rejoin_on_certificate(&mut self, cert: &CommitCertificate) -> anyhow::Result<()> {
        let Some(r) = self.rejoin.as_mut() else {
            return Ok(());
        };
        if let Some(floor) = r.guard.on_certificate(cert) {
            self.persist_phase(RejoinPhase::Floor(floor.0))?;
            self.note_floor(floor);
            tracing::warn!(
                height = cert.height.0,
                vote_floor = floor.0,
                "a certificate holds this member's precommit from before the restore: vote floor raised"
            );
        }
        Ok(())
    }

    /// Once the chain holds `floor - 1`: clears the marker and hands the
    /// engine back (the caller starts it at the next height).
    pub(super) fn maybe_rejoin(&mut self) -> anyhow::Result<()> {
        let local = Height(self.chain.height());
        let Some(start) = self
            .rejoin
            .as_ref()
            .and_then(|r| r.guard.start_height(local))
        else {
            return Ok(());
        };
        self.persist_phase(RejoinPhase::Rejoined)?;
        if let Some(r) = self.rejoin.take() {
            self.engine = Some(r.engine);
        }
        self.status.rejoining.store(false, Ordering::Relaxed);
        tracing::info!(
            height = start.0,
            "rejoined consensus after the restore: voting from this height"
        );
        Ok(())
    }

    fn persist_phase(&mut self, phase: RejoinPhase) -> anyhow::Result<()> {
        let Some(r) = self.rejoin.as_mut() else {
            return Ok(());
        };
        r.record.phase = phase;
        self.chain
            .put_local_records(&[(REJOIN_RECORD, r.record.encode())])
            .context("persisting the vote floor")
    }

    fn note_floor(&mut self, floor: Height) {
        if let Some(wal) = self.wal.as_mut() {
            wal.set_vote_floor(floor.0);
        }
        self.status.vote_floor.store(floor.0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
