//! The public gRPC API (tonic): wallet, explorer and node services, plus
//! `grpc.health.v1` and server reflection (v1 and v1alpha).
//!
//! Every error is mapped once, here, to a status a person can act on:
//! INVALID_ARGUMENT for malformed input, FAILED_PRECONDITION for input that
//! conflicts with the current state (nonce, balance), NOT_FOUND for unknown
//! blocks and transactions, RESOURCE_EXHAUSTED for a full mempool.

use crate::chain::{Chain, SubmitError, TxStatus};
use crate::driver::ConsensusStatus;
use crate::network::Network;
use crate::store::StoreError;
use crate::watcher::Watcher;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::block::CommittedBlock;
use fedpeg_ledger::fedtx::{FedTxKind, FederationTx};
use fedpeg_ledger::hash::Hash32;
use fedpeg_ledger::ids::MemberIndex;
use fedpeg_ledger::mempool::AdmitError;
use fedpeg_ledger::tx::{Transaction, TxKind};
use fedpeg_proto::v1 as pb;
use fedpeg_proto::v1::{
    explorer_service_server::{ExplorerService, ExplorerServiceServer},
    federation_service_server::FederationServiceServer,
    node_service_server::{NodeService, NodeServiceServer},
    wallet_service_server::{WalletService, WalletServiceServer},
};
use sha2::Digest as _;
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// What the node service reports about this node.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub role: pb::NodeRole,
    pub member_name: String,
    /// The block this node commits last before it stops (`--halt-height`).
    pub halt_height: Option<u64>,
}

impl NodeIdentity {
    /// A non-voting observer with no halt height.
    pub fn observer() -> NodeIdentity {
        NodeIdentity {
            role: pb::NodeRole::Observer,
            member_name: String::new(),
            halt_height: None,
        }
    }
}

/// Shared handler state for all services.
#[derive(Clone)]
pub struct Api {
    chain: Arc<Chain>,
    identity: NodeIdentity,
    /// This member's index and consensus key (signs federation transactions).
    /// This node's consensus key, if it is (or will be) a member.
    member: Option<ed25519_dalek::SigningKey>,
    /// The peg-in watcher over this member's bitcoind.
    watcher: Option<Arc<Watcher>>,
    net: Option<Network>,
    consensus: Arc<ConsensusStatus>,
    /// Explorer feed (streams and paged history).
    feed: Arc<crate::feed::Feed>,
    /// Latencies, member presence, stream counters (metrics, federation service).
    telemetry: Arc<crate::telemetry::Telemetry>,
    /// SHA-256 of the operator's admin token; admin calls need the token.
    /// None: admin calls are refused.
    admin_token: Option<[u8; 32]>,
    /// Limits on new deposit-address registrations (`GetPegInAddress`).
    registrations: Arc<crate::registration::RegistrationLimits>,
    /// The node's data directory (backups go under it by default). None:
    /// backups are refused.
    data_dir: Option<std::path::PathBuf>,
    /// One backup at a time.
    backups: Arc<tokio::sync::Semaphore>,
    /// Batches single `SubmitTransaction` calls (started on first use).
    batcher: Arc<std::sync::OnceLock<crate::submit_batcher::SubmitBatcher>>,
}

impl From<crate::backup::BackupError> for Status {
    fn from(e: crate::backup::BackupError) -> Status {
        use crate::backup::BackupError;
        match &e {
            BackupError::Relative(_) => Status::invalid_argument(e.to_string()),
            BackupError::Exists(_) | BackupError::NoParent(_) | BackupError::InsideDatabase(_) => {
                Status::failed_precondition(e.to_string())
            }
            BackupError::Io(..) | BackupError::Store(_) => {
                tracing::error!(error = %e, "backup failed");
                Status::internal(e.to_string())
            }
        }
    }
}

/// Why a peg-out is refused after a deep Bitcoin reorg.
const PEGOUTS_HALTED: &str = "peg-outs are halted on this member: a minted deposit or a confirmed peg-out batch was reorged out of Bitcoin's best chain; an operator must review and acknowledge (NodeService.AcknowledgeAlerts, `fedpeg acknowledge-alerts`)";

/// Most transactions one `SubmitTransactions` call may carry.
pub const MAX_SUBMIT_BATCH: usize = 1000;
/// Most transaction bytes (sum of encodings) one `SubmitTransactions` call may carry.
pub const MAX_SUBMIT_BATCH_BYTES: usize = 1 << 20;

/// Refuses an empty or oversized `SubmitTransactions` request before any work.
fn check_submit_batch(txs: &[Vec<u8>]) -> Result<(), Status> {
    if txs.is_empty() {
        return Err(Status::invalid_argument(
            "no transactions: put at least one encoded fedpeg.v1.Transaction in `transactions`",
        ));
    }
    if txs.len() > MAX_SUBMIT_BATCH {
        return Err(Status::resource_exhausted(format!(
            "{} transactions in one call; the limit is {MAX_SUBMIT_BATCH}: split them over several calls",
            txs.len()
        )));
    }
    let bytes: usize = txs.iter().map(Vec::len).sum();
    if bytes > MAX_SUBMIT_BATCH_BYTES {
        return Err(Status::resource_exhausted(format!(
            "{bytes} bytes of transactions in one call; the limit is {MAX_SUBMIT_BATCH_BYTES}: split them over several calls"
        )));
    }
    Ok(())
}

