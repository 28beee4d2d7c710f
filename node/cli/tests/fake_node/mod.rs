//! An in-process stand-in for a fedpeg node's gRPC API, with fixed answers,
//! so the `fedpeg` binary can be tested without fedpegd, RocksDB or
//! bitcoind. The feeds never end: a test decides when to stop reading.
//! Follow-up calls (a transaction becoming final, a peg-out or deposit
//! moving on) advance one step per call. Federation votes are recorded for
//! the test to read ([`FakeNode::votes`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fedpeg_proto::v1 as pb;
use fedpeg_proto::v1::{
    explorer_service_server::{ExplorerService, ExplorerServiceServer},
    federation_service_server::{FederationService, FederationServiceServer},
    node_service_server::{NodeService, NodeServiceServer},
    wallet_service_server::{WalletService, WalletServiceServer},
};
use tonic::codegen::tokio_stream::{self, wrappers::TcpListenerStream, Stream};
use tonic::{Request, Response, Status};

/// Txid the fake gives every submitted transaction.
pub const TXID: &str = "abababababababababababababababababababababababababababababababab";
/// A service the fake's health check reports NOT_SERVING.
pub const DOWN_SERVICE: &str = "fedpeg.v1.Down";
/// An account address as the fake shows it (not checked by the fake).
pub const ALICE: &str = "fprt1alice";

type Feed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;
type Answer<T> = Result<Response<T>, Status>;

/// Id of the fake's pending federation change.
pub const PENDING_CHANGE_ID: &str =
    "c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4";
/// Id the fake gives a change it accepts a vote for.
pub const VOTED_CHANGE_ID: &str =
    "d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5d5";
/// The fake refuses (FAILED_PRECONDITION) a change activating at this height.
pub const REFUSED_ACTIVATION: u64 = 999;

/// The federation the fake shows. Both have the genesis epoch and epoch 1
/// in force (its heights need not obey the 10-block rule: the CLI only
/// shows them).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub enum Federation {
    /// One change pending: m3 out, m4 in, peg 3 of 4; voted by m1.
    #[default]
    ChangePending,
    /// That change adopted at height 3 as epoch 2, activating at 14.
    AdoptedWaiting,
}

/// A `VoteFederationChange` call as the fake received it.
#[derive(Clone, Debug)]
pub struct Vote {
    /// The `authorization` metadata, if any.
    pub authorization: Option<String>,
    pub change: Option<pb::FederationChange>,
}

/// Counts calls to the methods that answer differently over time, and
/// records the votes.
#[derive(Default)]
struct Fake {
    tx_polls: AtomicUsize,
    pegout_polls: AtomicUsize,
    pegin_polls: AtomicUsize,
    federation: Federation,
    votes: Mutex<Vec<Vote>>,
}

/// A running fake node.
pub struct FakeNode {
    pub url: String,
    fake: Arc<Fake>,
}

impl FakeNode {
    /// The votes it received, in order.
    pub fn votes(&self) -> Vec<Vote> {
        self.fake.votes.lock().unwrap().clone()
    }
}

/// Starts a fake node on a free loopback port, on its own thread; returns
/// its URL. It lives until the test process ends.
pub fn start() -> String {
    start_with(Federation::default()).url
}

/// Starts a fake node showing `federation`.
pub fn start_with(federation: Federation) -> FakeNode {
    let fake = Arc::new(Fake {
        federation,
        ..Fake::default()
    });
    let served = fake.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let fake = served;
            // grpc.health.v1: the node serves; one service says it does not.
            let (health, health_service) = tonic_health::server::health_reporter();
            health
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            health
                .set_service_status(DOWN_SERVICE, tonic_health::ServingStatus::NotServing)
                .await;
            tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(NodeServiceServer::from_arc(fake.clone()))
                .add_service(ExplorerServiceServer::from_arc(fake.clone()))
                .add_service(WalletServiceServer::from_arc(fake.clone()))
                .add_service(FederationServiceServer::from_arc(fake))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
    });
    FakeNode { url, fake }
}

