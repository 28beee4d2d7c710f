//! Running a node: load genesis and keys, open the chain, join the libp2p
//! network, run the consensus driver (member) or block sync (observer), the
//! sync server and the gRPC API, and stop cleanly on a shutdown signal or
//! at the halt height ([`crate::halt`]).

use crate::api::{Api, NodeIdentity};
use crate::chain::Chain;
use crate::config::Config;
use crate::driver::{ConsensusStatus, Driver, DriverConfig, Stop};
use crate::halt::AtStart;
use crate::network::{
    peer_id_from_consensus_key, MemberPeer, Multiaddr, Network, NetworkConfig, SYNC_QUEUE,
};
use crate::sync_server::{SyncServer, SyncServerConfig};
use anyhow::Context;
use fedpeg_keys::load_member_keys;
use fedpeg_ledger::genesis::ChainSpec;
use fedpeg_proto::v1 as pb;
use std::sync::Arc;
use std::time::Duration;

/// Genesis members as the network sees them.
pub fn member_peers(spec: &ChainSpec) -> anyhow::Result<Vec<MemberPeer>> {
    spec.genesis
        .members
        .iter()
        .enumerate()
        .map(|(index, m)| {
            let key = spec.member_keys[index].to_bytes();
            let addr: Multiaddr = m.p2p_address.parse().with_context(|| {
                format!(
                    "genesis member '{}': p2p_address '{}' is not a multiaddress",
                    m.name, m.p2p_address
                )
            })?;
            Ok(MemberPeer {
                index,
                peer_id: peer_id_from_consensus_key(&key)?,
                addr,
            })
        })
        .collect()
}

/// Members of an epoch as the network sees them, indexed in the order
/// given. Addresses parse: genesis ones are checked at start, and a change
/// is adopted only with `fedpeg_ledger::epoch::check_p2p_address` forms.
/// Should one not parse anyway, the member is still listed, at an address
/// nobody listens on, so that its connections to us count as a member's.
pub fn epoch_peers(members: &[fedpeg_ledger::epoch::EpochMember]) -> Vec<MemberPeer> {
    members
        .iter()
        .enumerate()
        .filter_map(|(index, m)| {
            let peer_id = peer_id_from_consensus_key(&m.consensus_key.to_bytes()).ok()?;
            let addr: Multiaddr = match m.p2p_address.parse() {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(member = %m.name, address = %m.p2p_address, error = %e, "member's p2p address is not a multiaddress; it cannot be dialed (it may dial us)");
                    "/ip4/0.0.0.0/tcp/0".parse().ok()?
                }
            };
            Some(MemberPeer {
                index,
                peer_id,
                addr,
            })
        })
        .collect()
}

