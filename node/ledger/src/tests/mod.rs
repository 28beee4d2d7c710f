//! Unit and property tests of the ledger: transfers, peg-outs, mints, fee
//! votes, blocks.

mod epochs;
mod fee_rate;
mod pegout;

use crate::account::AccountId;
use crate::amount::Sats;
use crate::fedtx::{FedTxKind, FederationTx, OutPoint};
use crate::hash::Hash32;
use crate::ids::{FeeRate, MemberIndex, WithdrawalId};
use crate::testing::{block_hash, sats, txid};
use crate::tx::{Transaction, TxKind};
use crate::*;
use ed25519_dalek::SigningKey;
use fedpeg_consensus::Height;
use proptest::prelude::*;

pub(super) fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i + 1; 32])
}
pub(super) fn id(i: u8) -> AccountId {
    AccountId(key(i).verifying_key().to_bytes())
}
fn params() -> LedgerParams {
    crate::testing::ledger_params()
}
fn member_key() -> SigningKey {
    SigningKey::from_bytes(&[99; 32])
}
fn genesis(balances: &[(u8, u64)]) -> State {
    let mut s = crate::testing::state_with_members(&[member_key().verifying_key()]);
    for (i, b) in balances {
        s.accounts.insert(
            id(*i),
            Account {
                balance: sats(*b),
                nonce: 0,
            },
        );
        // Saturates: the overflow tests build states beyond the cap on purpose.
        s.supply = s.supply.checked_add(sats(*b)).unwrap_or(Sats::MAX);
    }
    s
}
fn transfer(from: u8, to: u8, nonce: u64, amount: u64, fee: u64) -> Transaction {
    Transaction::sign(
        params().chain_id,
        &key(from),
        nonce,
        sats(fee),
        TxKind::Transfer {
            to: id(to),
            amount: sats(amount),
        },
    )
}
fn commit_block(s: &mut State, txs: &[Transaction]) -> BuiltBlock {
    let b = build_block(s, &params(), txs, &[], 1, 0, &VerifyAll);
    // Anyone re-applying the built block gets the same outcome.
    let again = apply_block(s, &b.block, &params(), &VerifyAll).unwrap();
    assert_eq!(again.delta, b.outcome.delta);
    s.commit(&b.block.header, &b.outcome);
    b
}

#[test]
fn transfer_moves_balance_and_fee() {
    let mut s = genesis(&[(0, 1000)]);
    let b = commit_block(&mut s, &[transfer(0, 1, 0, 300, 5)]);
    assert!(b.rejected.is_empty());
    assert_eq!(
        s.account(&id(0)),
        Account {
            balance: sats(695),
            nonce: 1
        }
    );
    assert_eq!(
        s.account(&id(1)),
        Account {
            balance: sats(300),
            nonce: 0
        }
    );
    assert_eq!(s.fee_pool, sats(5));
    assert_eq!(s.supply, sats(995));
    assert_eq!(s.height, Height(1));
}

#[test]
fn replayed_transaction_is_rejected() {
    let mut s = genesis(&[(0, 1000)]);
    let tx = transfer(0, 1, 0, 10, 1);
    commit_block(&mut s, std::slice::from_ref(&tx));
    let b = commit_block(&mut s, &[tx]);
    assert_eq!(
        b.rejected[0].1,
        TxError::NonceReplayed {
            expected: 1,
            got: 0
        }
    );
}

#[test]
fn skipped_nonce_is_rejected() {
    let s = genesis(&[(0, 1000)]);
    let b = build_block(
        &s,
        &params(),
        &[transfer(0, 1, 1, 10, 1)],
        &[],
        1,
        0,
        &VerifyAll,
    );
    assert_eq!(
        b.rejected[0].1,
        TxError::NonceGap {
            expected: 0,
            got: 1
        }
    );
}

