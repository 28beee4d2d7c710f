//! `fedpeg-feedbench`: explorer feed throughput and idle-subscriber memory.
//!
//! Builds a chain of `--blocks` blocks (each with `--txs-per-block`
//! transfers) in a temp dir with a one-member chain driven directly (no
//! consensus rounds, same store and commit path), serves the gRPC API on
//! loopback, then measures:
//! - blocks/s and events/s replayed through SubscribeBlocks from height 0,
//! - events/s replayed through SubscribeEvents from height 0,
//! - resident memory per idle subscriber: RSS of this (server) process
//!   before and after `--idle` SubscribeBlocks streams, opened by a child
//!   process so that client memory is not counted.
//!
//! Prints a summary and one JSON line.

use anyhow::{bail, Context};
use clap::Parser;
use ed25519_dalek::SigningKey;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::amount::Sats;
use fedpeg_ledger::block::CommittedBlock;
use fedpeg_ledger::genesis::{ConsensusParams, DevBalance, FeeParams, Genesis, MemberInfo};
use fedpeg_ledger::tx::{Transaction, TxKind};
use fedpeg_proto::v1 as pb;
use fedpegd::api::{Api, NodeIdentity};
use fedpegd::chain::Chain;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Measures explorer feed replay throughput and memory per idle subscriber.
#[derive(Parser)]
#[command(
    name = "fedpeg-feedbench",
    version,
    about = "Explorer feed benchmark: builds a chain, replays it through SubscribeBlocks/SubscribeEvents, measures memory per idle subscriber; prints JSON"
)]
struct Args {
    /// Blocks in the chain.
    #[arg(long, default_value_t = 10_000)]
    blocks: u64,
    /// Transfers per block (each causes a fee and a transfer event).
    #[arg(long, default_value_t = 5)]
    txs_per_block: u64,
    /// Idle subscribers for the memory measurement.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Internal: open `--idle` idle streams to this gRPC URL, print "ready", wait for stdin to close.
    #[arg(long, hide = true)]
    idle_client_of: Option<String>,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn genesis(faucet: &SigningKey) -> anyhow::Result<Genesis> {
    let member = SigningKey::from_bytes(&[3; 32]);
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let peg = bitcoin::secp256k1::SecretKey::from_slice(&[4; 32])?;
    Ok(Genesis {
        chain_name: "feedbench".into(),
        genesis_time_ms: 1,
        network: "regtest".into(),
        members: vec![MemberInfo {
            name: "bench".into(),
            consensus_key: hex::encode(member.verifying_key().to_bytes()),
            peg_key: peg.public_key(&secp).to_string(),
            p2p_address: "/ip4/127.0.0.1/tcp/1".into(),
        }],
        peg_threshold: 1,
        allow_unsafe_peg_threshold: false,
        pegin_confirmations: 1,
        consensus: ConsensusParams::default(),
        fees: FeeParams::default(),
        pegout: Default::default(),
        emergency: None,
        dev_balances: vec![DevBalance {
            address: AccountId(faucet.verifying_key().to_bytes()).to_address("fprt"),
            amount: Sats::MAX,
        }],
    })
}

fn build_chain(
    chain: &Chain,
    faucet: &SigningKey,
    blocks: u64,
    per_block: u64,
) -> anyhow::Result<()> {
    let min_fee = chain.spec.genesis.fees.min_tx_fee;
    let mut nonce = 0;
    for h in 1..=blocks {
        for i in 0..per_block {
            let to = AccountId(
                SigningKey::from_bytes(&[(i % 200) as u8 + 10; 32])
                    .verifying_key()
                    .to_bytes(),
            );
            let tx = Transaction::sign(
                chain.spec.chain_id,
                faucet,
                nonce,
                min_fee,
                TxKind::Transfer {
                    to,
                    amount: Sats::from_sat(1000)?,
                },
            );
            chain
                .submit_tx(tx)
                .map_err(|e| anyhow::anyhow!("submit at height {h}: {e}"))?;
            nonce += 1;
        }
        let p = chain.propose(h, 0, vec![], &Default::default())?;
        let cb = CommittedBlock {
            block: p.block,
            commit: vec![],
        };
        chain.commit(cb, p.outcome)?;
    }
    Ok(())
}

async fn idle_clients(url: String, n: usize) -> anyhow::Result<()> {
    // A handful of connections, many streams on each (like an explorer farm).
    let mut channels = Vec::new();
    for _ in 0..n.div_ceil(100) {
        channels.push(Channel::from_shared(url.clone())?.connect().await?);
    }
    let tip = pb::node_service_client::NodeServiceClient::new(channels[0].clone())
        .get_status(pb::GetStatusRequest {})
        .await?
        .into_inner()
        .height;
    let mut streams = Vec::new();
    for i in 0..n {
        let mut c = pb::explorer_service_client::ExplorerServiceClient::new(
            channels[i % channels.len()].clone(),
        );
        let s = c
            .subscribe_blocks(pb::SubscribeBlocksRequest {
                from_height: Some(tip as i64 + 1),
                include_raw: false,
            })
            .await?
            .into_inner();
        streams.push(s);
    }
    println!("ready");
    // Until the parent closes our stdin.
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut buf = [0u8; 1];
        std::io::stdin().read(&mut buf)
    })
    .await;
    drop(streams);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if let Some(url) = a.idle_client_of {
        return idle_clients(url, a.idle).await;
    }
    if a.blocks == 0 {
        bail!("--blocks must be at least 1");
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let dir = tempfile::tempdir()?;
    let faucet = SigningKey::from_bytes(&[5; 32]);
    let spec = genesis(&faucet)?.validate()?;
    let chain = Arc::new(Chain::open(spec, dir.path(), 100_000)?);
    let t = Instant::now();
    let (c2, f2, blocks, per) = (chain.clone(), faucet.clone(), a.blocks, a.txs_per_block);
    tokio::task::spawn_blocking(move || build_chain(&c2, &f2, blocks, per)).await??;
    let build_s = t.elapsed().as_secs_f64();
    eprintln!("built {} blocks in {build_s:.1} s", a.blocks);

    let api = Api::new(
        chain.clone(),
        NodeIdentity::observer(),
        None,
        Arc::default(),
    )
    .with_explorer_config(fedpegd::config::ExplorerConfig {
        max_streams: a.idle + 16,
        ..Default::default()
    });
    let stats = api.telemetry().feed_stats().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api.serve_on(listener, async {
        let _ = stop_rx.await;
    }));
    let ch = Channel::from_shared(url.clone())?.connect().await?;
    let mut explorer = pb::explorer_service_client::ExplorerServiceClient::new(ch)
        .max_decoding_message_size(64 * 1024 * 1024);

    // Blocks.
    let t = Instant::now();
    let mut s = explorer
        .subscribe_blocks(pb::SubscribeBlocksRequest {
            from_height: Some(0),
            include_raw: false,
        })
        .await?
        .into_inner();
    let (mut got, mut events, mut bytes) = (0u64, 0u64, 0u64);
    while got < a.blocks {
        let b = s.message().await?.context("stream ended early")?;
        got += 1;
        events += b.events.len() as u64;
        bytes += prost::Message::encoded_len(&b) as u64;
        if b.height != got {
            bail!("height {} arrived as block #{got}", b.height);
        }
    }
    drop(s);
    let blocks_s = t.elapsed().as_secs_f64();

    // Events.
    let t = Instant::now();
    let mut s = explorer
        .subscribe_events(pb::SubscribeEventsRequest {
            from_height: Some(0),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut ev_got = 0u64;
    while ev_got < events {
        s.message().await?.context("event stream ended early")?;
        ev_got += 1;
    }
    drop(s);
    let events_s = t.elapsed().as_secs_f64();

    // Memory per idle subscriber (server side only: clients in a child).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--idle-client-of")
        .arg(&url)
        .arg("--idle")
        .arg(a.idle.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncBufReadExt;
        let out = child.stdout.take().context("child stdout")?;
        let mut line = String::new();
        tokio::io::BufReader::new(out).read_line(&mut line).await?;
        if line.trim() != "ready" {
            bail!("idle client did not start: {line}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.block_streams.load(Ordering::Relaxed) < a.idle as u64 {
        if Instant::now() > deadline {
            bail!(
                "server saw only {} streams",
                stats.block_streams.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    drop(child.stdin.take());
    let _ = child.wait().await;
    let _ = stop_tx.send(());
    let _ = server.await;

    let per_sub_bytes = (after.saturating_sub(before) * 1024) as f64 / a.idle as f64;
    let result = serde_json::json!({
        "profile": profile,
        "blocks": a.blocks,
        "txs_per_block": a.txs_per_block,
        "events": events,
        "build_seconds": build_s,
        "subscribe_blocks": {
            "seconds": blocks_s,
            "blocks_per_s": a.blocks as f64 / blocks_s,
            "events_per_s": events as f64 / blocks_s,
            "mib_per_s": bytes as f64 / blocks_s / 1048576.0,
        },
        "subscribe_events": {
            "seconds": events_s,
            "events_per_s": events as f64 / events_s,
        },
        "idle_subscribers": a.idle,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_idle_subscriber": per_sub_bytes,
    });
    eprintln!(
        "[{profile}] SubscribeBlocks: {:.0} blocks/s, {:.0} events/s; SubscribeEvents: {:.0} events/s; {:.1} KiB per idle subscriber",
        a.blocks as f64 / blocks_s,
        events as f64 / blocks_s,
        events as f64 / events_s,
        per_sub_bytes / 1024.0
    );
    println!("{result}");
    Ok(())
}
