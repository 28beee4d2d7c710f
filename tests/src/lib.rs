//! Harness for fedpeg's end-to-end tests: starts real `fedpegd` processes on
//! free loopback ports in temporary directories, talks to them over gRPC and
//! through the `fedpeg` CLI, and always stops them (on drop, even when a test
//! fails).
//!
//! Binaries are taken from `$FEDPEG_BIN_DIR`, else from the directory of the
//! running test executable's target profile (`cargo build --bins` first;
//! `deploy/test.sh` does).

pub mod accounts;
pub mod load;
pub mod outsider;
pub mod wait;
pub mod web;

pub use wait::wait_until;

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::hash::Hash32;
use fedpeg_proto::v1 as pb;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Path of a built binary of this workspace.
pub fn bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("FEDPEG_BIN_DIR") {
        return Path::new(&dir).join(name);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/<name>
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let p = profile_dir.join(name);
    assert!(p.exists(), "{} not built; run `cargo build --workspace --bins` (deploy/test.sh does) or set FEDPEG_BIN_DIR", p.display());
    p
}

/// A free TCP port on 127.0.0.1 for a node to listen on, below Linux's
/// ephemeral range (32768+). Outgoing connections (e.g. a watcher's many
/// bitcoind RPC calls) take their local ports from that range, and their
/// TIME_WAIT sockets would make a later bind of the same port fail, e.g.
/// when a test restarts a member on its old port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Spread parallel test binaries apart by pid; probe until a port binds.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 1200) as u16 * 10;
    for _ in 0..2000 {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (base - 20_000 + step) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    0
}
/// Runs a command, returning its stdout; fails with its stderr on error.
pub fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command and returns its raw output whatever its exit status.
pub fn run_any(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
}

/// New deposit-address registrations a member accepts per second from one
/// client (`fedpegd::registration::PER_CLIENT_PER_SEC`).
pub const REGISTRATIONS_PER_CLIENT_PER_SEC: u32 = fedpegd::registration::PER_CLIENT_PER_SEC;

/// Sends `sig` (e.g. `-STOP`, `-CONT`, `-TERM`) to process `pid`; true if
/// `kill` delivered it.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Resident memory of process `pid` in bytes (VmRSS of /proc/<pid>/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Faucet balance in every test genesis.
pub const FAUCET_SATS: u64 = 1_000_000_000;

/// Emergency timelock of every test federation's genesis, in blocks: more
/// than any end-to-end test mines (so the backup branch stays closed).
pub const TEST_EMERGENCY_CSV_BLOCKS: u16 = 2016;

/// One `fedpegd` process (member or observer) with its own data dir and ports.
pub struct NodeProc {
    pub name: String,
    pub api_port: u16,
    /// Prometheus metrics port (`GET /metrics`).
    pub metrics_port: u16,
    /// Web app port (`--http-listen`), when it serves one.
    pub http_port: Option<u16>,
    pub data_dir: PathBuf,
    pub key: Option<PathBuf>,
    genesis: PathBuf,
    log_path: PathBuf,
    heartbeat_ms: u64,
    /// Extra `fedpegd run` arguments (e.g. the member's bitcoind).
    pub extra_args: Vec<String>,
    /// Extra environment variables (e.g. test-only switches).
    pub extra_env: Vec<(String, String)>,
    child: Option<Child>,
}

impl NodeProc {
    /// Starts (or restarts) the process on the same data dir and ports.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut cmd = Command::new(bin("fedpegd"));
        cmd.arg("run")
            .arg("--genesis")
            .arg(&self.genesis)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{}", self.api_port))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .arg("--heartbeat-ms")
            .arg(self.heartbeat_ms.to_string())
            .env(
                "RUST_LOG",
                std::env::var("FEDPEG_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(k) = &self.key {
            cmd.arg("--key").arg(k);
        }
        if let Some(port) = self.http_port {
            cmd.arg("--http-listen").arg(format!("127.0.0.1:{port}"));
        }
        cmd.args(&self.extra_args);
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        self.child = Some(cmd.spawn()?);
        Ok(())
    }