impl From<SubmitError> for Status {
    fn from(e: SubmitError) -> Status {
        match &e {
            SubmitError::Decode(_) => Status::invalid_argument(e.to_string()),
            SubmitError::Admit(AdmitError::Full(_)) => Status::resource_exhausted(e.to_string()),
            SubmitError::Admit(AdmitError::Tx(t)) if t.is_state_dependent() => {
                Status::failed_precondition(e.to_string())
            }
            SubmitError::Admit(AdmitError::Tx(_)) => Status::invalid_argument(e.to_string()),
            SubmitError::Internal => Status::internal(e.to_string()),
            SubmitError::Halted(_) => Status::failed_precondition(e.to_string()),
        }
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        tracing::error!(error = %e, "store error while serving a request");
        Status::internal(format!("node storage error: {e}"))
    }
}

impl Api {
    /// Handlers over `chain`; `net` and `consensus` feed the status call.
    pub fn new(
        chain: Arc<Chain>,
        identity: NodeIdentity,
        net: Option<Network>,
        consensus: Arc<ConsensusStatus>,
    ) -> Api {
        let telemetry = Arc::new(crate::telemetry::Telemetry::new(
            chain.spec.genesis.members.len(),
        ));
        Api {
            feed: Arc::new(crate::feed::Feed::with_stats(
                chain.clone(),
                crate::config::ExplorerConfig::default(),
                telemetry.feed_stats().clone(),
            )),
            telemetry,
            chain,
            identity,
            member: None,
            watcher: None,
            net,
            consensus,
            admin_token: None,
            registrations: Arc::default(),
            data_dir: None,
            backups: Arc::new(tokio::sync::Semaphore::new(1)),
            batcher: Arc::default(),
        }
    }

