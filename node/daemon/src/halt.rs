//! Halt height (`--halt-height H`, config `halt_height`): how the members of
//! a federation stop at the same block to switch binaries together.
//!
//! A node with a halt height commits H and stops, before its engine starts
//! H + 1: it signs, stores and sends nothing for H + 1 (the driver's part,
//! see [`crate::driver`]). This module holds the node-level rules around
//! that: what a start with the chain already at or past H does
//! ([`at_start`]), the short drain after the halt ([`drain`]) in which a
//! halted member keeps serving block sync, so members that have not stored
//! H yet can fetch it instead of waiting forever for peers that are gone,
//! and the transactions still pooled at the halt, which the next binary
//! re-admits ([`save_pending`], [`readmit_pending`]): every member stops at
//! once, so without this a transfer accepted just before the halt would
//! vanish with the in-memory pools.

use crate::chain::Chain;
use crate::network::{Network, PeerId};
use fedpeg_proto::v1 as pb;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// File in the data dir holding the user transactions pooled at the halt.
pub const PENDING_FILE: &str = "pending-at-halt.txs";
/// First bytes of [`PENDING_FILE`]; then, per transaction, its length (u32
/// big-endian) and its protobuf encoding (`Transaction::encode`: what
/// `SubmitTransaction` takes).
const PENDING_MAGIC: &[u8; 16] = b"fedpeg/pending/1";
/// Largest [`PENDING_FILE`] read back; a larger one is set aside unread.
const MAX_PENDING_BYTES: u64 = 256 * 1024 * 1024;
/// Largest transaction record read back.
const MAX_PENDING_TX_BYTES: usize = 64 * 1024;

/// Longest a halted member stays on the network for members that have not
/// stored the halt height yet (they sync it from it).
pub const DRAIN_MAX: Duration = Duration::from_secs(10);
/// How often a draining member asks the others how far they are.
const DRAIN_PROBE_EVERY: Duration = Duration::from_millis(250);

/// What a node does when it starts with a halt height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtStart {
    /// The chain is below the halt height: run until it is reached.
    Run,
    /// The chain is already at the halt height: exit at once, successfully.
    Halted,
}

/// Why a node refuses to start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HaltError {
    #[error("this node's chain is at height {height}, past the halt height {halt} (--halt-height / halt_height): it halted there before and has moved on since, so this halt height is stale; raise it above {height} or remove it")]
    Passed { halt: u64, height: u64 },
}

/// Decides what a node whose chain is at `height` does with halt height `halt`.
pub fn at_start(halt: Option<u64>, height: u64) -> Result<AtStart, HaltError> {
    match halt {
        Some(h) if height > h => Err(HaltError::Passed { halt: h, height }),
        Some(h) if height == h => Ok(AtStart::Halted),
        _ => Ok(AtStart::Run),
    }
}

/// The log line of a node that halted at `height`.
pub fn halted_message(height: u64, why: &str) -> String {
    format!("halted at height {height} (--halt-height): {why}; restart without --halt-height (or with a higher one) to continue")
}

fn pending_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PENDING_FILE)
}

/// Writes the pooled user transactions to [`PENDING_FILE`] (atomically, in
/// pool order), for the next start to re-admit; returns how many. Nothing
/// is written when the pool is empty.
pub fn save_pending(chain: &Chain, data_dir: &Path) -> std::io::Result<usize> {
    let txs = chain.pooled_txs();
    if txs.is_empty() {
        return Ok(0);
    }
    let mut bytes = PENDING_MAGIC.to_vec();
    for tx in &txs {
        let encoded = tx.encode();
        let len = u32::try_from(encoded.len()).map_err(std::io::Error::other)?;
        bytes.extend(len.to_be_bytes());
        bytes.extend(encoded);
    }
    let path = pending_path(data_dir);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(txs.len())
}

/// Re-admits the transactions of [`PENDING_FILE`] through the ordinary
/// admission checks (signature, nonce, balance, fee: one that no longer
/// applies is dropped) and removes the file. Returns (admitted, dropped).
/// A damaged file costs the transactions it holds, never the start: it is
/// renamed `<name>.damaged` for a look.
pub fn readmit_pending(chain: &Chain, data_dir: &Path) -> (usize, usize) {
    let path = pending_path(data_dir);
    let records = match read_pending(&path) {
        Ok(None) => return (0, 0),
        Ok(Some(records)) => records,
        Err(why) => {
            let aside = path.with_extension("damaged");
            let _ = std::fs::rename(&path, &aside);
            tracing::warn!(file = %aside.display(), %why, "transactions pooled at the halt are unreadable; not re-admitted");
            return (0, 0);
        }
    };
    let (mut admitted, mut dropped) = (0, 0);
    for bytes in &records {
        match chain.submit(bytes) {
            Ok(_) => admitted += 1,
            Err(e) => {
                dropped += 1;
                tracing::debug!(error = %e, "transaction pooled at the halt not re-admitted");
            }
        }
    }
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(file = %path.display(), error = %e, "cannot remove the file of transactions pooled at the halt; remove it by hand");
    }
    (admitted, dropped)
}