#[test]
fn insufficient_balance_zero_amount_low_fee_are_rejected() {
    let s = genesis(&[(0, 100)]);
    let p = params();
    let e = |tx: Transaction| {
        check_tx(&p, FeeRate(10), s.account(&tx.sender), &tx, &VerifyAll).unwrap_err()
    };
    assert_eq!(
        e(transfer(0, 1, 0, 100, 1)),
        TxError::InsufficientBalance {
            needed: sats(101),
            available: sats(100)
        }
    );
    assert_eq!(e(transfer(0, 1, 0, 0, 1)), TxError::ZeroAmount);
    assert_eq!(
        e(transfer(0, 1, 0, 1, 0)),
        TxError::FeeTooLow {
            min: sats(1),
            got: sats(0)
        }
    );
    assert_eq!(
        e(transfer(0, 1, 0, Sats::MAX.to_sat(), 1)),
        TxError::Overflow
    );
}

#[test]
fn wrong_chain_is_rejected() {
    let s = genesis(&[(0, 100)]);
    let tx = Transaction::sign(
        Hash32::tagged("other-chain", &[]),
        &key(0),
        0,
        sats(1),
        TxKind::Transfer {
            to: id(1),
            amount: sats(1),
        },
    );
    assert!(matches!(
        check_tx(&params(), FeeRate(10), s.account(&id(0)), &tx, &VerifyAll),
        Err(TxError::WrongChain { .. })
    ));
}

#[test]
fn recipient_overflow_is_rejected_not_wrapped() {
    let s = genesis(&[(0, 100), (1, Sats::MAX.to_sat() - 50)]);
    let b = build_block(
        &s,
        &params(),
        &[transfer(0, 1, 0, 99, 1)],
        &[],
        1,
        0,
        &VerifyAll,
    );
    assert_eq!(b.rejected[0].1, TxError::RecipientOverflow);
    assert!(b.block.txs.is_empty());
}

#[test]
fn peg_out_burns_and_queues() {
    let mut s = genesis(&[(0, 100_000)]);
    let addr = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".to_string();
    let ok = fedpeg_peg::address::parse_pegout_address(&addr, bitcoin::Network::Regtest).is_ok();
    let addr = if ok {
        addr
    } else {
        // Build a valid regtest P2WSH address.
        bitcoin::Address::p2wsh(
            &bitcoin::ScriptBuf::from_bytes(vec![0x51]),
            bitcoin::Network::Regtest,
        )
        .to_string()
    };
    let tx = Transaction::sign(
        params().chain_id,
        &key(0),
        0,
        sats(1000),
        TxKind::PegOut {
            bitcoin_address: addr.clone(),
            amount: sats(50_000),
        },
    );
    // A fee below the quote is refused, nothing burned.
    let cheap = Transaction::sign(
        params().chain_id,
        &key(0),
        0,
        sats(999),
        TxKind::PegOut {
            bitcoin_address: addr.clone(),
            amount: sats(50_000),
        },
    );
    assert_eq!(
        check_tx(
            &params(),
            FeeRate(10),
            s.account(&id(0)),
            &cheap,
            &VerifyAll
        )
        .unwrap_err(),
        TxError::PegOutFeeTooLow {
            quote: sats(1000),
            got: sats(999)
        }
    );
    let before = s.total_value();
    let b = commit_block(&mut s, &[tx]);
    assert!(b.rejected.is_empty(), "{:?}", b.rejected);
    assert_eq!(s.account(&id(0)).balance, sats(100_000 - 50_000 - 1000));
    assert_eq!(s.withdrawals.len(), 1);
    assert_eq!(s.withdrawals[&WithdrawalId(0)].bitcoin_address, addr);
    // No federation UTXOs yet: queued, not batched.
    assert!(s.batches.is_empty());
    assert_eq!(s.fee_pool, sats(1000));
    assert_eq!(s.total_value(), before);
}

#[test]
fn peg_out_to_testnet_address_is_rejected_on_regtest() {
    let s = genesis(&[(0, 100_000)]);
    let tx = Transaction::sign(
        params().chain_id,
        &key(0),
        0,
        sats(10),
        TxKind::PegOut {
            bitcoin_address: "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx".into(),
            amount: sats(50_000),
        },
    );
    let e = check_tx(&params(), FeeRate(10), s.account(&id(0)), &tx, &VerifyAll).unwrap_err();
    assert!(matches!(e, TxError::BitcoinAddress(_)), "{e}");
}

