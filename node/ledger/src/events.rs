//! Ledger events as the explorer feed shows them: the one mapping from
//! [`Event`] to `fedpeg.v1.ChainEvent`, the
//! accounts an event involves (for filters), and the per-block record the
//! store keeps so the feed replays events without re-executing blocks.
//!
//! Events depend on the state a block was applied to (a mint credits the
//! deposit minus its spend cost at the fee rate of the time), so they cannot
//! be recomputed from a stored block alone; they are stored with it.

use crate::account::AccountId;
use crate::amount::Sats;
use crate::block::CommittedBlock;
use crate::fedtx::OutPoint;
use crate::hash::Hash32;
use crate::ids::{BatchId, FeeRate, MemberIndex, WithdrawalId};
use crate::state::Withdrawal;
use crate::tx::TxId;
use fedpeg_peg::bitcoin::Txid;
use fedpeg_proto::v1 as pb;
use pb::chain_event::Event as Ev;
use prost::Message;

/// What happened, for the explorer feed and for indexing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Transfer {
        txid: TxId,
        from: AccountId,
        to: AccountId,
        amount: Sats,
    },
    FeePaid {
        txid: TxId,
        from: AccountId,
        amount: Sats,
    },
    PegOutQueued {
        txid: TxId,
        withdrawal: Withdrawal,
    },
    DepositAddressRegistered {
        account: AccountId,
        member: MemberIndex,
    },
    PegInMinted {
        outpoint: OutPoint,
        account: AccountId,
        amount: Sats,
    },
    /// A peg-out batch moved on: formed, signed by a member, fully signed,
    /// replaced, or confirmed.
    PegOutBatch {
        batch: BatchId,
        stage: BatchStage,
        /// Bitcoin txid of the version concerned.
        txid: Txid,
        withdrawals: Vec<WithdrawalId>,
        /// Accounts that burned them, each once.
        accounts: Vec<AccountId>,
    },
    /// A member of the epoch in force voted for federation change `change`:
    /// `votes` of the `needed` (quorum) so far.
    FederationChangeVote {
        member: MemberIndex,
        change: Hash32,
        votes: u32,
        needed: u32,
    },
    /// Federation change `change` was adopted as epoch `epoch`, in force
    /// from `activation`.
    FederationChangeAdopted {
        change: Hash32,
        epoch: u32,
        activation: fedpeg_consensus::Height,
    },
}

/// Stages of a peg-out batch, as events report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchStage {
    Formed,
    /// A member's valid signatures of `version` were recorded: `count` of
    /// the `required` (m) so far; more than m once it is broadcast.
    Signature {
        member: MemberIndex,
        count: u32,
        required: u32,
        version: u32,
    },
    /// m members signed `version`: the transaction can be broadcast.
    Signed {
        version: u32,
    },
    /// A replacement version at a higher fee rate.
    Replaced {
        version: u32,
        fee_rate: FeeRate,
    },
    Confirmed {
        version: u32,
    },
}

