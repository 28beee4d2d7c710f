//! `fedpegd`: the fedpeg federation member / observer daemon.

use anyhow::Context;
use clap::{Parser, Subcommand};
use fedpeg_keys::create_member_keys;
use fedpeg_ledger::amount::Sats;
use fedpeg_ledger::genesis::{
    ConsensusParams, DevBalance, EmergencyParams, FeeParams, Genesis, MemberInfo,
};
use fedpegd::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;

/// fedpeg federation node: runs a member (with a member key) or an observer.
#[derive(Parser)]
#[command(
    name = "fedpegd",
    version = fedpegd::build_info::VERSION,
    about = "fedpeg federation node: runs a member (with a member key) or an observer, and creates keys and genesis"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node.
    Run(Box<RunArgs>),
    /// Back up a running node: it writes a consistent copy of its database
    /// and a manifest into a new directory on its own host. Keys are not in
    /// it: keep the member key file backed up yourself, offline.
    Backup(BackupArgs),
    /// Restore a backup into a data directory, with the node stopped. The
    /// restored member follows the chain without voting until its vote
    /// floor, a few heights above the federation's tip, so that it never
    /// signs twice (deploy/README.md, "Backup and restore").
    Restore(RestoreArgs),
    /// Create a member's key file (mode 0600) and print its public info for genesis.
    Keygen {
        /// Where to write the secret key file (refuses to overwrite).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Member name, unique in the federation.
        #[arg(long)]
        name: String,
        /// libp2p address other members will dial, e.g. /ip4/127.0.0.1/tcp/30001.
        #[arg(
            long,
            value_name = "MULTIADDR",
            default_value = "/ip4/127.0.0.1/tcp/30001"
        )]
        p2p_address: String,
        /// Also write the public info JSON to this file.
        #[arg(long, value_name = "FILE")]
        public_out: Option<PathBuf>,
    },
    /// Create a backup key of the federation's emergency branch: a secp256k1
    /// secret key file (mode 0600) for its holder to keep offline; prints
    /// the public key to pass to `fedpegd genesis --backup-key`.
    BackupKeygen {
        /// Where to write the secret key file (refuses to overwrite).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Combine members' public info files into a genesis.json.
    Genesis {
        /// A member's public info JSON (from `fedpegd keygen`); repeat per member, in order.
        #[arg(long = "member", value_name = "FILE", required = true)]
        members: Vec<PathBuf>,
        /// Bitcoin network of the peg: bitcoin, testnet, signet or regtest.
        #[arg(long, default_value = "regtest")]
        network: String,
        /// Peg multisig threshold m (default: 2n/3 + 1, at most n). It must
        /// satisfy f < m <= n - f (f = (n-1)/3 faulty members tolerated).
        #[arg(long)]
        threshold: Option<u32>,
        /// Regtest only: accept a threshold outside f < m <= n - f.
        #[arg(long)]
        allow_unsafe_peg_threshold: bool,
        /// Bitcoin confirmations before a deposit is minted.
        #[arg(long, default_value_t = 6)]
        pegin_confirmations: u32,
        /// Human-readable chain name.
        #[arg(long, default_value = "fedpeg-devnet")]
        chain_name: String,
        /// Starting balance ADDRESS=SATS (regtest only); repeatable.
        #[arg(long = "dev-balance", value_name = "ADDRESS=SATS")]
        dev_balances: Vec<String>,
        /// Minimum transaction fee in sats.
        #[arg(long, default_value_t = 1)]
        min_tx_fee: u64,
        /// Peg-outs wait this long (block time) to be batched with others, ms.
        #[arg(long, default_value_t = 0)]
        pegout_batch_interval_ms: u64,
        /// Most peg-outs in one Bitcoin transaction.
        #[arg(long, default_value_t = 250)]
        pegout_max_outputs: u32,
        /// Bitcoin blocks a batch may stay unconfirmed before it is replaced
        /// at a higher fee (RBF).
        #[arg(long, default_value_t = 3)]
        pegout_bump_after_blocks: u32,
        /// A backup public key (66 hex, from `fedpegd backup-keygen`) of the
        /// emergency branch; repeat per key. Without any, the genesis has no
        /// emergency branch and coins are lost if the federation loses its
        /// quorum for good.
        #[arg(long = "backup-key", value_name = "HEX")]
        backup_keys: Vec<String>,
        /// Backup signatures needed to spend through the emergency branch
        /// (default: a majority, j/2 + 1).
        #[arg(long, value_name = "K", requires = "backup_keys")]
        backup_threshold: Option<u32>,
        /// Bitcoin blocks after an output confirms before the backup keys
        /// can spend it (1..=65535; ~8 weeks by default, Liquid's value).
        #[arg(long, value_name = "BLOCKS", default_value_t = u32::from(fedpeg_peg::federation::DEFAULT_EMERGENCY_CSV_BLOCKS), requires = "backup_keys")]
        emergency_csv_blocks: u32,
        /// Genesis time, ms since 1970 (default: now). Part of the chain id:
        /// members who agree on it can each rerun this command and get the
        /// same genesis.json byte for byte (the key ceremony's check).
        #[arg(long, value_name = "MS")]
        genesis_time_ms: Option<u64>,
        /// Where to write genesis.json.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct BackupArgs {
    /// gRPC address of the running node.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:20051")]
    api: String,
    /// The node's admin token file (<data-dir>/admin.token unless [api]
    /// admin_token_file moves it).
    #[arg(long, value_name = "FILE")]
    admin_token: PathBuf,
    /// Absolute path, on the node's host, of a new directory for the backup
    /// (it must not exist) [default: <data-dir>/backups/<height>-<unix-time>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The backup directory (from `fedpegd backup`: fedpeg-backup.json and db/).
    #[arg(long, value_name = "DIR")]
    backup: PathBuf,
    /// The node's data directory (created if missing).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// genesis.json, to check that the backup is of this chain and loads.
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
    /// If the data directory holds a database or a consensus WAL, move them
    /// aside (into <data-dir>/replaced-<time>/) instead of refusing.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML config file; flags below override its values.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Path to genesis.json [config: genesis; default genesis.json].
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
    /// Data directory [config: data_dir; default fedpeg-data]. It also holds
    /// admin.token (0600, created at the first start; [api] admin_token_file
    /// moves it), which admin calls such as AcknowledgeAlerts need.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Member key file (of genesis or of a federation change: a key not in
    /// the epoch in force follows the chain and votes from its activation);
    /// omit to run a non-voting observer [config: key_file].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// gRPC listen address [config: api.listen; default 127.0.0.1:20051].
    #[arg(long, value_name = "ADDR")]
    api_listen: Option<SocketAddr>,
    /// Empty heartbeat block after this many ms without transactions [config: block.heartbeat_ms; default 1000].
    #[arg(long, value_name = "MS")]
    heartbeat_ms: Option<u64>,
    /// Most pending transactions [config: mempool.max_txs; default 100000].
    #[arg(long, value_name = "N")]
    mempool_max: Option<usize>,
    /// libp2p listen multiaddress [config: p2p.listen; default: the member's p2p_address (genesis or the newest change listing it; required for a member added by a change this node has not synced yet), or /ip4/127.0.0.1/tcp/0 for an observer].
    #[arg(long, value_name = "MULTIADDR")]
    p2p_listen: Option<String>,
    /// This member's bitcoind JSON-RPC URL, e.g. http://127.0.0.1:18443 [config: bitcoin.rpc_url; unset: no peg-in].
    #[arg(long, value_name = "URL")]
    bitcoin_rpc_url: Option<String>,
    /// bitcoind RPC user [config: bitcoin.rpc_user].
    #[arg(long, value_name = "USER")]
    bitcoin_rpc_user: Option<String>,
    /// bitcoind RPC password [config: bitcoin.rpc_password; env FEDPEG_BITCOIN_RPC_PASSWORD].
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "FEDPEG_BITCOIN_RPC_PASSWORD",
        hide_env_values = true
    )]
    bitcoin_rpc_password: Option<String>,
    /// bitcoind .cookie file instead of user/password [config: bitcoin.rpc_cookie].
    #[arg(long, value_name = "FILE")]
    bitcoin_rpc_cookie: Option<PathBuf>,
    /// bitcoind's ZMQ block notifications, e.g. tcp://127.0.0.1:28332 (bitcoind -zmqpubhashblock=...): poll at once when a block arrives, polling stays the fallback [config: bitcoin.zmq_block; unset: polling only].
    #[arg(long, value_name = "URL")]
    bitcoin_zmq_block: Option<String>,
    /// How often to poll bitcoind, ms [config: bitcoin.poll_ms; default 500].
    #[arg(long, value_name = "MS")]
    bitcoin_poll_ms: Option<u64>,
    /// Vote this Bitcoin fee rate (sat/vB, kept within genesis fees.min/max_fee_rate_sat_vb) instead of bitcoind's estimate; without either, a member votes genesis fees.default_fee_rate_sat_vb [config: bitcoin.fee_rate_sat_vb].
    #[arg(long, value_name = "SAT_PER_VB")]
    bitcoin_fee_rate: Option<u64>,
    /// Prometheus metrics address, e.g. 127.0.0.1:9464 (GET /metrics) [config: metrics_listen; default off].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Web app (explorer, peg tracker, federation audit) and its read-only JSON + Server-Sent-Events API, e.g. 127.0.0.1:8080; read-only and bounded, safe to expose publicly (behind TLS) [config: http_listen; default off].
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Log format: text or json [config: log.format; default text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Most concurrent explorer streams (SubscribeBlocks + SubscribeEvents) [config: explorer.max_streams; default 1024].
    #[arg(long, value_name = "N")]
    max_streams: Option<usize>,
    /// Messages buffered per explorer stream [config: explorer.stream_buffer; default 64].
    #[arg(long, value_name = "N")]
    stream_buffer: Option<usize>,
    /// End an explorer stream with RESOURCE_EXHAUSTED when, after catching up, it falls this many blocks behind the tip with a full buffer [config: explorer.max_lag_blocks; default 256].
    #[arg(long, value_name = "BLOCKS")]
    max_lag_blocks: Option<u64>,
    /// Coordinated upgrade: commit block H, then stop cleanly (exit 0) without signing anything for H+1. Started with the chain already at H it exits 0 at once; past H it refuses to start [config: halt_height; env FEDPEG_HALT_HEIGHT; default none].
    #[arg(long, value_name = "H")]
    halt_height: Option<u64>,
}

