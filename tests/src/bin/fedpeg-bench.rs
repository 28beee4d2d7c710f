//! `fedpeg-bench`: load generator. Starts a local federation of fedpegd
//! member processes, funds sender accounts in genesis, submits
//! signed transfers over gRPC at a target rate, and prints JSON with
//! finalized throughput and commit latency. First it measures this box's
//! signature verification rate (single and batch, one core, ~1 s each) and
//! reports the throughput bound it implies: every member verifies every
//! transaction once, so `bound_tps = cores × per-core rate ÷ members` (the
//! batch rate when `--batch` > 1), and `ratio = finalized_tps ÷ bound_tps`.

use anyhow::{bail, Context};
use clap::Parser;
use ed25519_dalek::SigningKey;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::amount::Sats;
use fedpeg_ledger::hash::Hash32;
use fedpeg_ledger::tx::{Transaction, TxKind};
use fedpeg_proto::v1 as pb;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// Measures finalized transfers per second and commit latency.
#[derive(Parser)]
#[command(
    name = "fedpeg-bench",
    version,
    about = "Load generator: starts a local fedpeg chain, submits signed transfers, prints JSON with finalized_tps and commit latency"
)]
struct Args {
    /// Federation members to start on 127.0.0.1.
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// Transfers to submit.
    #[arg(long, default_value_t = 20_000)]
    txs: usize,
    /// Target submission rate in transfers/s (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Sending accounts (each submits its transfers in nonce order).
    #[arg(long, default_value_t = 64)]
    senders: usize,
    /// Transactions per gRPC call: 1 = `SubmitTransaction` per transfer,
    /// N > 1 = `SubmitTransactions` with up to N (at most 1,000).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Directory for the chain (default: a fresh temp dir, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn key(i: usize) -> SigningKey {
    let mut seed = [0x42u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
    SigningKey::from_bytes(&seed)
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("no exe dir")?.join(name);
    if !p.exists() {
        bail!(
            "{} not found next to fedpeg-bench; build the workspace binaries",
            p.display()
        );
    }
    Ok(p)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Signatures verified per second on one core: (single, batch of 64).
fn verification_rates() -> (f64, f64) {
    let chain = Hash32::ZERO;
    let to = AccountId(key(1).verifying_key().to_bytes());
    let one = Sats::from_sat(1).unwrap_or(Sats::ZERO);
    let txs: Vec<Transaction> = (0..256)
        .map(|i| {
            Transaction::sign(
                chain,
                &key(1000 + i),
                0,
                one,
                TxKind::Transfer { to, amount: one },
            )
        })
        .collect();
    let window = Duration::from_millis(1000);
    let t0 = Instant::now();
    let mut single = 0usize;
    while t0.elapsed() < window {
        for t in &txs[..64] {
            assert!(t.verify_signature());
        }
        single += 64;
    }
    let single_rate = single as f64 / t0.elapsed().as_secs_f64();
    let mut rng = rand010::rng();
    let t0 = Instant::now();
    let mut batched = 0usize;
    while t0.elapsed() < window {
        for chunk in txs.chunks(64) {
            let v = fedpeg_ledger::tx::verify_batch(chunk, &mut rng);
            assert!(v.iter().all(|ok| *ok));
            batched += chunk.len();
        }
    }
    (single_rate, batched as f64 / t0.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.batch == 0 || a.batch > 1000 {
        bail!("--batch must be 1..=1000");
    }
    // Before any process starts: the box's own rate, alone.
    let (single_rate, batch_rate) = tokio::task::spawn_blocking(verification_rates).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if a.members == 0 {
        bail!("--members must be at least 1");
    }
    let tmp = tempfile::tempdir()?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let fedpegd = sibling("fedpegd")?;
    let ok = |c: &mut Command| -> anyhow::Result<()> {
        let o = c.output()?;
        if !o.status.success() {
            bail!("{c:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(())
    };
    let free_port = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let mut g = Command::new(&fedpegd);
    g.args(["genesis", "--network", "regtest"])
        .arg("--out")
        .arg(dir.join("genesis.json"));
    for i in 0..a.members {
        let p2p = format!("/ip4/127.0.0.1/tcp/{}", free_port()?);
        ok(Command::new(&fedpegd)
            .args([
                "keygen",
                "--name",
                &format!("m{i}"),
                "--p2p-address",
                &p2p,
                "--out",
            ])
            .arg(dir.join(format!("m{i}.key")))
            .arg("--public-out")
            .arg(dir.join(format!("m{i}.json"))))?;
        g.arg("--member").arg(dir.join(format!("m{i}.json")));
    }
    for i in 0..a.senders {
        g.arg("--dev-balance").arg(format!(
            "{}=1000000000000",
            AccountId(key(i).verifying_key().to_bytes()).to_address("fprt")
        ));
    }
    ok(&mut g)?;
    let mut children = Vec::new();
    let mut ports = Vec::new();
    for i in 0..a.members {
        let port = free_port()?;
        let log = std::fs::File::create(dir.join(format!("m{i}.log")))?;
        let child = Command::new(&fedpegd)
            .arg("run")
            .arg("--genesis")
            .arg(dir.join("genesis.json"))
            .arg("--data-dir")
            .arg(dir.join(format!("m{i}-data")))
            .arg("--key")
            .arg(dir.join(format!("m{i}.key")))
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--mempool-max")
            .arg((a.txs + 1000).to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        children.push(child);
        ports.push(port);
    }
    let result = bench(&a, &ports, &dir).await.map(|mut out| {
        let (rate, basis) = if a.batch > 1 {
            (batch_rate, "batch")
        } else {
            (single_rate, "single")
        };
        let bound = cores as f64 * rate / a.members as f64;
        let tps = out["finalized_tps"].as_f64().unwrap_or(0.0);
        out["verify_single_per_core"] = serde_json::json!(single_rate.round());
        out["verify_batch_per_core"] = serde_json::json!(batch_rate.round());
        out["cores"] = serde_json::json!(cores);
        out["bound_basis"] = serde_json::json!(basis);
        out["bound_tps"] = serde_json::json!(bound.round());
        out["ratio"] = serde_json::json!((tps / bound * 1000.0).round() / 1000.0);
        out["batch"] = serde_json::json!(a.batch);
        out
    });
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let out = result?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

async fn connect(port: u16, dir: &Path) -> anyhow::Result<Channel> {
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(ch) = Channel::from_shared(url.clone())?.connect().await {
            let mut c = pb::node_service_client::NodeServiceClient::new(ch.clone());
            if c.get_status(pb::GetStatusRequest {}).await.is_ok() {
                return Ok(ch);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "node on port {port} did not start; see the logs in {}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn bench(a: &Args, ports: &[u16], dir: &Path) -> anyhow::Result<serde_json::Value> {
    let mut chans = Vec::new();
    for p in ports {
        chans.push(connect(*p, dir).await?);
    }
    let ch = chans[0].clone();
    let st = pb::node_service_client::NodeServiceClient::new(ch.clone())
        .get_status(pb::GetStatusRequest {})
        .await?
        .into_inner();
    let chain = Hash32::from_hex(&st.chain_id).map_err(anyhow::Error::msg)?;
    let start_height = st.height;
    // Pre-sign everything so the client's CPU goes to submitting.
    let per = a.txs.div_ceil(a.senders);
    let sink = AccountId(key(usize::MAX / 2).verifying_key().to_bytes());
    let one = Sats::from_sat(1)?;
    let mut queues: Vec<Vec<(Hash32, Vec<u8>)>> = Vec::new();
    for s in 0..a.senders {
        let k = key(s);
        let q = (0..per)
            .filter(|n| s * per + n < a.txs)
            .map(|n| {
                let tx = Transaction::sign(
                    chain,
                    &k,
                    n as u64,
                    one,
                    TxKind::Transfer {
                        to: sink,
                        amount: one,
                    },
                );
                (tx.id(), tx.encode())
            })
            .collect();
        queues.push(q);
    }
    let submitted: Arc<Mutex<HashMap<Hash32, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let started = Instant::now();
    let per_sender_interval = if a.rate == 0 {
        None
    } else {
        Some(Duration::from_secs_f64(a.senders as f64 / a.rate as f64))
    };
    let mut tasks = Vec::new();
    for (s, q) in queues.into_iter().enumerate() {
        // Each sender talks to one member; senders are spread over members.
        let ch = chans[s % chans.len()].clone();
        let submitted = submitted.clone();
        let batch = a.batch;
        tasks.push(tokio::spawn(async move {
            let mut w = pb::wallet_service_client::WalletServiceClient::new(ch);
            let mut errors = 0u64;
            let t0 = Instant::now();
            let mut i = 0usize;
            let mut q = q.into_iter().peekable();
            while q.peek().is_some() {
                let chunk: Vec<(Hash32, Vec<u8>)> = q.by_ref().take(batch).collect();
                if let Some(iv) = per_sender_interval {
                    let due = t0 + iv * i as u32;
                    tokio::time::sleep_until(due.into()).await;
                }
                i += chunk.len();
                {
                    let now = Instant::now();
                    let mut sub = submitted.lock().await;
                    for (id, _) in &chunk {
                        sub.insert(*id, now);
                    }
                }
                if batch == 1 {
                    for (_, bytes) in chunk {
                        if w.submit_transaction(pb::SubmitTransactionRequest { transaction: bytes })
                            .await
                            .is_err()
                        {
                            errors += 1;
                        }
                    }
                    continue;
                }
                let n = chunk.len() as u64;
                let transactions = chunk.into_iter().map(|(_, b)| b).collect();
                match w
                    .submit_transactions(pb::SubmitTransactionsRequest { transactions })
                    .await
                {
                    Ok(r) => {
                        errors += r
                            .into_inner()
                            .results
                            .iter()
                            .filter(|r| r.code != 0)
                            .count() as u64
                    }
                    Err(_) => errors += n,
                }
            }
            errors
        }));
    }
    // Follow blocks and time each transaction's finalization.
    let mut explorer = pb::explorer_service_client::ExplorerServiceClient::new(ch.clone());
    let mut node = pb::node_service_client::NodeServiceClient::new(ch.clone());
    let mut latencies = Vec::with_capacity(a.txs);
    let mut next = start_height + 1;
    let mut first_final: Option<Instant> = None;
    let mut last_final = Instant::now();
    let follow_deadline = Instant::now() + Duration::from_secs(600);
    while latencies.len() < a.txs && Instant::now() < follow_deadline {
        let tip = node
            .get_status(pb::GetStatusRequest {})
            .await?
            .into_inner()
            .height;
        while next <= tip {
            let b = explorer
                .get_block(pb::GetBlockRequest {
                    selector: Some(pb::get_block_request::Selector::Height(next)),
                })
                .await?
                .into_inner()
                .block
                .unwrap_or_default();
            let now = Instant::now();
            let sub = submitted.lock().await;
            for t in &b.transactions {
                if let Some(at) = Hash32::from_hex(&t.txid).ok().and_then(|id| sub.get(&id)) {
                    latencies.push(now.duration_since(*at).as_secs_f64() * 1000.0);
                    first_final.get_or_insert(now);
                    last_final = now;
                }
            }
            next += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await?;
    }
    let elapsed = last_final.duration_since(started).as_secs_f64();
    latencies.sort_by(|x, y| x.total_cmp(y));
    Ok(serde_json::json!({
        "members": a.members,
        "txs": a.txs,
        "finalized": latencies.len(),
        "submit_errors": errors,
        "seconds": elapsed,
        "finalized_tps": latencies.len() as f64 / elapsed.max(1e-9),
        "commit_p50_ms": percentile(&latencies, 0.5),
        "commit_p99_ms": percentile(&latencies, 0.99),
        "blocks": next - start_height - 1,
        "target_rate": a.rate,
    }))
}