    /// The process id while it runs (spawned and not killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the process in bytes, if it runs.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid()?)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// gRPC endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Connects, retrying until the node answers status (or 30 s pass).
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(ch) = Channel::from_shared(self.url())?.connect().await {
                let mut c = pb::node_service_client::NodeServiceClient::new(ch.clone());
                if c.get_status(pb::GetStatusRequest {}).await.is_ok() {
                    return Ok(ch);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} at {} did not come up; log:\n{}",
                    self.name,
                    self.url(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node status.
    pub async fn status(&self) -> anyhow::Result<pb::GetStatusResponse> {
        let ch = self.connect().await?;
        Ok(pb::node_service_client::NodeServiceClient::new(ch)
            .get_status(pb::GetStatusRequest {})
            .await?
            .into_inner())
    }

    /// SIGKILLs the process (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits at most `timeout` for the process to exit by itself (e.g. at
    /// its halt height): its exit status, or None if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.as_mut()?.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => return None,
            }
        }
    }

    /// SIGTERMs the process and waits for a clean exit; returns its success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = signal(c.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node's metrics page.
    pub fn metrics(&self) -> anyhow::Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// The value of one series of the node's metrics, e.g.
    /// `fedpeg_member_last_signed_height{member="m1"}`.
    pub fn metric_value(&self, series: &str) -> Option<u64> {
        let page = self.metrics().ok()?;
        page.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// A `fedpegd backup` command for this node, with its admin token.
    pub fn backup_command(&self) -> Command {
        let mut c = Command::new(bin("fedpegd"));
        c.arg("backup")
            .arg("--api")
            .arg(self.url())
            .arg("--admin-token")
            .arg(self.data_dir.join("admin.token"));
        c
    }

    /// Backs this running node up (`fedpegd backup`, into `out` or its
    /// default place): where the backup is and its height.
    pub fn backup(&self, out: Option<&Path>) -> anyhow::Result<(PathBuf, u64)> {
        let mut c = self.backup_command();
        if let Some(o) = out {
            c.arg("--out").arg(o);
        }
        let text = run_ok(&mut c)?;
        let height = text
            .split("backup of height ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|h| h.parse().ok())
            .with_context(|| format!("no height in: {text}"))?;
        let path = text
            .split(" written to ")
            .nth(1)
            .and_then(|r| r.split(" on the node's host").next())
            .with_context(|| format!("no path in: {text}"))?;
        Ok((PathBuf::from(path), height))
    }

    /// `fedpegd restore` of `backup` into this node's data dir, checked
    /// against its genesis, with `extra` arguments; the raw output.
    pub fn restore(&self, backup: &Path, extra: &[&str]) -> Output {
        run_any(
            Command::new(bin("fedpegd"))
                .arg("restore")
                .arg("--backup")
                .arg(backup)
                .arg("--data-dir")
                .arg(&self.data_dir)
                .arg("--genesis")
                .arg(&self.genesis)
                .args(extra),
        )
    }

    /// The web app's base URL (`http://127.0.0.1:PORT`), when it serves one.
    pub fn web_url(&self) -> Option<String> {
        self.http_port.map(|p| format!("http://127.0.0.1:{p}"))
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A federation of `n` members (plus an optional observer) on loopback, from
/// a fresh regtest genesis with a funded faucet account.
pub struct Federation {
    pub dir: tempfile::TempDir,
    pub members: Vec<NodeProc>,
    pub observer: Option<NodeProc>,
    pub faucet: SigningKey,
    pub faucet_key_file: PathBuf,
}

impl Federation {
    /// Generates keys and genesis, starts `n` members (and an observer).
    pub fn start(n: usize, observer: bool, heartbeat_ms: u64) -> anyhow::Result<Federation> {
        Self::start_with(n, observer, heartbeat_ms, &[], &[])
    }

    /// Like [`Federation::start`], with extra `fedpegd genesis` arguments and
    /// extra `fedpegd run` arguments for every member.
    pub fn start_with(
        n: usize,
        observer: bool,
        heartbeat_ms: u64,
        genesis_args: &[String],
        member_args: &[String],
    ) -> anyhow::Result<Federation> {
        let dir = tempfile::tempdir()?;
        let d = dir.path().to_path_buf();
        let faucet_key_file = d.join("faucet.key");
        let faucet = fedpeg_keys::create_wallet_key(&faucet_key_file)?;
        let faucet_addr = AccountId(faucet.verifying_key().to_bytes()).to_address("fprt");
        let mut genesis = Command::new(bin("fedpegd"));
        genesis
            .args(["genesis", "--network", "regtest", "--dev-balance"])
            .arg(format!("{faucet_addr}={FAUCET_SATS}"));
        genesis
            .arg("--out")
            .arg(d.join("genesis.json"))
            .args(genesis_args);
        // Every test federation has an emergency branch (2 of 3 backup keys,
        // files backup{0,1,2}.key) so the descriptor with it is what the
        // end-to-end tests exercise; its timelock is longer than any test
        // mines, so the branch never opens by accident.
        if !genesis_args.iter().any(|a| a == "--backup-key") {
            for i in 0..3 {
                let out = run_ok(
                    Command::new(bin("fedpegd"))
                        .arg("backup-keygen")
                        .arg("--out")
                        .arg(d.join(format!("backup{i}.key"))),
                )?;
                genesis.arg("--backup-key").arg(out.trim());
            }
            genesis.args([
                "--backup-threshold",
                "2",
                "--emergency-csv-blocks",
                &TEST_EMERGENCY_CSV_BLOCKS.to_string(),
            ]);
        }
        let mut members = Vec::new();
        for i in 0..n {
            let name = format!("m{i}");
            let key = d.join(format!("{name}.key"));
            let public = d.join(format!("{name}.json"));
            run_ok(
                Command::new(bin("fedpegd"))
                    .args(["keygen", "--name", &name, "--p2p-address"])
                    .arg(format!("/ip4/127.0.0.1/tcp/{}", free_port()))
                    .arg("--out")
                    .arg(&key)
                    .arg("--public-out")
                    .arg(&public),
            )?;
            genesis.arg("--member").arg(&public);
            members.push(NodeProc {
                log_path: d.join(format!("{name}.log")),
                data_dir: d.join(format!("{name}-data")),
                name,
                api_port: free_port(),
                metrics_port: free_port(),
                http_port: None,
                key: Some(key),
                genesis: d.join("genesis.json"),
                heartbeat_ms,
                extra_args: member_args.to_vec(),
                extra_env: vec![],
                child: None,
            });
        }
        run_ok(&mut genesis)?;
        let observer = observer.then(|| NodeProc {
            name: "observer".into(),
            api_port: free_port(),
            metrics_port: free_port(),
            http_port: None,
            data_dir: d.join("observer-data"),
            key: None,
            genesis: d.join("genesis.json"),
            log_path: d.join("observer.log"),
            heartbeat_ms,
            extra_args: vec![],
            extra_env: vec![],
            child: None,
        });
        let mut fed = Federation {
            dir,
            members,
            observer,
            faucet,
            faucet_key_file,
        };
        for m in fed.members.iter_mut() {
            m.spawn()?;
        }
        if let Some(o) = fed.observer.as_mut() {
            o.spawn()?;
        }
        Ok(fed)
    }

    /// A node on this federation's genesis, not started: a member-to-be
    /// with fresh keys (`fedpegd keygen`, public info in `<name>.json`, to
    /// propose with `fedpeg federation propose --add-member`) listening at
    /// the address in that file, or an observer (`member: false`).
    pub fn new_node(
        &self,
        name: &str,
        member: bool,
        extra_args: &[String],
    ) -> anyhow::Result<NodeProc> {
        let d = self.dir.path();
        let mut args = extra_args.to_vec();
        let key = if member {
            let key = d.join(format!("{name}.key"));
            let p2p = format!("/ip4/127.0.0.1/tcp/{}", free_port());
            run_ok(
                Command::new(bin("fedpegd"))
                    .args(["keygen", "--name", name, "--p2p-address", &p2p])
                    .arg("--out")
                    .arg(&key)
                    .arg("--public-out")
                    .arg(d.join(format!("{name}.json"))),
            )?;
            args.extend(["--p2p-listen".to_string(), p2p]);
            Some(key)
        } else {
            None
        };
        Ok(NodeProc {
            log_path: d.join(format!("{name}.log")),
            data_dir: d.join(format!("{name}-data")),
            name: name.to_string(),
            api_port: free_port(),
            metrics_port: free_port(),
            http_port: None,
            key,
            genesis: d.join("genesis.json"),
            heartbeat_ms: self.members[0].heartbeat_ms,
            extra_args: args,
            extra_env: vec![],
            child: None,
        })
    }

    /// Member `i`'s first: a `fedpeg` CLI command pointed at member 0.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(bin("fedpeg"));
        c.arg("--node")
            .arg(self.members[0].url())
            .current_dir(self.dir.path())
            .env_remove("FEDPEG_KEY")
            .env_remove("FEDPEG_NODE");
        c
    }

    /// Path of the genesis file.
    pub fn genesis_path(&self) -> PathBuf {
        self.dir.path().join("genesis.json")
    }

    /// All logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for m in self.members.iter().chain(self.observer.iter()) {
            let log = m.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            s += &format!("==== {} (last 40 lines)\n", m.name);
            for l in tail.into_iter().rev() {
                s += l;
                s.push('\n');
            }
        }
        s
    }
}

