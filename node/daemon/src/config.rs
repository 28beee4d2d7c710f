//! `fedpegd` configuration: one TOML file with documented defaults; command
//! line flags override it.

use fedpeg_ledger::genesis::{ChainSpec, Genesis, GenesisError};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything `fedpegd run` needs.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Path to genesis.json (default `genesis.json`).
    pub genesis: PathBuf,
    /// Directory for the database (default `fedpeg-data`).
    pub data_dir: PathBuf,
    /// Member key file; without one the node is a non-voting observer.
    pub key_file: Option<PathBuf>,
    pub api: ApiConfig,
    pub block: BlockConfig,
    pub mempool: MempoolConfig,
    pub p2p: P2pConfig,
    pub bitcoin: BitcoinConfig,
    /// Prometheus metrics listen address (`GET /metrics`); unset: off.
    pub metrics_listen: Option<SocketAddr>,
    /// Web app listen address (explorer, peg tracker, federation audit and
    /// the read-only JSON + SSE API under `/api/v1`); unset: off. Serves
    /// nothing that changes state, and bounds what a stranger can ask for,
    /// so it may face the public (behind a TLS proxy).
    pub http_listen: Option<SocketAddr>,
    pub log: LogConfig,
    pub explorer: ExplorerConfig,
    /// Stop cleanly once the block at this height is committed, before
    /// signing anything for the next (coordinated upgrades); unset: never.
    pub halt_height: Option<u64>,
}

/// This member's own bitcoind (the peg watches it; members never trust
/// another member's view of Bitcoin).
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BitcoinConfig {
    /// JSON-RPC URL, e.g. `http://127.0.0.1:18443`. Unset: no peg-in on this
    /// member (it votes against mints it cannot check).
    pub rpc_url: Option<String>,
    /// RPC user and password (or use `rpc_cookie`).
    pub rpc_user: Option<String>,
    pub rpc_password: Option<String>,
    /// bitcoind's `.cookie` file.
    pub rpc_cookie: Option<PathBuf>,
    /// How often to poll for new blocks, ms (default 500). With
    /// `zmq_block` this is only the fallback.
    pub poll_ms: Option<u64>,
    /// bitcoind's ZMQ block notifications (`-zmqpubhashblock`), e.g.
    /// `tcp://127.0.0.1:28332`: the watcher polls as soon as a block
    /// arrives. Unset: polling only.
    pub zmq_block: Option<String>,
    /// Vote this fee rate (sat/vB, kept within the genesis min/max) instead
    /// of bitcoind's estimate (or of the genesis default when bitcoind has none).
    pub fee_rate_sat_vb: Option<u64>,
}

/// libp2p settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct P2pConfig {
    /// Listen multiaddress (default: a member's p2p_address, from genesis
    /// or the change that added it; an observer's `/ip4/127.0.0.1/tcp/0`).
    pub listen: Option<String>,
    /// Most connections from non-members (observers) (default 32); when all
    /// are taken, a newcomer replaces the one held longest if held >= 30 s.
    pub max_observer_connections: usize,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: None,
            max_observer_connections: 32,
        }
    }
}

/// gRPC API settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address (default `127.0.0.1:20051`: localhost only; below the ephemeral port range).
    pub listen: SocketAddr,
    /// File holding the operator's admin token (mode 0600, created at the
    /// first start; default `<data_dir>/admin.token`). Admin calls
    /// (`AcknowledgeAlerts`) need `authorization: Bearer <token>`.
    pub admin_token_file: Option<PathBuf>,
}

/// Block production settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BlockConfig {
    /// An empty block is produced when no transaction arrived for this long (default 1000 ms).
    pub heartbeat_ms: u64,
}

/// Mempool settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolConfig {
    /// Most pending transactions (default 100000); more get RESOURCE_EXHAUSTED.
    pub max_txs: usize,
}