/// Runs a node with `config` until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let spec = crate::config::load_genesis(&config.genesis)?;
    let member = match &config.key_file {
        Some(path) => Some(load_member_keys(path)?),
        None => None,
    };
    // Genesis addresses must parse (a typo is a configuration error).
    member_peers(&spec)?;
    let chain_id = spec.chain_id;
    let chain = Arc::new(Chain::open(spec, &config.data_dir, config.mempool.max_txs)?);
    // The member this key is in the newest epoch the chain knows that
    // lists it (genesis, past changes, the one in force, an adopted one):
    // its p2p address. A key in none may be a member a federation change
    // adds that this node has not synced yet: it follows as an observer,
    // and votes once the chain brings it into the epoch in force.
    let own_entry = match &member {
        None => None,
        Some(keys) => {
            let key = keys.consensus.verifying_key();
            let entry = chain.with_state(|s| {
                s.epochs
                    .iter()
                    .rev()
                    .find_map(|e| e.members.iter().find(|m| m.consensus_key == key).cloned())
            });
            if entry.is_none() {
                tracing::warn!(
                    consensus_key = %hex::encode(key.to_bytes()),
                    "this key is in no epoch of the federation this node has stored (genesis or a change): following the chain; it votes once a federation change that lists it is in force. If it should already be a member, check --key and --genesis"
                );
                if config.p2p.listen.is_none() {
                    anyhow::bail!("a member not yet in the federation this node has stored needs --p2p-listen (the p2p address given in the federation change that adds it)");
                }
            }
            entry
        }
    };
    let members = epoch_peers(&chain.network_members());
    let listen: Multiaddr = match (&config.p2p.listen, &own_entry) {
        (Some(l), _) => l
            .parse()
            .with_context(|| format!("p2p listen address '{l}' is not a multiaddress"))?,
        (None, Some(m)) => m.p2p_address.parse().with_context(|| {
            format!(
                "member '{}': p2p_address '{}' is not a multiaddress; pass --p2p-listen",
                m.name, m.p2p_address
            )
        })?,
        (None, None) => "/ip4/127.0.0.1/tcp/0".parse()?,
    };
    tracing::info!(chain_id = %chain_id, height = chain.height(), data_dir = %config.data_dir.display(), version = crate::build_info::VERSION, halt_height = ?config.halt_height, "chain opened");
    // Before the network: a node at its halt height must not join consensus.
    if crate::halt::at_start(config.halt_height, chain.height())? == AtStart::Halted {
        tracing::info!(
            "{}",
            crate::halt::halted_message(
                chain.height(),
                "the chain is already at this height; not joining the network"
            )
        );
        return Ok(());
    }
    // Transactions pooled when this node last halted (any binary's halt).
    let (admitted, dropped) = crate::halt::readmit_pending(&chain, &config.data_dir);
    if admitted + dropped > 0 {
        tracing::info!(
            admitted,
            dropped,
            "re-admitted the transactions pooled at the last halt (dropped: no longer valid)"
        );
    }

    let (ev_tx, ev_rx) = tokio::sync::mpsc::channel(4096);
    let (sync_tx, sync_rx) = tokio::sync::mpsc::channel(SYNC_QUEUE);
    let mut net_cfg = NetworkConfig::new(
        member.as_ref().map(|m| m.consensus.to_bytes()),
        listen,
        members,
    );
    net_cfg.max_observer_connections = config.p2p.max_observer_connections;
    net_cfg.max_block_txs = chain.params().max_block_txs;
    let net = Network::start(net_cfg, ev_tx, sync_tx).await?;
    tracing::info!(peer_id = %net.local_peer_id(), "p2p started");
    // Serving sync to peers, off the consensus task.
    tokio::spawn(SyncServer::new(chain.clone(), &SyncServerConfig::default()).run(sync_rx));

    let status = Arc::new(ConsensusStatus::default());
    let heartbeat = Duration::from_millis(config.block.heartbeat_ms);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let member_key = member.as_ref().map(|m| m.consensus.clone());
    // A member watches its own bitcoind for deposits.
    let watcher = match (&member, &config.bitcoin.rpc_url) {
        (Some(_), Some(url)) => {
            use fedpeg_peg::chain::{BitcoinChain, RpcAuth, RpcChain};
            let b = &config.bitcoin;
            let auth = match (&b.rpc_cookie, &b.rpc_user, &b.rpc_password) {
                (Some(cookie), _, _) => RpcAuth::CookieFile(cookie.clone()),
                (None, Some(user), Some(password)) => RpcAuth::UserPass {
                    user: user.clone(),
                    password: password.clone(),
                },
                _ => anyhow::bail!("bitcoin.rpc_url needs a cookie file or a user and password"),
            };
            let btc: Arc<dyn BitcoinChain> = Arc::new(
                RpcChain::new(url, auth).map_err(|e| anyhow::anyhow!("bitcoind RPC {url}: {e}"))?,
            );
            // Checked at start when bitcoind answers: a wrong network, an
            // old version or a node pruned too far is a configuration error.
            let probe = btc.clone();
            let confirmations = u64::from(chain.spec.genesis.pegin_confirmations);
            let network = chain.spec.network;
            match tokio::task::spawn_blocking(move || probe.node_info()).await? {
                Ok(info) => {
                    crate::watcher::check_node(&info, network, confirmations)
                        .map_err(|why| anyhow::anyhow!("bitcoind at {url}: {why}"))?;
                    tracing::info!(
                        version = %info.subversion,
                        chain = %info.chain,
                        pruned = info.prune_height.is_some(),
                        "bitcoind checked (-txindex is not needed)"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bitcoind not reachable at start: it is checked once it answers; peg-in and peg-out wait for it")
                }
            }
            let w = Arc::new(crate::watcher::Watcher::new(chain.clone(), btc)?);
            let poll = Duration::from_millis(b.poll_ms.unwrap_or(500).max(10));
            let (w2, stop) = (w.clone(), stop_rx.clone());
            tokio::task::spawn_blocking(move || w2.run(poll, stop));
            if let Some(zmq) = &b.zmq_block {
                // Checked by Config::validate.
                let endpoint =
                    crate::block_notify::parse_endpoint(zmq).map_err(|e| anyhow::anyhow!(e))?;
                let w3 = w.clone();
                tokio::spawn(crate::block_notify::run(
                    endpoint,
                    Arc::new(move || w3.request_poll()),
                    w.notification_counter(),
                    stop_rx.clone(),
                ));
            }
            tracing::info!(url = %url, zmq = ?b.zmq_block, "watching bitcoind for deposits");
            Some(w)
        }
        (Some(_), None) => {
            tracing::warn!("no bitcoind configured (--bitcoin-rpc-url): this member cannot mint deposits and votes against mints");
            None
        }
        (None, _) => None,
    };
    // A member with a bitcoind signs and broadcasts peg-out batches.
    if let (Some(keys), Some(w)) = (&member, &watcher) {
        let worker = Arc::new(crate::signer::PegOutWorker::new(
            chain.clone(),
            w.clone(),
            keys.consensus.clone(),
            keys.peg,
        ));
        let poll = Duration::from_millis(config.bitcoin.poll_ms.unwrap_or(500).max(10));
        tokio::spawn(worker.run(poll, stop_rx.clone()));
    }
    let driver = match &member {
        Some(keys) => Driver::member(
            chain.clone(),
            net.clone(),
            keys.consensus.clone(),
            &config.data_dir,
            DriverConfig {
                heartbeat,
                sync_interval: Duration::from_millis(1000),
            },
            status.clone(),
            watcher.clone(),
        )?
        .with_fee_pin(config.bitcoin.fee_rate_sat_vb),
        None => Driver::observer(
            chain.clone(),
            net.clone(),
            DriverConfig {
                heartbeat,
                sync_interval: Duration::from_millis(200),
            },
            status.clone(),
        )?,
    }
    .with_halt_height(config.halt_height);
    let identity = NodeIdentity {
        role: if member.is_some() {
            pb::NodeRole::Member
        } else {
            pb::NodeRole::Observer
        },
        member_name: own_entry
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        halt_height: config.halt_height,
    };
    let metrics_status = status.clone();
    let mut api = Api::new(chain.clone(), identity, Some(net.clone()), status);
    if let Some(key) = &member_key {
        api = api.with_member_key(key.clone());
    }
    let token_path = config.admin_token_path();
    let admin_token = fedpeg_keys::load_or_create_admin_token(&token_path)
        .with_context(|| format!("admin token file {}", token_path.display()))?;
    api = api
        .with_watcher(watcher.clone())
        .with_explorer_config(config.explorer.clone())
        .with_admin_token(&admin_token)
        .with_data_dir(&config.data_dir);
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", config.api.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "gRPC API listening");
    if let Some(addr) = config.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!(addr = %l.local_addr()?, "metrics at GET /metrics");
        let sources = crate::metrics::Sources {
            chain: chain.clone(),
            consensus: metrics_status.clone(),
            net: net.clone(),
            watcher: watcher.clone(),
            telemetry: api.telemetry().clone(),
        };
        tokio::spawn(crate::metrics::serve(l, sources, stopped(stop_rx.clone())));
    }
    if let Some(addr) = config.http_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for the web app on {addr}"))?;
        tracing::info!(addr = %l.local_addr()?, "web app (explorer, peg tracker, audit) at http://{}/", l.local_addr()?);
        tokio::spawn(crate::web::serve(l, api.clone(), stopped(stop_rx.clone())));
    }
    tokio::spawn(api.telemetry().clone().run(
        chain.clone(),
        Some(net.clone()),
        member_key.as_ref().map(|k| k.verifying_key()),
        watcher.clone(),
        stopped(stop_rx.clone()),
    ));
    let api_task = tokio::spawn(api.serve_on(listener, stopped(stop_rx.clone())));
    let mut driver_task = tokio::spawn(driver.run(ev_rx, stopped(stop_rx.clone())));

    tokio::pin!(shutdown);
    let (result, signalled) = tokio::select! {
        _ = &mut shutdown => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            ((&mut driver_task).await.context("consensus task panicked")?, true)
        }
        r = &mut driver_task => {
            // The driver stops on its own at the halt height, or on a fatal
            // error (WAL, store).
            let _ = stop_tx.send(true);
            (r.context("consensus task panicked")?.context("consensus stopped"), false)
        }
    };
    api_task.await??;
    if let Ok(Stop::Halted(height)) = result {
        // Nothing is admitted any more (API and consensus stopped): what
        // is pooled waits for the next binary.
        match crate::halt::save_pending(&chain, &config.data_dir) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                transactions = n,
                file = crate::halt::PENDING_FILE,
                "saved the pooled transactions; the next start re-admits them"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot save the pooled transactions; they are lost with this process")
            }
        }
        if member.is_some() && !signalled {
            // API, watcher, signer and metrics are stopping; the network and
            // the sync server stay up a moment for members still below H.
            tokio::select! {
                _ = crate::halt::drain(&net, height, crate::halt::DRAIN_MAX) => {}
                _ = &mut shutdown => {}
            }
        }
        tracing::info!(
            "{}",
            crate::halt::halted_message(
                height,
                &format!(
                    "block {height} is committed and stored, nothing was signed for {}",
                    height + 1
                )
            )
        );
    }
    result.map(|_| ())
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
