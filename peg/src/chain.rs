//! What the peg needs from a Bitcoin node, as the [`BitcoinChain`] trait, and
//! its implementation over Bitcoin Core's JSON-RPC ([`RpcChain`]).
//!
//! The trait is synchronous and object-safe so that pure logic can take a
//! `&dyn BitcoinChain` and async callers can run it on a blocking thread.
//! [`find_deposits`] is the pure half of the peg-in watcher: which outputs of
//! a block pay a watched deposit script.
//!
//! Errors tell a caller what to do: [`ChainError::Unavailable`] means "retry
//! later" (bitcoind down, restarting, still loading, overloaded or slow),
//! [`ChainError::Rpc`] means bitcoind answered and said no, and
//! [`ChainError::NotFound`] means the block or height does not exist there.

use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::{Amount, Block, BlockHash, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use bitcoincore_rpc::{jsonrpc, RpcApi};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Why a call to the Bitcoin node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The node could not be reached or is not ready (connection refused,
    /// timeout, warming up, RPC queue full). Retry later; at the API edge
    /// this is `UNAVAILABLE`.
    #[error("bitcoind is unavailable: {0}; check that it is running and reachable at the configured RPC URL, then retry")]
    Unavailable(String),
    /// The node answered with an error, or with something we cannot read.
    #[error("bitcoind refused the request: {0}")]
    Rpc(String),
    /// The requested block or height is unknown to the node.
    #[error("not found on bitcoind")]
    NotFound,
}

/// A Bitcoin node as the peg sees it.
///
/// Every method is one consistent read (or one write) against the node's
/// current best chain; callers that combine several reads must expect the
/// chain to move between them.
pub trait BitcoinChain: Send + Sync {
    /// Best-chain tip height and hash.
    fn tip(&self) -> Result<(u64, BlockHash), ChainError>;
    /// Hash of the best-chain block at `height`; `NotFound` above the tip.
    fn block_hash(&self, height: u64) -> Result<BlockHash, ChainError>;
    /// A full block; `NotFound` if the node does not know it.
    fn block(&self, hash: &BlockHash) -> Result<Block, ChainError>;
    /// Height of `hash` if it is on the best chain; None if it is not
    /// (stale/reorged out); `NotFound` if the node does not know it at all.
    fn best_chain_height(&self, hash: &BlockHash) -> Result<Option<u64>, ChainError>;
    /// A transaction and the best-chain block containing it (needs -txindex,
    /// or the block hash hint).
    ///
    /// `Some((tx, None))` when the node has the transaction but not in a
    /// best-chain block (mempool, or only in a stale block); `None` when the
    /// node does not have it (or, without -txindex and hint, it is not in
    /// the mempool).
    fn transaction(
        &self,
        txid: &Txid,
        block_hint: Option<&BlockHash>,
    ) -> Result<Option<(Transaction, Option<BlockHash>)>, ChainError>;
    /// Fee rate estimate in sat/vB for confirmation within `blocks`
    /// (1..=1008), None if bitcoind has no estimate (e.g. fresh regtest).
    fn estimate_fee_rate(&self, blocks: u16) -> Result<Option<u64>, ChainError>;
    /// Broadcast; Ok(txid) also when bitcoind already has it in its mempool
    /// or its UTXO set (so rebroadcasting is harmless).
    ///
    /// A transaction that is confirmed and whose outputs are all spent looks
    /// to bitcoind like a double spend (`Rpc`); check [`Self::transaction`].
    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError>;
    /// testmempoolaccept for one tx: Ok(()) if allowed, Err(Rpc(reason)) if
    /// rejected.
    fn test_accept(&self, tx: &Transaction) -> Result<(), ChainError>;
    /// Block height at which `txid` entered this node's mempool; None when
    /// it is not in the mempool.
    fn mempool_entry_height(&self, txid: &Txid) -> Result<Option<u64>, ChainError>;
    /// The output at `outpoint` if it is in the node's UTXO set (mempool
    /// included: a spend there hides it, an unconfirmed output shows with 0
    /// confirmations), with its confirmations. Needs no `-txindex`.
    fn unspent(&self, outpoint: &OutPoint) -> Result<Option<(TxOut, u64)>, ChainError>;
    /// What the node says about itself, for the start-up check.
    fn node_info(&self) -> Result<NodeInfo, ChainError>;
}

/// A node's network, version and pruning, from `getblockchaininfo` and
/// `getnetworkinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `main`, `test`, `testnet4`, `signet` or `regtest`.
    pub chain: String,
    /// Client version, e.g. 280100 for 28.1.
    pub version: u64,
    /// User agent, e.g. `/Satoshi:28.1.0/Knots:20250305/`.
    pub subversion: String,
    /// Best-chain height.
    pub blocks: u64,
    /// Lowest height whose block is still on disk when the node is pruned.
    pub prune_height: Option<u64>,
    /// Still in initial block download (`initialblockdownload`).
    pub initial_block_download: bool,
}