fn init_logs(format: &str, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: log files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => run(*a),
        Command::Backup(a) => backup(a),
        Command::Restore(a) => restore(a),
        Command::Keygen {
            out,
            name,
            p2p_address,
            public_out,
        } => {
            let keys = create_member_keys(&out, &name)?;
            let info = serde_json::to_string_pretty(&keys.public_info(&p2p_address))?;
            if let Some(p) = public_out {
                std::fs::write(&p, format!("{info}\n"))
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            println!("{info}");
            eprintln!(
                "secret keys written to {} (mode 0600); share only the public info above",
                out.display()
            );
            Ok(())
        }
        Command::BackupKeygen { out } => {
            let key = fedpeg_keys::create_backup_key(&out)?;
            let public = key.public_key(&fedpeg_peg::bitcoin::secp256k1::Secp256k1::signing_only());
            println!("{public}");
            eprintln!(
                "backup secret key written to {} (mode 0600); keep it offline, give only the public key above to the genesis ceremony",
                out.display()
            );
            Ok(())
        }
        Command::Genesis {
            members,
            network,
            threshold,
            allow_unsafe_peg_threshold,
            pegin_confirmations,
            chain_name,
            dev_balances,
            min_tx_fee,
            pegout_batch_interval_ms,
            pegout_max_outputs,
            pegout_bump_after_blocks,
            backup_keys,
            backup_threshold,
            emergency_csv_blocks,
            genesis_time_ms,
            out,
        } => {
            let emergency = (!backup_keys.is_empty()).then(|| EmergencyParams {
                threshold: backup_threshold.unwrap_or(backup_keys.len() as u32 / 2 + 1),
                backup_keys,
                csv_blocks: emergency_csv_blocks,
            });
            let mut infos = Vec::new();
            for p in &members {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                let info: MemberInfo = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{} is not a member public info file (from `fedpegd keygen`)",
                        p.display()
                    )
                })?;
                infos.push(info);
            }
            let n = infos.len() as u32;
            let mut devs = Vec::new();
            for d in &dev_balances {
                let (addr, amount) = d
                    .split_once('=')
                    .with_context(|| format!("--dev-balance '{d}' must be ADDRESS=SATS"))?;
                let amount: u64 = amount
                    .parse()
                    .with_context(|| format!("--dev-balance '{d}': SATS must be a whole number"))?;
                let amount =
                    Sats::from_sat(amount).with_context(|| format!("--dev-balance '{d}'"))?;
                devs.push(DevBalance {
                    address: addr.to_string(),
                    amount,
                });
            }
            let g = Genesis {
                chain_name,
                genesis_time_ms: genesis_time_ms.unwrap_or_else(fedpegd::driver::now_ms),
                network,
                members: infos,
                peg_threshold: threshold.unwrap_or((2 * n / 3 + 1).min(n)),
                allow_unsafe_peg_threshold,
                pegin_confirmations,
                consensus: ConsensusParams::default(),
                fees: FeeParams {
                    min_tx_fee: Sats::from_sat(min_tx_fee).context("--min-tx-fee")?,
                    ..FeeParams::default()
                },
                dev_balances: devs,
                pegout: fedpeg_ledger::pegout_batch::PegOutParams {
                    batch_interval_ms: pegout_batch_interval_ms,
                    max_outputs: pegout_max_outputs,
                    bump_after_blocks: pegout_bump_after_blocks,
                    ..Default::default()
                },
                emergency,
            };
            let spec = g.validate()?;
            std::fs::write(&out, serde_json::to_string_pretty(&spec.genesis)? + "\n")
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {} (chain id {})", out.display(), spec.chain_id);
            Ok(())
        }
    }
}

