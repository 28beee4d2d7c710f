//! `fedpeg`: the fedpeg CLI wallet. Keys stay local; it signs transactions
//! and talks to a node over gRPC.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use fedpeg_ledger::account::{hrp_for, AccountId};
use fedpeg_ledger::amount::Sats;
use fedpeg_ledger::genesis::parse_network;
use fedpeg_ledger::hash::Hash32;
use fedpeg_keys::{create_wallet_key, load_wallet_key};
use fedpeg_ledger::tx::{Transaction, TxKind};
use fedpeg_proto::v1 as pb;
use fedpeg_proto::v1::{
    explorer_service_client::ExplorerServiceClient,
    federation_service_client::FederationServiceClient, node_service_client::NodeServiceClient,
    wallet_service_client::WalletServiceClient,
};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

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
    },
    /// Show where a peg-out is (by sidechain txid or withdrawal id).
    PegoutStatus {
        /// Sidechain txid of the PegOut, or a withdrawal id.
        id: String,
    },
    /// Show the federation's Bitcoin reserves against pegged supply.
    Reserves,
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

struct Client {
    channel: Channel,
}

fn status_error(what: &str, s: tonic::Status) -> anyhow::Error {
    let code = match s.code() {
        tonic::Code::InvalidArgument => "invalid",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::NotFound => "not found",
        tonic::Code::ResourceExhausted => "busy",
        tonic::Code::Unavailable => "node unavailable",
        _ => "error",
    };
    anyhow::anyhow!("{what}: {code}: {}", s.message())
}

impl Client {
    async fn connect(url: &str) -> anyhow::Result<Client> {
        let endpoint = Channel::from_shared(url.to_string())
            .with_context(|| {
                format!("--node '{url}' is not a valid URL (e.g. http://127.0.0.1:20051)")
            })?
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach a fedpeg node at {url}; is fedpegd running? (set --node or FEDPEG_NODE)"))?;
        Ok(Client { channel })
    }
    fn wallet(&self) -> WalletServiceClient<Channel> {
        WalletServiceClient::new(self.channel.clone())
    }
    fn explorer(&self) -> ExplorerServiceClient<Channel> {
        ExplorerServiceClient::new(self.channel.clone())
    }
    async fn status(&self) -> anyhow::Result<pb::GetStatusResponse> {
        Ok(NodeServiceClient::new(self.channel.clone())
            .get_status(pb::GetStatusRequest {})
            .await
            .map_err(|s| status_error("status", s))?
            .into_inner())
    }
}

/// `given`, or the wallet's own address on the node's network.
async fn given_or_wallet_address(
    cli: &Cli,
    c: &Client,
    given: &Option<String>,
) -> anyhow::Result<String> {
    match given {
        Some(a) => Ok(a.clone()),
        None => {
            let hrp = hrp_for(parse_network(&c.status().await?.network)?);
            Ok(AccountId(load_wallet_key(&cli.key)?.verifying_key().to_bytes()).to_address(hrp))
        }
    }
}

async fn hrp(cli: &Cli, network: &Option<String>) -> anyhow::Result<&'static str> {
    match network {
        Some(n) => Ok(hrp_for(parse_network(n)?)),
        None => {
            let c = Client::connect(&cli.node)
                .await
                .context("(or pass --network)")?;
            Ok(hrp_for(parse_network(&c.status().await?.network)?))
        }
    }
}