/// An output paying a watched deposit script.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Deposit {
    /// The output.
    pub outpoint: OutPoint,
    /// Its value.
    pub amount: Amount,
    /// The sidechain account whose deposit script it pays.
    pub account: [u8; 32],
    /// The deposit script it pays.
    pub script_pubkey: ScriptBuf,
}

/// Every output of `block` that pays a script in `watched` (script ->
/// account), in block order (transaction, then output index).
///
/// Coinbase outputs are skipped: they cannot be spent for 100 blocks, so a
/// mint at the peg-in depth would hand peg-out batches a coin they cannot use.
pub fn find_deposits(block: &Block, watched: &HashMap<ScriptBuf, [u8; 32]>) -> Vec<Deposit> {
    let mut found = Vec::new();
    if watched.is_empty() {
        return found;
    }
    for tx in block.txdata.iter().filter(|tx| !tx.is_coinbase()) {
        // Hash the transaction only if one of its outputs matches.
        let mut txid = None;
        for (vout, out) in tx.output.iter().enumerate() {
            if let Some(account) = watched.get(&out.script_pubkey) {
                let txid = *txid.get_or_insert_with(|| tx.compute_txid());
                found.push(Deposit {
                    // A transaction cannot hold 2^32 outputs (the block
                    // size limit allows ~100k), so the cast is exact.
                    outpoint: OutPoint::new(txid, vout as u32),
                    amount: out.value,
                    account: *account,
                    script_pubkey: out.script_pubkey.clone(),
                });
            }
        }
    }
    found
}

/// How [`RpcChain`] authenticates to bitcoind.
#[derive(Clone, PartialEq, Eq)]
pub enum RpcAuth {
    /// `-rpcuser`/`-rpcpassword` (or an `-rpcauth` entry).
    UserPass {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// The `.cookie` file bitcoind writes into its data directory at start.
    /// It is re-read when bitcoind restarts (the cookie changes).
    CookieFile(PathBuf),
}

/// Never prints the password.
impl fmt::Debug for RpcAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcAuth::UserPass { user, .. } => f
                .debug_struct("UserPass")
                .field("user", user)
                .field("password", &"<hidden>")
                .finish(),
            RpcAuth::CookieFile(path) => f.debug_tuple("CookieFile").field(path).finish(),
        }
    }
}

/// How long one RPC may take, connect to last byte, unless
/// [`RpcChain::with_timeout`] says otherwise. Short, so that a hung bitcoind
/// turns into [`ChainError::Unavailable`] instead of a stuck caller.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// JSON-RPC error codes of Bitcoin Core that we treat specially
/// (`src/rpc/protocol.h`).
mod code {
    /// `RPC_INVALID_ADDRESS_OR_KEY`: also "block not found", "no such transaction".
    pub const INVALID_ADDRESS_OR_KEY: i32 = -5;
    /// `RPC_INVALID_PARAMETER`: also "block height out of range".
    pub const INVALID_PARAMETER: i32 = -8;
    /// `RPC_VERIFY_ALREADY_IN_CHAIN` (sendrawtransaction).
    pub const VERIFY_ALREADY_IN_CHAIN: i32 = -27;
    /// `RPC_IN_WARMUP`: bitcoind is starting (loading the block index etc.).
    pub const IN_WARMUP: i32 = -28;
}

/// A failed call, before each method decides what it means.
#[derive(Debug)]
enum CallError {
    /// Could not talk to bitcoind (see [`ChainError::Unavailable`]).
    Unavailable(String),
    /// HTTP 401: wrong credentials, or a cookie from before a restart.
    Unauthorized,
    /// bitcoind answered with a JSON-RPC error.
    Rpc { code: i32, message: String },
    /// Anything else: an answer we could not read.
    Other(String),
}

impl CallError {
    /// The generic mapping; methods first pick out the codes they expect.
    fn into_chain(self, method: &str) -> ChainError {
        match self {
            CallError::Unavailable(m) => ChainError::Unavailable(format!("{method}: {m}")),
            CallError::Unauthorized => ChainError::Rpc(format!(
                "{method}: bitcoind rejected our RPC credentials (HTTP 401); check the RPC user and password or the cookie file path"
            )),
            CallError::Rpc { code, message } => {
                ChainError::Rpc(format!("{method}: {message} (code {code})"))
            }
            CallError::Other(m) => ChainError::Rpc(format!("{method}: {m}")),
        }
    }

