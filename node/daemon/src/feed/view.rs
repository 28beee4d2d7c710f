//! The feed's view of a finalized block: header, commit, transactions with
//! their outcome, federation transactions and events, as `pb::FeedBlock`.

use super::*;

/// A transaction as the API shows it.
pub fn tx_view(tx: &Transaction, hrp: &str) -> pb::TransactionView {
    let (kind, to, bitcoin_address) = match &tx.kind {
        TxKind::Transfer { to, .. } => (
            pb::TransactionKind::Transfer,
            to.to_address(hrp),
            String::new(),
        ),
        TxKind::PegOut {
            bitcoin_address, ..
        } => (
            pb::TransactionKind::PegOut,
            String::new(),
            bitcoin_address.clone(),
        ),
    };
    pb::TransactionView {
        txid: tx.id().to_hex(),
        sender: tx.sender.to_address(hrp),
        nonce: tx.nonce,
        fee: tx.fee.to_sat(),
        kind: kind as i32,
        to,
        bitcoin_address,
        amount: tx.amount().to_sat(),
    }
}

impl Feed {
    /// The feed's view of a block.
    pub fn feed_block(
        &self,
        cb: &CommittedBlock,
        events: Vec<pb::ChainEvent>,
        include_raw: bool,
        tip: u64,
    ) -> pb::FeedBlock {
        let h = &cb.block.header;
        let hrp = self.hrp();
        // The set that signed this block's certificate: the epoch in force
        // at its height.
        let members: Vec<String> = self.chain.with_state(|s| {
            s.epoch_at(h.height)
                .members
                .iter()
                .map(|m| m.name.clone())
                .collect()
        });
        let quorum = (members.len() * 2 / 3 + 1) as u32;
        let name = |i: u32| members.get(i as usize).cloned().unwrap_or_default();
        let commit = match fedpeg_consensus::CommitCertificate::decode(&cb.commit) {
            Ok(c) => {
                let signers: Vec<u32> = c.precommits.iter().map(|(i, _)| i.0).collect();
                pb::CommitSummary {
                    round: c.round.0,
                    signer_names: signers.iter().map(|i| name(*i)).collect(),
                    signers,
                    quorum,
                    members: members.len() as u32,
                }
            }
            Err(_) => pb::CommitSummary {
                quorum,
                members: members.len() as u32,
                ..Default::default()
            },
        };
        let mut transactions: Vec<pb::FeedTransaction> = cb
            .block
            .txs
            .iter()
            .enumerate()
            .map(|(i, tx)| pb::FeedTransaction {
                transaction: Some(tx_view(tx, hrp)),
                outcome: pb::TransactionOutcome::Applied as i32,
                index: i as u32,
                event_indexes: vec![],
            })
            .collect();
        let by_txid: HashMap<String, usize> = transactions
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.transaction.as_ref().map(|v| (v.txid.clone(), i)))
            .collect();
        for e in &events {
            if let Some(&i) = by_txid.get(&e.txid) {
                transactions[i].event_indexes.push(e.index);
            }
        }
        let federation_transactions = cb
            .block
            .fed_txs
            .iter()
            .map(|f| {
                let (kind, summary) = match &f.kind {
                    FedTxKind::RegisterDepositAddress { account } => (
                        "register_deposit_address",
                        format!("watch deposits of {}", account.to_address(hrp)),
                    ),
                    FedTxKind::FeeRateVote {
                        sat_per_vbyte,
                        height,
                    } => (
                        "fee_rate_vote",
                        format!("{sat_per_vbyte} sat/vB at height {height}"),
                    ),
                    FedTxKind::PegInMint {
                        outpoint,
                        amount,
                        account,
                        ..
                    } => (
                        "peg_in_mint",
                        format!(
                            "deposit {outpoint} of {} sats to {}",
                            amount.to_sat(),
                            account.to_address(hrp)
                        ),
                    ),
                    FedTxKind::PegOutSignatures {
                        batch,
                        version,
                        signatures,
                    } => (
                        "peg_out_signatures",
                        format!(
                            "{} input signature(s) for batch {batch} version {version}",
                            signatures.len()
                        ),
                    ),
                    FedTxKind::PegOutBump { batch, version } => (
                        "peg_out_bump",
                        format!("vote to replace batch {batch} version {version} at a higher fee"),
                    ),
                    FedTxKind::PegOutConfirmed {
                        batch,
                        txid,
                        bitcoin_block,
                    } => (
                        "peg_out_confirmed",
                        format!(
                            "batch {batch} paid by bitcoin tx {} in block {}",
                            txid, bitcoin_block
                        ),
                    ),
                    FedTxKind::FederationChange { change } => (
                        "federation_change",
                        format!(
                            "vote for change {} to {} member(s), activation at height {}",
                            change.id().to_hex(),
                            change.members.len(),
                            change.activation
                        ),
                    ),
                };
                pb::FederationTxView {
                    member: f.member.0,
                    member_name: name(f.member.0),
                    kind: kind.into(),
                    summary,
                }
            })
            .collect();
        pb::FeedBlock {
            height: h.height.0,
            hash: h.hash().to_hex(),
            parent_hash: h.parent.to_hex(),
            time_ms: h.time_ms,
            proposer: h.proposer,
            proposer_name: name(h.proposer),
            state_root: h.state_root.to_hex(),
            commit: Some(commit),
            transactions,
            federation_transactions,
            events,
            raw: if include_raw { cb.encode() } else { vec![] },
            tip_height: tip,
        }
    }
}
