//! `fedpeg`: the fedpeg CLI wallet. Keys stay local; it signs transactions
//! and talks to a node over gRPC. This file holds the command line and the
//! dispatch; each subcommand lives in `cmd/`, and all output goes through
//! `report`.

mod client;
mod cmd;
mod report;
mod signer;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cmd::Context;
use report::{Printer, Report};

/// fedpeg wallet: keys, balances and transfers on a fedpeg sidechain.
#[derive(Parser)]
#[command(
    name = "fedpeg",
    version,
    about = "fedpeg wallet: keys, balances and transfers on a fedpeg sidechain (talks gRPC to a node)"
)]
struct Cli {
    /// gRPC endpoint of a fedpeg node.
    #[arg(
        long,
        global = true,
        env = "FEDPEG_NODE",
        default_value = "http://127.0.0.1:20051"
    )]
    node: String,
    /// Wallet key file.
    #[arg(long, global = true, env = "FEDPEG_KEY", default_value = "wallet.key")]
    key: PathBuf,
    /// Print JSON instead of human-readable text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new wallet key file (mode 0600) and print its address.
    Keygen {
        /// Network for the address prefix (bitcoin, testnet, signet, regtest); default: ask the node.
        #[arg(long)]
        network: Option<String>,
    },
    /// Print the wallet's address.
    Address {
        /// Network for the address prefix; default: ask the node.
        #[arg(long)]
        network: Option<String>,
    },
    /// Show the balance of an address (default: the wallet's).
    Balance {
        /// Address to look up.
        address: Option<String>,
    },
    /// Sign and submit a transfer, then wait until it is final.
    Send {
        /// Recipient address.
        #[arg(long)]
        to: String,
        /// Amount in sats.
        #[arg(long)]
        amount: u64,
        /// Fee in sats (default: the chain's minimum).
        #[arg(long)]
        fee: Option<u64>,
        /// Nonce to use (default: the account's next nonce).
        #[arg(long)]
        nonce: Option<u64>,
        /// Return after submitting, without waiting for a block.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Peg out: burn pegged BTC and have the federation pay a Bitcoin
    /// address. Shows the fee first, then waits until the burn is final
    /// (with --wait, until the Bitcoin transaction is confirmed).
    Pegout {
        /// Bitcoin address to pay.
        #[arg(long)]
        to: String,
        /// Amount in sats the address receives.
        #[arg(long)]
        amount: u64,
        /// Follow the peg-out to its Bitcoin confirmation.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
        /// Refuse to sign if the node quotes a fee above this many sats (the
        /// node sets the fee; a dishonest one could ask for your balance).
        #[arg(long, default_value_t = 100_000)]
        max_fee: u64,
    },
    /// Show where a peg-out is (by sidechain txid or withdrawal id).
    PegoutStatus {
        /// Sidechain txid of the PegOut, or a withdrawal id.
        id: String,
    },
    /// Show the federation's Bitcoin reserves against pegged supply.
    Reserves,
    /// Operator: acknowledge deep-reorg alerts (all open ones, or the
    /// outpoints given) so this member signs peg-outs again.
    AcknowledgeAlerts {
        /// The node's admin token file (default location: <data-dir>/admin.token).
        #[arg(long, value_name = "FILE")]
        admin_token: std::path::PathBuf,
        /// Alerts to acknowledge ("txid:vout"); default: every open one.
        outpoints: Vec<String>,
    },
    /// Operator: the federation's member set by epoch, and the votes that
    /// change it (show, propose, approve).
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
    /// Show the Bitcoin deposit address of an account (default: the wallet's)
    /// and wait until every member watches it.
    Pegin {
        /// Account to credit (default: the wallet's address).
        #[arg(long)]
        account: Option<String>,
        /// Give up waiting for the registration after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// Then show deposits' confirmations until the next one is minted.
        #[arg(long)]
        wait: bool,
        /// Give up --wait after this many seconds.
        #[arg(long, default_value_t = 7200)]
        wait_secs: u64,
    },
    /// Recover the federation's bitcoin with the genesis backup keys once
    /// the federation is gone: scan for its outputs, say how many blocks
    /// remain until each can be swept, and (with --to) sweep the open ones.
    /// Needs no member; see README "If the federation is gone".
    Recover(Box<RecoverArgs>),
    /// Show a transaction by id.
    Tx {
        /// Transaction id (64 hex characters).
        txid: String,
    },
    /// Show a block by height or hash.
    Block {
        /// Block height, or block hash (64 hex characters).
        id: String,
    },
    /// Show the node's status.
    Status,
    /// Check the node's gRPC health (`grpc.health.v1`): exit 0 when it is
    /// SERVING, 1 otherwise (for container health checks).
    Health {
        /// A service to check, e.g. `fedpeg.v1.WalletService` (default: the node).
        #[arg(long, default_value = "")]
        service: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Tail the node's feed of finalized blocks (or, with --account, that
    /// account's events); resumes by itself after a disconnect.
    Watch {
        /// First height (0: the whole chain; default: the next block).
        #[arg(long, value_name = "HEIGHT")]
        from: Option<u64>,
        /// Show only events involving this address.
        #[arg(long, value_name = "ADDRESS")]
        account: Option<String>,
        /// Stop after this many blocks (or events with --account).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

/// `fedpeg federation` subcommands.
#[derive(Subcommand)]
enum FederationCommand {
    /// Show every epoch's members and thresholds, an adopted change waiting
    /// for its height, and the changes being voted on.
    ///
    /// Each epoch lists its members (name, consensus key, peg key, p2p
    /// address), its peg threshold m of n and the consensus quorum; an
    /// adopted epoch says at which height it activates and in how many
    /// blocks; each pending change shows its id (what `fedpeg federation
    /// approve` takes), what it changes from the epoch in force, its voters
    /// and votes/needed. A change needs a quorum (2f+1) of the members in
    /// force voting for it, at least 10 blocks before its activation height.
    Show,
    /// Propose a change of the member set and vote for it with this
    /// member's key.
    ///
    /// Starts from the epoch in force and applies the edits in a fixed
    /// order: removals, then additions (appended), then key and address
    /// changes, then the threshold; shows the resulting set and the
    /// difference, and signs this member's vote. The change is adopted once
    /// a quorum (2f+1) of the members in force vote for it (the other
    /// operators run the `fedpeg federation approve` command printed at
    /// the end) at least 10 blocks before its activation height, from which
    /// height the new set decides blocks; each new member must by then run
    /// `fedpegd run --genesis <the chain's genesis.json> --key <its own key
    /// file>` so that it has caught up. Refused while an adopted change
    /// waits for its activation.
    Propose(Box<ProposeArgs>),
    /// Vote for a pending change, exactly as proposed, with this member's
    /// key.
    ///
    /// Finds CHANGE_ID among the pending changes (`fedpeg federation
    /// show`), shows what it changes and votes for it. Once a quorum (2f+1)
    /// of the members in force have voted it is adopted and takes effect at
    /// its activation height; a change whose height is less than 11 blocks
    /// away can no longer be adopted and must be proposed again. New
    /// members must be running `fedpegd run --genesis <the chain's
    /// genesis.json> --key <their own key file>` before that height.
    Approve {
        /// The node's admin token file (default location: <data-dir>/admin.token).
        #[arg(long, value_name = "FILE")]
        admin_token: PathBuf,
        /// The pending change's id (hex, from `fedpeg federation show`).
        change_id: String,
    },
}

/// Flags of `fedpeg federation propose`.
#[derive(clap::Args)]
struct ProposeArgs {
    /// The node's admin token file (default location: <data-dir>/admin.token).
    #[arg(long, value_name = "FILE")]
    admin_token: PathBuf,
    /// Add a member: the public info file its operator wrote with `fedpegd
    /// keygen --out KEY --name NAME --p2p-address MULTIADDR --public-out
    /// FILE` (a genesis members[] entry: name, consensus_key, peg_key,
    /// p2p_address); repeatable.
    #[arg(long = "add-member", value_name = "FILE")]
    add_members: Vec<PathBuf>,
    /// Remove the member NAME; repeatable.
    #[arg(long = "remove-member", value_name = "NAME")]
    remove_members: Vec<String>,
    /// Give member NAME a new ed25519 consensus key (64 hex); repeatable.
    #[arg(long = "set-consensus-key", value_name = "NAME=HEX")]
    set_consensus_keys: Vec<String>,
    /// Give member NAME a new secp256k1 peg key (66 hex, compressed); repeatable.
    #[arg(long = "set-peg-key", value_name = "NAME=HEX")]
    set_peg_keys: Vec<String>,
    /// Give member NAME a new libp2p address; repeatable.
    #[arg(long = "set-p2p-address", value_name = "NAME=MULTIADDR")]
    set_p2p_addresses: Vec<String>,
    /// Peg multisig threshold m of the new set (default: the one in force;
    /// it must satisfy f < m <= n - f).
    #[arg(long, value_name = "M")]
    peg_threshold: Option<u32>,
    /// First height the new set decides (at least 11 above the node's height).
    #[arg(long, value_name = "H")]
    activation_height: Option<u64>,
    /// Activate this many blocks above the node's height; the others must
    /// approve within BLOCKS - 10 blocks.
    #[arg(
        long,
        value_name = "BLOCKS",
        default_value_t = 20,
        conflicts_with = "activation_height"
    )]
    activate_in: u64,
}

/// Flags of `fedpeg recover`.
#[derive(clap::Args)]
struct RecoverArgs {
    /// The chain's genesis.json (it holds the members' and backup public keys).
    #[arg(long, value_name = "FILE")]
    genesis: PathBuf,
    /// bitcoind's JSON-RPC URL (any node of the genesis network; pruned is fine).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8332")]
    bitcoind_url: String,
    /// bitcoind's .cookie file (or use --bitcoind-user/--bitcoind-password).
    #[arg(long, value_name = "FILE")]
    bitcoind_cookie: Option<PathBuf>,
    /// bitcoind RPC user.
    #[arg(long, requires = "bitcoind_password")]
    bitcoind_user: Option<String>,
    /// bitcoind RPC password.
    #[arg(long, requires = "bitcoind_user")]
    bitcoind_password: Option<String>,
    /// File of accounts (fedpeg addresses, one per line, `#` comments)
    /// whose deposit addresses to scan; change is always scanned.
    #[arg(long, value_name = "FILE")]
    accounts: Option<PathBuf>,
    /// Also ask the node given by --node (any surviving member or observer)
    /// for the accounts of the deposits the federation holds.
    #[arg(long)]
    accounts_from_node: bool,
    /// A backup secret key file (from `fedpegd backup-keygen`); repeat per
    /// key. None: build the PSBT unsigned (with --psbt-out).
    #[arg(long = "backup-key", value_name = "FILE")]
    backup_keys: Vec<PathBuf>,
    /// Sweep every output whose timelock has passed to this Bitcoin address.
    #[arg(long, value_name = "ADDRESS")]
    to: Option<String>,
    /// Fee rate of the sweep, sat/vB; with --psbt-in, the most this holder signs for (a PSBT paying more in fees is refused).
    #[arg(long, value_name = "SAT_PER_VB", default_value_t = 10)]
    fee_rate: u64,
    /// Write the (partially) signed sweep PSBT, base64, to this file instead
    /// of broadcasting it.
    #[arg(long, value_name = "FILE")]
    psbt_out: Option<PathBuf>,
    /// Sign a sweep PSBT from `--psbt-out` with --backup-key, then broadcast
    /// it if it has enough signatures (or write it again with --psbt-out).
    /// Needs --to: it signs only a sweep that pays that address alone.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["accounts", "accounts_from_node"])]
    psbt_in: Option<PathBuf>,
    /// The federation's epochs, as `fedpeg federation show --json` writes
    /// them (keep a copy after every change): coins of an epoch after
    /// genesis pay its own descriptor, which genesis alone cannot rebuild.
    #[arg(long, value_name = "FILE")]
    epochs: Option<PathBuf>,
    /// Which epoch of --epochs to scan and sweep (default: the one in force
    /// in that file); one epoch per run.
    #[arg(long, value_name = "N", requires = "epochs")]
    epoch: Option<u32>,
}

async fn federation(
    ctx: &Context<'_>,
    out: &mut Printer,
    command: &FederationCommand,
) -> anyhow::Result<Report> {
    use cmd::federation::{approve, propose, show, EditFlags};
    match command {
        FederationCommand::Show => show::run(ctx).await,
        FederationCommand::Propose(a) => {
            let args = propose::Args {
                admin_token: &a.admin_token,
                edits: EditFlags {
                    add_members: &a.add_members,
                    remove_members: &a.remove_members,
                    set_consensus_keys: &a.set_consensus_keys,
                    set_peg_keys: &a.set_peg_keys,
                    set_p2p_addresses: &a.set_p2p_addresses,
                    peg_threshold: a.peg_threshold,
                },
                activation_height: a.activation_height,
                activate_in: a.activate_in,
            };
            propose::run(ctx, out, &args).await
        }
        FederationCommand::Approve {
            admin_token,
            change_id,
        } => approve::run(ctx, out, admin_token, change_id).await,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = Printer::stdio(cli.json);
    match run(&cli, &mut out).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader closed stdout (`fedpeg watch | head`): a normal end.
        Err(e) if report::is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            out.error(&e);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli, out: &mut Printer) -> anyhow::Result<()> {
    let report = dispatch(cli, out).await?;
    out.emit(&report)
}

async fn dispatch(cli: &Cli, out: &mut Printer) -> anyhow::Result<Report> {
    let ctx = Context {
        node: &cli.node,
        key: &cli.key,
    };
    match &cli.command {
        Command::Keygen { network } => cmd::keygen::run(&ctx, network.as_deref()).await,
        Command::Address { network } => cmd::address::run(&ctx, network.as_deref()).await,
        Command::Balance { address } => cmd::balance::run(&ctx, address.as_deref()).await,
        Command::Send {
            to,
            amount,
            fee,
            nonce,
            no_wait,
            timeout_secs,
        } => {
            let t = cmd::send::Transfer {
                to,
                amount: *amount,
                fee: *fee,
                nonce: *nonce,
            };
            cmd::send::run(&ctx, t, *no_wait, *timeout_secs).await
        }
        Command::Pegout {
            to,
            amount,
            wait,
            timeout_secs,
            max_fee,
        } => cmd::pegout::run(&ctx, out, to, *amount, *wait, *timeout_secs, *max_fee).await,
        Command::PegoutStatus { id } => cmd::pegout_status::run(&ctx, id).await,
        Command::Reserves => cmd::reserves::run(&ctx).await,
        Command::AcknowledgeAlerts {
            admin_token,
            outpoints,
        } => cmd::acknowledge_alerts::run(&ctx, admin_token, outpoints).await,
        Command::Federation { command } => federation(&ctx, out, command).await,
        Command::Pegin {
            account,
            timeout_secs,
            wait,
            wait_secs,
        } => {
            let w = cmd::pegin::Waits {
                timeout_secs: *timeout_secs,
                wait: *wait,
                wait_secs: *wait_secs,
            };
            cmd::pegin::run(&ctx, out, account.as_deref(), w).await
        }
        Command::Recover(a) => {
            let args = cmd::recover::Args {
                genesis: &a.genesis,
                bitcoind_url: &a.bitcoind_url,
                bitcoind_cookie: a.bitcoind_cookie.as_deref(),
                bitcoind_user: a.bitcoind_user.as_deref(),
                bitcoind_password: a.bitcoind_password.as_deref(),
                accounts: a.accounts.as_deref(),
                accounts_from_node: a.accounts_from_node,
                backup_keys: &a.backup_keys,
                to: a.to.as_deref(),
                fee_rate: a.fee_rate,
                psbt_out: a.psbt_out.as_deref(),
                psbt_in: a.psbt_in.as_deref(),
                epochs: a.epochs.as_deref(),
                epoch: a.epoch,
            };
            cmd::recover::run(&ctx, out, &args).await
        }
        Command::Tx { txid } => cmd::tx::run(&ctx, txid).await,
        Command::Block { id } => cmd::block::run(&ctx, id).await,
        Command::Status => cmd::status::run(&ctx).await,
        Command::Health {
            service,
            timeout_secs,
        } => cmd::health::run(&ctx, service, *timeout_secs).await,
        Command::Watch {
            from,
            account,
            count,
        } => cmd::watch::run(&ctx, out, *from, account.as_deref(), *count).await,
    }
}