    /// `NotFound` for the given JSON-RPC code, the generic mapping otherwise.
    fn not_found_on(self, method: &str, codes: &[i32]) -> ChainError {
        match self {
            CallError::Rpc { code, .. } if codes.contains(&code) => ChainError::NotFound,
            e => e.into_chain(method),
        }
    }
}

impl From<bitcoincore_rpc::Error> for CallError {
    fn from(e: bitcoincore_rpc::Error) -> Self {
        use bitcoincore_rpc::Error as E;
        use jsonrpc::minreq_http::Error as HttpError;
        match e {
            E::JsonRpc(jsonrpc::Error::Rpc(r)) if r.code == code::IN_WARMUP => {
                CallError::Unavailable(format!("bitcoind is starting up: {}", r.message))
            }
            E::JsonRpc(jsonrpc::Error::Rpc(r)) => CallError::Rpc {
                code: r.code,
                message: r.message,
            },
            E::JsonRpc(jsonrpc::Error::Transport(t)) => match t.downcast_ref::<HttpError>() {
                Some(HttpError::Http(h)) if h.status_code == 401 => CallError::Unauthorized,
                // 503: the RPC work queue is full (-rpcworkqueue); transient.
                Some(HttpError::Http(h)) if h.status_code == 503 => CallError::Unavailable(
                    format!("bitcoind is overloaded (HTTP 503): {}", h.body.trim()),
                ),
                Some(HttpError::Http(h)) => {
                    CallError::Other(format!("HTTP {}: {}", h.status_code, h.body.trim()))
                }
                // Connection refused/reset, timeout, a half-read answer.
                _ => CallError::Unavailable(t.to_string()),
            },
            E::JsonRpc(e) => CallError::Other(format!("malformed JSON-RPC answer: {e}")),
            // Reading the cookie file: it is missing while bitcoind is down.
            E::Io(e) => CallError::Unavailable(format!("cannot read the RPC cookie file: {e}")),
            E::InvalidCookieFile => CallError::Unavailable(
                "the RPC cookie file is empty or has no ':' (is bitcoind still starting?)".into(),
            ),
            E::Json(e) => CallError::Other(format!("unexpected answer: {e}")),
            e => CallError::Other(e.to_string()),
        }
    }
}

/// [`BitcoinChain`] over Bitcoin Core's (or Knots') JSON-RPC.
///
/// Every call is one HTTP request on a fresh localhost connection with a
/// hard deadline, so concurrent callers do not queue behind each other and
/// a dead or hung node costs a caller at most the timeout.
pub struct RpcChain {
    url: String,
    auth: RpcAuth,
    timeout: Duration,
    /// Built on first use and rebuilt after a 401 or an unreachable node
    /// (with cookie auth the cookie changes when bitcoind restarts).
    client: Mutex<Option<Arc<bitcoincore_rpc::Client>>>,
}