fn backup(a: BackupArgs) -> anyhow::Result<()> {
    use fedpeg_proto::v1 as pb;
    let token = fedpeg_keys::load_admin_token(&a.admin_token).with_context(|| {
        format!(
            "--admin-token {} (the node's <data-dir>/admin.token)",
            a.admin_token.display()
        )
    })?;
    let path = a.out.map(|p| p.display().to_string()).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(a.api.clone())
            .with_context(|| {
                format!(
                    "--api '{}' is not a URL (e.g. http://127.0.0.1:20051)",
                    a.api
                )
            })?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| {
                format!("cannot reach fedpegd at {}; is it running? (--api)", a.api)
            })?;
        let mut req = tonic::Request::new(pb::BackupRequest { path });
        let bearer = format!("Bearer {token}")
            .parse()
            .context("admin token is not valid header text")?;
        req.metadata_mut().insert("authorization", bearer);
        pb::node_service_client::NodeServiceClient::new(channel)
            .backup(req)
            .await
            .map_err(|s| anyhow::anyhow!("backup refused: {}", s.message()))
    })?;
    let r = r.into_inner();
    println!(
        "backup of height {} (block {}) written to {} on the node's host",
        r.height, r.block_hash, r.path
    );
    println!("it holds no key: keep the member key file backed up separately, offline; copy the backup off this host");
    Ok(())
}

fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    use fedpegd::backup::restore::{restore, RestoreOptions};
    let genesis = a
        .genesis
        .as_deref()
        .map(fedpegd::config::load_genesis)
        .transpose()?;
    let r = restore(&RestoreOptions {
        backup: a.backup,
        data_dir: a.data_dir.clone(),
        genesis,
        force: a.force,
    })?;
    let m = &r.manifest;
    println!(
        "restored the backup of '{}' at height {} (block {}, chain {} '{}') into {}",
        m.member,
        m.height,
        m.block_hash,
        m.chain_id,
        m.chain_name,
        a.data_dir.display()
    );
    if let Some(p) = &r.moved_aside {
        println!(
            "the database and WAL it replaced are in {} (delete them once the node runs well)",
            p.display()
        );
    }
    if !r.genesis_checked {
        println!("not checked against a genesis (pass --genesis); `fedpegd run` refuses another chain's data when it starts");
    }
    println!("start the node with its key as before: it follows the chain without voting, then votes again from its vote floor");
    Ok(())
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    let mut c = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(v) = a.genesis {
        c.genesis = v;
    }
    if let Some(v) = a.data_dir {
        c.data_dir = v;
    }
    if let Some(v) = a.key {
        c.key_file = Some(v);
    }
    if let Some(v) = a.api_listen {
        c.api.listen = v;
    }
    if let Some(v) = a.heartbeat_ms {
        c.block.heartbeat_ms = v;
    }
    if let Some(v) = a.mempool_max {
        c.mempool.max_txs = v;
    }
    if let Some(v) = a.p2p_listen {
        c.p2p.listen = Some(v);
    }
    if let Some(v) = a.bitcoin_rpc_url {
        c.bitcoin.rpc_url = Some(v);
    }
    if let Some(v) = a.bitcoin_rpc_user {
        c.bitcoin.rpc_user = Some(v);
    }
    if let Some(v) = a.bitcoin_rpc_password {
        c.bitcoin.rpc_password = Some(v);
    }
    if let Some(v) = a.bitcoin_rpc_cookie {
        c.bitcoin.rpc_cookie = Some(v);
    }
    if let Some(v) = a.bitcoin_zmq_block {
        c.bitcoin.zmq_block = Some(v);
    }
    if let Some(v) = a.bitcoin_poll_ms {
        c.bitcoin.poll_ms = Some(v);
    }
    if let Some(v) = a.bitcoin_fee_rate {
        c.bitcoin.fee_rate_sat_vb = Some(v);
    }
    if let Some(v) = a.metrics_listen {
        c.metrics_listen = Some(v);
    }
    if let Some(v) = a.http_listen {
        c.http_listen = Some(v);
    }
    if let Some(v) = a.log_format {
        c.log.format = v;
    }
    if let Some(v) = a.max_streams {
        c.explorer.max_streams = v;
    }
    if let Some(v) = a.stream_buffer {
        c.explorer.stream_buffer = v;
    }
    if let Some(v) = a.max_lag_blocks {
        c.explorer.max_lag_blocks = v;
    }
    if let Some(v) = a.halt_height {
        c.halt_height = Some(v);
    } else if let Some(v) = std::env::var("FEDPEG_HALT_HEIGHT")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        // The environment (compose passes it empty when unset): empty is none.
        c.halt_height = Some(v.trim().parse().map_err(|_| {
            anyhow::anyhow!("FEDPEG_HALT_HEIGHT '{v}' is not a block height (a whole number)")
        })?);
    }
    c.validate()?;
    init_logs(&c.log.format, &c.log.filter);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(fedpegd::daemon::run(c, fedpegd::daemon::shutdown_signal()))
}