/// Kind, causing transaction and payload of one ledger event; None for an
/// event the feed does not show (federation changes: `GetFederation` shows
/// them, the feed has no kind for them yet). Add a match arm here for every
/// new [`Event`] variant.
pub fn event_to_pb(ev: &Event, hrp: &str) -> Option<(pb::EventKind, Option<String>, Ev)> {
    let addr = |a: &AccountId| a.to_address(hrp);
    Some(match ev {
        Event::Transfer {
            txid,
            from,
            to,
            amount,
        } => (
            pb::EventKind::Transfer,
            Some(txid.to_hex()),
            Ev::Transfer(pb::TransferEvent {
                from: addr(from),
                to: addr(to),
                amount: amount.to_sat(),
            }),
        ),
        Event::FeePaid { txid, from, amount } => (
            pb::EventKind::Fee,
            Some(txid.to_hex()),
            Ev::Fee(pb::FeeEvent {
                from: addr(from),
                amount: amount.to_sat(),
            }),
        ),
        Event::PegOutQueued { txid, withdrawal } => (
            pb::EventKind::Burn,
            Some(txid.to_hex()),
            Ev::Burn(pb::BurnEvent {
                account: addr(&withdrawal.account),
                amount: withdrawal.amount.to_sat(),
                bitcoin_address: withdrawal.bitcoin_address.clone(),
                withdrawal_id: withdrawal.id.0,
            }),
        ),
        Event::DepositAddressRegistered { account, member } => (
            pb::EventKind::DepositAddressRegistered,
            None,
            Ev::DepositAddressRegistered(pb::DepositAddressRegisteredEvent {
                account: addr(account),
                member: member.0,
            }),
        ),
        Event::PegInMinted {
            outpoint,
            account,
            amount,
        } => (
            pb::EventKind::Mint,
            None,
            Ev::Mint(pb::MintEvent {
                account: addr(account),
                amount: amount.to_sat(),
                outpoint: outpoint.to_string(),
            }),
        ),
        Event::PegOutBatch {
            batch,
            stage,
            txid,
            withdrawals,
            accounts,
        } => {
            let mut p = pb::PegOutStateChanged {
                batch: batch.0,
                bitcoin_txid: txid.to_string(),
                withdrawal_ids: withdrawals.iter().map(|w| w.0).collect(),
                accounts: accounts.iter().map(addr).collect(),
                ..Default::default()
            };
            let state = match *stage {
                BatchStage::Formed => pb::PegOutState::Signing,
                BatchStage::Signature {
                    member,
                    count,
                    required,
                    version,
                } => {
                    p.signatures = count;
                    p.member = Some(member.0);
                    p.batch_version = version;
                    // A signature beyond m arrives after the batch went out.
                    if count > required {
                        pb::PegOutState::Broadcast
                    } else {
                        pb::PegOutState::Signing
                    }
                }
                BatchStage::Signed { version } => {
                    p.batch_version = version;
                    pb::PegOutState::Broadcast
                }
                BatchStage::Replaced { version, fee_rate } => {
                    p.batch_version = version;
                    p.fee_rate_sat_vb = fee_rate.0;
                    pb::PegOutState::Replaced
                }
                BatchStage::Confirmed { version } => {
                    p.batch_version = version;
                    pb::PegOutState::Confirmed
                }
            };
            p.state = state as i32;
            (
                pb::EventKind::PegOutStateChanged,
                None,
                Ev::PegOutStateChanged(p),
            )
        }
        Event::FederationChangeVote { .. } | Event::FederationChangeAdopted { .. } => return None,
    })
}

/// Addresses an event involves (what an account filter matches).
pub fn accounts_of(ev: &pb::ChainEvent) -> Vec<&str> {
    match &ev.event {
        Some(Ev::Transfer(t)) => vec![&t.from, &t.to],
        Some(Ev::Fee(f)) => vec![&f.from],
        Some(Ev::Mint(m)) => vec![&m.account],
        Some(Ev::Burn(b)) => vec![&b.account],
        Some(Ev::DepositAddressRegistered(d)) => vec![&d.account],
        Some(Ev::PegOutStateChanged(p)) => p.accounts.iter().map(String::as_str).collect(),
        None => vec![],
    }
}

/// The feed's view of a block's events, numbered in block order (among
/// the events the feed shows).
pub fn block_events(cb: &CommittedBlock, events: &[Event], hrp: &str) -> Vec<pb::ChainEvent> {
    let h = &cb.block.header;
    let block_hash = h.hash().to_hex();
    events
        .iter()
        .filter_map(|ev| event_to_pb(ev, hrp))
        .enumerate()
        .map(|(index, (kind, txid, event))| pb::ChainEvent {
            height: h.height.0,
            index: index as u32,
            block_hash: block_hash.clone(),
            time_ms: h.time_ms,
            txid: txid.unwrap_or_default(),
            kind: kind as i32,
            event: Some(event),
        })
        .collect()
}

/// Stored form of a block's events: each `ChainEvent` length-delimited.
pub fn encode_events(events: &[pb::ChainEvent]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(events.iter().map(|e| e.encoded_len() + 2).sum());
    for e in events {
        // Infallible: a Vec grows as needed.
        let _ = e.encode_length_delimited(&mut buf);
    }
    buf
}

/// Inverse of [`encode_events`].
pub fn decode_events(mut bytes: &[u8]) -> Result<Vec<pb::ChainEvent>, prost::DecodeError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        out.push(pb::ChainEvent::decode_length_delimited(&mut bytes)?);
    }
    Ok(out)
}