#[test]
fn deposit_registration_needs_a_member_signature_and_happens_once() {
    let mut s = genesis(&[]);
    let p = params();
    let reg = |key: &SigningKey, acct: u8| {
        FederationTx::sign(
            p.chain_id,
            MemberIndex(0),
            key,
            FedTxKind::RegisterDepositAddress { account: id(acct) },
        )
    };
    // A non-member's signature is left out; a member's is applied once,
    // even if offered twice in one block.
    let b = build_block(
        &s,
        &p,
        &[],
        &[
            reg(&key(7), 1),
            reg(&member_key(), 1),
            reg(&member_key(), 1),
        ],
        1,
        0,
        &VerifyAll,
    );
    assert_eq!(b.block.fed_txs.len(), 1);
    assert_eq!(
        apply_block(&s, &b.block, &p, &VerifyAll).unwrap().delta,
        b.outcome.delta
    );
    s.commit(&b.block.header, &b.outcome);
    assert!(s.registered.contains(&id(1)));
    // A block that registers it again is invalid.
    let mut again = build_block(&s, &p, &[], &[], 1, 0, &VerifyAll).block;
    again.fed_txs = vec![reg(&member_key(), 1)];
    again.header.tx_root = crate::block::tx_root(&again.txs, &again.fed_txs);
    assert!(matches!(
        apply_block(&s, &again, &p, &VerifyAll),
        Err(BlockError::FedTx {
            error: FedTxError::AlreadyRegistered,
            ..
        })
    ));
    // A forged member signature makes a block invalid.
    let mut forged = build_block(&s, &p, &[], &[], 1, 0, &VerifyAll).block;
    forged.fed_txs = vec![reg(&key(7), 2)];
    forged.header.tx_root = crate::block::tx_root(&forged.txs, &forged.fed_txs);
    assert!(matches!(
        apply_block(&s, &forged, &p, &VerifyAll),
        Err(BlockError::FedTx {
            error: FedTxError::BadSignature(MemberIndex(0)),
            ..
        })
    ));
}

#[test]
fn deposit_is_minted_once_minus_spend_cost_and_only_to_registered_accounts() {
    let mut s = genesis(&[]);
    let p = params();
    let fed = |kind| FederationTx::sign(p.chain_id, MemberIndex(0), &member_key(), kind);
    let mint = |vout: u32, amount: u64, acct: u8| {
        fed(FedTxKind::PegInMint {
            outpoint: OutPoint {
                txid: txid(7),
                vout,
            },
            amount: sats(amount),
            account: id(acct),
            bitcoin_block: block_hash(1),
            epoch: 0,
        })
    };
    let before = s.total_value();
    // Unregistered account: left out. Registered in the same block: fine.
    let b = build_block(
        &s,
        &p,
        &[],
        &[
            mint(0, 10_000, 1),
            fed(FedTxKind::RegisterDepositAddress { account: id(1) }),
            mint(0, 10_000, 1),
            mint(0, 10_000, 1),
            mint(1, 400, 1),
        ],
        1,
        0,
        &VerifyAll,
    );
    assert_eq!(
        b.block.fed_txs.len(),
        2,
        "register + one mint; duplicate and below-cost left out"
    );
    assert_eq!(
        apply_block(&s, &b.block, &p, &VerifyAll).unwrap().delta,
        b.outcome.delta
    );
    s.commit(&b.block.header, &b.outcome);
    assert_eq!(s.account(&id(1)).balance, sats(10_000 - 500));
    assert_eq!(s.supply, sats(10_000 - 500));
    // The deposit's spend cost goes to the fee pool: value grows by the deposit.
    assert_eq!(s.total_value(), before + 10_000);
    assert_eq!(s.fee_pool, sats(500));
    assert_eq!(s.utxos.len(), 1);
    // Minting the same outpoint again makes a block invalid.
    let mut again = build_block(&s, &p, &[], &[], 1, 0, &VerifyAll).block;
    again.fed_txs = vec![mint(0, 10_000, 1)];
    again.header.tx_root = crate::block::tx_root(&again.txs, &again.fed_txs);
    assert!(matches!(
        apply_block(&s, &again, &p, &VerifyAll),
        Err(BlockError::FedTx {
            error: FedTxError::AlreadyMinted(_),
            ..
        })
    ));
}