impl fmt::Debug for RpcChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcChain")
            .field("url", &self.url)
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RpcChain {
    /// A client for the node at `url` (`http://host:port`, optionally with a
    /// `/wallet/NAME` path; `host:port` alone means http). Checks the URL
    /// and, for user/password auth, nothing else: the node need not be up.
    ///
    /// With cookie auth the cookie is read at the first call, so fedpegd may
    /// start before bitcoind has written it.
    pub fn new(url: &str, auth: RpcAuth) -> Result<Self, ChainError> {
        let url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        if !url.starts_with("http://") {
            return Err(ChainError::Rpc(format!(
                "bitcoind RPC URL {url} is not http://HOST:PORT; bitcoind serves plain HTTP (use an SSH tunnel or a private network for remote nodes)"
            )));
        }
        Ok(RpcChain {
            url,
            auth,
            timeout: DEFAULT_RPC_TIMEOUT,
            client: Mutex::new(None),
        })
    }

    /// Replaces [`DEFAULT_RPC_TIMEOUT`]; whole seconds, at least one.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_secs(1));
        self
    }

    /// The URL calls go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn build_client(&self) -> Result<bitcoincore_rpc::Client, CallError> {
        let (user, password) = match &self.auth {
            RpcAuth::UserPass { user, password } => (user.clone(), password.clone()),
            RpcAuth::CookieFile(path) => {
                let (user, password) = bitcoincore_rpc::Auth::CookieFile(path.clone())
                    .get_user_pass()
                    .map_err(|e| match CallError::from(e) {
                        CallError::Unavailable(m) => {
                            CallError::Unavailable(format!("{m} ({})", path.display()))
                        }
                        e => e,
                    })?;
                (user.unwrap_or_default(), password.unwrap_or_default())
            }
        };
        // minreq counts whole seconds; `with_timeout` keeps it >= 1 s.
        let transport = jsonrpc::minreq_http::MinreqHttpTransport::builder()
            .url(&self.url)
            .map_err(|e| CallError::Other(format!("bad RPC URL {}: {e}", self.url)))?
            .timeout(self.timeout)
            .basic_auth(user, Some(password))
            .build();
        Ok(bitcoincore_rpc::Client::from_jsonrpc(
            jsonrpc::Client::with_transport(transport),
        ))
    }

    fn client(&self) -> Result<Arc<bitcoincore_rpc::Client>, CallError> {
        // The slot holds no invariant a panicking thread could break.
        let mut slot = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(self.build_client()?);
        *slot = Some(c.clone());
        Ok(c)
    }

    fn forget_client(&self) {
        *self.client.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// One JSON-RPC call, answer as raw JSON. With cookie auth a 401 re-reads
    /// the cookie and tries once more (bitcoind restarted under us).
    fn call(&self, method: &str, args: &[Value]) -> Result<Value, CallError> {
        let cookie = matches!(self.auth, RpcAuth::CookieFile(_));
        let mut retried = false;
        loop {
            let result = self
                .client()?
                .call::<Value>(method, args)
                .map_err(CallError::from);
            match result {
                Err(CallError::Unauthorized) if cookie && !retried => {
                    self.forget_client();
                    retried = true;
                }
                Err(e @ CallError::Unavailable(_)) if cookie => {
                    self.forget_client();
                    return Err(e);
                }
                r => return r,
            }
        }
    }
}

/// An output `scantxoutset` found for a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedOutput {
    /// The output.
    pub outpoint: OutPoint,
    /// Its value.
    pub amount: Amount,
    /// Its output script.
    pub script_pubkey: ScriptBuf,
    /// Height of the block that confirmed it.
    pub height: u64,
}

impl RpcChain {
    /// Every confirmed unspent output paying one of `descriptors`, from the
    /// node's UTXO set (`scantxoutset start`: no wallet, no `-txindex`; a
    /// pruned node works), and the tip height the scan saw. Takes a while on
    /// mainnet (the whole UTXO set is read): use a long timeout.
    pub fn scan_descriptors(
        &self,
        descriptors: &[String],
    ) -> Result<(Vec<ScannedOutput>, u64), ChainError> {
        const M: &str = "scantxoutset";
        let v = self
            .call(M, &[json!("start"), json!(descriptors)])
            .map_err(|e| e.into_chain(M))?;
        if v.get("success").and_then(Value::as_bool) != Some(true) {
            return Err(ChainError::Rpc(format!("{M} did not complete: {v}")));
        }
        let tip = as_u64(&v, M, "height")?;
        let unspents = field(&v, M, "unspents")?
            .as_array()
            .ok_or_else(|| ChainError::Rpc(format!("{M}: `unspents` is not a list: {v}")))?;
        let mut out = Vec::new();
        for u in unspents {
            let txid: Txid = parse_hash(as_str(u, M, "txid")?, M)?;
            let vout = u32::try_from(as_u64(u, M, "vout")?)
                .map_err(|_| ChainError::Rpc(format!("{M}: bad vout: {u}")))?;
            let amount = field(u, M, "amount")?
                .as_f64()
                .and_then(|btc| Amount::from_btc(btc).ok())
                .ok_or_else(|| ChainError::Rpc(format!("{M}: bad amount: {u}")))?;
            let script = as_str(u, M, "scriptPubKey")?;
            let script_pubkey = ScriptBuf::from_hex(script)
                .map_err(|e| ChainError::Rpc(format!("{M}: bad scriptPubKey {script}: {e}")))?;
            out.push(ScannedOutput {
                outpoint: OutPoint::new(txid, vout),
                amount,
                script_pubkey,
                height: as_u64(u, M, "height")?,
            });
        }
        Ok((out, tip))
    }
}

/// Reads a field that must be there, naming the call in the error.
fn field<'a>(v: &'a Value, method: &str, name: &str) -> Result<&'a Value, ChainError> {
    v.get(name)
        .ok_or_else(|| ChainError::Rpc(format!("{method}: answer has no `{name}`: {v}")))
}