/// Accounts whose history lists the user transaction at `index`: its
/// sender and, for a transfer, the recipient.
pub fn tx_accounts(tx: &crate::tx::Transaction) -> Vec<AccountId> {
    let mut v = vec![tx.sender];
    if let crate::tx::TxKind::Transfer { to, .. } = &tx.kind {
        if *to != tx.sender {
            v.push(*to);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fedtx::OutPoint;
    use crate::hash::Hash32;
    use crate::testing::sats;

    #[test]
    fn stored_events_round_trip_and_name_their_accounts() {
        let a = AccountId([1; 32]);
        let b = AccountId([2; 32]);
        let evs = vec![
            pb::ChainEvent {
                height: 3,
                index: 0,
                kind: pb::EventKind::Transfer as i32,
                event: Some(
                    event_to_pb(
                        &Event::Transfer {
                            txid: Hash32([7; 32]),
                            from: a,
                            to: b,
                            amount: sats(5),
                        },
                        "fprt",
                    )
                    .unwrap()
                    .2,
                ),
                ..Default::default()
            },
            pb::ChainEvent {
                height: 3,
                index: 1,
                event: Some(
                    event_to_pb(
                        &Event::PegInMinted {
                            outpoint: OutPoint {
                                txid: crate::testing::txid(3),
                                vout: 1,
                            },
                            account: b,
                            amount: sats(9),
                        },
                        "fprt",
                    )
                    .unwrap()
                    .2,
                ),
                ..Default::default()
            },
        ];
        let back = decode_events(&encode_events(&evs)).unwrap();
        assert_eq!(back, evs);
        assert_eq!(
            accounts_of(&back[0]),
            vec![a.to_address("fprt"), b.to_address("fprt")]
        );
        assert_eq!(accounts_of(&back[1]), vec![b.to_address("fprt")]);
        assert!(decode_events(&[0xff, 0xff]).is_err());
        assert!(decode_events(&[]).unwrap().is_empty());
    }

    #[test]
    fn peg_out_batch_stages_map_to_states_and_name_every_account() {
        let (a, b) = (AccountId([1; 32]), AccountId([2; 32]));
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        let txid = {
            use bitcoin::hashes::Hash as _;
            bitcoin::Txid::from_byte_array(bytes)
        };
        let ev = |stage| Event::PegOutBatch {
            batch: BatchId(7),
            stage,
            txid,
            withdrawals: vec![WithdrawalId(3), WithdrawalId(4)],
            accounts: vec![a, b],
        };
        let cases = [
            (BatchStage::Formed, pb::PegOutState::Signing, 0, 0, None),
            (
                BatchStage::Signature {
                    member: MemberIndex(2),
                    count: 3,
                    required: 3,
                    version: 1,
                },
                pb::PegOutState::Signing,
                3,
                1,
                Some(2),
            ),
            (
                BatchStage::Signature {
                    member: MemberIndex(0),
                    count: 4,
                    required: 3,
                    version: 1,
                },
                pb::PegOutState::Broadcast,
                4,
                1,
                Some(0),
            ),
            (
                BatchStage::Signed { version: 1 },
                pb::PegOutState::Broadcast,
                0,
                1,
                None,
            ),
            (
                BatchStage::Replaced {
                    version: 1,
                    fee_rate: FeeRate(25),
                },
                pb::PegOutState::Replaced,
                0,
                1,
                None,
            ),
            (
                BatchStage::Confirmed { version: 1 },
                pb::PegOutState::Confirmed,
                0,
                1,
                None,
            ),
        ];
        for (stage, state, sigs, version, member) in cases {
            let (kind, txid_of, payload) = event_to_pb(&ev(stage), "fprt").unwrap();
            assert_eq!(kind, pb::EventKind::PegOutStateChanged);
            assert_eq!(txid_of, None, "not caused by a user transaction");
            let Ev::PegOutStateChanged(p) = &payload else {
                panic!("{payload:?}")
            };
            assert_eq!(p.state, state as i32, "{stage:?}");
            assert_eq!(
                (p.batch, p.signatures, p.batch_version, p.member),
                (7, sigs, version, member)
            );
            assert_eq!(p.withdrawal_ids, vec![3, 4]);
            // Bitcoin's display order: the last internal byte first.
            assert!(p.bitcoin_txid.ends_with("ab") && p.bitcoin_txid.len() == 64);
            let ce = pb::ChainEvent {
                event: Some(payload.clone()),
                ..Default::default()
            };
            assert_eq!(
                accounts_of(&ce),
                vec![a.to_address("fprt"), b.to_address("fprt")]
            );
        }
    }
}