/// The records of a pending file; None if there is none.
fn read_pending(path: &Path) -> Result<Option<Vec<Vec<u8>>>, String> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if len > MAX_PENDING_BYTES {
        return Err(format!("{len} bytes, more than {MAX_PENDING_BYTES}"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut rest = bytes
        .strip_prefix(PENDING_MAGIC.as_slice())
        .ok_or("not a file of pending transactions")?;
    let mut records = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or("truncated length")?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > MAX_PENDING_TX_BYTES || len > tail.len() {
            return Err(format!("record {} of {len} bytes", records.len()));
        }
        let (record, tail) = tail.split_at(len);
        records.push(record.to_vec());
        rest = tail;
    }
    Ok(Some(records))
}

/// Keeps a halted member reachable (block sync is served by its sync
/// server meanwhile) until every connected member reports a chain at
/// `height` or more, or `max` passes. Members that are gone are not waited
/// for; a peer's answer only shortens or lengthens the wait, within `max`.
pub async fn drain(net: &Network, height: u64, max: Duration) {
    let deadline = Instant::now() + max;
    loop {
        let behind = members_behind(net, height, deadline).await;
        if behind.is_empty() {
            return;
        }
        if Instant::now() + DRAIN_PROBE_EVERY >= deadline {
            tracing::warn!(
                height,
                ?behind,
                "halted; members still below the halt height: they fetch it from the members still running, or once restarted"
            );
            return;
        }
        tokio::time::sleep(DRAIN_PROBE_EVERY).await;
    }
}

/// Connected members (by genesis index) whose chain is below `height`.
async fn members_behind(net: &Network, height: u64, deadline: Instant) -> Vec<usize> {
    let connected: Vec<(PeerId, usize)> = net
        .peers()
        .into_iter()
        .filter_map(|(peer, _, member)| Some((peer, member?)))
        .collect();
    let probes = connected.into_iter().map(|(peer, index)| async move {
        let request = pb::SyncRequest {
            from_height: height + 1,
            max_blocks: 1,
            wait_ms: 0,
        };
        let answer = tokio::time::timeout_at(deadline, net.sync(Some(peer), request)).await;
        match answer {
            Ok(Ok((_, r))) if r.tip_height < height => Some(index),
            // At the height, or no answer (gone, or we could not help it).
            _ => None,
        }
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peg_testing::{account, user_key, PegNode};
    use fedpeg_ledger::genesis::{DevBalance, Genesis};
    use fedpeg_ledger::testing::sats;
    use fedpeg_ledger::tx::{Transaction, TxKind};

    /// A chain where user 1 has funds.
    fn funded() -> PegNode {
        PegNode::new_with(4, 3, |g: &mut Genesis| {
            g.dev_balances = vec![DevBalance {
                address: account(1).to_address("fprt"),
                amount: sats(1_000_000),
            }]
        })
    }

    fn transfer(node: &PegNode, nonce: u64) -> Transaction {
        Transaction::sign(
            node.chain.spec.chain_id,
            &user_key(1),
            nonce,
            sats(10),
            TxKind::Transfer {
                to: account(2),
                amount: sats(1000),
            },
        )
    }

    #[test]
    fn transactions_pooled_at_the_halt_are_readmitted_by_the_next_start() {
        let before = funded();
        let txs: Vec<Transaction> = (0..3).map(|n| transfer(&before, n)).collect();
        for tx in &txs {
            before.chain.submit(&tx.encode()).unwrap();
        }
        assert_eq!(save_pending(&before.chain, before.dir.path()).unwrap(), 3);
        // The next binary on the same data: here a fresh node of the chain.
        let after = funded();
        let file = |n: &PegNode| n.dir.path().join(PENDING_FILE);
        std::fs::copy(file(&before), file(&after)).unwrap();
        assert_eq!(readmit_pending(&after.chain, after.dir.path()), (3, 0));
        let pooled: Vec<Transaction> = after
            .chain
            .pooled_txs()
            .iter()
            .map(|t| (**t).clone())
            .collect();
        assert_eq!(pooled, txs);
        assert!(!file(&after).exists());
        assert_eq!(readmit_pending(&after.chain, after.dir.path()), (0, 0));
        // An empty pool writes no file.
        assert_eq!(save_pending(&funded().chain, after.dir.path()).unwrap(), 0);
        assert!(!file(&after).exists());
    }

    #[test]
    fn a_stale_or_damaged_pending_file_costs_its_transactions_not_the_start() {
        let node = funded();
        let dir = node.dir.path();
        node.chain.submit(&transfer(&node, 0).encode()).unwrap();
        assert_eq!(save_pending(&node.chain, dir).unwrap(), 1);
        // It was committed meanwhile: its nonce is used, it is dropped.
        node.commit(vec![]);
        assert_eq!(readmit_pending(&node.chain, dir), (0, 1));
        let aside = dir.join(PENDING_FILE).with_extension("damaged");
        let mut truncated = PENDING_MAGIC.to_vec();
        truncated.extend([0, 0, 0, 9, 1, 2, 3]);
        let huge = [PENDING_MAGIC.as_slice(), &[0xff; 4]].concat();
        for bad in [b"not ours".to_vec(), truncated, huge] {
            std::fs::write(dir.join(PENDING_FILE), &bad).unwrap();
            assert_eq!(readmit_pending(&node.chain, dir), (0, 0));
            assert_eq!(std::fs::read(&aside).unwrap(), bad);
            assert!(!dir.join(PENDING_FILE).exists());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_halted_member_drains_until_the_connected_members_have_the_halt_height() {
        use crate::network::NetworkConfig;
        use crate::peg_testing::consensus_key;
        use fedpeg_ledger::genesis::ConsensusParams;
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        const H: u64 = 50;
        let nodes = PegNode::federation(2, 2, ConsensusParams::default());
        let peers = crate::daemon::member_peers(&nodes[0].chain.spec).unwrap();
        let mut nets = Vec::new();
        let mut syncs = Vec::new();
        for (i, p) in peers.iter().enumerate() {
            let cfg = NetworkConfig::new(
                Some(consensus_key(i as u32).to_bytes()),
                p.addr.clone(),
                peers.clone(),
            );
            let (events, events_rx) = tokio::sync::mpsc::channel(64);
            let (sync_tx, sync_rx) = tokio::sync::mpsc::channel(64);
            nets.push((
                Network::start(cfg, events, sync_tx).await.unwrap(),
                events_rx,
            ));
            syncs.push(sync_rx);
        }
        // Member 1 answers with the tip the test sets.
        let tip = Arc::new(AtomicU64::new(H - 1));
        let (mut requests, answer) = (syncs.pop().unwrap(), tip.clone());
        tokio::spawn(async move {
            while let Some(r) = requests.recv().await {
                let _ = r.respond.send(pb::SyncResponse {
                    blocks: vec![],
                    tip_height: answer.load(Ordering::Relaxed),
                });
            }
        });
        let halted = nets[0].0.clone();
        let t0 = Instant::now();
        while halted.peers().is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(5), "not connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A member that stays behind is waited for at most `max`.
        let t0 = Instant::now();
        drain(&halted, H, Duration::from_millis(800)).await;
        assert!(
            t0.elapsed() >= Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
        // One that gets there ends the drain.
        let set = tip.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            set.store(H, Ordering::Relaxed);
        });
        let t0 = Instant::now();
        drain(&halted, H, Duration::from_secs(20)).await;
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        // Members that are gone are not waited for.
        tip.store(0, Ordering::Relaxed);
        drop(nets.pop());
        while !halted.peers().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t0 = Instant::now();
        drain(&halted, H, Duration::from_secs(20)).await;
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_start_below_at_or_past_the_halt_height() {
        assert_eq!(at_start(None, 7), Ok(AtStart::Run));
        assert_eq!(at_start(Some(10), 0), Ok(AtStart::Run));
        assert_eq!(at_start(Some(10), 9), Ok(AtStart::Run));
        assert_eq!(at_start(Some(10), 10), Ok(AtStart::Halted));
        let e = at_start(Some(10), 11).unwrap_err().to_string();
        assert!(
            e.contains("height 11")
                && e.contains("halt height 10")
                && e.contains("raise it above 11 or remove it"),
            "{e}"
        );
    }
}
