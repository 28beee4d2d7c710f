//! The federation service: members (with when this node last saw them and
//! the version each one runs),
//! thresholds, the peg descriptor and deposit derivation, reserves against
//! supply, and pending / recent peg-outs. Served the same by members and
//! observers: everything comes from genesis, committed state and this
//! node's own connections.
//!
//! Reserves come from [`crate::pegout_api::reserves`] (the same answer as
//! `WalletService.GetReserves`); peg-out states from
//! [`crate::pegout_api::pegout_info`] (as `GetPegOut`).

use crate::api::Api;
use crate::chain::Chain;
use crate::pegout_api::pegout_info;
use crate::watcher::Watcher;
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::ids::BatchId;
use fedpeg_ledger::pegout_batch::Batch;
use fedpeg_peg::bitcoin::Txid;
use fedpeg_proto::v1 as pb;
use fedpeg_proto::v1::federation_service_server::FederationService;
use std::cell::RefCell;
use std::collections::HashMap;
use tonic::{Request, Response, Status};

/// Most recent peg-outs ListPegOuts returns by default, and at most.
pub const DEFAULT_RECENT_PEGOUTS: u32 = 50;
pub const MAX_RECENT_PEGOUTS: u32 = 1000;
/// How many of the newest batches ListPegOuts looks through for paid ones.
pub const RECENT_BATCH_SCAN: usize = 1000;

/// Pending (queued or in an unconfirmed batch, oldest first) and recently
/// paid (newest batch first) peg-outs, optionally of one account only.
pub fn pegouts(
    chain: &Chain,
    watcher: Option<&Watcher>,
    account: Option<&AccountId>,
    recent_limit: usize,
) -> Result<pb::ListPegOutsResponse, Status> {
    let mine = |a: &AccountId| account.is_none_or(|x| x == a);
    // Bitcoind is asked once per transaction, outside the state lock.
    let confs: RefCell<HashMap<Txid, Option<u32>>> = RefCell::default();
    let confirmations = |txid: &Txid| {
        *confs
            .borrow_mut()
            .entry(*txid)
            .or_insert_with(|| watcher.map(|w| crate::pegout_api::bitcoin_confirmations(w, txid)))
    };
    let (queued, batches): (Vec<_>, HashMap<BatchId, Batch>) = chain.with_state(|s| {
        let queued: Vec<_> = s
            .withdrawals
            .values()
            .filter(|w| mine(&w.account))
            .map(|w| (w.clone(), s.withdrawal_batch.get(&w.id).copied()))
            .collect();
        let batches = queued
            .iter()
            .filter_map(|(_, b)| *b)
            .filter_map(|id| s.batches.get(&id).map(|b| (id, b.clone())))
            .collect();
        (queued, batches)
    });
    let pending = queued
        .iter()
        .map(|(w, b)| {
            pegout_info(
                chain,
                w,
                b.and_then(|id| batches.get(&BatchId(id.0))),
                &confirmations,
            )
        })
        .collect();
    let mut recent = Vec::new();
    'batches: for b in chain
        .recent_batches(RECENT_BATCH_SCAN)?
        .iter()
        .filter(|b| b.confirmed.is_some())
    {
        for o in &b.outputs {
            if recent.len() >= recent_limit {
                break 'batches;
            }
            if !mine(&AccountId(o.account)) {
                continue;
            }
            if let Some((w, _)) = chain.withdrawal(o.withdrawal.0)? {
                recent.push(pegout_info(chain, &w, Some(b), &confirmations));
            }
        }
    }
    Ok(pb::ListPegOutsResponse { pending, recent })
}