/// The next step of a sequence polled by a client, staying on the last.
fn step(counter: &AtomicUsize) -> usize {
    counter.fetch_add(1, Ordering::SeqCst)
}

fn transfer_view() -> pb::TransactionView {
    pb::TransactionView {
        txid: TXID.into(),
        sender: ALICE.into(),
        nonce: 4,
        fee: 1,
        kind: pb::TransactionKind::Transfer as i32,
        to: "fprt1bob".into(),
        bitcoin_address: String::new(),
        amount: 250,
    }
}

fn pegout_view() -> pb::TransactionView {
    pb::TransactionView {
        txid: "cd".repeat(32),
        kind: pb::TransactionKind::PegOut as i32,
        to: String::new(),
        bitcoin_address: "bcrt1qpay".into(),
        amount: 5000,
        ..transfer_view()
    }
}

fn reserves() -> pb::GetReservesResponse {
    pb::GetReservesResponse {
        available: 900_000,
        locked: 100_000,
        pending_change: 40_000,
        supply: 800_000,
        queued: 5000,
        in_batches: 60_000,
        fee_pool: 2000,
        covered: true,
        utxos: vec![
            pb::FederationUtxo {
                outpoint: format!("{}:0", "11".repeat(32)),
                amount: 900_000,
                kind: "deposit".into(),
                locked_by_batch: None,
                account: "fprt1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqsyn5ms"
                    .into(),
                descriptor: String::new(),
                epoch: 0,
            },
            pb::FederationUtxo {
                outpoint: format!("{}:1", "22".repeat(32)),
                amount: 100_000,
                kind: "change".into(),
                locked_by_batch: Some(7),
                account: String::new(),
                descriptor: String::new(),
                epoch: 0,
            },
        ],
        height: 3,
        oldest_utxo: format!("{}:0", "11".repeat(32)),
        oldest_utxo_blocks_to_expiry: Some(4032),
        oldest_utxo_rollover_in_ms: Some(86_400_000),
    }
}

/// Event `i` of the endless event feed: every kind in turn.
fn event(i: u64) -> pb::ChainEvent {
    use pb::chain_event::Event as Ev;
    let (kind, event) = match i % 7 {
        0 => (
            pb::EventKind::Transfer,
            Some(Ev::Transfer(pb::TransferEvent {
                from: ALICE.into(),
                to: "fprt1bob".into(),
                amount: 250,
            })),
        ),
        1 => (
            pb::EventKind::Fee,
            Some(Ev::Fee(pb::FeeEvent {
                from: ALICE.into(),
                amount: 1,
            })),
        ),
        2 => (
            pb::EventKind::Mint,
            Some(Ev::Mint(pb::MintEvent {
                account: ALICE.into(),
                amount: 9000,
                outpoint: format!("{}:0", "33".repeat(32)),
            })),
        ),
        3 => (
            pb::EventKind::Burn,
            Some(Ev::Burn(pb::BurnEvent {
                account: ALICE.into(),
                amount: 5000,
                bitcoin_address: "bcrt1qpay".into(),
                withdrawal_id: 12,
            })),
        ),
        4 => (
            pb::EventKind::DepositAddressRegistered,
            Some(Ev::DepositAddressRegistered(
                pb::DepositAddressRegisteredEvent {
                    account: ALICE.into(),
                    member: 2,
                },
            )),
        ),
        5 => (pb::EventKind::PegOutStateChanged, Some(pegout_changed(i))),
        _ => (pb::EventKind::Unspecified, None),
    };
    pb::ChainEvent {
        height: 1 + i / 7,
        index: (i % 7) as u32,
        block_hash: "ee".repeat(32),
        time_ms: 1_700_000_000_000,
        txid: TXID.into(),
        kind: kind as i32,
        event,
    }
}

