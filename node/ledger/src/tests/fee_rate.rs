//! Ledger tests of the agreed fee rate: the genesis bounds on votes and on
//! the rate, the median with members that vote the fallback, and the grace
//! of peg-out quotes after a rise.

use super::pegout::{address, deposit, fed, params, pegout, state, step};
use crate::fedtx::{FedTxKind, FederationTx};
use crate::ids::{FeeRate, MemberIndex, WithdrawalId};
use crate::pegout_batch::pegout_fee_quote;
use crate::testing::sats;
use crate::*;
use fedpeg_consensus::Height;

/// Member `m`'s vote of `rate` for the block after `s`.
fn vote(s: &State, m: u32, rate: u64) -> FederationTx {
    fed(
        m,
        FedTxKind::FeeRateVote {
            sat_per_vbyte: FeeRate(rate),
            height: s.height.next(),
        },
    )
}

/// All four members vote `rate` in a block at `time`.
fn agree(s: &mut State, rate: u64, time: u64) {
    let votes: Vec<FederationTx> = (0..4).map(|m| vote(s, m, rate)).collect();
    step(s, &[], &votes, time);
}

/// The peg-out fee quote for user `from`'s address at `rate`.
fn quote_at(from: u8, rate: u64) -> u64 {
    let p = params();
    let script = fedpeg_peg::address::parse_pegout_address(&address(from), p.network)
        .unwrap()
        .script_pubkey();
    pegout_fee_quote(&p.pegout, p.pegout_fee, FeeRate(rate), &script).to_sat()
}

fn grace(list: &[(u64, u64)]) -> Vec<QuoteGrace> {
    list.iter()
        .map(|(rate, until_ms)| QuoteGrace {
            rate: FeeRate(*rate),
            until_ms: *until_ms,
        })
        .collect()
}

#[test]
fn a_byzantine_fee_vote_above_the_genesis_max_is_refused_with_the_bounds() {
    let s = state();
    let p = params();
    let refusal = |f: &FederationTx| check_fed_tx(&s, &p, f).err();
    let e = refusal(&vote(&s, 3, 1001)).expect("above the max");
    assert_eq!(
        e,
        FedTxError::BadFeeRate {
            rate: FeeRate(1001),
            min: FeeRate(1),
            max: FeeRate(1000)
        }
    );
    assert!(e.to_string().contains("1..=1000"), "{e}");
    assert!(matches!(
        refusal(&vote(&s, 3, 0)),
        Some(FedTxError::BadFeeRate { .. })
    ));
    assert_eq!(refusal(&vote(&s, 3, 1000)), None, "the max itself is fine");
    // A proposer leaves it out, and a block carrying it is refused.
    let built = build_block(&s, &p, &[], &[vote(&s, 3, 100_000)], 1, 0, &VerifyAll);
    assert!(built.block.fed_txs.is_empty());
    let mut b = built.block;
    b.fed_txs = vec![vote(&s, 3, 100_000)];
    b.header.tx_root = crate::block::tx_root(&b.txs, &b.fed_txs);
    assert!(matches!(
        apply_block(&s, &b, &p, &VerifyAll),
        Err(BlockError::FedTx {
            error: FedTxError::BadFeeRate { .. },
            ..
        })
    ));
}

#[test]
fn with_fallback_voters_one_member_cannot_move_the_rate() {
    let p = params();
    let fallback = p.default_fee_rate.0;
    // Three members' bitcoinds cannot estimate: they vote the fallback.
    let mut s = state();
    let votes = [
        vote(&s, 0, fallback),
        vote(&s, 1, fallback),
        vote(&s, 2, fallback),
        vote(&s, 3, 1000),
    ];
    step(&mut s, &[], &votes, 1);
    assert_eq!(s.fee_rate(&p), p.default_fee_rate);
    // Had they voted nothing, the one vote would have been the rate.
    let mut alone = state();
    let one = vote(&alone, 3, 1000);
    step(&mut alone, &[], &[one], 1);
    assert_eq!(alone.fee_rate(&p), FeeRate(1000));
}

#[test]
fn the_agreed_rate_stays_within_the_genesis_bounds() {
    let mut p = params();
    p.min_fee_rate = FeeRate(5);
    p.default_fee_rate = FeeRate(5);
    let mut s = state();
    assert_eq!(s.fee_rate(&p), FeeRate(5));
    // Votes recorded under other bounds (a genesis of an older build).
    for (m, rate) in [(0, 50_000), (1, 50_000), (2, 2), (3, 50_000)] {
        s.fee_votes
            .insert(MemberIndex(m), (FeeRate(rate), Height(1)));
    }
    assert_eq!(s.fee_rate(&p), p.max_fee_rate);
    for m in 0..4 {
        s.fee_votes.insert(MemberIndex(m), (FeeRate(2), Height(1)));
    }
    assert_eq!(s.fee_rate(&p), FeeRate(5));
}