    /// The one backup slot (held while a backup runs).
    #[cfg(test)]
    pub(crate) fn backup_slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.backups
    }

    /// Lets the admin `Backup` call write backups of this node's store,
    /// by default under `<data_dir>/backups/`.
    pub fn with_data_dir(mut self, data_dir: &std::path::Path) -> Api {
        self.data_dir = Some(data_dir.to_path_buf());
        self
    }

    /// Admin calls (`AcknowledgeAlerts`) need `authorization: Bearer <token>`.
    pub fn with_admin_token(mut self, token: &str) -> Api {
        self.admin_token = Some(sha2::Sha256::digest(token.trim().as_bytes()).into());
        self
    }

    /// Refuses a call that does not carry this node's admin token. The
    /// comparison is between digests of equal length, in constant time.
    fn check_admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(want) = &self.admin_token else {
            return Err(Status::permission_denied(
                "admin calls are disabled on this node (no admin token)",
            ));
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(
                    "admin call without a token: send `authorization: Bearer <token>` with the token from the node's admin token file (`fedpeg acknowledge-alerts --admin-token <data-dir>/admin.token`)",
                )
            })?;
        let given: [u8; 32] = sha2::Sha256::digest(given.trim().as_bytes()).into();
        let diff = given.iter().zip(want).fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return Err(Status::permission_denied("wrong admin token"));
        }
        Ok(())
    }

    /// Explorer feed limits (`[explorer]` config).
    pub fn with_explorer_config(mut self, cfg: crate::config::ExplorerConfig) -> Api {
        self.feed = Arc::new(crate::feed::Feed::with_stats(
            self.chain.clone(),
            cfg,
            self.telemetry.feed_stats().clone(),
        ));
        self
    }

    /// The explorer feed.
    pub fn feed(&self) -> &Arc<crate::feed::Feed> {
        &self.feed
    }

    /// Telemetry shared with the metrics page.
    pub fn telemetry(&self) -> &Arc<crate::telemetry::Telemetry> {
        &self.telemetry
    }

    pub(crate) fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    pub(crate) fn net(&self) -> Option<&Network> {
        self.net.as_ref()
    }

    /// This node's member index in the epoch in force at the next height
    /// (None on an observer, and on a keyed node that is not a member of
    /// that epoch).
    pub(crate) fn member_index(&self) -> Option<usize> {
        self.member_signer().map(|(i, _)| i as usize)
    }

    /// This node's member index (as [`Api::member_index`]) and key: what
    /// signs the federation transactions it submits.
    fn member_signer(&self) -> Option<(u32, &ed25519_dalek::SigningKey)> {
        let key = self.member.as_ref()?;
        let vk = key.verifying_key();
        let index = self
            .chain
            .with_state(|s| s.epoch_at(s.height.next()).member_index(&vk))?;
        Some((index as u32, key))
    }

    /// Bitcoin tip this member's watcher saw last.
    pub(crate) fn watcher(&self) -> Option<Arc<Watcher>> {
        self.watcher.clone()
    }

    pub(crate) fn watcher_tip(&self) -> Option<u64> {
        self.watcher.as_ref().and_then(|w| w.tip())
    }

    /// This node's bitcoind, if it watches one.
    pub(crate) fn watcher_bitcoin(&self) -> Option<Arc<dyn fedpeg_peg::chain::BitcoinChain>> {
        self.watcher.as_ref().map(|w| w.bitcoin().clone())
    }

    /// Lets peg calls check deposits against this member's bitcoind.
    pub fn with_watcher(mut self, watcher: Option<Arc<Watcher>>) -> Api {
        self.watcher = watcher;
        self
    }

    /// UNAVAILABLE while this member's bitcoind cannot be reached: no
    /// deposit address is handed out that nobody here could watch.
    fn require_bitcoind(&self) -> Result<(), Status> {
        match &self.watcher {
            Some(w) if !w.reachable() => Err(Status::unavailable(
                "this member cannot reach its bitcoind right now; peg-in is paused (transfers still work), retry shortly",
            )),
            _ => Ok(()),
        }
    }

    /// Deposits (minted, and those this member's watcher sees confirming or
    /// reorged out) whose outpoint and account satisfy `matches`, by outpoint.
    pub(crate) fn peg_ins_where(
        &self,
        matches: impl Fn(&fedpeg_ledger::fedtx::OutPoint, &AccountId) -> bool,
    ) -> Vec<pb::PegInInfo> {
        use fedpeg_ledger::fedtx::OutPoint;
        let spec = &self.chain.spec;
        let required = spec.genesis.pegin_confirmations;
        let cost = self.peg_federation().map_or(0, |f| {
            self.chain
                .with_state(|s| s.pegin_spend_cost_of(self.chain.params(), &f))
                .to_sat()
        });
        let hrp = self.hrp();
        let mut out: Vec<pb::PegInInfo> = Vec::new();
        let minted: Vec<(OutPoint, AccountId, u64, u64, u64)> = self.chain.with_state(|s| {
            s.minted
                .iter()
                .filter(|(o, (a, _, _, _))| matches(o, a))
                .map(|(o, (a, c, h, amount))| (*o, *a, c.to_sat(), h.0, amount.to_sat()))
                .collect()
        });
        for (o, a, credited, height, amount) in &minted {
            out.push(pb::PegInInfo {
                outpoint: o.to_string(),
                account: a.to_address(hrp),
                amount: *amount,
                state: pb::PegInState::Minted as i32,
                confirmations_required: required,
                minted_amount: *credited,
                minted_height: *height,
                ..Default::default()
            });
        }
        if let Some(w) = &self.watcher {
            let (seen, reorged, tip) = w.deposits(|d| matches(&d.outpoint, &d.account));
            let tip = tip.unwrap_or(0);
            for d in seen
                .iter()
                .filter(|d| !minted.iter().any(|m| m.0 == d.outpoint))
            {
                let confirmations = (tip + 1).saturating_sub(d.height) as u32;
                let state = if d.amount.to_sat() <= cost {
                    pb::PegInState::BelowCost
                } else {
                    pb::PegInState::Confirming
                };
                out.push(pb::PegInInfo {
                    outpoint: d.outpoint.to_string(),
                    account: d.account.to_address(hrp),
                    amount: d.amount.to_sat(),
                    state: state as i32,
                    confirmations,
                    confirmations_required: required,
                    eta_seconds: u64::from(required.saturating_sub(confirmations)) * 600,
                    bitcoin_block: d.block.to_string(),
                    ..Default::default()
                });
            }
            for d in reorged
                .iter()
                .filter(|d| !minted.iter().any(|m| m.0 == d.outpoint))
            {
                out.push(pb::PegInInfo {
                    outpoint: d.outpoint.to_string(),
                    account: d.account.to_address(hrp),
                    amount: d.amount.to_sat(),
                    state: pb::PegInState::ReorgedOut as i32,
                    confirmations_required: required,
                    ..Default::default()
                });
            }
        }
        out.sort_by(|a, b| a.outpoint.cmp(&b.outpoint));
        out
    }

    /// The peg federation of the epoch in force at the next block: new
    /// deposit addresses pay its descriptor.
    pub(crate) fn peg_federation(&self) -> Result<fedpeg_peg::federation::Federation, Status> {
        let params = self.chain.params();
        self.chain
            .with_state(|s| params.federation_of(s.peg_epoch()))
            .map_err(|e| Status::internal(format!("peg federation of the epoch in force: {e}")))
    }

    /// The deposit address of `id` and its descriptor under the epoch in
    /// force (derived, nothing registered).
    pub(crate) fn deposit_address(&self, id: &AccountId) -> Result<(String, String), Status> {
        let internal = |e: &dyn std::fmt::Display| {
            Status::internal(format!("peg federation of the epoch in force: {e}"))
        };
        let fed = &self.peg_federation()?;
        // One descriptor for both: forming it is most of the cost.
        let d = fed
            .output_descriptor(&fedpeg_peg::deposit::Tweak::Deposit(id.0))
            .map_err(|e| internal(&e))?;
        let address = d.address(fed.network()).map_err(|e| internal(&e))?;
        Ok((address.to_string(), d.to_string()))
    }

    /// Lets this node sign federation transactions (deposit-address
    /// registrations, claims, federation-change votes) with `key`, as the
    /// member it is in the epoch in force when it signs.
    pub fn with_member_key(mut self, key: ed25519_dalek::SigningKey) -> Api {
        self.member = Some(key);
        self
    }

    fn hrp(&self) -> &'static str {
        self.chain.spec.hrp()
    }

    pub(crate) fn parse_account(&self, s: &str) -> Result<AccountId, Status> {
        if s.trim().is_empty() {
            return Err(Status::invalid_argument(
                "address is empty; pass a fedpeg address (fprt1…)",
            ));
        }
        AccountId::from_address(s, self.hrp()).map_err(|e| Status::invalid_argument(e.to_string()))
    }

    fn tx_view(&self, tx: &Transaction) -> pb::TransactionView {
        crate::feed::tx_view(tx, self.hrp())
    }

    fn block_view(&self, cb: &CommittedBlock) -> pb::BlockView {
        let h = &cb.block.header;
        pb::BlockView {
            height: h.height.0,
            hash: h.hash().to_hex(),
            parent_hash: h.parent.to_hex(),
            time_ms: h.time_ms,
            proposer: h.proposer,
            proposer_name: self
                .chain
                .spec
                .genesis
                .members
                .get(h.proposer as usize)
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            state_root: h.state_root.to_hex(),
            transactions: cb.block.txs.iter().map(|t| self.tx_view(t)).collect(),
            raw: cb.encode(),
        }
    }

    /// Serves all services on `addr` until `shutdown` resolves.
    pub async fn serve(
        self,
        addr: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for gRPC on {addr}: {e}"))?;
        self.serve_on(listener, shutdown).await
    }

    /// Why this node is not doing its job now, if it is not: a member's
    /// bitcoind unreachable or unusable (wrong network, too old, pruned too
    /// far: the watcher's checks), or no finalized block for
    /// [`HEALTH_STALL_MS`] (since the later of the tip's time and `since_ms`).
    pub fn unhealthy(&self, now_ms: u64, since_ms: u64) -> Option<String> {
        if let Some(w) = &self.watcher {
            if !w.reachable() {
                return Some("bitcoind is unreachable or unusable (see the log)".into());
            }
        }
        let tip_ms = self.chain.with_state(|s| s.tip_time_ms).max(since_ms);
        let stalled = now_ms.saturating_sub(tip_ms);
        (stalled > HEALTH_STALL_MS).then(|| format!("no finalized block for {} s", stalled / 1000))
    }

    /// Keeps the "" health status in step with [`Self::unhealthy`].
    async fn report_health(
        self,
        health: tonic_health::server::HealthReporter,
        mut stopped: tokio::sync::oneshot::Receiver<()>,
    ) {
        let started = crate::driver::now_ms();
        let mut last: Option<Option<String>> = None;
        loop {
            let why = self.unhealthy(crate::driver::now_ms(), started);
            if last.as_ref() != Some(&why) {
                match (&why, &last) {
                    (None, _) => tracing::info!("health: serving"),
                    // Quiet at start, while bitcoind has not answered yet.
                    (Some(why), Some(None)) => tracing::warn!(reason = %why, "health: not serving"),
                    (Some(why), _) => tracing::info!(reason = %why, "health: not serving yet"),
                }
                let status = match why {
                    None => tonic_health::ServingStatus::Serving,
                    Some(_) => tonic_health::ServingStatus::NotServing,
                };
                health.set_service_status("", status).await;
                last = Some(why);
            }
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            }
        }
    }

    /// Serves all services on an already bound listener.
    pub async fn serve_on(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<WalletServiceServer<Api>>().await;
        health.set_serving::<ExplorerServiceServer<Api>>().await;
        health.set_serving::<NodeServiceServer<Api>>().await;
        health.set_serving::<FederationServiceServer<Api>>().await;
        // The node as a whole ("", what container health checks ask): SERVING
        // only while it does its job, re-judged every few seconds.
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        // Ends with the server (the sender is dropped when serving stops).
        let (_serving, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(self.clone().report_health(health, stopped));
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(fedpeg_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(fedpeg_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        tonic::transport::Server::builder()
            // Pings find clients that vanished without closing (their
            // explorer streams and slots are freed with the connection).
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            // Requests are decoded whole before a handler sees them: the
            // largest (SubmitTransactions) may be its byte limit plus
            // framing; tonic's 4 MiB default would let a call of millions
            // of empty entries allocate tens of MiB first.
            .add_service(
                WalletServiceServer::new(self.clone())
                    .max_decoding_message_size(MAX_SUBMIT_BATCH_BYTES + 64 * 1024),
            )
            .add_service(
                ExplorerServiceServer::new(self.clone())
                    .max_encoding_message_size(self.feed.config().max_message_bytes),
            )
            .add_service(FederationServiceServer::new(self.clone()))
            // Its largest request, a federation change of 64 members, is
            // under 30 KiB; it is decoded before the admin token is checked.
            .add_service(NodeServiceServer::new(self).max_decoding_message_size(64 * 1024))
            .serve_with_incoming_shutdown(nodelay(listener), shutdown)
            .await?;
        Ok(())
    }
}

/// A node with no finalized block for this long reports NOT_SERVING.
pub const HEALTH_STALL_MS: u64 = 60_000;

/// Accepted connections with Nagle's algorithm off: without it every small
/// response waits for the client's delayed ACK (~40 ms).
fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|s| {
            // Best effort: a socket that refuses the option still works.
            let _ = s.set_nodelay(true);
        })
    })
}