fn pegout_changed(i: u64) -> pb::chain_event::Event {
    let states = [
        pb::PegOutState::Signing,
        pb::PegOutState::Replaced,
        pb::PegOutState::Confirmed,
    ];
    pb::chain_event::Event::PegOutStateChanged(pb::PegOutStateChanged {
        batch: 7,
        state: states[(i / 7 % 3) as usize] as i32,
        bitcoin_txid: "44".repeat(32),
        batch_version: 2,
        fee_rate_sat_vb: 3,
        signatures: 2,
        member: Some(1),
        withdrawal_ids: vec![12, 13],
        accounts: vec![ALICE.into()],
    })
}

/// Block `h` of the endless block feed.
fn feed_block(h: u64) -> pb::FeedBlock {
    pb::FeedBlock {
        height: h,
        hash: format!("{h:064x}"),
        parent_hash: format!("{:064x}", h.saturating_sub(1)),
        time_ms: 1_700_000_000_000 + h,
        proposer_name: "m0".into(),
        commit: Some(pb::CommitSummary {
            signer_names: vec!["m0".into(), "m1".into()],
            ..Default::default()
        }),
        transactions: vec![pb::FeedTransaction {
            transaction: Some(transfer_view()),
            ..Default::default()
        }],
        events: (0..7)
            .map(|i| pb::ChainEvent {
                height: h,
                ..event(i)
            })
            .collect(),
        ..Default::default()
    }
}

fn peg_out(withdrawal_id: u64, state: pb::PegOutState, signatures: u32) -> pb::PegOutInfo {
    pb::PegOutInfo {
        withdrawal_id,
        txid: TXID.into(),
        account: ALICE.into(),
        bitcoin_address: "bcrt1qpay".into(),
        amount: 5000,
        state: state as i32,
        batch: 7,
        bitcoin_txid: "44".repeat(32),
        batch_version: 1,
        fee_rate_sat_vb: 3,
        signatures,
        signatures_required: 2,
        confirmations: 1,
        confirmations_required: 3,
        eta_seconds: 1300,
        vout: 1,
        ..Default::default()
    }
}

fn peg_in(n: u8, state: pb::PegInState, confirmations: u32) -> pb::PegInInfo {
    pb::PegInInfo {
        outpoint: format!("{}:0", format!("{n:02x}").repeat(32)),
        account: ALICE.into(),
        amount: 100_000,
        state: state as i32,
        confirmations,
        confirmations_required: 3,
        eta_seconds: 1200,
        minted_amount: if state == pb::PegInState::Minted {
            98_000
        } else {
            0
        },
        minted_height: if state == pb::PegInState::Minted {
            9
        } else {
            0
        },
        ..Default::default()
    }
}

#[tonic::async_trait]
impl NodeService for Fake {
    async fn get_status(&self, _: Request<pb::GetStatusRequest>) -> Answer<pb::GetStatusResponse> {
        Ok(Response::new(pb::GetStatusResponse {
            chain_id: "c1".repeat(32),
            network: "regtest".into(),
            height: 3,
            tip_hash: format!("{:064x}", 3),
            role: pb::NodeRole::Member as i32,
            member_name: "m0".into(),
            peers: vec![pb::PeerInfo::default(); 2],
            mempool_size: 1,
            members: 3,
            version: "0.1.0".into(),
            halt_height: 120,
            min_tx_fee: 1,
            pegout_fee: 300,
            round: 0,
            bitcoind_reachable: true,
            deep_reorg_alerts: vec![],
            ..Default::default()
        }))
    }

    async fn acknowledge_alerts(
        &self,
        _: Request<pb::AcknowledgeAlertsRequest>,
    ) -> Answer<pb::AcknowledgeAlertsResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn backup(&self, _: Request<pb::BackupRequest>) -> Answer<pb::BackupResponse> {
        Err(Status::unimplemented("fake"))
    }

