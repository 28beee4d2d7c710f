//! The federation service: members (with when this node last saw them),
//! thresholds, the peg descriptor and deposit derivation, reserves against
//! supply, and pending / recent peg-outs. Served the same by members and
//! observers: everything comes from genesis, committed state and this
//! node's own connections.
//!
//! Peg-out state beyond "queued" and the federation UTXO set come from the
//! peg-out work: [`reserves`] and [`pegouts`] are the places that read them.

use crate::api::Api;
use crate::ledger::{State, Withdrawal};
use fedpeg_proto::v1 as pb;
use fedpeg_proto::v1::federation_service_server::FederationService;
use tonic::{Request, Response, Status};

/// Most recent peg-outs ListPegOuts returns by default.
pub const DEFAULT_RECENT_PEGOUTS: u32 = 50;

/// What backs the pegged supply, from committed state.
pub fn reserves(state: &State) -> pb::Reserves {
    let queued: u64 = state
        .withdrawals
        .values()
        .fold(0u64, |acc, w| acc.saturating_add(w.amount.0));
    pb::Reserves {
        // The federation UTXO set is not part of the ledger state yet.
        federation_utxos_confirmed_sats: 0,
        federation_utxos_pending_sats: 0,
        utxos_known: false,
        supply_sats: state.supply.0,
        queued_withdrawals_sats: queued,
        queued_withdrawals: state.withdrawals.len() as u32,
        fee_pool_sats: state.fee_pool.0,
        pegins_minted: state.minted.len() as u64,
        height: state.height,
    }
}

/// A withdrawal as ListPegOuts shows it.
pub fn pegout_info(w: &Withdrawal, hrp: &str) -> pb::PegOutInfo {
    pb::PegOutInfo {
        withdrawal_id: w.id,
        account: w.account.to_address(hrp),
        bitcoin_address: w.bitcoin_address.clone(),
        amount: w.amount.0,
        txid: w.txid.to_hex(),
        height: w.height,
        state: pb::PegOutState::Queued as i32,
        batch_id: String::new(),
        bitcoin_txid: String::new(),
    }
}

/// Pending and recent (paid) peg-outs, oldest pending first, newest paid
/// first, optionally of one account only.
pub fn pegouts(
    state: &State,
    account: Option<&crate::account::AccountId>,
    recent_limit: usize,
    hrp: &str,
) -> pb::ListPegOutsResponse {
    let pending = state
        .withdrawals
        .values()
        .filter(|w| account.is_none_or(|a| *a == w.account))
        .map(|w| pegout_info(w, hrp))
        .collect();
    // Paid peg-outs leave `withdrawals`; the state keeps no history of them yet.
    let recent: Vec<pb::PegOutInfo> = Vec::new();
    pb::ListPegOutsResponse {
        pending,
        recent: recent.into_iter().take(recent_limit).collect(),
    }
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
        let members = spec
            .genesis
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let is_self = self.member_index() == Some(i);
                pb::FederationMember {
                    index: i as u32,
                    name: m.name.clone(),
                    consensus_key: m.consensus_key.clone(),
                    peg_key: m.peg_key.clone(),
                    p2p_address: m.p2p_address.clone(),
                    online: is_self || connected.contains(&i),
                    last_seen_ms: last_seen.get(i).copied().unwrap_or(0),
                    is_self,
                }
            })
            .collect();
        let internal = |e: &dyn std::fmt::Display| {
            Status::internal(format!("peg federation from genesis: {e}"))
        };
        let fed = spec.peg_federation().map_err(|e| internal(&e))?;
        let keys: Vec<String> = fed.keys().iter().map(|k| k.to_string()).collect();
        let peg_descriptor = fedpeg_peg::descriptor::with_checksum(&format!(
            "wsh(sortedmulti({},{}))",
            fed.threshold(),
            keys.join(",")
        ))
        .map_err(|e| internal(&e))?;
        let change_address = fed.change_address().map_err(|e| internal(&e))?.to_string();
        let quorum = crate::driver::validator_set(chain)
            .map(|v| v.quorum() as u32)
            .map_err(|e| internal(&e))?;
        Ok(pb::GetFederationResponse {
            chain_id: spec.chain_id.to_hex(),
            network: spec.genesis.network.clone(),
            members,
            consensus_quorum: quorum,
            peg_threshold: spec.genesis.peg_threshold,
            pegin_confirmations: spec.genesis.pegin_confirmations,
            peg_descriptor,
            change_address,
            deposit_derivation: "each account a gets its own address wsh(sortedmulti(m, P_1', ..., P_n')) with P_i' = P_i + H_tag(\"fedpeg/pegin\", P_i || a)·G (pay-to-contract); WalletService.GetPegInAddress returns it with its descriptor".into(),
            reserves: Some(chain.with_state(reserves)),
            bitcoin_tip_height: self.watcher_tip().unwrap_or(0),
        })
    }
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
        Ok(Response::new(pb::GetReservesResponse {
            reserves: Some(self.chain().with_state(reserves)),
        }))
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
                crate::account::AccountId::from_address(a, hrp)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ),
        };
        let limit = match r.limit {
            0 => DEFAULT_RECENT_PEGOUTS,
            n => n,
        } as usize;
        Ok(Response::new(
            self.chain()
                .with_state(|s| pegouts(s, account.as_ref(), limit, hrp)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::AccountId;
    use crate::amount::Sats;
    use crate::hash::Hash32;

    #[test]
    fn reserves_and_pending_pegouts_come_from_state() {
        let mut s = State {
            supply: Sats(1000),
            fee_pool: Sats(7),
            ..State::default()
        };
        for (id, who) in [(0u64, 1u8), (1, 2)] {
            s.withdrawals.insert(
                id,
                Withdrawal {
                    id,
                    account: AccountId([who; 32]),
                    bitcoin_address: "bcrt1qexample".into(),
                    amount: Sats(100 + id),
                    txid: Hash32::ZERO,
                    height: 3,
                },
            );
        }
        let r = reserves(&s);
        assert_eq!(
            (
                r.supply_sats,
                r.queued_withdrawals_sats,
                r.queued_withdrawals
            ),
            (1000, 201, 2)
        );
        assert!(!r.utxos_known);
        let mine = pegouts(&s, Some(&AccountId([2; 32])), 10, "fprt");
        assert_eq!(mine.pending.len(), 1);
        assert_eq!(mine.pending[0].withdrawal_id, 1);
        assert_eq!(mine.pending[0].state, pb::PegOutState::Queued as i32);
        assert_eq!(pegouts(&s, None, 10, "fprt").pending.len(), 2);
    }
}