/// Log settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json` (default `text`).
    pub format: String,
    /// tracing filter, e.g. `info` or `fedpegd=debug` (default `info`; env RUST_LOG wins).
    pub filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            genesis: PathBuf::from("genesis.json"),
            data_dir: PathBuf::from("fedpeg-data"),
            key_file: None,
            api: ApiConfig::default(),
            block: BlockConfig::default(),
            mempool: MempoolConfig::default(),
            p2p: P2pConfig::default(),
            bitcoin: BitcoinConfig::default(),
            metrics_listen: None,
            http_listen: None,
            log: LogConfig::default(),
            explorer: ExplorerConfig::default(),
            halt_height: None,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 20051)),
            admin_token_file: None,
        }
    }
}

impl Default for BlockConfig {
    fn default() -> Self {
        BlockConfig { heartbeat_ms: 1000 }
    }
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig { max_txs: 100_000 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

/// Explorer feed limits (`[explorer]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExplorerConfig {
    /// Most concurrent SubscribeBlocks + SubscribeEvents streams (default
    /// 1024); more get RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Messages buffered per stream (default 64).
    pub stream_buffer: usize,
    /// A stream that has caught up with the tip and later falls this many
    /// blocks behind it with its buffer full is ended with
    /// RESOURCE_EXHAUSTED (default 256).
    pub max_lag_blocks: u64,
    /// A stream whose buffer stays full this long is ended too (default 60000).
    pub stall_timeout_ms: u64,
    /// Largest message the explorer service sends, bytes (default 16 MiB).
    pub max_message_bytes: usize,
    /// Largest page of ListBlocks / ListAccountTransactions (default 1000).
    pub max_page_size: u32,
}

impl Default for ExplorerConfig {
    fn default() -> Self {
        ExplorerConfig {
            max_streams: 1024,
            stream_buffer: 64,
            max_lag_blocks: 256,
            stall_timeout_ms: 60_000,
            max_message_bytes: 16 * 1024 * 1024,
            max_page_size: 1000,
        }
    }
}

/// Why a config file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("config file {0}: {1}")]
    Toml(String, toml::de::Error),
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML config file. Relative paths in it are taken relative to
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io(p.clone(), e))?;
        let mut c: Config = toml::from_str(&text).map_err(|e| ConfigError::Toml(p, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        c.genesis = base.join(&c.genesis);
        c.data_dir = base.join(&c.data_dir);
        c.key_file = c.key_file.map(|k| base.join(k));
        c.bitcoin.rpc_cookie = c.bitcoin.rpc_cookie.map(|k| base.join(k));
        c.api.admin_token_file = c.api.admin_token_file.map(|k| base.join(k));
        c.validate()?;
        Ok(c)
    }

    /// Checks values that TOML types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.block.heartbeat_ms == 0 {
            return Err(ConfigError::Invalid(
                "block.heartbeat_ms must be at least 1".into(),
            ));
        }
        if self.mempool.max_txs == 0 {
            return Err(ConfigError::Invalid(
                "mempool.max_txs must be at least 1".into(),
            ));
        }
        if self.bitcoin.rpc_url.is_some()
            && self.bitcoin.rpc_cookie.is_none()
            && (self.bitcoin.rpc_user.is_none() || self.bitcoin.rpc_password.is_none())
        {
            return Err(ConfigError::Invalid(
                "bitcoin.rpc_url needs bitcoin.rpc_cookie, or both bitcoin.rpc_user and bitcoin.rpc_password".into(),
            ));
        }
        if let Some(url) = &self.bitcoin.zmq_block {
            crate::block_notify::parse_endpoint(url).map_err(ConfigError::Invalid)?;
        }
        let e = &self.explorer;
        if e.max_streams == 0
            || e.stream_buffer == 0
            || e.max_lag_blocks == 0
            || e.stall_timeout_ms == 0
            || e.max_page_size == 0
            || e.max_message_bytes < 64 * 1024
        {
            return Err(ConfigError::Invalid(
                "explorer: max_streams, stream_buffer, max_lag_blocks, stall_timeout_ms and max_page_size must be at least 1, max_message_bytes at least 65536".into(),
            ));
        }
        if self.halt_height == Some(0) {
            return Err(ConfigError::Invalid(
                "halt_height (--halt-height) must be at least 1: the height of the last block to commit before stopping".into(),
            ));
        }
        if self.log.format != "text" && self.log.format != "json" {
            return Err(ConfigError::Invalid(format!(
                "log.format '{}' must be text or json",
                self.log.format
            )));
        }
        Ok(())
    }
}