fn tx_json(t: &pb::TransactionView) -> serde_json::Value {
    json!({
        "txid": t.txid, "sender": t.sender, "nonce": t.nonce, "fee": t.fee,
        "kind": pb::TransactionKind::try_from(t.kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN"),
        "to": t.to, "bitcoin_address": t.bitcoin_address, "amount": t.amount,
    })
}

fn describe_tx(t: &pb::TransactionView) -> String {
    if t.to.is_empty() {
        format!(
            "{} peg-out {} sats → {} (fee {}, nonce {})",
            t.txid, t.amount, t.bitcoin_address, t.fee, t.nonce
        )
    } else {
        format!(
            "{} {} → {}: {} sats (fee {}, nonce {})",
            t.txid, t.sender, t.to, t.amount, t.fee, t.nonce
        )
    }
}

/// Prints each deposit's progress until one that was not minted at the
/// start is minted.
async fn wait_for_mint(
    c: &Client,
    address: &str,
    wait_secs: u64,
    json: bool,
) -> anyhow::Result<()> {
    let get = || async {
        c.wallet()
            .get_peg_ins(pb::GetPegInsRequest {
                selector: Some(pb::get_peg_ins_request::Selector::Address(
                    address.to_string(),
                )),
            })
            .await
            .map(|r| r.into_inner().peg_ins)
            .map_err(|s| status_error("pegin --wait", s))
    };
    let minted_before: std::collections::HashSet<String> = get()
        .await?
        .into_iter()
        .filter(|p| p.state == pb::PegInState::Minted as i32)
        .map(|p| p.outpoint)
        .collect();
    if !json {
        eprintln!("waiting for a deposit (Ctrl-C to stop)…");
    }
    let mut last: std::collections::HashMap<String, (i32, u32)> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    loop {
        for p in get().await? {
            if minted_before.contains(&p.outpoint) {
                continue;
            }
            let now = (p.state, p.confirmations);
            if last.get(&p.outpoint) == Some(&now) {
                continue;
            }
            last.insert(p.outpoint.clone(), now);
            let state = pb::PegInState::try_from(p.state)
                .map(|s| s.as_str_name())
                .unwrap_or("UNKNOWN");
            if json {
                println!(
                    "{}",
                    json!({ "outpoint": p.outpoint, "amount": p.amount, "state": state, "confirmations": p.confirmations,
                        "confirmations_required": p.confirmations_required, "eta_seconds": p.eta_seconds,
                        "minted_amount": p.minted_amount, "minted_height": p.minted_height })
                );
            } else if p.state == pb::PegInState::Minted as i32 {
                println!(
                    "deposit {} minted: {} sats credited at height {}",
                    p.outpoint, p.minted_amount, p.minted_height
                );
            } else if p.state == pb::PegInState::Confirming as i32 {
                println!(
                    "deposit {} of {} sats: {}/{} confirmations (~{} min)",
                    p.outpoint,
                    p.amount,
                    p.confirmations,
                    p.confirmations_required,
                    p.eta_seconds / 60
                );
            } else {
                println!("deposit {} of {} sats: {state}", p.outpoint, p.amount);
            }
            if p.state == pb::PegInState::Minted as i32 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("no deposit minted within {wait_secs} s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli).await {
        if cli.json {
            println!("{}", json!({ "error": format!("{e:#}") }));
        } else {
            eprintln!("error: {e:#}");
        }
        std::process::exit(1);
    }
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Keygen { network } => {
            let hrp = hrp(cli, network).await?;
            let key = create_wallet_key(&cli.key)?;
            let addr = AccountId(key.verifying_key().to_bytes()).to_address(hrp);
            if cli.json {
                println!("{}", json!({ "address": addr, "key_file": cli.key }));
            } else {
                println!("{addr}");
                eprintln!(
                    "key written to {} (mode 0600); keep it safe",
                    cli.key.display()
                );
            }
        }
        Command::Address { network } => {
            let hrp = hrp(cli, network).await?;
            let key = load_wallet_key(&cli.key)?;
            let addr = AccountId(key.verifying_key().to_bytes()).to_address(hrp);
            if cli.json {
                println!("{}", json!({ "address": addr }));
            } else {
                println!("{addr}");
            }
        }
        Command::Balance { address } => {
            let c = Client::connect(&cli.node).await?;
            let address = given_or_wallet_address(cli, &c, address).await?;
            let a = c
                .wallet()
                .get_account(pb::GetAccountRequest { address })
                .await
                .map_err(|s| status_error("balance", s))?
                .into_inner();
            if cli.json {
                println!(
                    "{}",
                    json!({ "address": a.address, "balance": a.balance, "spendable": a.spendable, "nonce": a.nonce, "next_nonce": a.next_nonce })
                );
            } else {
                println!("{}: {} sats", a.address, a.balance);
                if a.spendable != a.balance || a.next_nonce != a.nonce {
                    println!(
                        "  pending: spendable {} sats, next nonce {}",
                        a.spendable, a.next_nonce
                    );
                }
            }
        }
        Command::Send {
            to,
            amount,
            fee,
            nonce,
            no_wait,
            timeout_secs,
        } => {
            let c = Client::connect(&cli.node).await?;
            let key = load_wallet_key(&cli.key)?;
            let st = c.status().await?;
            let hrp = hrp_for(parse_network(&st.network)?);
            let to_id = AccountId::from_address(to, hrp).with_context(|| "--to")?;
            let chain_id = Hash32::from_hex(&st.chain_id).map_err(anyhow::Error::msg)?;
            let me = AccountId(key.verifying_key().to_bytes()).to_address(hrp);
            let nonce = match nonce {
                Some(n) => *n,
                None => {
                    c.wallet()
                        .get_account(pb::GetAccountRequest {
                            address: me.clone(),
                        })
                        .await
                        .map_err(|s| status_error("account", s))?
                        .into_inner()
                        .next_nonce
                }
            };
            let tx = Transaction::sign(
                chain_id,
                &key,
                nonce,
                Sats(fee.unwrap_or(st.min_tx_fee)),
                TxKind::Transfer {
                    to: to_id,
                    amount: Sats(*amount),
                },
            );
            let started = Instant::now();
            let txid = c
                .wallet()
                .submit_transaction(pb::SubmitTransactionRequest {
                    transaction: tx.encode(),
                })
                .await
                .map_err(|s| status_error("send", s))?
                .into_inner()
                .txid;
            if *no_wait {
                if cli.json {
                    println!("{}", json!({ "txid": txid, "status": "PENDING" }));
                } else {
                    println!("submitted {txid}");
                }
                return Ok(());
            }
            let deadline = started + Duration::from_secs(*timeout_secs);
            loop {
                let r = c
                    .explorer()
                    .get_transaction(pb::GetTransactionRequest { txid: txid.clone() })
                    .await;
                match r {
                    Ok(r) if r.get_ref().status == pb::TransactionStatus::Finalized as i32 => {
                        let r = r.into_inner();
                        let secs = started.elapsed().as_secs_f64();
                        if cli.json {
                            println!(
                                "{}",
                                json!({ "txid": txid, "status": "FINALIZED", "height": r.block_height, "block_hash": r.block_hash, "seconds": secs })
                            );
                        } else {
                            println!("sent {amount} sats to {to}");
                            println!("txid {txid}");
                            println!("final in block {} after {:.2} s", r.block_height, secs);
                        }
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        bail!("transaction {txid} was dropped from the mempool before it was included; check balance and nonce, then resend")
                    }
                    Err(s) => return Err(status_error("waiting for the transaction", s)),
                }
                if Instant::now() > deadline {
                    bail!("transaction {txid} not final after {timeout_secs} s; check it later with `fedpeg tx {txid}`");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Command::Pegout {
            to,
            amount,
            wait,
            timeout_secs,
        } => pegout(cli, to, *amount, *wait, *timeout_secs).await?,
        Command::PegoutStatus { id } => {
            let c = Client::connect(&cli.node).await?;
            let selector = match id.parse::<u64>() {
                Ok(n) if id.len() < 20 => pb::get_peg_out_request::Selector::WithdrawalId(n),
                _ => pb::get_peg_out_request::Selector::Txid(id.clone()),
            };
            let p = c
                .wallet()
                .get_peg_out(pb::GetPegOutRequest {
                    selector: Some(selector),
                })
                .await
                .map_err(|s| status_error("peg-out", s))?
                .into_inner()
                .peg_out
                .context("node sent no peg-out")?;
            print_pegout(cli, &p);
        }
        Command::Reserves => {
            let c = Client::connect(&cli.node).await?;
            let r = c
                .wallet()
                .get_reserves(pb::GetReservesRequest {})
                .await
                .map_err(|s| status_error("reserves", s))?
                .into_inner();
            if cli.json {
                println!("{}", reserves_json(&r));
            } else {
                print_reserves(&r);
                for u in &r.utxos {
                    let lock = match u.locked_by_batch {
                        Some(b) => format!(" (locked by batch {b})"),
                        None => String::new(),
                    };
                    println!("  {} {} sats {}{}", u.outpoint, u.amount, u.kind, lock);
                }
            }
        }
        Command::Pegin {
            account,
            timeout_secs,
            wait,
            wait_secs,
        } => {
            let c = Client::connect(&cli.node).await?;
            let address = given_or_wallet_address(cli, &c, account).await?;
            let deadline = Instant::now() + Duration::from_secs(*timeout_secs);
            let r = loop {
                let r = c
                    .wallet()
                    .get_peg_in_address(pb::GetPegInAddressRequest {
                        address: address.clone(),
                    })
                    .await
                    .map_err(|s| status_error("pegin", s))?
                    .into_inner();
                if r.registered {
                    break r;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the deposit address {} is not registered after {timeout_secs} s; do not send to it yet, retry `fedpeg pegin`",
                        r.deposit_address
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            if cli.json {
                println!(
                    "{}",
                    json!({ "account": address, "deposit_address": r.deposit_address, "descriptor": r.descriptor,
                        "registered": r.registered, "confirmations_required": r.confirmations_required,
                        "min_deposit_sats": r.min_deposit_sats })
                );
            } else {
                println!("send bitcoin to   {}", r.deposit_address);
                println!("credited to       {address}");
                println!("descriptor        {}", r.descriptor);
                println!(
                    "minimum deposit   {} sats (smaller deposits cost more to spend than they are worth)",
                    r.min_deposit_sats
                );
                println!(
                    "confirmations     {} before the deposit is minted",
                    r.confirmations_required
                );
            }
            if *wait {
                wait_for_mint(&c, &address, *wait_secs, cli.json).await?;
            }
        }
        Command::Tx { txid } => {
            let c = Client::connect(&cli.node).await?;
            let r = c
                .explorer()
                .get_transaction(pb::GetTransactionRequest { txid: txid.clone() })
                .await
                .map_err(|s| status_error("tx", s))?
                .into_inner();
            let status = pb::TransactionStatus::try_from(r.status)
                .map(|s| s.as_str_name())
                .unwrap_or("UNKNOWN");
            let t = r.transaction.unwrap_or_default();
            if cli.json {
                println!(
                    "{}",
                    json!({ "transaction": tx_json(&t), "status": status, "height": r.block_height, "block_hash": r.block_hash, "index": r.index_in_block })
                );
            } else {
                println!("{}", describe_tx(&t));
                if r.status == pb::TransactionStatus::Finalized as i32 {
                    println!(
                        "final in block {} ({}), index {}",
                        r.block_height, r.block_hash, r.index_in_block
                    );
                } else {
                    println!("pending in the mempool");
                }
            }
        }
        Command::Block { id } => {
            let c = Client::connect(&cli.node).await?;
            let selector = match id.parse::<u64>() {
                Ok(h) => pb::get_block_request::Selector::Height(h),
                Err(_) => pb::get_block_request::Selector::Hash(id.clone()),
            };
            let b = c
                .explorer()
                .get_block(pb::GetBlockRequest {
                    selector: Some(selector),
                })
                .await
                .map_err(|s| status_error("block", s))?
                .into_inner()
                .block
                .unwrap_or_default();
            if cli.json {
                println!(
                    "{}",
                    json!({ "height": b.height, "hash": b.hash, "parent_hash": b.parent_hash, "time_ms": b.time_ms,
                        "proposer": b.proposer_name, "state_root": b.state_root,
                        "transactions": b.transactions.iter().map(tx_json).collect::<Vec<_>>() })
                );
            } else {
                println!("block {} {}", b.height, b.hash);
                println!("  parent   {}", b.parent_hash);
                println!("  time     {} ms", b.time_ms);
                println!("  proposer {} ({})", b.proposer_name, b.proposer);
                println!("  {} transaction(s)", b.transactions.len());
                for t in &b.transactions {
                    println!("  {}", describe_tx(t));
                }
            }
        }
        Command::Watch {
            from,
            account,
            count,
        } => {
            let c = Client::connect(&cli.node).await?;
            watch(&c, *from, account.as_deref(), *count, cli.json).await?;
        }
        Command::Status => {
            let c = Client::connect(&cli.node).await?;
            let s = c.status().await?;
            // Older nodes have no federation service: show what there is.
            let f = FederationServiceClient::new(c.channel.clone())
                .get_federation(pb::GetFederationRequest {})
                .await
                .ok()
                .map(|r| r.into_inner());
            let role = pb::NodeRole::try_from(s.role)
                .map(|r| r.as_str_name())
                .unwrap_or("UNKNOWN");
            if cli.json {
                println!(
                    "{}",
                    json!({ "chain_id": s.chain_id, "network": s.network, "height": s.height, "tip_hash": s.tip_hash,
                        "role": role, "member_name": s.member_name, "members": s.members, "mempool_size": s.mempool_size,
                        "min_tx_fee": s.min_tx_fee, "pegout_fee": s.pegout_fee, "version": s.version,
                        "round": s.round, "peers": s.peers.len(),
                        "federation": f.as_ref().map(federation_json),
                        "bitcoin": { "reachable": s.bitcoind_reachable,
                            "tip_height": f.as_ref().map(|f| f.bitcoin_tip_height),
                            "deep_reorg_alerts": s.deep_reorg_alerts } })
                );
            } else {
                println!("chain    {} ({})", s.chain_id, s.network);
                println!("height   {} tip {}", s.height, s.tip_hash);
                println!("node     {} {}", role, s.member_name);
                println!("members  {}", s.members);
                println!("mempool  {} transaction(s)", s.mempool_size);
                println!(
                    "fees     min {} sats, peg-out {} sats",
                    s.min_tx_fee, s.pegout_fee
                );
                println!("round    {}, {} peer(s)", s.round, s.peers.len());
                if let Some(f) = &f {
                    print_federation(f, &s);
                }
            }
        }
    }
    Ok(())
}

fn pegout_state_name(s: i32) -> &'static str {
    match pb::PegOutState::try_from(s).unwrap_or(pb::PegOutState::Unspecified) {
        pb::PegOutState::Queued => "QUEUED",
        pb::PegOutState::Signing => "SIGNING",
        pb::PegOutState::Broadcast => "BROADCAST",
        pb::PegOutState::Confirmed => "CONFIRMED",
        pb::PegOutState::Replaced => "REPLACED",
        pb::PegOutState::Unspecified => "UNKNOWN",
    }
}

fn print_pegout(cli: &Cli, p: &pb::PegOutInfo) {
    let state = pegout_state_name(p.state);
    if cli.json {
        println!(
            "{}",
            json!({"withdrawal_id": p.withdrawal_id, "txid": p.txid, "state": state, "amount": p.amount, "bitcoin_address": p.bitcoin_address, "batch": p.batch, "bitcoin_txid": p.bitcoin_txid, "vout": p.vout, "signatures": p.signatures, "signatures_required": p.signatures_required, "confirmations": p.confirmations, "confirmations_required": p.confirmations_required, "eta_seconds": p.eta_seconds, "fee_rate_sat_vb": p.fee_rate_sat_vb})
        );
        return;
    }
    let detail = match state {
        "QUEUED" => "waiting for a batch".to_string(),
        "SIGNING" => format!(
            "batch {} ({}), signatures {} of {}",
            p.batch, p.bitcoin_txid, p.signatures, p.signatures_required
        ),
        "BROADCAST" => format!(
            "bitcoin tx {}:{} at {} sat/vB, confirmations {} of {}, about {} min left",
            p.bitcoin_txid,
            p.vout,
            p.fee_rate_sat_vb,
            p.confirmations,
            p.confirmations_required,
            p.eta_seconds.div_ceil(60)
        ),
        "CONFIRMED" => format!("paid by bitcoin tx {}:{}", p.bitcoin_txid, p.vout),
        _ => String::new(),
    };
    println!(
        "peg-out {} of {} sats to {}: {state} {detail}",
        p.withdrawal_id, p.amount, p.bitcoin_address
    );
}

async fn pegout(
    cli: &Cli,
    to: &str,
    amount: u64,
    wait: bool,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let c = Client::connect(&cli.node).await?;
    let key = load_wallet_key(&cli.key)?;
    let st = c.status().await?;
    let hrp = hrp_for(parse_network(&st.network)?);
    let chain_id = Hash32::from_hex(&st.chain_id).map_err(anyhow::Error::msg)?;
    let me = AccountId(key.verifying_key().to_bytes()).to_address(hrp);
    let quote = c
        .wallet()
        .estimate_peg_out_fee(pb::EstimatePegOutFeeRequest {
            bitcoin_address: to.to_string(),
        })
        .await
        .map_err(|s| status_error("peg-out fee", s))?
        .into_inner();
    if !cli.json {
        println!(
            "peg-out of {amount} sats to {to} ({}): fee {} sats at {} sat/vB; {} sats leave your balance",
            quote.address_type,
            quote.fee,
            quote.fee_rate_sat_vb,
            amount.saturating_add(quote.fee)
        );
    }
    let nonce = c
        .wallet()
        .get_account(pb::GetAccountRequest { address: me })
        .await
        .map_err(|s| status_error("account", s))?
        .into_inner()
        .next_nonce;
    let tx = Transaction::sign(
        chain_id,
        &key,
        nonce,
        Sats(quote.fee),
        TxKind::PegOut {
            bitcoin_address: to.to_string(),
            amount: Sats(amount),
        },
    );
    let started = Instant::now();
    let txid = c
        .wallet()
        .submit_transaction(pb::SubmitTransactionRequest {
            transaction: tx.encode(),
        })
        .await
        .map_err(|s| status_error("peg-out", s))?
        .into_inner()
        .txid;
    if !cli.json {
        println!("burn submitted: {txid}");
    }
    let deadline = started + Duration::from_secs(timeout_secs);
    let mut last = String::new();
    loop {
        let r = c
            .wallet()
            .get_peg_out(pb::GetPegOutRequest {
                selector: Some(pb::get_peg_out_request::Selector::Txid(txid.clone())),
            })
            .await;
        match r {
            Ok(r) => {
                let p = r.into_inner().peg_out.context("node sent no peg-out")?;
                let line = format!(
                    "{}/{}/{}/{}",
                    p.state, p.signatures, p.confirmations, p.batch_version
                );
                if line != last {
                    last = line;
                    print_pegout(cli, &p);
                }
                let done = if wait {
                    p.state == pb::PegOutState::Confirmed as i32
                } else {
                    true
                };
                if done {
                    return Ok(());
                }
            }
            Err(s) if s.code() == tonic::Code::NotFound => {
                // Not final yet: is it still pooled?
                let t = c
                    .explorer()
                    .get_transaction(pb::GetTransactionRequest { txid: txid.clone() })
                    .await;
                if matches!(&t, Err(s) if s.code() == tonic::Code::NotFound) {
                    bail!("peg-out {txid} was dropped before it was included (fee quote changed, or balance/nonce); run the command again");
                }
            }
            Err(s) => return Err(status_error("peg-out status", s)),
        }
        if Instant::now() > deadline {
            bail!("peg-out {txid} not done after {timeout_secs} s; check with `fedpeg pegout-status {txid}`");
        }
        tokio::time::sleep(Duration::from_millis(if wait { 1000 } else { 50 })).await;
    }
}

fn reserves_json(r: &pb::GetReservesResponse) -> serde_json::Value {
    json!({"height": r.height, "available": r.available, "locked": r.locked,
        "pending_change": r.pending_change, "supply": r.supply, "queued": r.queued,
        "in_batches": r.in_batches, "fee_pool": r.fee_pool, "covered": r.covered,
        "utxos": r.utxos.len()})
}

fn print_reserves(r: &pb::GetReservesResponse) {
    println!("at height {}", r.height);
    println!(
        "reserves  {} sats confirmed ({} free, {} locked in unconfirmed batches; {} change pending)",
        r.available + r.locked,
        r.available,
        r.locked,
        r.pending_change
    );
    println!(
        "owed      {} sats ({} supply, {} queued peg-outs, {} in batches)",
        r.supply + r.queued + r.in_batches,
        r.supply,
        r.queued,
        r.in_batches
    );
    println!("fee pool  {} sats", r.fee_pool);
    println!("covered   {}", if r.covered { "yes" } else { "NO" });
}

fn federation_json(f: &pb::GetFederationResponse) -> serde_json::Value {
    json!({
        "members": f.members.iter().map(|m| json!({ "name": m.name, "online": m.online,
            "last_seen_ms": m.last_seen_ms, "is_self": m.is_self })).collect::<Vec<_>>(),
        "consensus_quorum": f.consensus_quorum, "peg_threshold": f.peg_threshold,
        "pegin_confirmations": f.pegin_confirmations, "peg_descriptor": f.peg_descriptor,
        "reserves": f.reserves.as_ref().map(reserves_json),
    })
}

fn print_federation(f: &pb::GetFederationResponse, s: &pb::GetStatusResponse) {
    let online = f.members.iter().filter(|m| m.online).count();
    println!(
        "quorum   {} of {} to finalize, peg {} of {}; {} member(s) online",
        f.consensus_quorum,
        f.members.len(),
        f.peg_threshold,
        f.members.len(),
        online
    );
    for m in &f.members {
        let seen = if m.is_self {
            "this node".to_string()
        } else if m.online {
            "online".to_string()
        } else if m.last_seen_ms == 0 {
            "not seen".to_string()
        } else {
            format!("last seen at {} ms", m.last_seen_ms)
        };
        println!("  {:<12} {}", m.name, seen);
    }
    if f.bitcoin_tip_height > 0 || s.bitcoind_reachable {
        println!(
            "bitcoin  tip {} ({}), {} deep-reorg alert(s)",
            f.bitcoin_tip_height,
            if s.bitcoind_reachable {
                "reachable"
            } else {
                "UNREACHABLE"
            },
            s.deep_reorg_alerts.len()
        );
    } else {
        println!("bitcoin  this node watches no bitcoind");
    }
    if let Some(r) = &f.reserves {
        print_reserves(r);
    }
}

/// One event as text and JSON.
fn describe_event(e: &pb::ChainEvent) -> (String, serde_json::Value) {
    use pb::chain_event::Event as Ev;
    let kind = pb::EventKind::try_from(e.kind)
        .map(|k| k.as_str_name())
        .unwrap_or("UNKNOWN");
    let (text, detail) = match &e.event {
        Some(Ev::Transfer(t)) => (
            format!("transfer {} → {}: {} sats", t.from, t.to, t.amount),
            json!({ "from": t.from, "to": t.to, "amount": t.amount }),
        ),
        Some(Ev::Fee(f)) => (
            format!("fee {} sats from {}", f.amount, f.from),
            json!({ "from": f.from, "amount": f.amount }),
        ),
        Some(Ev::Mint(m)) => (
            format!(
                "mint {} sats to {} (deposit {})",
                m.amount, m.account, m.outpoint
            ),
            json!({ "account": m.account, "amount": m.amount, "outpoint": m.outpoint }),
        ),
        Some(Ev::Burn(b)) => (
            format!(
                "burn {} sats from {} → {} (withdrawal {})",
                b.amount, b.account, b.bitcoin_address, b.withdrawal_id
            ),
            json!({ "account": b.account, "amount": b.amount, "bitcoin_address": b.bitcoin_address,
                "withdrawal_id": b.withdrawal_id }),
        ),
        Some(Ev::DepositAddressRegistered(d)) => (
            format!(
                "deposit address of {} registered by member {}",
                d.account, d.member
            ),
            json!({ "account": d.account, "member": d.member }),
        ),
        Some(Ev::PegOutStateChanged(p)) => {
            let state = pegout_state_name(p.state);
            let detail = match pb::PegOutState::try_from(p.state) {
                Ok(pb::PegOutState::Signing | pb::PegOutState::Broadcast) if p.signatures > 0 => {
                    format!(
                        ", {} signature set(s), the last from member {}",
                        p.signatures,
                        p.member.unwrap_or_default()
                    )
                }
                Ok(pb::PegOutState::Replaced) => format!(
                    ", version {} at {} sat/vB",
                    p.batch_version, p.fee_rate_sat_vb
                ),
                _ => String::new(),
            };
            (
                format!(
                    "peg-out batch {} {state}: withdrawal(s) {:?}, bitcoin tx {}{detail}",
                    p.batch, p.withdrawal_ids, p.bitcoin_txid
                ),
                json!({ "batch": p.batch, "state": state, "bitcoin_txid": p.bitcoin_txid,
                    "batch_version": p.batch_version, "fee_rate_sat_vb": p.fee_rate_sat_vb,
                    "signatures": p.signatures, "member": p.member,
                    "withdrawal_ids": p.withdrawal_ids, "accounts": p.accounts }),
            )
        }
        None => ("(empty event)".into(), json!({})),
    };
    (
        format!("{}.{} {text}", e.height, e.index),
        json!({ "height": e.height, "index": e.index, "kind": kind, "txid": e.txid, "detail": detail }),
    )
}

/// Tails blocks, or an account's events, reconnecting from where it left
/// off when the stream ends (cut off as too slow, node restarted).
async fn watch(
    c: &Client,
    from: Option<u64>,
    account: Option<&str>,
    count: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let mut next = match from {
        Some(h) => (h, 0u32),
        None => (c.status().await?.height + 1, 0),
    };
    let mut shown = 0u64;
    let done = |shown: u64| count.is_some_and(|n| shown >= n);
    let mut failures = 0u32;
    while !done(shown) {
        let from_height = i64::try_from(next.0).context("--from is too large")?;
        let result: Result<(), tonic::Status> = async {
            if let Some(a) = account {
                let mut s = c
                    .explorer()
                    .subscribe_events(pb::SubscribeEventsRequest {
                        from_height: Some(from_height),
                        from_index: next.1,
                        accounts: vec![a.to_string()],
                        kinds: vec![],
                    })
                    .await?
                    .into_inner();
                while let Some(e) = s.message().await? {
                    let (text, j) = describe_event(&e);
                    println!("{}", if json { j.to_string() } else { text });
                    next = (e.height, e.index + 1);
                    shown += 1;
                    failures = 0;
                    if done(shown) {
                        break;
                    }
                }
            } else {
                let mut s = c
                    .explorer()
                    .subscribe_blocks(pb::SubscribeBlocksRequest {
                        from_height: Some(from_height),
                        include_raw: false,
                    })
                    .await?
                    .into_inner();
                while let Some(b) = s.message().await? {
                    print_feed_block(&b, json);
                    next = (b.height + 1, 0);
                    shown += 1;
                    failures = 0;
                    if done(shown) {
                        break;
                    }
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {}
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::ResourceExhausted
                        | tonic::Code::Unavailable
                        | tonic::Code::Unknown
                ) && failures < 30 =>
            {
                failures += 1;
                eprintln!(
                    "watch: {}; resuming from height {} in 1 s",
                    s.message(),
                    next.0
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(s) => return Err(status_error("watch", s)),
        }
    }
    Ok(())
}

fn print_feed_block(b: &pb::FeedBlock, json: bool) {
    let signers = b
        .commit
        .as_ref()
        .map(|c| c.signer_names.join(","))
        .unwrap_or_default();
    if json {
        println!(
            "{}",
            json!({ "height": b.height, "hash": b.hash, "parent_hash": b.parent_hash, "time_ms": b.time_ms,
                "proposer": b.proposer_name, "signers": signers,
                "transactions": b.transactions.iter().filter_map(|t| t.transaction.as_ref()).map(tx_json).collect::<Vec<_>>(),
                "events": b.events.iter().map(|e| describe_event(e).1).collect::<Vec<_>>() })
        );
        return;
    }
    println!(
        "block {} {} by {} signed by [{}]: {} transaction(s), {} event(s)",
        b.height,
        b.hash,
        b.proposer_name,
        signers,
        b.transactions.len(),
        b.events.len()
    );
    for e in &b.events {
        println!("  {}", describe_event(e).0);
    }
}
