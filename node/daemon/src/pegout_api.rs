//! gRPC handlers for peg-out quotes, peg-out status and reserves.

use crate::chain::Chain;
use crate::watcher::Watcher;
use fedpeg_ledger::hash::Hash32;
use fedpeg_ledger::pegout_batch::{pegout_fee_quote, Owner};
use fedpeg_peg::bitcoin::Txid;
use fedpeg_peg::deposit::Tweak;
use fedpeg_proto::v1 as pb;
use tonic::Status;

/// The fee a PegOut to `address` must carry now, and how long it stays
/// enough once the agreed rate rises.
pub fn estimate_fee(
    chain: &Chain,
    r: &pb::EstimatePegOutFeeRequest,
) -> Result<pb::EstimatePegOutFeeResponse, Status> {
    let params = chain.params();
    if r.bitcoin_address.trim().is_empty() {
        return Err(Status::invalid_argument(
            "bitcoin_address is empty; pass the Bitcoin address to pay",
        ));
    }
    let addr = fedpeg_peg::address::parse_pegout_address(&r.bitcoin_address, params.network)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let rate = chain.with_state(|s| s.fee_rate(params));
    let fee = pegout_fee_quote(
        &params.pegout,
        params.pegout_fee,
        rate,
        &addr.script_pubkey(),
    );
    Ok(pb::EstimatePegOutFeeResponse {
        fee: fee.to_sat(),
        fee_rate_sat_vb: rate.0,
        min_amount: fedpeg_peg::address::PEGOUT_DUST_LIMIT_SATS,
        address_type: addr
            .address_type()
            .map(|t| t.to_string())
            .unwrap_or_default(),
        batch_interval_ms: params.pegout.batch_interval_ms,
        quote_validity_ms: params.quote_validity_ms,
    })
}

/// Where a peg-out is.
pub fn get_pegout(
    chain: &Chain,
    watcher: Option<&Watcher>,
    r: &pb::GetPegOutRequest,
) -> Result<pb::GetPegOutResponse, Status> {
    let id = match &r.selector {
        Some(pb::get_peg_out_request::Selector::WithdrawalId(id)) => *id,
        Some(pb::get_peg_out_request::Selector::Txid(t)) => {
            let txid =
                Hash32::from_hex(t).map_err(|e| Status::invalid_argument(format!("txid {e}")))?;
            chain
                .withdrawal_id_of(&txid)
                ?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "no finalized peg-out has txid {t} (a pending one shows up once its block is final)"
                    ))
                })?
        }
        None => return Err(Status::invalid_argument("set either txid or withdrawal_id")),
    };
    let (w, batch) = chain
        .withdrawal(id)?
        .ok_or_else(|| Status::not_found(format!("no peg-out has withdrawal id {id}")))?;
    let batch = match batch {
        None => None,
        Some(id) => Some(
            chain
                .batch(id)?
                .ok_or_else(|| Status::internal(format!("batch {id} missing")))?,
        ),
    };
    let confirmations = |txid: &Txid| watcher.map(|w| bitcoin_confirmations(w, txid));
    Ok(pb::GetPegOutResponse {
        peg_out: Some(pegout_info(chain, &w, batch.as_ref(), &confirmations)),
    })
}

