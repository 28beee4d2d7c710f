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