#[test]
fn a_signed_quote_is_accepted_within_its_validity_after_the_rate_rises_and_refused_after() {
    let p = params();
    let v = p.quote_validity_ms;
    let mut s = state();
    deposit(&mut s, 1, 0, 1_000_000);
    agree(&mut s, 100, 2);
    // The user asks for a quote at 100 sat/vB and signs it; long after the
    // last rise, the rate doubles at time t before the peg-out is included.
    let fee = quote_at(1, 100);
    let tx = pegout(1, 0, 100_000, fee);
    let t = 10 * v;
    agree(&mut s, 200, t);
    assert!(fee < quote_at(1, 200));
    assert_eq!(s.quote_grace, grace(&[(100, t + v)]));
    // Once the validity ran out, a proposer refuses it, and so does every
    // member in a proposal that carries it.
    let late = build_block(&s, &p, [&tx], &[], t + v, 0, &VerifyAll);
    assert_eq!(
        late.rejected,
        vec![(
            tx.id(),
            TxError::PegOutFeeTooLow {
                quote: sats(quote_at(1, 200)),
                got: sats(fee)
            }
        )]
    );
    let in_time = build_block(&s, &p, [&tx], &[], t + v - 1, 0, &VerifyAll);
    assert!(in_time.rejected.is_empty(), "{:?}", in_time.rejected);
    let mut late_block = in_time.block.clone();
    late_block.header.time_ms = t + v;
    assert!(matches!(
        apply_block(&s, &late_block, &p, &VerifyAll),
        Err(BlockError::Tx {
            error: TxError::PegOutFeeTooLow { .. },
            ..
        })
    ));
    // Within it, the peg-out is accepted.
    step(&mut s, &[tx], &[], t + v - 1);
    assert_eq!(s.next_withdrawal_id, WithdrawalId(1));
}

#[test]
fn a_steady_rise_does_not_keep_an_old_rate_quotable_past_its_validity() {
    let p = params();
    let v = p.quote_validity_ms;
    let mut s = state();
    agree(&mut s, 100, 1);
    assert_eq!(s.quote_grace, grace(&[(2, 1 + v)]), "from the default");
    let t = 10 * v;
    agree(&mut s, 200, t);
    agree(&mut s, 300, t + v / 2);
    assert_eq!(s.quote_grace, grace(&[(100, t + v), (200, t + v / 2 + v)]));
    assert_eq!(s.pegout_quote_rate(&p, t + v - 1), FeeRate(100));
    assert_eq!(s.pegout_quote_rate(&p, t + v), FeeRate(200));
    assert_eq!(s.pegout_quote_rate(&p, t + v / 2 + v), FeeRate(300));
    // A fall changes nothing; the next rise starts from the lower rate,
    // which makes the remembered higher ones useless.
    agree(&mut s, 150, t + v / 2 + 10);
    assert_eq!(s.quote_grace.len(), 2);
    agree(&mut s, 400, t + v / 2 + 20);
    assert_eq!(
        s.quote_grace,
        grace(&[(100, t + v), (150, t + v / 2 + 20 + v)])
    );
    assert_eq!(s.pegout_quote_rate(&p, t + v), FeeRate(150));
}

#[test]
fn a_zero_quote_validity_remembers_no_rate() {
    let mut p = params();
    p.quote_validity_ms = 0;
    let s = state();
    let votes: Vec<FederationTx> = (0..4).map(|m| vote(&s, m, 500)).collect();
    let b = build_block(&s, &p, &[], &votes, 1, 0, &VerifyAll);
    assert_eq!(b.block.fed_txs.len(), 4);
    assert_eq!(b.outcome.delta.quote_grace, None);
}

/// The state root of two fee rises: pins how a quote grace list is hashed
/// (see `crate::state_root`); a change here is a consensus change.
#[test]
fn golden_state_root_of_fee_rises() {
    let mut s = state();
    agree(&mut s, 100, 1);
    agree(&mut s, 200, 2);
    assert_eq!(s.quote_grace.len(), 2);
    assert_eq!(
        s.state_root.to_hex(),
        "5bfe10cf8f4597ef28ce9d8f2623600ca7e06a87e4dfe4dcf74e7ed6e04d2fa9",
        "the state root of a fixed history changed: a consensus encoding changed"
    );
}
