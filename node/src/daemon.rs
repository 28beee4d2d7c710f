//! Running a node: load genesis and keys, open the chain, start block
//! production and the gRPC API, stop cleanly on a shutdown signal.

use crate::api::{Api, NodeIdentity};
use crate::chain::Chain;
use crate::config::Config;
use crate::genesis::Genesis;
use crate::keys::load_member_keys;
use anyhow::Context;
use fedpeg_proto::v1 as pb;
use std::sync::Arc;
use std::time::Duration;

/// Runs a node with `config` until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let spec = Genesis::load(&config.genesis)?;
    let member = match &config.key_file {
        Some(path) => Some(load_member_keys(path)?),
        None => None,
    };
    let member_index = match &member {
        None => None,
        Some(keys) => Some(spec.member_index(&keys.consensus.verifying_key()).with_context(|| {
            format!(
                "key file {} is not a member of this genesis (consensus key {} is not listed); check --key and --genesis",
                config.key_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                hex::encode(keys.consensus.verifying_key().to_bytes())
            )
        })?),
    };
    let n = spec.genesis.members.len();
    let chain_id = spec.chain_id;
    let chain = Arc::new(Chain::open(spec, &config.data_dir, config.mempool.max_txs)?);
    tracing::info!(
        chain_id = %chain_id,
        height = chain.height(),
        data_dir = %config.data_dir.display(),
        "chain opened"
    );
    let identity = NodeIdentity {
        role: if member.is_some() {
            pb::NodeRole::Member
        } else {
            pb::NodeRole::Observer
        },
        member_name: member.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = Api::new(chain.clone(), identity);
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", config.api.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "gRPC API listening");
    let api_task = tokio::spawn(api.serve_on(listener, stopped(stop_rx.clone())));
    let producer = match member_index {
        Some(idx) if n == 1 => Some(tokio::spawn(crate::producer::run_solo(
            chain.clone(),
            idx as u32,
            Duration::from_millis(config.block.heartbeat_ms),
            stopped(stop_rx.clone()),
        ))),
        Some(_) => anyhow::bail!(
            "this genesis has {n} members; multi-member consensus is not available in this build yet, run a one-member genesis"
        ),
        None => None,
    };
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(p) = producer {
        p.await??;
    }
    api_task.await??;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