fn as_u64(v: &Value, method: &str, name: &str) -> Result<u64, ChainError> {
    field(v, method, name)?
        .as_u64()
        .ok_or_else(|| ChainError::Rpc(format!("{method}: `{name}` is not a height: {v}")))
}

fn as_str<'a>(v: &'a Value, method: &str, name: &str) -> Result<&'a str, ChainError> {
    field(v, method, name)?
        .as_str()
        .ok_or_else(|| ChainError::Rpc(format!("{method}: `{name}` is not a string: {v}")))
}

fn parse_hash<H: FromStr>(s: &str, method: &str) -> Result<H, ChainError>
where
    H::Err: fmt::Display,
{
    H::from_str(s).map_err(|e| ChainError::Rpc(format!("{method}: bad hash {s:?}: {e}")))
}

fn parse_hex<T: bitcoin::consensus::Decodable>(s: &str, method: &str) -> Result<T, ChainError> {
    deserialize_hex(s).map_err(|e| ChainError::Rpc(format!("{method}: undecodable hex: {e}")))
}

/// `estimatesmartfee`'s `feerate` (BTC per 1000 vB) in sat/vB, rounded up,
/// at least 1. None for a value that is not a finite non-negative amount.
pub fn btc_per_kvb_to_sat_per_vb(feerate: f64) -> Option<u64> {
    // Exact: an amount has at most 8 decimals and 21e14 sat < 2^53, so the
    // product rounds to the integer bitcoind meant.
    let sat_per_kvb = (feerate * 1e8).round();
    if !sat_per_kvb.is_finite() || !(0.0..=21e14).contains(&sat_per_kvb) {
        return None;
    }
    Some((sat_per_kvb as u64).div_ceil(1000).max(1))
}

/// Whether a `sendrawtransaction` error means "bitcoind already has it".
fn already_known(code: i32, message: &str) -> bool {
    // Reject reasons come as "txn-already-in-mempool", messages as
    // "Transaction already in block chain": compare with spaces.
    let m = message.to_ascii_lowercase().replace('-', " ");
    code == code::VERIFY_ALREADY_IN_CHAIN
        || [
            "already in mempool",
            "already known",
            "already in block chain",
            "already in utxo set",
            // Same txid with another witness is in the mempool: the txid we
            // wanted out is going to be mined either way.
            "same nonwitness data in mempool",
        ]
        .iter()
        .any(|s| m.contains(s))
}

impl BitcoinChain for RpcChain {
    fn tip(&self) -> Result<(u64, BlockHash), ChainError> {
        // One call, so height and hash belong to the same tip.
        const M: &str = "getblockchaininfo";
        let v = self.call(M, &[]).map_err(|e| e.into_chain(M))?;
        let height = as_u64(&v, M, "blocks")?;
        let hash = parse_hash(as_str(&v, M, "bestblockhash")?, M)?;
        Ok((height, hash))
    }

    fn block_hash(&self, height: u64) -> Result<BlockHash, ChainError> {
        const M: &str = "getblockhash";
        let v = self
            .call(M, &[json!(height)])
            .map_err(|e| e.not_found_on(M, &[code::INVALID_PARAMETER]))?;
        let s = v
            .as_str()
            .ok_or_else(|| ChainError::Rpc(format!("{M}: not a hash: {v}")))?;
        parse_hash(s, M)
    }

    fn block(&self, hash: &BlockHash) -> Result<Block, ChainError> {
        const M: &str = "getblock";
        let v = self
            .call(M, &[json!(hash.to_string()), json!(0)])
            .map_err(|e| e.not_found_on(M, &[code::INVALID_ADDRESS_OR_KEY]))?;
        let hex = v
            .as_str()
            .ok_or_else(|| ChainError::Rpc(format!("{M}: not hex: {v}")))?;
        let block: Block = parse_hex(hex, M)?;
        if block.block_hash() != *hash {
            return Err(ChainError::Rpc(format!(
                "{M}: asked for block {hash}, got {}",
                block.block_hash()
            )));
        }
        Ok(block)
    }

    fn best_chain_height(&self, hash: &BlockHash) -> Result<Option<u64>, ChainError> {
        const M: &str = "getblockheader";
        let v = self
            .call(M, &[json!(hash.to_string()), json!(true)])
            .map_err(|e| e.not_found_on(M, &[code::INVALID_ADDRESS_OR_KEY]))?;
        // -1 confirmations: the block is known but not on the best chain.
        let confirmations = field(&v, M, "confirmations")?
            .as_i64()
            .ok_or_else(|| ChainError::Rpc(format!("{M}: bad `confirmations`: {v}")))?;
        if confirmations < 1 {
            return Ok(None);
        }
        Ok(Some(as_u64(&v, M, "height")?))
    }