#[tonic::async_trait]
impl WalletService for Api {
    async fn estimate_peg_out_fee(
        &self,
        req: Request<pb::EstimatePegOutFeeRequest>,
    ) -> Result<Response<pb::EstimatePegOutFeeResponse>, Status> {
        crate::pegout_api::estimate_fee(&self.chain, &req.into_inner()).map(Response::new)
    }

    async fn get_peg_out(
        &self,
        req: Request<pb::GetPegOutRequest>,
    ) -> Result<Response<pb::GetPegOutResponse>, Status> {
        let (chain, watcher) = (self.chain.clone(), self.watcher.clone());
        let r = req.into_inner();
        tokio::task::spawn_blocking(move || {
            crate::pegout_api::get_pegout(&chain, watcher.as_deref(), &r)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map(Response::new)
    }

    async fn get_reserves(
        &self,
        _req: Request<pb::GetReservesRequest>,
    ) -> Result<Response<pb::GetReservesResponse>, Status> {
        let r = crate::pegout_api::reserves(&self.chain);
        let btc = self.watcher_bitcoin();
        Ok(Response::new(
            crate::pegout_api::with_blocks_to_expiry(r, &self.chain, btc).await,
        ))
    }

    async fn submit_transaction(
        &self,
        req: Request<pb::SubmitTransactionRequest>,
    ) -> Result<Response<pb::SubmitTransactionResponse>, Status> {
        if self.identity.role == pb::NodeRole::Observer {
            // An observer follows the chain but takes no part in it: a
            // transaction pooled here would never reach a proposer.
            return Err(Status::failed_precondition(
                "this node is an observer and cannot relay transactions; submit to a federation member's endpoint",
            ));
        }
        let client = req.remote_addr().map(|a| a.ip());
        let bytes = req.into_inner().transaction;
        // After a reorg deeper than the confirmation depth, reserves may not
        // cover supply: this member takes no peg-out until an operator looks.
        if self
            .watcher
            .as_ref()
            .is_some_and(|w| !w.deep_reorgs().is_empty())
            && Transaction::decode(&bytes).is_ok_and(|t| matches!(t.kind, TxKind::PegOut { .. }))
        {
            return Err(Status::failed_precondition(PEGOUTS_HALTED));
        }
        // Verified with the calls arriving in the same millisecond, as one
        // batch on a blocking thread (see `submit_batcher`).
        let tx = Transaction::decode(&bytes).map_err(SubmitError::from)?;
        let batcher = self
            .batcher
            .get_or_init(|| crate::submit_batcher::SubmitBatcher::spawn(self.chain.clone()));
        let txid = match batcher.submit(tx, client).await {
            Ok(r) => r?,
            Err(e @ crate::submit_batcher::BatcherError::Overloaded) => {
                return Err(Status::resource_exhausted(e.to_string()))
            }
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        Ok(Response::new(pb::SubmitTransactionResponse {
            txid: txid.to_hex(),
        }))
    }

    async fn submit_transactions(
        &self,
        req: Request<pb::SubmitTransactionsRequest>,
    ) -> Result<Response<pb::SubmitTransactionsResponse>, Status> {
        if self.identity.role == pb::NodeRole::Observer {
            return Err(Status::failed_precondition(
                "this node is an observer and cannot relay transactions; submit to a federation member's endpoint",
            ));
        }
        let txs = req.into_inner().transactions;
        check_submit_batch(&txs)?;
        let pegouts_halted = self
            .watcher
            .as_ref()
            .is_some_and(|w| !w.deep_reorgs().is_empty());
        let chain = self.chain.clone();
        let results = tokio::task::spawn_blocking(move || {
            if !pegouts_halted {
                return chain.submit_many(&txs);
            }
            // Same refusal as SubmitTransaction, per peg-out.
            let (ok, halted): (Vec<_>, Vec<_>) = txs.into_iter().enumerate().partition(|(_, b)| {
                !Transaction::decode(b).is_ok_and(|t| matches!(t.kind, TxKind::PegOut { .. }))
            });
            let bytes: Vec<Vec<u8>> = ok.iter().map(|(_, b)| b.clone()).collect();
            let mut out: Vec<(usize, Result<Hash32, Status>)> = ok
                .into_iter()
                .map(|(i, _)| i)
                .zip(
                    chain
                        .submit_many(&bytes)
                        .into_iter()
                        .map(|r| r.map_err(Status::from)),
                )
                .collect();
            out.extend(
                halted
                    .into_iter()
                    .map(|(i, _)| (i, Err(Status::failed_precondition(PEGOUTS_HALTED)))),
            );
            out.sort_by_key(|(i, _)| *i);
            out.into_iter()
                .map(|(_, r)| r.map_err(|s| SubmitError::Halted(s.message().to_string())))
                .collect()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let results = results
            .into_iter()
            .map(|r| match r {
                Ok(id) => pb::SubmitTransactionResult {
                    txid: id.to_hex(),
                    code: 0,
                    error: String::new(),
                },
                Err(e) => {
                    let s = Status::from(e);
                    pb::SubmitTransactionResult {
                        txid: String::new(),
                        code: s.code() as i32,
                        error: s.message().to_string(),
                    }
                }
            })
            .collect();
        Ok(Response::new(pb::SubmitTransactionsResponse { results }))
    }

    async fn get_peg_in_address(
        &self,
        req: Request<pb::GetPegInAddressRequest>,
    ) -> Result<Response<pb::GetPegInAddressResponse>, Status> {
        let id = self.parse_account(&req.get_ref().address)?;
        let spec = &self.chain.spec;
        let (deposit_address, descriptor) = self.deposit_address(&id)?;
        let fed = self.peg_federation()?;
        self.require_bitcoind()?;
        let registered = self.chain.with_state(|s| s.registered.contains(&id));
        if !registered && !self.chain.registration_pending(&id) {
            let Some((index, key)) = self.member_signer() else {
                return Err(Status::failed_precondition(
                    "this deposit address is not registered yet and an observer cannot register it; ask a federation member's endpoint",
                ));
            };
            self.registrations.admit(
                req.remote_addr().map(|a| a.ip()),
                self.chain.pending_registrations(),
            )?;
            let tx = FederationTx::sign(
                spec.chain_id,
                MemberIndex(index),
                key,
                FedTxKind::RegisterDepositAddress { account: id },
            );
            match self.chain.submit_fed_tx(tx, true) {
                Ok(_) => {}
                Err(e @ fedpeg_ledger::fed_pool::FedAdmitError::Quota { .. }) => {
                    return Err(Status::resource_exhausted(format!(
                        "cannot register the deposit address now ({e}); retry in a minute"
                    )))
                }
                Err(e) => tracing::debug!(error = %e, "deposit-address registration not pooled"),
            }
        }
        let cost = self
            .chain
            .with_state(|s| s.pegin_spend_cost_of(self.chain.params(), &fed))
            .to_sat();
        Ok(Response::new(pb::GetPegInAddressResponse {
            deposit_address,
            descriptor,
            registered,
            confirmations_required: spec.genesis.pegin_confirmations,
            min_deposit_sats: cost.saturating_add(1),
        }))
    }

    async fn claim_peg_in(
        &self,
        req: Request<pb::ClaimPegInRequest>,
    ) -> Result<Response<pb::ClaimPegInResponse>, Status> {
        let r = req.into_inner();
        let id = self.parse_account(&r.address)?;
        let txid: fedpeg_peg::bitcoin::Txid = r.txid.parse().map_err(|e| {
            Status::invalid_argument(format!("txid '{}' is not a Bitcoin txid: {e}", r.txid))
        })?;
        let (Some(w), Some((index, key))) = (&self.watcher, self.member_signer()) else {
            return Err(Status::failed_precondition(
                "this node has no bitcoind to check the deposit (observer, or member without --bitcoin-rpc-url); claim on another member",
            ));
        };
        self.require_bitcoind()?;
        let outpoint = fedpeg_ledger::fedtx::OutPoint { txid, vout: r.vout };
        if self.chain.with_state(|s| s.minted.contains_key(&outpoint)) {
            return Err(Status::failed_precondition(format!(
                "deposit {outpoint} is already minted"
            )));
        }
        // The account's deposit scripts under every epoch whose deposits
        // are credited now: the epoch in force, the previous one in grace.
        let params = self.chain.params();
        let feds: Vec<fedpeg_peg::federation::Federation> = self.chain.with_state(|s| {
            s.deposit_epochs(s.height.next())
                .into_iter()
                .filter_map(|e| params.federation_of(e).ok())
                .collect()
        });
        let mut scripts = Vec::with_capacity(feds.len());
        for f in &feds {
            let script = f
                .deposit_script_pubkey(&id.0)
                .map_err(|e| Status::internal(format!("deposit script: {e}")))?;
            scripts.push(script);
        }
        let btc = w.bitcoin().clone();
        let vout = r.vout;
        // The UTXO set first (no -txindex needed: works on a pruned node),
        // then the mempool or the index for an output already spent.
        let found = tokio::task::spawn_blocking(move || {
            if let Some((out, _)) = btc.unspent(&outpoint)? {
                return Ok(Some(Some(out)));
            }
            Ok::<_, fedpeg_peg::chain::ChainError>(
                btc.transaction(&txid, None)?
                    .map(|(tx, _)| tx.output.get(vout as usize).cloned()),
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| match e {
            fedpeg_peg::chain::ChainError::Unavailable(m) => {
                Status::unavailable(format!("bitcoind: {m}"))
            }
            other => Status::internal(format!("bitcoind: {other}")),
        })?;
        let Some(out) = found else {
            return Err(Status::not_found(format!(
                "bitcoind has no unspent output {txid}:{vout} and does not know transaction {txid}"
            )));
        };
        let out = out.ok_or_else(|| {
            Status::invalid_argument(format!("transaction {txid} has no output {vout}"))
        })?;
        let Some(fed) = scripts
            .iter()
            .position(|s| *s == out.script_pubkey)
            .and_then(|i| feds.get(i))
        else {
            return Err(Status::invalid_argument(format!(
                "output {txid}:{} does not pay the deposit address of {} (of the federation epoch in force, or of the previous one during its deposit grace)",
                r.vout, r.address
            )));
        };
        let deposit_address = fed
            .deposit_address(&id.0)
            .map_err(|e| Status::internal(format!("deposit address: {e}")))?
            .to_string();
        let registered = self.chain.with_state(|s| s.registered.contains(&id));
        if registered {
            // Already watched: the watcher mints it at depth; a second claim adds nothing.
            return Err(Status::failed_precondition(format!(
                "the deposit address of {} is already registered: deposit {txid}:{} is minted at depth without a claim",
                r.address, r.vout
            )));
        }
        if !self.chain.registration_pending(&id) {
            let tx = FederationTx::sign(
                self.chain.spec.chain_id,
                MemberIndex(index),
                key,
                FedTxKind::RegisterDepositAddress { account: id },
            );
            if let Err(e) = self.chain.submit_fed_tx(tx, true) {
                tracing::debug!(error = %e, "deposit-address registration not pooled");
            }
        }
        Ok(Response::new(pb::ClaimPegInResponse {
            deposit_address,
            amount: out.value.to_sat(),
        }))
    }

    async fn get_peg_ins(
        &self,
        req: Request<pb::GetPegInsRequest>,
    ) -> Result<Response<pb::GetPegInsResponse>, Status> {
        use fedpeg_ledger::fedtx::OutPoint;
        use pb::get_peg_ins_request::Selector;
        let by_outpoint = |s: &str| -> Result<OutPoint, Status> {
            let o: fedpeg_peg::bitcoin::OutPoint = s.parse().map_err(|e| {
                Status::invalid_argument(format!("outpoint '{s}' must be txid:vout ({e})"))
            })?;
            Ok(o)
        };
        let (account, outpoint) = match &req.get_ref().selector {
            Some(Selector::Address(a)) => (Some(self.parse_account(a)?), None),
            Some(Selector::Outpoint(o)) => (None, Some(by_outpoint(o)?)),
            None => return Err(Status::invalid_argument("set either address or outpoint")),
        };
        let out = self.peg_ins_where(|o, a| {
            account.is_none_or(|x| x == *a) && outpoint.is_none_or(|x| x == *o)
        });
        if out.is_empty() && outpoint.is_some() {
            return Err(Status::not_found(
                "no deposit with this outpoint is known to this node",
            ));
        }
        Ok(Response::new(pb::GetPegInsResponse { peg_ins: out }))
    }

    async fn get_account(
        &self,
        req: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let id = self.parse_account(&req.get_ref().address)?;
        let v = self.chain.account(&id);
        Ok(Response::new(pb::GetAccountResponse {
            address: id.to_address(self.hrp()),
            balance: v.finalized.balance.to_sat(),
            nonce: v.finalized.nonce,
            next_nonce: v.effective.nonce,
            spendable: v.effective.balance.to_sat(),
        }))
    }
}

#[tonic::async_trait]
impl ExplorerService for Api {
    type SubscribeBlocksStream = crate::feed::FeedStream<pb::FeedBlock>;
    type SubscribeEventsStream = crate::feed::FeedStream<pb::ChainEvent>;

    async fn subscribe_blocks(
        &self,
        req: Request<pb::SubscribeBlocksRequest>,
    ) -> Result<Response<Self::SubscribeBlocksStream>, Status> {
        self.feed
            .subscribe_blocks(req.into_inner())
            .map(Response::new)
    }

    async fn subscribe_events(
        &self,
        req: Request<pb::SubscribeEventsRequest>,
    ) -> Result<Response<Self::SubscribeEventsStream>, Status> {
        self.feed
            .subscribe_events(req.into_inner())
            .map(Response::new)
    }

    async fn list_blocks(
        &self,
        req: Request<pb::ListBlocksRequest>,
    ) -> Result<Response<pb::ListBlocksResponse>, Status> {
        self.feed.list_blocks(req.get_ref()).map(Response::new)
    }

    async fn list_account_transactions(
        &self,
        req: Request<pb::ListAccountTransactionsRequest>,
    ) -> Result<Response<pb::ListAccountTransactionsResponse>, Status> {
        self.feed
            .list_account_transactions(req.get_ref())
            .map(Response::new)
    }

    async fn get_block(
        &self,
        req: Request<pb::GetBlockRequest>,
    ) -> Result<Response<pb::GetBlockResponse>, Status> {
        use pb::get_block_request::Selector;
        let tip = self.chain.height();
        let cb = match &req.get_ref().selector {
            None => return Err(Status::invalid_argument("set either height or hash")),
            Some(Selector::Height(0)) => {
                return Err(Status::not_found(
                    "height 0 is the genesis, which has no block; blocks start at height 1",
                ))
            }
            Some(Selector::Height(h)) => self.chain.block(*h)?.ok_or_else(|| {
                Status::not_found(format!(
                    "no block at height {h}; the chain tip is at height {tip}"
                ))
            })?,
            Some(Selector::Hash(s)) => {
                let hash = Hash32::from_hex(s)
                    .map_err(|e| Status::invalid_argument(format!("block hash {e}")))?;
                self.chain.block_by_hash(&hash)?.ok_or_else(|| {
                    Status::not_found(format!("no finalized block has hash {hash}"))
                })?
            }
        };
        Ok(Response::new(pb::GetBlockResponse {
            block: Some(self.block_view(&cb)),
        }))
    }

    async fn get_transaction(
        &self,
        req: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<pb::GetTransactionResponse>, Status> {
        let txid = Hash32::from_hex(&req.get_ref().txid)
            .map_err(|e| Status::invalid_argument(format!("transaction id {e}")))?;
        match self.chain.transaction(&txid)? {
            None => Err(Status::not_found(format!(
                "transaction {txid} is unknown to this node: not finalized and not in its mempool"
            ))),
            Some(TxStatus::Pending(tx)) => Ok(Response::new(pb::GetTransactionResponse {
                transaction: Some(self.tx_view(&tx)),
                status: pb::TransactionStatus::Pending as i32,
                ..Default::default()
            })),
            Some(TxStatus::Finalized(cb, loc)) => {
                let tx = cb.block.txs.get(loc.index as usize).ok_or_else(|| {
                    Status::internal("transaction index points outside its block")
                })?;
                Ok(Response::new(pb::GetTransactionResponse {
                    transaction: Some(self.tx_view(tx)),
                    status: pb::TransactionStatus::Finalized as i32,
                    block_height: loc.height,
                    block_hash: cb.block.hash().to_hex(),
                    index_in_block: loc.index,
                }))
            }
        }
    }
}

#[tonic::async_trait]
impl NodeService for Api {
    async fn acknowledge_alerts(
        &self,
        req: Request<pb::AcknowledgeAlertsRequest>,
    ) -> Result<Response<pb::AcknowledgeAlertsResponse>, Status> {
        self.check_admin(&req)?;
        let Some(w) = &self.watcher else {
            return Err(Status::failed_precondition(
                "this node watches no bitcoind, so it has no peg alerts",
            ));
        };
        let mut outpoints = Vec::new();
        for o in &req.get_ref().outpoints {
            let op: fedpeg_peg::bitcoin::OutPoint = o.parse().map_err(|e| {
                Status::invalid_argument(format!("outpoint '{o}' must be txid:vout ({e})"))
            })?;
            outpoints.push(op);
        }
        let remaining = w.acknowledge(&outpoints);
        tracing::warn!(
            acknowledged = outpoints.len(),
            remaining = remaining.len(),
            "operator acknowledged deep-reorg alerts"
        );
        Ok(Response::new(pb::AcknowledgeAlertsResponse {
            remaining: remaining.iter().map(|o| o.to_string()).collect(),
        }))
    }

    async fn vote_federation_change(
        &self,
        req: Request<pb::VoteFederationChangeRequest>,
    ) -> Result<Response<pb::VoteFederationChangeResponse>, Status> {
        self.check_admin(&req)?;
        let Some((index, key)) = self.member_signer() else {
            return Err(Status::failed_precondition(
                "this node is not a member of the federation in force; vote on a member's node",
            ));
        };
        let change = req
            .get_ref()
            .change
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("change is missing"))?;
        let change = fedpeg_ledger::epoch::FederationChange::from_proto(change)
            .map_err(|e| Status::invalid_argument(format!("change: {e}")))?;
        let change_id = change.id().to_hex();
        let tx = FederationTx::sign(
            self.chain.spec.chain_id,
            MemberIndex(index),
            key,
            FedTxKind::FederationChange { change },
        );
        let tx_id = tx.id().to_hex();
        match self.chain.submit_fed_tx(tx, true) {
            Ok(_) => {}
            Err(fedpeg_ledger::fed_pool::FedAdmitError::Invalid(e)) => {
                return Err(Status::failed_precondition(format!(
                    "the federation would refuse this change: {e}"
                )))
            }
            Err(e @ fedpeg_ledger::fed_pool::FedAdmitError::Duplicate) => {
                return Err(Status::failed_precondition(format!(
                    "this member's vote is already pooled or recorded ({e}); a vote stands until its change is adopted or expires (fedpeg federation show)"
                )))
            }
            Err(e) => return Err(Status::resource_exhausted(format!("vote not pooled: {e}"))),
        }
        tracing::warn!(change = %change_id, member = index, "operator voted for a federation change");
        Ok(Response::new(pb::VoteFederationChangeResponse {
            change_id,
            tx_id,
        }))
    }

    async fn backup(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        self.check_admin(&req)?;
        let Some(data_dir) = self.data_dir.clone() else {
            return Err(Status::failed_precondition(
                "backups are not enabled on this node",
            ));
        };
        let path = req.into_inner().path;
        let requested = (!path.is_empty()).then(|| std::path::PathBuf::from(path));
        // Refused, not queued: a second caller learns at once, and backups
        // cannot pile up on the disk.
        let permit = self.backups.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "a backup of this node is already running; wait for it to finish, then retry",
            )
        })?;
        let (chain, member) = (self.chain.clone(), self.identity.member_name.clone());
        // A checkpoint flushes and links (or copies) files: off the async
        // tasks, and never on the consensus task. The permit lives as long
        // as the work, even if the caller goes away.
        let (path, m) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            crate::backup::create(&chain, &data_dir, requested.as_deref(), &member)
        })
        .await
        .map_err(|e| Status::internal(format!("backup task failed: {e}")))??;
        tracing::info!(path = %path.display(), height = m.height, "backup written");
        Ok(Response::new(pb::BackupResponse {
            path: path.display().to_string(),
            height: m.height,
            block_hash: m.block_hash,
            chain_id: m.chain_id,
            created_unix_ms: m.created_unix_ms,
            fedpegd_version: m.fedpegd_version,
        }))
    }

    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let (height, tip, tip_time_ms) =
            self.chain.with_state(|s| (s.height, s.tip, s.tip_time_ms));
        let spec = &self.chain.spec;
        // Network member indices name the network's member list: the epoch
        // in force, then an adopted one's newcomers.
        let listed = self.chain.network_members();
        let (peers, peer_id, p2p_listen) = match &self.net {
            None => (vec![], String::new(), vec![]),
            Some(net) => {
                let peers = net
                    .peers()
                    .into_iter()
                    .map(|(id, addr, member)| pb::PeerInfo {
                        peer_id: id.to_string(),
                        address: addr.to_string(),
                        member_name: member
                            .and_then(|i| listed.get(i))
                            .map(|m| m.name.clone())
                            .unwrap_or_default(),
                    })
                    .collect();
                let listen = net
                    .listen_addrs()
                    .await
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
                (peers, net.local_peer_id().to_string(), listen)
            }
        };
        Ok(Response::new(pb::GetStatusResponse {
            chain_id: spec.chain_id.to_hex(),
            network: spec.genesis.network.clone(),
            height: height.0,
            tip_hash: tip.to_hex(),
            tip_time_ms,
            role: self.identity.role as i32,
            member_name: self.identity.member_name.clone(),
            peers,
            mempool_size: self.chain.mempool_len() as u32,
            members: self
                .chain
                .with_state(|s| s.epoch_at(s.height.next()).members.len() as u32),
            version: crate::build_info::VERSION.to_string(),
            min_tx_fee: spec.genesis.fees.min_tx_fee.to_sat(),
            pegout_fee: spec.genesis.fees.pegout_fee.to_sat(),
            round: self
                .consensus
                .round
                .load(std::sync::atomic::Ordering::Relaxed),
            equivocations_detected: self
                .consensus
                .equivocations
                .load(std::sync::atomic::Ordering::Relaxed),
            peer_id,
            p2p_listen,
            bitcoind_reachable: self.watcher.as_ref().is_some_and(|w| w.reachable()),
            deep_reorg_alerts: self
                .watcher
                .as_ref()
                .map(|w| w.deep_reorgs().iter().map(|o| o.to_string()).collect())
                .unwrap_or_default(),
            halt_height: self.identity.halt_height.unwrap_or(0),
            rejoining: self
                .consensus
                .rejoining
                .load(std::sync::atomic::Ordering::Relaxed),
            vote_floor: self
                .consensus
                .vote_floor
                .load(std::sync::atomic::Ordering::Relaxed),
        }))
    }
}

#[cfg(test)]
mod submit_tests {
    use super::*;
    use crate::peg_testing::{funded_users, user_transfer};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_observer_refuses_batched_submissions_and_pools_nothing() {
        let node = funded_users();
        let api = Api::new(
            node.chain.clone(),
            NodeIdentity::observer(),
            None,
            Arc::default(),
        );
        let s = WalletService::submit_transactions(
            &api,
            Request::new(pb::SubmitTransactionsRequest {
                transactions: vec![user_transfer(&node, 1, 0).encode()],
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
        assert!(s.message().contains("observer"), "{s:?}");
        assert_eq!(node.chain.mempool_len(), 0);
    }
}
