//! Batches single `SubmitTransaction` calls so that their signatures are
//! checked as one batch ([`fedpeg_consensus::signature_rule::Batch`]):
//! calls arriving within [`WINDOW`] (up to [`MAX_BATCH`]) go to
//! [`Chain::submit_txs`] together, on a blocking thread.
//!
//! Attackers: a batch that holds a bad signature falls back to single
//! checks, so a liar can make the honest calls of its batch cost at most one
//! extra batch check each (≈ 1.5× a single check), never a wrong verdict.
//! A client (by IP) that sent a bad signature in the last [`STRIKE`] is
//! batched alone for that long, so it cannot keep poisoning others' batches.

use crate::chain::{Chain, SubmitError};
use fedpeg_ledger::tx::{Transaction, TxId};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Longest a call waits for others to share its batch.
pub const WINDOW: Duration = Duration::from_millis(1);
/// Most calls checked in one batch.
pub const MAX_BATCH: usize = 256;
/// How long a client that sent a bad signature is batched alone.
pub const STRIKE: Duration = Duration::from_secs(10);
/// Most clients remembered as having sent a bad signature (then forgotten).
const MAX_STRUCK: usize = 4096;
/// Calls waiting for the batcher (beyond: refused as overloaded).
const QUEUE: usize = 16_384;

struct Job {
    tx: Transaction,
    client: Option<IpAddr>,
    reply: oneshot::Sender<Result<TxId, SubmitError>>,
}

/// The handle the API submits through; the task runs while it lives.
pub struct SubmitBatcher {
    jobs: mpsc::Sender<Job>,
}

/// Why the batcher could not take a call.
#[derive(Debug, thiserror::Error)]
pub enum BatcherError {
    #[error("too many transactions waiting for verification; retry shortly")]
    Overloaded,
    #[error("the transaction verifier stopped")]
    Stopped,
}

impl SubmitBatcher {
    /// Starts the batching task over `chain` (needs a tokio runtime).
    pub fn spawn(chain: Arc<Chain>) -> SubmitBatcher {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(chain, rx));
        SubmitBatcher { jobs }
    }

    /// Verifies and pools `tx` with whatever else arrives in the window.
    pub async fn submit(
        &self,
        tx: Transaction,
        client: Option<IpAddr>,
    ) -> Result<Result<TxId, SubmitError>, BatcherError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job { tx, client, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => BatcherError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => BatcherError::Stopped,
            })?;
        answer.await.map_err(|_| BatcherError::Stopped)
    }
}

async fn run(chain: Arc<Chain>, mut rx: mpsc::Receiver<Job>) {
    let mut struck: HashMap<IpAddr, Instant> = HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + WINDOW;
        while jobs.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(j)) => jobs.push(j),
                _ => break,
            }
        }
        let now = Instant::now();
        struck.retain(|_, at| now.duration_since(*at) < STRIKE);
        // Groups: everyone in good standing together; each struck client alone.
        let mut groups: HashMap<Option<IpAddr>, Vec<Job>> = HashMap::new();
        for j in jobs {
            let key = j.client.filter(|c| struck.contains_key(c));
            groups.entry(key).or_default().push(j);
        }
        let chain2 = chain.clone();
        let checked = tokio::task::spawn_blocking(move || {
            groups
                .into_values()
                .map(|g| {
                    let (txs, rest): (Vec<Transaction>, Vec<_>) =
                        g.into_iter().map(|j| (j.tx, (j.client, j.reply))).unzip();
                    let results = chain2.submit_decoded(txs);
                    (rest, results)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(checked) = checked else {
            continue; // a panic in the check: the callers see Stopped
        };
        for (rest, results) in checked {
            for ((client, reply), r) in rest.into_iter().zip(results) {
                if let (
                    Some(c),
                    Err(SubmitError::Admit(fedpeg_ledger::mempool::AdmitError::Tx(
                        fedpeg_ledger::TxError::BadSignature,
                    ))),
                ) = (client, &r)
                {
                    if struck.len() >= MAX_STRUCK {
                        struck.clear();
                    }
                    struck.insert(c, now);
                }
                let _ = reply.send(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peg_testing::{funded_users, user_transfer};
    use fedpeg_ledger::mempool::AdmitError;
    use fedpeg_ledger::TxError;

    fn is_bad_signature(r: &Result<TxId, SubmitError>) -> bool {
        matches!(
            r,
            Err(SubmitError::Admit(AdmitError::Tx(TxError::BadSignature)))
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_liar_in_the_window_does_not_change_honest_verdicts() {
        let node = funded_users();
        let batcher = Arc::new(SubmitBatcher::spawn(node.chain.clone()));
        let liar: Option<IpAddr> = Some([10, 0, 0, 66].into());
        let honest: Option<IpAddr> = Some([10, 0, 0, 1].into());
        for round in 0..3u64 {
            let mut calls = Vec::new();
            for user in [1u8, 3] {
                let (b, tx) = (batcher.clone(), user_transfer(&node, user, round));
                calls.push(tokio::spawn(async move { b.submit(tx, honest).await }));
            }
            // Its nonce stays 0: nothing of the liar's is ever pooled.
            let mut bad = user_transfer(&node, 2, 0);
            bad.signature[40] ^= 4;
            let b = batcher.clone();
            let lie = tokio::spawn(async move { b.submit(bad, liar).await });
            for c in calls {
                let r = c.await.unwrap().unwrap();
                assert!(r.is_ok(), "round {round}: {r:?}");
            }
            let r = lie.await.unwrap().unwrap();
            assert!(is_bad_signature(&r), "{r:?}");
        }
        assert_eq!(node.chain.mempool_len(), 6);
    }
}
