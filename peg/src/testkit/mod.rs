//! Test infrastructure for every crate (feature `testkit`, never part of a
//! normal build): a throw-away `bitcoind -regtest` ([`Bitcoind`]) for tests
//! that need the real node, and [`MemoryChain`], an in-memory
//! [`crate::chain::BitcoinChain`] for unit tests that do not.
//!
//! [`Bitcoind::start`] finds (or installs) bitcoind with
//! `deploy/bitcoind.sh`, runs it as a child process on free localhost ports
//! with a temporary data directory, creates a descriptor wallet `miner` and
//! mines 101 blocks so the wallet has a spendable coinbase. The node is
//! stopped (then killed) and its directory removed on drop, so a failing
//! test leaves nothing behind. Every error is a `String` that says what
//! failed and ends with the tail of bitcoind's log when that helps.

mod memory;

pub use memory::{MemoryChain, FUNDING_FEE, METHODS, MISSING_OR_SPENT};

use crate::chain::{RpcAuth, RpcChain};
use bitcoin::{Address, Amount, BlockHash, Network, Txid};
use bitcoincore_rpc::{jsonrpc, RpcApi};
use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// RPC user name of every testkit node.
pub const RPC_USER: &str = "u";
/// RPC password of every testkit node.
pub const RPC_PASSWORD: &str = "p";
/// Name of the wallet that mines and pays.
pub const WALLET: &str = "miner";

/// How long bitcoind may take to answer RPC after it was spawned (a loaded
/// 2-core CI machine with several nodes starting at once is slow).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful `stop` may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of the harness's own RPC calls: generous, mining 101 blocks on a
/// busy machine takes seconds.
const HARNESS_RPC_TIMEOUT: Duration = Duration::from_secs(120);

/// `(bitcoind, bitcoin-cli)` as printed by `deploy/bitcoind.sh`, run once
/// per process (the script installs bitcoind on first use, under a lock).
pub fn binaries() -> Result<(PathBuf, PathBuf), String> {
    static PATHS: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    PATHS.get_or_init(run_bitcoind_sh).clone()
}

fn run_bitcoind_sh() -> Result<(PathBuf, PathBuf), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("deploy/bitcoind.sh");
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}); a test bitcoind is required, not optional:\n{}{stdout}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
        ));
    }
    let mut bitcoind = None;
    let mut cli = None;
    for line in stdout.lines() {
        match line.split_once('=') {
            Some(("BITCOIND", v)) => bitcoind = Some(PathBuf::from(v)),
            Some(("BITCOIN_CLI", v)) => cli = Some(PathBuf::from(v)),
            _ => {}
        }
    }
    match (bitcoind, cli) {
        (Some(b), Some(c)) => Ok((b, c)),
        _ => Err(format!(
            "{} printed no BITCOIND=/BITCOIN_CLI= lines:\n{stdout}",
            script.display()
        )),
    }
}

/// `n` distinct free TCP ports on 127.0.0.1: all are bound before any is
/// released, so they differ from each other.
pub fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in ports.iter_mut() {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
        *port = l
            .local_addr()
            .map_err(|e| format!("local address of a bound socket: {e}"))?
            .port();
        listeners.push(l);
    }
    Ok(ports)
}

/// A JSON-RPC client with a timeout, for `url` (which may end in
/// `/wallet/NAME`).
fn client(url: &str, timeout: Duration) -> Result<bitcoincore_rpc::Client, String> {
    let transport = jsonrpc::minreq_http::MinreqHttpTransport::builder()
        .url(url)
        .map_err(|e| format!("bad RPC URL {url}: {e}"))?
        .timeout(timeout)
        .basic_auth(RPC_USER.to_string(), Some(RPC_PASSWORD.to_string()))
        .build();
    Ok(bitcoincore_rpc::Client::from_jsonrpc(
        jsonrpc::Client::with_transport(transport),
    ))
}