/// Chain id from a node's status.
pub async fn chain_id(ch: &Channel) -> anyhow::Result<Hash32> {
    let s = pb::node_service_client::NodeServiceClient::new(ch.clone())
        .get_status(pb::GetStatusRequest {})
        .await?
        .into_inner();
    Hash32::from_hex(&s.chain_id).map_err(anyhow::Error::msg)
}

/// Polls until the transaction is finalized; returns its block height.
pub async fn wait_final(ch: &Channel, txid: &str, timeout: Duration) -> anyhow::Result<u64> {
    let c = pb::explorer_service_client::ExplorerServiceClient::new(ch.clone());
    wait_until(&format!("transaction {txid} final"), timeout, || {
        let mut c = c.clone();
        async move {
            let r = c
                .get_transaction(pb::GetTransactionRequest { txid: txid.into() })
                .await
                .ok()?
                .into_inner();
            (r.status == pb::TransactionStatus::Finalized as i32).then_some(r.block_height)
        }
    })
    .await
}

/// Polls until the node's height reaches `height`.
pub async fn wait_height(node: &NodeProc, height: u64, timeout: Duration) -> anyhow::Result<u64> {
    let what = format!("{} at height {height}", node.name);
    wait_until(&what, timeout, || async {
        let h = node.status().await.ok()?.height;
        (h >= height).then_some(h)
    })
    .await
}