    /// Records the vote; refuses a change activating at
    /// [`REFUSED_ACTIVATION`], accepts any other as [`VOTED_CHANGE_ID`] (or
    /// the pending change's id when it is that change).
    async fn vote_federation_change(
        &self,
        r: Request<pb::VoteFederationChangeRequest>,
    ) -> Answer<pb::VoteFederationChangeResponse> {
        let authorization = r
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let change = r.into_inner().change;
        self.votes.lock().unwrap().push(Vote {
            authorization,
            change: change.clone(),
        });
        let change = change.unwrap_or_default();
        if change.activation_height == REFUSED_ACTIVATION {
            return Err(Status::failed_precondition(
                "an adopted change waits for its activation at height 30",
            ));
        }
        let change_id = match change == pending_change() {
            true => PENDING_CHANGE_ID,
            false => VOTED_CHANGE_ID,
        };
        Ok(Response::new(pb::VoteFederationChangeResponse {
            change_id: change_id.into(),
            tx_id: TXID.into(),
        }))
    }
}

/// Member `i` of the fake federation (keys are not real points: the CLI
/// checks only the keys an operator types).
pub fn epoch_member(i: u8) -> pb::EpochMember {
    pb::EpochMember {
        name: format!("m{i}"),
        consensus_key: vec![0x10 + i; 32],
        peg_key: [vec![2], vec![0x20 + i; 32]].concat(),
        p2p_address: format!("/ip4/127.0.0.1/tcp/3000{i}"),
    }
}

/// The members of epoch 1: genesis's, with m2 at a new address.
pub fn epoch1_members() -> Vec<pb::EpochMember> {
    let mut members: Vec<_> = (0..4).map(epoch_member).collect();
    members[2].p2p_address = "/ip4/10.0.0.2/tcp/30002".into();
    members
}

/// The pending change: m3 out, m4 in, peg 3 of 4, at height 40.
pub fn pending_change() -> pb::FederationChange {
    let mut members = epoch1_members();
    members[3] = epoch_member(4);
    pb::FederationChange {
        members,
        peg_threshold: 3,
        activation_height: 40,
        base_epoch: 1,
    }
}

fn epochs(federation: Federation) -> Vec<pb::EpochView> {
    let epoch = |number, adopted_height, activation_height, members, peg_threshold| pb::EpochView {
        number,
        activation_height,
        adopted_height,
        members,
        peg_threshold,
        consensus_quorum: 3,
    };
    let mut epochs = vec![
        epoch(0, 0, 0, (0..4).map(epoch_member).collect(), 2),
        epoch(1, 1, 2, epoch1_members(), 2),
    ];
    if federation == Federation::AdoptedWaiting {
        epochs.push(epoch(2, 3, 14, pending_change().members, 3));
    }
    epochs
}

#[tonic::async_trait]
impl ExplorerService for Fake {
    async fn get_block(&self, r: Request<pb::GetBlockRequest>) -> Answer<pb::GetBlockResponse> {
        let Some(pb::get_block_request::Selector::Height(h @ 1..=3)) = r.into_inner().selector
        else {
            return Err(Status::not_found("no such block"));
        };
        Ok(Response::new(pb::GetBlockResponse {
            block: Some(pb::BlockView {
                height: h,
                hash: format!("{h:064x}"),
                parent_hash: format!("{:064x}", h - 1),
                time_ms: 1_700_000_000_000 + h,
                proposer: 0,
                proposer_name: "m0".into(),
                state_root: "55".repeat(32),
                transactions: vec![transfer_view(), pegout_view()],
                raw: vec![],
            }),
        }))
    }