/// A running `bitcoind -regtest` with a funded wallet.
pub struct Bitcoind {
    bitcoind: PathBuf,
    cli: PathBuf,
    args: Vec<String>,
    rpc_port: u16,
    p2p_port: u16,
    zmq_port: u16,
    child: Option<Child>,
    /// Node-level calls.
    client: bitcoincore_rpc::Client,
    /// Calls to the `miner` wallet (its URL names it, so other wallets a
    /// test loads do not make the calls ambiguous).
    wallet: bitcoincore_rpc::Client,
    mining_address: Address,
    // Declared last: dropped after `Drop::drop` stopped the node.
    datadir: tempfile::TempDir,
}

impl Bitcoind {
    /// Starts a node, creates the `miner` wallet and mines 101 blocks to it.
    pub fn start() -> Result<Bitcoind, String> {
        Self::start_as(false)
    }

    /// Like [`Self::start`], but the node is pruned (`-prune=550`) and has
    /// no `-txindex`: what most operators run.
    pub fn start_pruned() -> Result<Bitcoind, String> {
        Self::start_as(true)
    }

    fn start_as(pruned: bool) -> Result<Bitcoind, String> {
        // Free ports can be taken between our probe and bitcoind's bind
        // (other tests start nodes in parallel): try fresh ports then.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(pruned) {
                Ok(node) => return Ok(node),
                Err(e) if e.contains("Unable to bind") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn try_start(pruned: bool) -> Result<Bitcoind, String> {
        let (bitcoind, cli) = binaries()?;
        let datadir = tempfile::Builder::new()
            .prefix("fedpeg-bitcoind-")
            .tempdir()
            .map_err(|e| format!("cannot create a bitcoind data directory: {e}"))?;
        let [rpc_port, p2p_port, zmq_port] = free_ports()?;
        let args = vec![
            "-regtest".to_string(),
            "-daemon=0".into(),
            "-server".into(),
            "-listen=0".into(),
            "-listenonion=0".into(),
            if pruned {
                "-prune=550".into()
            } else {
                "-txindex=1".into()
            },
            "-fallbackfee=0.0002".into(),
            // Knots hands out legacy addresses unless told otherwise.
            "-addresstype=bech32".into(),
            "-changetype=bech32".into(),
            "-rpcbind=127.0.0.1".into(),
            "-rpcallowip=127.0.0.1".into(),
            format!("-rpcport={rpc_port}"),
            format!("-port={p2p_port}"),
            // Block notifications for members that subscribe (`zmq_block_url`).
            format!("-zmqpubhashblock=tcp://127.0.0.1:{zmq_port}"),
            format!("-rpcuser={RPC_USER}"),
            format!("-rpcpassword={RPC_PASSWORD}"),
            format!("-datadir={}", datadir.path().display()),
        ];
        let base = format!("http://127.0.0.1:{rpc_port}");
        let mut node = Bitcoind {
            client: client(&base, HARNESS_RPC_TIMEOUT)?,
            wallet: client(&format!("{base}/wallet/{WALLET}"), HARNESS_RPC_TIMEOUT)?,
            bitcoind,
            cli,
            args,
            rpc_port,
            p2p_port,
            zmq_port,
            child: None,
            // Replaced below, once the wallet exists.
            mining_address: Address::p2wsh(&bitcoin::ScriptBuf::new(), Network::Regtest),
            datadir,
        };
        node.spawn()?;
        // load_on_startup: the wallet comes back by itself after restart().
        node.rpc::<Value>(
            "createwallet",
            &[
                json!(WALLET),
                json!(false), // disable_private_keys
                json!(false), // blank
                json!(""),    // passphrase
                json!(false), // avoid_reuse
                json!(true),  // descriptors
                json!(true),  // load_on_startup
            ],
        )?;
        node.mining_address = node.new_address()?;
        node.mine(101)?;
        Ok(node)
    }

    fn log_path(&self) -> PathBuf {
        self.datadir.path().join("bitcoind.out")
    }

    /// The last lines bitcoind printed, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Spawns bitcoind with `self.args` and waits until RPC answers.
    fn spawn(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open {}: {e}", self.log_path().display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot clone a file handle: {e}"))?;
        let child = Command::new(&self.bitcoind)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bitcoind.display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls `getblockchaininfo` every 100 ms until it answers.
    fn wait_ready(&mut self) -> Result<(), String> {
        let probe = client(&self.rpc_url(), Duration::from_secs(2))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let last = match probe.call::<Value>("getblockchaininfo", &[]) {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "bitcoind exited ({status}) before answering RPC on port {}:\n{}",
                        self.rpc_port,
                        self.log_tail()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "bitcoind did not answer RPC on port {} within {READY_TIMEOUT:?} (last: {last}):\n{}",
                    self.rpc_port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One node-level RPC; the error names the call.
    pub fn rpc<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        args: &[Value],
    ) -> Result<T, String> {
        self.client
            .call(method, args)
            .map_err(|e| format!("bitcoind RPC {method} {}: {e}", Value::from(args)))
    }

    /// One RPC to the `miner` wallet; the error names the call.
    pub fn wallet_rpc<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        args: &[Value],
    ) -> Result<T, String> {
        self.wallet
            .call(method, args)
            .map_err(|e| format!("bitcoind wallet RPC {method} {}: {e}", Value::from(args)))
    }