#[test]
fn fee_rate_is_the_median_of_fresh_votes_and_sets_the_mint_deduction() {
    let mut s = genesis(&[]);
    let p = params();
    let keys: Vec<SigningKey> = (0..3)
        .map(|i| SigningKey::from_bytes(&[200 + i; 32]))
        .collect();
    s.epochs = crate::testing::state_with_members(
        &keys.iter().map(|k| k.verifying_key()).collect::<Vec<_>>(),
    )
    .epochs;
    let vote = |m: u32, rate: u64, at: u64| {
        FederationTx::sign(
            p.chain_id,
            MemberIndex(m),
            &keys[m as usize],
            FedTxKind::FeeRateVote {
                sat_per_vbyte: FeeRate(rate),
                height: Height(at),
            },
        )
    };
    assert_eq!(s.fee_rate(&p), FeeRate(10));
    let b = build_block(
        &s,
        &p,
        &[],
        &[
            vote(0, 5, 1),
            vote(1, 40, 1),
            vote(2, 1_000_000, 1),
            vote(2, 7, 1),
        ],
        1,
        0,
        &VerifyAll,
    );
    assert_eq!(b.block.fed_txs.len(), 3, "out-of-range vote left out");
    s.commit(&b.block.header, &b.outcome);
    assert_eq!(s.fee_rate(&p), FeeRate(7));
    // A replayed or older vote is refused; a newer one replaces.
    let mut stale = build_block(&s, &p, &[], &[], 1, 0, &VerifyAll).block;
    stale.fed_txs = vec![vote(1, 2, 1)];
    stale.header.tx_root = crate::block::tx_root(&stale.txs, &stale.fed_txs);
    assert!(matches!(
        apply_block(&s, &stale, &p, &VerifyAll),
        Err(BlockError::FedTx {
            error: FedTxError::StaleVote,
            ..
        })
    ));
    let b = build_block(
        &s,
        &p,
        &[],
        &[vote(1, 2, 2), vote(0, 9, 99)],
        1,
        0,
        &VerifyAll,
    );
    assert_eq!(
        b.block.fed_txs.len(),
        1,
        "vote for a future height left out"
    );
    s.commit(&b.block.header, &b.outcome);
    assert_eq!(s.fee_rate(&p), FeeRate(5));
    // Mints deduct vbytes x the agreed rate.
    let reg = FederationTx::sign(
        p.chain_id,
        MemberIndex(0),
        &keys[0],
        FedTxKind::RegisterDepositAddress { account: id(1) },
    );
    let mint = FederationTx::sign(
        p.chain_id,
        MemberIndex(0),
        &keys[0],
        FedTxKind::PegInMint {
            outpoint: OutPoint {
                txid: txid(5),
                vout: 0,
            },
            amount: sats(10_000),
            account: id(1),
            bitcoin_block: block_hash(1),
            epoch: 0,
        },
    );
    let b = build_block(&s, &p, &[], &[reg], 1, 0, &VerifyAll);
    s.commit(&b.block.header, &b.outcome);
    let b = build_block(&s, &p, &[], &[mint], 1, 0, &VerifyAll);
    s.commit(&b.block.header, &b.outcome);
    assert_eq!(s.account(&id(1)).balance, sats(10_000 - 50 * 5));
}

#[test]
fn the_federation_transaction_limit_counts_what_a_block_includes() {
    let s = genesis(&[]);
    let p = params();
    // A block's worth of candidates that can never apply (votes for heights
    // far ahead), then a registration that can.
    let mut candidates: Vec<FederationTx> = (0..MAX_BLOCK_FED_TXS as u64)
        .map(|i| {
            FederationTx::sign(
                p.chain_id,
                MemberIndex(0),
                &member_key(),
                FedTxKind::FeeRateVote {
                    sat_per_vbyte: FeeRate(5),
                    height: Height(u64::MAX - i),
                },
            )
        })
        .collect();
    let reg = FederationTx::sign(
        p.chain_id,
        MemberIndex(0),
        &member_key(),
        FedTxKind::RegisterDepositAddress { account: id(1) },
    );
    candidates.push(reg.clone());
    let b = build_block(&s, &p, &[], &candidates, 1, 0, &VerifyAll);
    assert_eq!(b.block.fed_txs, vec![reg]);
    // The ones left out are reported, for the pool to evict.
    assert_eq!(b.rejected_fed.len(), MAX_BLOCK_FED_TXS);
}