    fn transaction(
        &self,
        txid: &Txid,
        block_hint: Option<&BlockHash>,
    ) -> Result<Option<(Transaction, Option<BlockHash>)>, ChainError> {
        const M: &str = "getrawtransaction";
        let mut args = vec![json!(txid.to_string()), json!(true)];
        if let Some(h) = block_hint {
            args.push(json!(h.to_string()));
        }
        let v = match self.call(M, &args) {
            Ok(v) => v,
            // "No such mempool or blockchain transaction", also for an
            // unknown hint block or a txid not in the hinted block.
            Err(CallError::Rpc { code, .. }) if code == code::INVALID_ADDRESS_OR_KEY => {
                return Ok(None)
            }
            Err(e) => return Err(e.into_chain(M)),
        };
        let tx: Transaction = parse_hex(as_str(&v, M, "hex")?, M)?;
        if tx.compute_txid() != *txid {
            return Err(ChainError::Rpc(format!(
                "{M}: asked for {txid}, got {}",
                tx.compute_txid()
            )));
        }
        // bitcoind reports the block from its index even when that block is
        // no longer on the best chain; it then says 0 confirmations (or, with
        // a hint, in_active_chain false).
        let confirmations = v.get("confirmations").and_then(Value::as_i64).unwrap_or(0);
        let in_active_chain = v
            .get("in_active_chain")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let block = match v.get("blockhash").and_then(Value::as_str) {
            Some(h) if confirmations > 0 && in_active_chain => Some(parse_hash(h, M)?),
            _ => None,
        };
        Ok(Some((tx, block)))
    }