    /// `http://127.0.0.1:PORT` (no wallet path).
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    /// The RPC credentials ([`RPC_USER`]/[`RPC_PASSWORD`]).
    pub fn auth(&self) -> RpcAuth {
        RpcAuth::UserPass {
            user: RPC_USER.into(),
            password: RPC_PASSWORD.into(),
        }
    }

    /// A [`RpcChain`] for this node, as fedpegd would make it.
    pub fn chain(&self) -> RpcChain {
        // Infallible: the URL is http://127.0.0.1:PORT, the only thing
        // `RpcChain::new` checks.
        RpcChain::new(&self.rpc_url(), self.auth()).expect("http URL")
    }

    /// The harness's own node-level client (long timeout).
    pub fn client(&self) -> &bitcoincore_rpc::Client {
        &self.client
    }

    /// bitcoind's ZMQ block notifications (`-zmqpubhashblock`).
    pub fn zmq_block_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.zmq_port)
    }

    /// The RPC port.
    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// The P2P port (`-port`; the node does not listen, `-listen=0`).
    pub fn p2p_port(&self) -> u16 {
        self.p2p_port
    }

    /// The node's data directory (`-datadir`; regtest data is in `regtest/`).
    pub fn datadir(&self) -> &Path {
        self.datadir.path()
    }

    /// The bitcoind executable.
    pub fn bitcoind_path(&self) -> &Path {
        &self.bitcoind
    }

    /// `bitcoin-cli` with the arguments that reach this node, for debugging
    /// or for tests that drive the CLI.
    pub fn cli_command(&self) -> Command {
        let mut c = Command::new(&self.cli);
        c.arg("-regtest")
            .arg(format!("-rpcport={}", self.rpc_port))
            .arg(format!("-rpcuser={RPC_USER}"))
            .arg(format!("-rpcpassword={RPC_PASSWORD}"))
            // Keeps bitcoin-cli away from any ~/.bitcoin/bitcoin.conf.
            .arg(format!("-datadir={}", self.datadir.path().display()));
        c
    }

    /// The address [`Self::mine`] pays.
    pub fn mining_address(&self) -> &Address {
        &self.mining_address
    }

    /// A fresh bech32 address of the `miner` wallet.
    pub fn new_address(&self) -> Result<Address, String> {
        let s: String = self.wallet_rpc("getnewaddress", &[json!(""), json!("bech32")])?;
        parse_address(&s)
    }

    /// Mines `n` blocks to [`Self::mining_address`]; their hashes in order.
    pub fn mine(&self, n: u64) -> Result<Vec<BlockHash>, String> {
        let hashes: Vec<String> = self.rpc(
            "generatetoaddress",
            &[json!(n), json!(self.mining_address.to_string())],
        )?;
        hashes
            .iter()
            .map(|h| BlockHash::from_str(h).map_err(|e| format!("generatetoaddress: {h}: {e}")))
            .collect()
    }

    /// Pays `sats` to `address` from the `miner` wallet (`sendtoaddress`).
    pub fn send_to(&self, address: &Address, sats: u64) -> Result<Txid, String> {
        let txid: String =
            self.wallet_rpc("sendtoaddress", &[json!(address.to_string()), btc(sats)])?;
        Txid::from_str(&txid).map_err(|e| format!("sendtoaddress: {txid}: {e}"))
    }

    /// One transaction paying every `(address, sats)` (`sendmany`); the
    /// addresses must differ (bitcoind refuses duplicates).
    pub fn send_many(&self, payments: &[(Address, u64)]) -> Result<Txid, String> {
        let amounts: serde_json::Map<String, Value> = payments
            .iter()
            .map(|(a, sats)| (a.to_string(), btc(*sats)))
            .collect();
        if amounts.len() != payments.len() {
            return Err("send_many: an address is listed twice; bitcoind refuses that".into());
        }
        let txid: String = self.wallet_rpc("sendmany", &[json!(""), Value::Object(amounts)])?;
        Txid::from_str(&txid).map_err(|e| format!("sendmany: {txid}: {e}"))
    }

    /// `invalidateblock`: `hash` and its descendants leave the best chain.
    pub fn invalidate(&self, hash: &BlockHash) -> Result<(), String> {
        self.rpc::<Value>("invalidateblock", &[json!(hash.to_string())])
            .map(drop)
    }

    /// `reconsiderblock`: undoes [`Self::invalidate`].
    pub fn reconsider(&self, hash: &BlockHash) -> Result<(), String> {
        self.rpc::<Value>("reconsiderblock", &[json!(hash.to_string())])
            .map(drop)
    }

    /// The bitcoind process id while it runs (e.g. to SIGSTOP it and test a
    /// hung node).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the bitcoind process is running (not stopped by
    /// [`Self::stop_process`]).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops bitcoind (RPC `stop`, killed after 10 s) and keeps its data
    /// directory and ports for [`Self::restart`]. Idempotent.
    pub fn stop_process(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // An error here (already dying, hung) is what the kill below is for.
        let _ = client(&self.rpc_url(), Duration::from_secs(5))
            .and_then(|c| c.call::<Value>("stop", &[]).map_err(|e| e.to_string()));
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("waiting for bitcoind: {e}")),
            }
        }
        child
            .kill()
            .map_err(|e| format!("cannot kill bitcoind (pid {}): {e}", child.id()))?;
        child
            .wait()
            .map_err(|e| format!("waiting for killed bitcoind: {e}"))?;
        Ok(())
    }

    /// Starts bitcoind again after [`Self::stop_process`], with the same data
    /// directory, ports and wallet.
    pub fn restart(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err("restart: bitcoind is still running; call stop_process first".into());
        }
        self.spawn()?;
        let loaded: Vec<String> = self.rpc("listwallets", &[])?;
        if !loaded.iter().any(|w| w == WALLET) {
            self.rpc::<Value>("loadwallet", &[json!(WALLET)])?;
        }
        Ok(())
    }
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        // Nothing useful to do with an error while dropping: the kill
        // inside stop_process is already the fallback.
        let _ = self.stop_process();
    }
}

/// `sats` as a JSON BTC amount. An f64 holds every amount up to 21e6 BTC
/// to the satoshi, and serde_json prints the shortest decimal that reads
/// back as the same f64, which bitcoind parses back to the same satoshis.
fn btc(sats: u64) -> Value {
    json!(Amount::from_sat(sats).to_btc())
}

fn parse_address(s: &str) -> Result<Address, String> {
    Address::from_str(s)
        .map_err(|e| format!("bitcoind gave an unparsable address {s}: {e}"))?
        .require_network(Network::Regtest)
        .map_err(|e| format!("bitcoind gave a non-regtest address {s}: {e}"))
}