/// How a withdrawal stands: QUEUED without a batch; in `batch`, SIGNING,
/// BROADCAST (with `confirmations` of its txid on this node's bitcoind, when
/// it has one) or CONFIRMED.
pub fn pegout_info(
    chain: &Chain,
    w: &fedpeg_ledger::Withdrawal,
    batch: Option<&fedpeg_ledger::pegout_batch::Batch>,
    confirmations: &dyn Fn(&Txid) -> Option<u32>,
) -> pb::PegOutInfo {
    let params = chain.params();
    // The batch's epoch signs it; a queued peg-out waits for a batch of
    // the epoch in force.
    let m = chain.with_state(|s| match batch {
        Some(b) => s.epoch(b.epoch).map_or(0, |e| e.peg_threshold),
        None => s.peg_epoch().peg_threshold,
    });
    let need = params.confirmations;
    let mut info = pb::PegOutInfo {
        withdrawal_id: w.id.0,
        txid: w.txid.to_hex(),
        account: w.account.to_address(chain.spec.hrp()),
        bitcoin_address: w.bitcoin_address.clone(),
        amount: w.amount.to_sat(),
        state: pb::PegOutState::Queued as i32,
        queued_height: w.height.0,
        signatures_required: m,
        confirmations_required: need,
        // Next Bitcoin blocks: `need` of them at ~10 minutes.
        eta_seconds: 600 * need as u64,
        ..Default::default()
    };
    let Some(b) = batch else {
        return info;
    };
    let v = b
        .confirmed
        .as_ref()
        .map(|c| c.version as usize)
        .unwrap_or(b.versions.len() - 1);
    let version = &b.versions[v];
    info.batch = b.id.0;
    info.batch_version = v as u32;
    info.bitcoin_txid = version.txid.to_string();
    info.fee_rate_sat_vb = version.fee_rate.0;
    info.signatures = version.signatures.len() as u32;
    info.vout = b
        .outputs
        .iter()
        .position(|o| o.withdrawal == w.id)
        .unwrap_or(0) as u32;
    if b.confirmed.is_some() {
        info.state = pb::PegOutState::Confirmed as i32;
        info.confirmations = need;
        info.eta_seconds = 0;
    } else if info.signatures >= m {
        info.state = pb::PegOutState::Broadcast as i32;
        if let Some(conf) = confirmations(&version.txid) {
            info.confirmations = conf;
            info.eta_seconds = 600 * need.saturating_sub(conf) as u64;
        }
    } else {
        info.state = pb::PegOutState::Signing as i32;
    }
    info
}