/// Reads and validates a genesis file.
impl Config {
    /// Where the admin token lives: `[api] admin_token_file`, else
    /// `<data_dir>/admin.token`.
    pub fn admin_token_path(&self) -> PathBuf {
        self.api
            .admin_token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.token"))
    }
}

pub fn load_genesis(path: &Path) -> Result<ChainSpec, GenesisError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| GenesisError::Io(p.clone(), e))?;
    Genesis::parse(&bytes, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(&p)
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = load("data_dir = \"d\"\n[api]\nlisten = \"127.0.0.1:9\"\n").unwrap();
        assert!(c.data_dir.ends_with("d") && c.data_dir.is_absolute());
        assert_eq!(c.api.listen.port(), 9);
        assert_eq!(c.block.heartbeat_ms, 1000);
        assert_eq!(c.http_listen, None, "the web app is off by default");
        let c = load("http_listen = \"127.0.0.1:8080\"").unwrap();
        assert_eq!(c.http_listen.map(|a| a.port()), Some(8080));
    }

    #[test]
    fn bad_config_is_explained() {
        assert!(load("bogus = 1")
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
        assert!(load("[api]\nlisten = \"nope\"")
            .unwrap_err()
            .to_string()
            .contains("c.toml"));
        assert!(load("[block]\nheartbeat_ms = 0")
            .unwrap_err()
            .to_string()
            .contains("heartbeat_ms"));
        for bad in ["ipc:///tmp/zmq", "tcp://127.0.0.1", "127.0.0.1:28332"] {
            let e = load(&format!("[bitcoin]\nzmq_block = \"{bad}\""))
                .unwrap_err()
                .to_string();
            assert!(e.contains("zmq_block"), "{bad}: {e}");
        }
        assert_eq!(
            load("[bitcoin]\nzmq_block = \"tcp://127.0.0.1:28332\"")
                .unwrap()
                .bitcoin
                .zmq_block
                .as_deref(),
            Some("tcp://127.0.0.1:28332")
        );
        assert!(load("[explorer]\nmax_streams = 0")
            .unwrap_err()
            .to_string()
            .contains("explorer"));
        assert_eq!(
            load("[explorer]\nmax_lag_blocks = 7")
                .unwrap()
                .explorer
                .max_lag_blocks,
            7
        );
        assert!(load("http_listen = \"localhost\"")
            .unwrap_err()
            .to_string()
            .contains("c.toml"));
        assert!(load("[log]\nformat = \"xml\"")
            .unwrap_err()
            .to_string()
            .contains("text or json"));
    }

    #[test]
    fn halt_height_is_a_positive_whole_number() {
        assert_eq!(load("halt_height = 1200").unwrap().halt_height, Some(1200));
        assert_eq!(load("").unwrap().halt_height, None);
        for (bad, says) in [
            ("halt_height = 0", "at least 1"),
            ("halt_height = -5", "expected u64"),
            ("halt_height = \"1200\"", "expected u64"),
            ("halt_height = 12.5", "expected u64"),
            // In a section it is an unknown key, not silently ignored.
            ("[block]\nhalt_height = 5", "unknown field"),
        ] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("halt_height"), "{bad}: {e}");
        }
    }
}