    fn estimate_fee_rate(&self, blocks: u16) -> Result<Option<u64>, ChainError> {
        const M: &str = "estimatesmartfee";
        let v = self
            .call(M, &[json!(blocks)])
            .map_err(|e| e.into_chain(M))?;
        // No estimate: bitcoind answers {"errors": [...], "blocks": n}.
        let Some(feerate) = v.get("feerate") else {
            return Ok(None);
        };
        let rate = feerate
            .as_f64()
            .and_then(btc_per_kvb_to_sat_per_vb)
            .ok_or_else(|| ChainError::Rpc(format!("{M}: bad `feerate`: {v}")))?;
        Ok(Some(rate))
    }

    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        const M: &str = "sendrawtransaction";
        let txid = tx.compute_txid();
        match self.call(M, &[json!(serialize_hex(tx))]) {
            Ok(v) => {
                let s = v
                    .as_str()
                    .ok_or_else(|| ChainError::Rpc(format!("{M}: not a txid: {v}")))?;
                let got: Txid = parse_hash(s, M)?;
                if got != txid {
                    return Err(ChainError::Rpc(format!(
                        "{M}: sent {txid}, bitcoind says {got}"
                    )));
                }
                Ok(txid)
            }
            Err(CallError::Rpc { code, message }) if already_known(code, &message) => Ok(txid),
            Err(e) => Err(e.into_chain(M)),
        }
    }

    fn mempool_entry_height(&self, txid: &Txid) -> Result<Option<u64>, ChainError> {
        const M: &str = "getmempoolentry";
        match self.call(M, &[json!(txid.to_string())]) {
            Ok(v) => field(&v, M, "height")?
                .as_u64()
                .map(Some)
                .ok_or_else(|| ChainError::Rpc(format!("{M}: bad `height`: {v}"))),
            // "Transaction not in mempool".
            Err(CallError::Rpc { code, .. }) if code == code::INVALID_ADDRESS_OR_KEY => Ok(None),
            Err(e) => Err(e.into_chain(M)),
        }
    }

    fn unspent(&self, outpoint: &OutPoint) -> Result<Option<(TxOut, u64)>, ChainError> {
        const M: &str = "gettxout";
        let v = self
            .call(
                M,
                &[
                    json!(outpoint.txid.to_string()),
                    json!(outpoint.vout),
                    json!(true),
                ],
            )
            .map_err(|e| e.into_chain(M))?;
        // No such unspent output: bitcoind answers null.
        if v.is_null() {
            return Ok(None);
        }
        let confirmations = as_u64(&v, M, "confirmations")?;
        let value = field(&v, M, "value")?
            .as_f64()
            .and_then(|btc| Amount::from_btc(btc).ok())
            .ok_or_else(|| ChainError::Rpc(format!("{M}: bad `value`: {v}")))?;
        let hex = as_str(field(&v, M, "scriptPubKey")?, M, "hex")?;
        let script = ScriptBuf::from_hex(hex)
            .map_err(|e| ChainError::Rpc(format!("{M}: bad scriptPubKey hex: {e}")))?;
        Ok(Some((
            TxOut {
                value,
                script_pubkey: script,
            },
            confirmations,
        )))
    }

    fn node_info(&self) -> Result<NodeInfo, ChainError> {
        const C: &str = "getblockchaininfo";
        let chain = self.call(C, &[]).map_err(|e| e.into_chain(C))?;
        const N: &str = "getnetworkinfo";
        let net = self.call(N, &[]).map_err(|e| e.into_chain(N))?;
        let pruned = field(&chain, C, "pruned")?.as_bool() == Some(true);
        Ok(NodeInfo {
            chain: as_str(&chain, C, "chain")?.to_string(),
            version: as_u64(&net, N, "version")?,
            subversion: as_str(&net, N, "subversion")?.to_string(),
            blocks: as_u64(&chain, C, "blocks")?,
            prune_height: if pruned {
                Some(as_u64(&chain, C, "pruneheight")?)
            } else {
                None
            },
            initial_block_download: chain.get("initialblockdownload").and_then(Value::as_bool)
                == Some(true),
        })
    }

    fn test_accept(&self, tx: &Transaction) -> Result<(), ChainError> {
        const M: &str = "testmempoolaccept";
        let v = self
            .call(M, &[json!([serialize_hex(tx)])])
            .map_err(|e| e.into_chain(M))?;
        let result = v
            .get(0)
            .ok_or_else(|| ChainError::Rpc(format!("{M}: empty answer: {v}")))?;
        if field(result, M, "allowed")?.as_bool() == Some(true) {
            return Ok(());
        }
        let reason = result
            .get("reject-reason")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        // Newer nodes add details, e.g. which script check failed.
        match result.get("reject-details").and_then(Value::as_str) {
            Some(details) if details != reason => {
                Err(ChainError::Rpc(format!("{M}: {reason} ({details})")))
            }
            _ => Err(ChainError::Rpc(format!("{M}: {reason}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::block::{Header, Version};
    use bitcoin::hashes::Hash;
    use bitcoin::{
        absolute, transaction, CompactTarget, Sequence, TxIn, TxMerkleNode, TxOut, Witness,
    };

    fn script(tag: u8) -> ScriptBuf {
        ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([tag; 32]))
    }

    fn tx(inputs: &[OutPoint], outputs: &[(ScriptBuf, u64)]) -> Transaction {
        Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: inputs
                .iter()
                .map(|p| TxIn {
                    previous_output: *p,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs
                .iter()
                .map(|(s, v)| TxOut {
                    value: Amount::from_sat(*v),
                    script_pubkey: s.clone(),
                })
                .collect(),
        }
    }

    fn block(txdata: Vec<Transaction>) -> Block {
        Block {
            header: Header {
                version: Version::TWO,
                prev_blockhash: BlockHash::all_zeros(),
                merkle_root: TxMerkleNode::all_zeros(),
                time: 0,
                bits: CompactTarget::from_consensus(0x207fffff),
                nonce: 0,
            },
            txdata,
        }
    }

    fn some_input(i: u8) -> OutPoint {
        OutPoint::new(Txid::from_byte_array([i; 32]), 0)
    }

    #[test]
    fn two_outputs_to_two_accounts_in_one_tx_are_both_found() {
        let (a, b) = ([0xaa; 32], [0xbb; 32]);
        let watched = HashMap::from([(script(1), a), (script(2), b)]);
        let coinbase = tx(&[OutPoint::null()], &[(script(9), 50)]);
        let pay = tx(
            &[some_input(7)],
            &[(script(9), 1_000), (script(2), 20_000), (script(1), 30_000)],
        );
        let txid = pay.compute_txid();
        let found = find_deposits(&block(vec![coinbase, pay]), &watched);
        assert_eq!(
            found,
            vec![
                Deposit {
                    outpoint: OutPoint::new(txid, 1),
                    amount: Amount::from_sat(20_000),
                    account: b,
                    script_pubkey: script(2),
                },
                Deposit {
                    outpoint: OutPoint::new(txid, 2),
                    amount: Amount::from_sat(30_000),
                    account: a,
                    script_pubkey: script(1),
                },
            ]
        );
    }

    #[test]
    fn deposits_are_listed_in_block_order_across_transactions() {
        let a = [0xaa; 32];
        let watched = HashMap::from([(script(1), a)]);
        let t1 = tx(&[some_input(1)], &[(script(1), 5)]);
        let t2 = tx(&[some_input(2)], &[(script(3), 6), (script(1), 7)]);
        let found = find_deposits(&block(vec![t1.clone(), t2.clone()]), &watched);
        let outpoints: Vec<OutPoint> = found.iter().map(|d| d.outpoint).collect();
        assert_eq!(
            outpoints,
            vec![
                OutPoint::new(t1.compute_txid(), 0),
                OutPoint::new(t2.compute_txid(), 1)
            ]
        );
    }

    #[test]
    fn coinbase_outputs_to_a_deposit_script_are_ignored() {
        let watched = HashMap::from([(script(1), [1; 32])]);
        let coinbase = tx(&[OutPoint::null()], &[(script(1), 50)]);
        assert!(find_deposits(&block(vec![coinbase]), &watched).is_empty());
    }

    #[test]
    fn unwatched_outputs_and_empty_watch_lists_find_nothing() {
        let t = tx(&[some_input(1)], &[(script(4), 5)]);
        let b = block(vec![t]);
        assert!(find_deposits(&b, &HashMap::new()).is_empty());
        assert!(find_deposits(&b, &HashMap::from([(script(1), [1; 32])])).is_empty());
    }

    #[test]
    fn fee_rate_conversion_rounds_up_without_float_noise() {
        // 0.00001 BTC/kvB = 1000 sat/kvB = 1 sat/vB exactly (a naive
        // ceil(0.00001 * 1e5) gives 2).
        assert_eq!(btc_per_kvb_to_sat_per_vb(0.00001), Some(1));
        assert_eq!(btc_per_kvb_to_sat_per_vb(0.00001001), Some(2));
        assert_eq!(btc_per_kvb_to_sat_per_vb(0.0002), Some(20));
        assert_eq!(btc_per_kvb_to_sat_per_vb(0.00012345), Some(13));
        assert_eq!(btc_per_kvb_to_sat_per_vb(0.0), Some(1));
        assert_eq!(btc_per_kvb_to_sat_per_vb(0.000001), Some(1));
        assert_eq!(btc_per_kvb_to_sat_per_vb(-0.1), None);
        assert_eq!(btc_per_kvb_to_sat_per_vb(f64::NAN), None);
        assert_eq!(btc_per_kvb_to_sat_per_vb(f64::INFINITY), None);
    }

    #[test]
    fn already_known_broadcast_errors_are_recognised() {
        assert!(already_known(
            -27,
            "Transaction outputs already in utxo set"
        ));
        assert!(already_known(-27, "Transaction already in block chain"));
        assert!(already_known(-26, "txn-already-in-mempool"));
        assert!(already_known(-26, "txn-already-known"));
        assert!(already_known(-26, "txn-same-nonwitness-data-in-mempool"));
        assert!(!already_known(-26, "min relay fee not met"));
        assert!(!already_known(-25, "bad-txns-inputs-missingorspent"));
    }

    #[test]
    fn rpc_url_must_be_http() {
        let auth = RpcAuth::UserPass {
            user: "u".into(),
            password: "secret".into(),
        };
        assert!(RpcChain::new("https://example:8332", auth.clone()).is_err());
        let c = RpcChain::new("127.0.0.1:18443", auth).unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:18443");
        assert!(!format!("{c:?}").contains("secret"), "{c:?}");
        // Object-safe and shareable across threads, as callers hold it.
        let _shared: std::sync::Arc<dyn BitcoinChain> = std::sync::Arc::new(c);
    }

    #[test]
    fn unreachable_node_is_unavailable() {
        // Bind then drop: nothing listens there for the moment.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = RpcChain::new(
            &format!("127.0.0.1:{port}"),
            RpcAuth::UserPass {
                user: "u".into(),
                password: "p".into(),
            },
        )
        .unwrap();
        assert!(
            matches!(c.tip(), Err(ChainError::Unavailable(_))),
            "{:?}",
            c.tip()
        );
    }

    #[test]
    fn missing_cookie_file_is_unavailable() {
        let c = RpcChain::new(
            "127.0.0.1:1",
            RpcAuth::CookieFile("/nonexistent/fedpeg/.cookie".into()),
        )
        .unwrap();
        let e = c.tip().unwrap_err();
        assert!(
            matches!(e, ChainError::Unavailable(ref m) if m.contains("cookie")),
            "{e}"
        );
    }
}
