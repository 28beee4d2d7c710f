//! Background load: transfers submitted continuously while a test does
//! something else to the federation.

use crate::accounts::{account, account_of, next_nonce, submit, transfer};
use ed25519_dalek::SigningKey;
use fedpeg_ledger::hash::Hash32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// Transfers from one account, submitted one after another to one node by a
/// background task until [`TransferLoad::stop`].
pub struct TransferLoad {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<String>>>,
}

impl TransferLoad {
    /// Starts submitting transfers of 1 sat (plus fee) from `from` through
    /// `node`, one every `every`. A refused submission is retried with the
    /// same nonce, so the accepted ones have consecutive nonces.
    pub async fn start(
        node: Channel,
        chain: Hash32,
        from: SigningKey,
        every: Duration,
    ) -> anyhow::Result<TransferLoad> {
        let mut nonce = next_nonce(&node, &account_of(&from)).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut accepted = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let to = account(100 + (nonce % 7) as u8);
                match submit(&node, &transfer(chain, &from, to, nonce, 1)).await {
                    Ok(txid) => {
                        accepted.push(txid);
                        nonce += 1;
                    }
                    Err(e) if e.code() == tonic::Code::ResourceExhausted => {}
                    Err(e) => anyhow::bail!("transfer {nonce} refused: {e}"),
                }
                tokio::time::sleep(every).await;
            }
            Ok(accepted)
        });
        Ok(TransferLoad { stop, task })
    }

    /// Stops and returns the ids of every transfer the node accepted.
    pub async fn stop(self) -> anyhow::Result<Vec<String>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}