    /// `TXID` is pending on the first look and final after; the peg-out's
    /// burn is always pending; anything else is unknown.
    async fn get_transaction(
        &self,
        r: Request<pb::GetTransactionRequest>,
    ) -> Answer<pb::GetTransactionResponse> {
        let txid = r.into_inner().txid;
        if txid != TXID {
            return Err(Status::not_found("no such transaction"));
        }
        let final_ = step(&self.tx_polls) > 0;
        let status = match final_ {
            true => pb::TransactionStatus::Finalized,
            false => pb::TransactionStatus::Pending,
        };
        Ok(Response::new(pb::GetTransactionResponse {
            transaction: Some(transfer_view()),
            status: status as i32,
            block_height: if final_ { 3 } else { 0 },
            block_hash: if final_ {
                format!("{:064x}", 3)
            } else {
                String::new()
            },
            index_in_block: if final_ { 1 } else { 0 },
        }))
    }

    type SubscribeBlocksStream = Feed<pb::FeedBlock>;

    async fn subscribe_blocks(
        &self,
        r: Request<pb::SubscribeBlocksRequest>,
    ) -> Answer<Self::SubscribeBlocksStream> {
        let from = r.into_inner().from_height.unwrap_or(4) as u64;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            (from..).map(|h| Ok(feed_block(h))),
        ))))
    }

    type SubscribeEventsStream = Feed<pb::ChainEvent>;

    async fn subscribe_events(
        &self,
        r: Request<pb::SubscribeEventsRequest>,
    ) -> Answer<Self::SubscribeEventsStream> {
        if r.get_ref().accounts.iter().any(|a| !a.starts_with("fprt1")) {
            return Err(Status::invalid_argument("not an address"));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(
            (0..).map(|i| Ok(event(i))),
        ))))
    }

    async fn list_blocks(
        &self,
        _: Request<pb::ListBlocksRequest>,
    ) -> Answer<pb::ListBlocksResponse> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_account_transactions(
        &self,
        _: Request<pb::ListAccountTransactionsRequest>,
    ) -> Answer<pb::ListAccountTransactionsResponse> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl WalletService for Fake {
    async fn submit_transaction(
        &self,
        _: Request<pb::SubmitTransactionRequest>,
    ) -> Answer<pb::SubmitTransactionResponse> {
        Ok(Response::new(pb::SubmitTransactionResponse {
            txid: TXID.into(),
        }))
    }

    async fn submit_transactions(
        &self,
        _: Request<pb::SubmitTransactionsRequest>,
    ) -> Answer<pb::SubmitTransactionsResponse> {
        Err(Status::unimplemented("the CLI does not batch"))
    }

    async fn get_account(
        &self,
        r: Request<pb::GetAccountRequest>,
    ) -> Answer<pb::GetAccountResponse> {
        Ok(Response::new(pb::GetAccountResponse {
            address: r.into_inner().address,
            balance: 100,
            nonce: 2,
            next_nonce: 3,
            spendable: 90,
        }))
    }

    async fn get_peg_in_address(
        &self,
        _: Request<pb::GetPegInAddressRequest>,
    ) -> Answer<pb::GetPegInAddressResponse> {
        Ok(Response::new(pb::GetPegInAddressResponse {
            deposit_address: "bcrt1qdeposit".into(),
            descriptor: "wsh(multi(2,...))#abcd".into(),
            registered: true,
            confirmations_required: 3,
            min_deposit_sats: 2000,
        }))
    }

    async fn claim_peg_in(
        &self,
        _: Request<pb::ClaimPegInRequest>,
    ) -> Answer<pb::ClaimPegInResponse> {
        Err(Status::unimplemented("fake"))
    }

    /// An old minted deposit and a dust one throughout; a new deposit that
    /// confirms one block per call and is then minted.
    async fn get_peg_ins(&self, _: Request<pb::GetPegInsRequest>) -> Answer<pb::GetPegInsResponse> {
        use pb::PegInState::*;
        let mut peg_ins = vec![peg_in(1, Minted, 9), peg_in(2, BelowCost, 0)];
        match step(&self.pegin_polls) {
            0 => {}
            n @ 1..=2 => peg_ins.push(peg_in(3, Confirming, n as u32)),
            _ => peg_ins.push(peg_in(3, Minted, 3)),
        }
        Ok(Response::new(pb::GetPegInsResponse { peg_ins }))
    }

    async fn estimate_peg_out_fee(
        &self,
        _: Request<pb::EstimatePegOutFeeRequest>,
    ) -> Answer<pb::EstimatePegOutFeeResponse> {
        Ok(Response::new(pb::EstimatePegOutFeeResponse {
            fee: 300,
            fee_rate_sat_vb: 2,
            min_amount: 546,
            address_type: "p2wpkh".into(),
            batch_interval_ms: 1000,
            quote_validity_ms: 600_000,
        }))
    }

    /// By withdrawal id: one in flight. By txid: not found once, then
    /// queued, signing (twice the same), broadcast, confirmed.
    async fn get_peg_out(&self, r: Request<pb::GetPegOutRequest>) -> Answer<pb::GetPegOutResponse> {
        use pb::PegOutState::*;
        let p = match r.into_inner().selector {
            Some(pb::get_peg_out_request::Selector::WithdrawalId(12)) => peg_out(12, Broadcast, 2),
            Some(pb::get_peg_out_request::Selector::Txid(t)) if t == TXID => {
                match step(&self.pegout_polls) {
                    0 => return Err(Status::not_found("not final yet")),
                    1 => peg_out(12, Queued, 0),
                    2 | 3 => peg_out(12, Signing, 1),
                    4 => peg_out(12, Broadcast, 2),
                    _ => peg_out(12, Confirmed, 2),
                }
            }
            _ => return Err(Status::not_found("no such peg-out")),
        };
        Ok(Response::new(pb::GetPegOutResponse { peg_out: Some(p) }))
    }

    async fn get_reserves(
        &self,
        _: Request<pb::GetReservesRequest>,
    ) -> Answer<pb::GetReservesResponse> {
        Ok(Response::new(reserves()))
    }
}

