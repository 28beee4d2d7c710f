//! Harness for fedpeg's end-to-end tests: starts real `fedpegd` processes on
//! free loopback ports in temporary directories, talks to them over gRPC and
//! through the `fedpeg` CLI, and always stops them (on drop, even when a test
//! fails).
//!
//! Binaries are taken from `$FEDPEG_BIN_DIR`, else from the directory of the
//! running test executable's target profile (`cargo build --bins` first;
//! `deploy/test.sh` does).

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use fedpeg_node::account::AccountId;
use fedpeg_node::hash::Hash32;
use fedpeg_proto::v1 as pb;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Runs a command, returning its output; fails with its stderr on error.
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

/// A one-member chain in a temp dir, with a funded faucet account.
pub struct SoloNode {
    pub dir: tempfile::TempDir,
    pub api_port: u16,
    pub faucet: SigningKey,
    pub faucet_key_file: PathBuf,
    pub heartbeat_ms: u64,
    child: Option<Child>,
}

/// Faucet balance in every test genesis.
pub const FAUCET_SATS: u64 = 1_000_000_000;

impl SoloNode {
    /// Creates keys and genesis (regtest, dev balance for the faucet) and starts fedpegd.
    pub fn start(heartbeat_ms: u64) -> anyhow::Result<SoloNode> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        run_ok(
            Command::new(bin("fedpegd"))
                .args(["keygen", "--name", "solo", "--out"])
                .arg(d.join("member.key"))
                .arg("--public-out")
                .arg(d.join("member.json")),
        )?;
        let faucet_key_file = d.join("faucet.key");
        let faucet = fedpeg_node::keys::create_wallet_key(&faucet_key_file)?;
        let faucet_addr = AccountId(faucet.verifying_key().to_bytes()).to_address("fprt");
        run_ok(
            Command::new(bin("fedpegd"))
                .args(["genesis", "--network", "regtest", "--member"])
                .arg(d.join("member.json"))
                .arg("--dev-balance")
                .arg(format!("{faucet_addr}={FAUCET_SATS}"))
                .arg("--out")
                .arg(d.join("genesis.json")),
        )?;
        let mut node = SoloNode {
            dir,
            api_port: free_port(),
            faucet,
            faucet_key_file,
            heartbeat_ms,
            child: None,
        };
        node.spawn()?;
        Ok(node)
    }

    /// Starts (or restarts) the fedpegd process on the same data dir.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("node.log"))?;
        let child = Command::new(bin("fedpegd"))
            .arg("run")
            .arg("--genesis")
            .arg(d.join("genesis.json"))
            .arg("--data-dir")
            .arg(d.join("data"))
            .arg("--key")
            .arg(d.join("member.key"))
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{}", self.api_port))
            .arg("--heartbeat-ms")
            .arg(self.heartbeat_ms.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
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
                    "node at {} did not come up; log:\n{}",
                    self.url(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the process (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the process and waits for a clean exit; returns its success.
    pub fn terminate(&mut self) -> bool {
        match self.child.take() {
            None => true,
            Some(mut c) => {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .status();
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
        }
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// Chain id from status.
    pub async fn chain_id(&self, ch: &Channel) -> anyhow::Result<Hash32> {
        let s = pb::node_service_client::NodeServiceClient::new(ch.clone())
            .get_status(pb::GetStatusRequest {})
            .await?
            .into_inner();
        Hash32::from_hex(&s.chain_id).map_err(anyhow::Error::msg)
    }

    /// A `fedpeg` CLI command pointed at this node.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(bin("fedpeg"));
        c.arg("--node")
            .arg(self.url())
            .current_dir(self.dir.path())
            .env_remove("FEDPEG_KEY")
            .env_remove("FEDPEG_NODE");
        c
    }
}

impl Drop for SoloNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls until the transaction is finalized; returns its block height.
pub async fn wait_final(ch: &Channel, txid: &str, timeout: Duration) -> anyhow::Result<u64> {
    let mut c = pb::explorer_service_client::ExplorerServiceClient::new(ch.clone());
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = c
            .get_transaction(pb::GetTransactionRequest { txid: txid.into() })
            .await
        {
            let r = r.into_inner();
            if r.status == pb::TransactionStatus::Finalized as i32 {
                return Ok(r.block_height);
            }
        }
        if Instant::now() > deadline {
            bail!("transaction {txid} not final after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