impl Api {
    fn federation_view(&self) -> Result<pb::GetFederationResponse, Status> {
        let chain = self.chain();
        let spec = &chain.spec;
        let telemetry = self.telemetry();
        telemetry.observe_peers(self.net(), self.member_index());
        let connected: Vec<usize> = self
            .net()
            .map(|n| n.peers().into_iter().filter_map(|(_, _, m)| m).collect())
            .unwrap_or_default();
        let last_seen = telemetry.last_seen_ms();
        let mut versions = self.net().map(|n| n.member_versions()).unwrap_or_default();
        let (epoch, epochs, pending) = self.chain().with_state(epoch_views);
        let me = self.member_index();
        let members = epochs
            .iter()
            .find(|e| e.number == epoch)
            .map(|e| e.members.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let is_self = me == Some(i);
                pb::FederationMember {
                    index: i as u32,
                    name: m.name.clone(),
                    consensus_key: hex::encode(&m.consensus_key),
                    peg_key: hex::encode(&m.peg_key),
                    p2p_address: m.p2p_address.clone(),
                    online: is_self || connected.contains(&i),
                    last_seen_ms: last_seen.get(i).copied().unwrap_or(0),
                    is_self,
                    version: if is_self {
                        crate::build_info::VERSION.to_string()
                    } else {
                        versions.remove(&i).unwrap_or_default()
                    },
                }
            })
            .collect();
        let internal = |e: &dyn std::fmt::Display| {
            Status::internal(format!("peg federation of the epoch in force: {e}"))
        };
        // The descriptor of the epoch in force at the next block: what new
        // deposit addresses and change pay.
        let fed = self.peg_federation()?;
        let peg_threshold = fed.threshold() as u32;
        let peg_descriptor = fed.base_descriptor().map_err(|e| internal(&e))?;
        let change_address = fed.change_address().map_err(|e| internal(&e))?.to_string();
        let quorum = crate::driver::validator_set(chain)
            .map(|v| v.quorum() as u32)
            .map_err(|e| internal(&e))?;
        Ok(pb::GetFederationResponse {
            chain_id: spec.chain_id.to_hex(),
            network: spec.genesis.network.clone(),
            members,
            consensus_quorum: quorum,
            peg_threshold,
            pegin_confirmations: spec.genesis.pegin_confirmations,
            peg_descriptor,
            change_address,
            deposit_derivation: "each account a gets its own address: the peg descriptor with every key K (members' and backup keys) replaced by K' = K + H_tag(\"fedpeg/pegin\", K || a)·G (pay-to-contract), keys sorted; change uses tag \"fedpeg/change\" with 32 zero bytes; WalletService.GetPegInAddress returns the full descriptor, which bitcoind's deriveaddresses checks".into(),
            reserves: Some(pb::GetReservesResponse {
                utxos: Vec::new(),
                ..crate::pegout_api::reserves(chain)
            }),
            bitcoin_tip_height: self.watcher_tip().unwrap_or(0),
            epoch,
            epochs,
            pending_changes: pending,
        })
    }
}

/// The epoch in force at the next height, every epoch, and the changes
/// with votes, as the API shows them.
fn epoch_views(
    s: &fedpeg_ledger::State,
) -> (u32, Vec<pb::EpochView>, Vec<pb::PendingFederationChange>) {
    let current = s.epoch_at(s.height.next());
    let epochs = s
        .epochs
        .iter()
        .map(|e| pb::EpochView {
            number: e.number,
            activation_height: e.activation.0,
            adopted_height: e.adopted.0,
            members: e
                .members
                .iter()
                .map(fedpeg_ledger::epoch::EpochMember::to_proto)
                .collect(),
            peg_threshold: e.peg_threshold,
            consensus_quorum: e.quorum() as u32,
        })
        .collect();
    let mut pending: Vec<pb::PendingFederationChange> = Vec::new();
    for (member, (id, change)) in &s.change_votes {
        let name = current
            .members
            .get(member.index())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let hex_id = id.to_hex();
        match pending.iter_mut().find(|p| p.change_id == hex_id) {
            Some(p) => p.voters.push(name),
            None => pending.push(pb::PendingFederationChange {
                change_id: hex_id,
                change: Some(change.to_proto()),
                voters: vec![name],
                needed: current.quorum() as u32,
            }),
        }
    }
    (current.number, epochs, pending)
}

#[tonic::async_trait]
impl FederationService for Api {
    async fn get_federation(
        &self,
        _: Request<pb::GetFederationRequest>,
    ) -> Result<Response<pb::GetFederationResponse>, Status> {
        self.federation_view().map(Response::new)
    }

    async fn get_reserves(
        &self,
        _: Request<pb::GetReservesRequest>,
    ) -> Result<Response<pb::GetReservesResponse>, Status> {
        let r = crate::pegout_api::reserves(self.chain());
        let btc = self.watcher_bitcoin();
        Ok(Response::new(
            crate::pegout_api::with_blocks_to_expiry(r, self.chain(), btc).await,
        ))
    }

    async fn list_peg_outs(
        &self,
        req: Request<pb::ListPegOutsRequest>,
    ) -> Result<Response<pb::ListPegOutsResponse>, Status> {
        let r = req.get_ref();
        let hrp = self.chain().spec.hrp();
        let account = match r.address.as_str() {
            "" => None,
            a => Some(
                AccountId::from_address(a, hrp)
                    .map_err(|e| Status::invalid_argument(format!("address {a:?}: {e}")))?,
            ),
        };
        let limit = match r.limit {
            0 => DEFAULT_RECENT_PEGOUTS,
            n => n.min(MAX_RECENT_PEGOUTS),
        } as usize;
        let (chain, watcher) = (self.chain().clone(), self.watcher());
        tokio::task::spawn_blocking(move || {
            pegouts(&chain, watcher.as_deref(), account.as_ref(), limit)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map(Response::new)
    }
}