#[test]
fn tampered_block_is_rejected() {
    let s = genesis(&[(0, 1000)]);
    let b = build_block(
        &s,
        &params(),
        &[transfer(0, 1, 0, 10, 1)],
        &[],
        1,
        0,
        &VerifyAll,
    );
    let mut bad = b.block.clone();
    bad.header.state_root = Hash32::ZERO;
    assert!(matches!(
        apply_block(&s, &bad, &params(), &VerifyAll),
        Err(BlockError::StateRoot { .. })
    ));
    // The tx root commits to signatures too: swapping one breaks the root.
    let mut bad = b.block.clone();
    bad.txs[0].signature[5] ^= 1;
    assert!(matches!(
        apply_block(&s, &bad, &params(), &VerifyAll),
        Err(BlockError::TxRoot)
    ));
    // A bad signature under a matching root is caught by verification.
    bad.header.tx_root = crate::block::tx_root(&bad.txs, &bad.fed_txs);
    assert!(matches!(
        apply_block(&s, &bad, &params(), &VerifyAll),
        Err(BlockError::Tx {
            error: TxError::BadSignature,
            ..
        })
    ));
    let mut bad = b.block.clone();
    bad.header.height = Height(7);
    assert!(matches!(
        apply_block(&s, &bad, &params(), &VerifyAll),
        Err(BlockError::WrongHeight { .. })
    ));
    let mut bad = b.block;
    bad.header.parent = Hash32::tagged("x", &[]);
    assert!(matches!(
        apply_block(&s, &bad, &params(), &VerifyAll),
        Err(BlockError::WrongParent { .. })
    ));
}

#[derive(Debug, Clone)]
struct Op {
    from: u8,
    to: u8,
    amount: u64,
    fee: u64,
    nonce_skew: i8,
    corrupt_sig: bool,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0u8..5,
        0u8..5,
        prop_oneof![
            0u64..2000,
            Just(Sats::MAX.to_sat()),
            Just(Sats::MAX.to_sat() / 2)
        ],
        0u64..20,
        prop_oneof![Just(0i8), Just(0), Just(0), Just(-1), Just(1)],
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(from, to, amount, fee, nonce_skew, corrupt_sig)| Op {
            from,
            to,
            amount,
            fee,
            nonce_skew,
            corrupt_sig,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Transfers conserve value (balances + fee pool), never overflow,
    /// reject replays/gaps/bad signatures, and re-applying the built
    /// block gives the same result.
    #[test]
    fn transfers_conserve_value(
        balances in proptest::collection::vec(prop_oneof![0u64..5000, Just(Sats::MAX.to_sat() / 8)], 5),
        blocks in proptest::collection::vec(proptest::collection::vec(op(), 0..12), 1..5),
    ) {
        let mut s = genesis(&balances.iter().enumerate().map(|(i, b)| (i as u8, *b)).collect::<Vec<_>>());
        let total = s.total_value();
        let mut nonces = [0u64; 5];
        for ops in blocks {
            let txs: Vec<Transaction> = ops.iter().map(|o| {
                let nonce = (nonces[o.from as usize] as i64 + o.nonce_skew as i64).max(0) as u64;
                let mut tx = transfer(o.from, o.to, nonce, o.amount, o.fee);
                if o.corrupt_sig { tx.signature[0] ^= 0x55; }
                if o.nonce_skew == 0 && !o.corrupt_sig { nonces[o.from as usize] += 1; }
                tx
            }).collect();
            let b = commit_block(&mut s, &txs);
            // Replays: nothing from a committed block applies a second time.
            let replay = build_block(&s, &params(), &b.block.txs, &[], 1, 0, &VerifyAll);
            prop_assert!(replay.block.txs.is_empty());
            for tx in &b.block.txs {
                prop_assert!(tx.verify_signature());
            }
            prop_assert_eq!(s.total_value(), total);
            let sum: u128 = s.accounts.values().map(|a| a.balance.to_sat() as u128).sum();
            prop_assert_eq!(sum, s.supply.to_sat() as u128);
            // Resync expected nonces to state (rejected txs do not advance).
            for i in 0..5u8 { nonces[i as usize] = s.account(&id(i)).nonce; }
        }
    }
}