#[tonic::async_trait]
impl FederationService for Fake {
    async fn get_federation(
        &self,
        _: Request<pb::GetFederationRequest>,
    ) -> Answer<pb::GetFederationResponse> {
        let member =
            |name: &str, online, last_seen_ms, is_self, version: &str| pb::FederationMember {
                name: name.into(),
                online,
                last_seen_ms,
                is_self,
                version: version.into(),
                ..Default::default()
            };
        Ok(Response::new(pb::GetFederationResponse {
            members: vec![
                member("m0", true, 0, true, "0.1.0"),
                member("m1", true, 5, false, "0.2.0+3f9c2a1b7d0e"),
                member("m2", false, 1234, false, "0.1.0"),
                member("m3", false, 0, false, ""),
            ],
            consensus_quorum: 3,
            peg_threshold: 2,
            pegin_confirmations: 3,
            peg_descriptor: "wsh(multi(2,...))".into(),
            reserves: Some(reserves()),
            bitcoin_tip_height: 150,
            epoch: 1,
            epochs: epochs(self.federation),
            pending_changes: match self.federation {
                Federation::ChangePending => vec![pb::PendingFederationChange {
                    change_id: PENDING_CHANGE_ID.into(),
                    change: Some(pending_change()),
                    voters: vec!["m1".into()],
                    needed: 3,
                }],
                Federation::AdoptedWaiting => vec![],
            },
            ..Default::default()
        }))
    }

    async fn get_reserves(
        &self,
        _: Request<pb::GetReservesRequest>,
    ) -> Answer<pb::GetReservesResponse> {
        Ok(Response::new(reserves()))
    }

    async fn list_peg_outs(
        &self,
        _: Request<pb::ListPegOutsRequest>,
    ) -> Answer<pb::ListPegOutsResponse> {
        Err(Status::unimplemented("fake"))
    }
}