/// The block at `height` on a node, with its commit certificate.
pub async fn committed_block(
    ch: &Channel,
    height: u64,
) -> anyhow::Result<fedpeg_ledger::block::CommittedBlock> {
    let mut c = pb::explorer_service_client::ExplorerServiceClient::new(ch.clone());
    let b = c
        .get_block(pb::GetBlockRequest {
            selector: Some(pb::get_block_request::Selector::Height(height)),
        })
        .await?
        .into_inner()
        .block
        .with_context(|| format!("no block {height}"))?;
    Ok(fedpeg_ledger::block::CommittedBlock::decode(&b.raw)?)
}

/// Hash of the block at `height` on a node.
pub async fn block_hash(ch: &Channel, height: u64) -> anyhow::Result<String> {
    let mut c = pb::explorer_service_client::ExplorerServiceClient::new(ch.clone());
    let b = c
        .get_block(pb::GetBlockRequest {
            selector: Some(pb::get_block_request::Selector::Height(height)),
        })
        .await?
        .into_inner();
    Ok(b.block.map(|b| b.hash).unwrap_or_default())
}

/// `fedpegd run` arguments for a member watching the bitcoind at `rpc_url`,
/// with its fee-rate vote pinned to the genesis default (10 sat/vB), so the
/// spend cost stays known whatever bitcoind's estimator says.
pub fn member_bitcoind_args(rpc_url: &str, user: &str, password: &str) -> Vec<String> {
    [
        "--bitcoin-rpc-url",
        rpc_url,
        "--bitcoin-rpc-user",
        user,
        "--bitcoin-rpc-password",
        password,
        "--bitcoin-fee-rate",
        "10",
    ]
    .map(String::from)
    .to_vec()
}