/// Confirmations of batch transaction `txid` as this member's watcher saw
/// them (no `-txindex` needed); 0 while unmined.
pub(crate) fn bitcoin_confirmations(w: &Watcher, txid: &Txid) -> u32 {
    w.mined(txid)
        .map(|(_, depth)| u32::try_from(depth).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// Reserves against liabilities, with the UTXO list.
/// The emergency-timelock fields of the reserves from committed state: the
/// oldest free UTXO and when the rollover takes it (the blocks to expiry
/// need a bitcoind: [`with_blocks_to_expiry`]).
fn oldest_utxo(
    s: &fedpeg_ledger::State,
    params: &fedpeg_ledger::LedgerParams,
) -> pb::GetReservesResponse {
    let Some((o, at)) = fedpeg_ledger::rollover::oldest(s, params) else {
        return pb::GetReservesResponse::default();
    };
    pb::GetReservesResponse {
        oldest_utxo: o.to_string(),
        oldest_utxo_rollover_in_ms: Some(at.saturating_sub(s.tip_time_ms)),
        ..Default::default()
    }
}

/// Adds to `r` the Bitcoin blocks until its oldest UTXO's emergency
/// branch opens, from `btc` (this node's bitcoind); unchanged when there is
/// no emergency branch, no oldest UTXO, or bitcoind does not answer.
pub async fn with_blocks_to_expiry(
    mut r: pb::GetReservesResponse,
    chain: &Chain,
    btc: Option<std::sync::Arc<dyn fedpeg_peg::chain::BitcoinChain>>,
) -> pb::GetReservesResponse {
    let csv = chain
        .params()
        .federation
        .emergency()
        .map(|e| u64::from(e.csv_blocks()));
    let (Some(csv), Some(btc), Ok(outpoint)) = (
        csv,
        btc,
        r.oldest_utxo.parse::<fedpeg_peg::bitcoin::OutPoint>(),
    ) else {
        return r;
    };
    let confirmations = tokio::task::spawn_blocking(move || btc.unspent(&outpoint))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .map(|(_, c)| c);
    r.oldest_utxo_blocks_to_expiry = confirmations.map(|c| csv.saturating_sub(c));
    r
}

/// The reserves from committed state.
pub fn reserves(chain: &Chain) -> pb::GetReservesResponse {
    chain.with_state(|s| {
        let r = s.reserves();
        let clamp = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        // One federation per epoch (cached by the parameters: forming a
        // descriptor is not free); each UTXO pays its own epoch's.
        let params = chain.params();
        let feds: std::collections::BTreeMap<u32, fedpeg_peg::federation::Federation> = s
            .epochs
            .iter()
            .filter_map(|e| Some((e.number, params.federation_of(e).ok()?)))
            .collect();
        let change_descriptors: std::collections::BTreeMap<u32, String> = feds
            .iter()
            .map(|(n, f)| (*n, f.change_descriptor().unwrap_or_default()))
            .collect();
        let hrp = chain.spec.hrp();
        let utxo = |o: &fedpeg_ledger::fedtx::OutPoint,
                    u: &fedpeg_ledger::pegout_batch::Utxo,
                    batch: Option<u64>| {
            let (kind, account, tweak) = match u.owner {
                Owner::Deposit(a) => (
                    "deposit",
                    fedpeg_ledger::account::AccountId(a).to_address(hrp),
                    Tweak::Deposit(a),
                ),
                Owner::Change => ("change", String::new(), Tweak::Change),
            };
            pb::FederationUtxo {
                outpoint: o.to_string(),
                amount: u.amount.to_sat(),
                kind: kind.into(),
                locked_by_batch: batch,
                account,
                descriptor: match tweak {
                    Tweak::Change => change_descriptors
                        .get(&u.epoch)
                        .cloned()
                        .unwrap_or_default(),
                    _ => feds
                        .get(&u.epoch)
                        .and_then(|f| f.descriptor(&tweak).ok())
                        .unwrap_or_default(),
                },
                epoch: u.epoch,
            }
        };
        let mut utxos: Vec<pb::FederationUtxo> =
            s.utxos.iter().map(|(o, u)| utxo(o, u, None)).collect();
        for b in s.batches.values() {
            utxos.extend(b.inputs.iter().map(|(o, u)| utxo(o, u, Some(b.id.0))));
        }
        pb::GetReservesResponse {
            available: clamp(r.available),
            locked: clamp(r.locked),
            pending_change: clamp(r.pending_change),
            supply: clamp(r.supply),
            queued: clamp(r.queued),
            in_batches: clamp(r.in_batches),
            fee_pool: clamp(r.fee_pool),
            covered: r.covered(),
            utxos,
            height: s.height.0,
            ..oldest_utxo(s, chain.params())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peg_testing::{user_key, withdrawal_address, PegNode};
    use fedpeg_ledger::amount::Sats;
    use fedpeg_ledger::fedtx::{FedTxKind, FederationTx};
    use fedpeg_ledger::ids::FeeRate;
    use fedpeg_ledger::testing::sats;
    use fedpeg_ledger::tx::{Transaction, TxKind};

    /// Member 0's vote of `rate` sat/vB for the next block.
    fn vote(node: &PegNode, rate: u64) -> FederationTx {
        node.fed_tx(
            0,
            FedTxKind::FeeRateVote {
                sat_per_vbyte: FeeRate(rate),
                height: node.chain.with_state(|s| s.height.next()),
            },
        )
    }

    fn quote(node: &PegNode) -> pb::EstimatePegOutFeeResponse {
        estimate_fee(
            &node.chain,
            &pb::EstimatePegOutFeeRequest {
                bitcoin_address: withdrawal_address(),
            },
        )
        .unwrap()
    }

    #[test]
    fn a_quote_names_its_validity_and_is_still_accepted_after_the_rate_rises() {
        let node = PegNode::new(1, 1);
        node.pegged_in(1, 500_000);
        node.commit(vec![vote(&node, 20)]);
        let q = quote(&node);
        assert_eq!((q.fee_rate_sat_vb, q.quote_validity_ms), (20, 600_000));
        // The rate doubles between the quote and the submission (1 s of
        // block time later).
        node.commit(vec![vote(&node, 40)]);
        assert!(quote(&node).fee > q.fee, "the quote rose");
        let nonce = node
            .chain
            .account(&crate::peg_testing::account(1))
            .effective
            .nonce;
        let tx = Transaction::sign(
            node.chain.spec.chain_id,
            &user_key(1),
            nonce,
            Sats::from_sat(q.fee).unwrap(),
            TxKind::PegOut {
                bitcoin_address: withdrawal_address(),
                amount: sats(100_000),
            },
        );
        node.chain
            .submit_tx(tx)
            .expect("admitted on the earlier quote");
        node.commit(vec![]);
        assert_eq!(node.chain.with_state(|s| s.next_withdrawal_id.0), 1);
    }

    #[test]
    fn an_empty_or_foreign_address_gets_no_quote() {
        let node = PegNode::new(1, 1);
        for bad in ["", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"] {
            let e = estimate_fee(
                &node.chain,
                &pb::EstimatePegOutFeeRequest {
                    bitcoin_address: bad.into(),
                },
            )
            .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e}");
        }
    }
}
