//! The ledger state machine: accounts, fees, burns and queued withdrawals,
//! mints, the federation's UTXO set and peg-out batches.
//!
//! Applying a block is a pure function of `(state, block)`: [`apply_block`]
//! reads a [`State`] and returns a [`BlockOutcome`] (a [`Delta`] plus events)
//! without touching the state; the caller commits the delta once the block
//! is final. No I/O, no clock: every member computes the same result.
//!
//! Money is conserved: for every block, `Σ balances + fee_pool + Σ unpaid
//! withdrawals` changes only by mints and by batches paying peg-outs, and
//! confirmed reserves cover it exactly (see [`State::reserves`]). Arithmetic
//! is checked; an overflow rejects the transaction.

use crate::account::AccountId;
use crate::amount::Sats;
use crate::block::{tx_root, Block, Header};
use crate::fedtx::{FedTxKind, FederationTx, OutPoint};
use crate::hash::Hash32;
use crate::pegout::{
    pegout_fee_quote, plan_batch, script_of, Batch, BatchOutput, BatchVersion, Confirmation, Owner,
    PegOutParams, Utxo, MAX_BATCH_VERSIONS,
};
use crate::tx::{Transaction, TxId, TxKind};
use fedpeg_peg::federation::Federation;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Consensus parameters of the ledger, fixed by genesis.
#[derive(Clone, Debug)]
pub struct LedgerParams {
    pub chain_id: Hash32,
    pub network: bitcoin::Network,
    /// Smallest fee a transaction may pay.
    pub min_tx_fee: Sats,
    /// Smallest fee of a peg-out (the quote at the agreed rate if higher).
    pub pegout_fee: Sats,
    /// Most transactions in one block.
    pub max_block_txs: usize,
    /// Members' consensus keys in genesis order (signers of federation transactions).
    pub members: Vec<ed25519_dalek::VerifyingKey>,
    /// Virtual bytes it takes to spend one deposit; times the agreed fee
    /// rate, it is deducted from every mint so reserves always cover supply.
    pub pegin_spend_vbytes: u64,
    /// Fee rate (sat/vB) until members have voted one.
    pub default_fee_rate: u64,
    /// The peg: members' peg keys, threshold, network.
    pub federation: Federation,
    /// Peg-out batching policy.
    pub pegout: PegOutParams,
    /// Bitcoin confirmations a batch needs before it counts as paid.
    pub confirmations: u32,
}

impl LedgerParams {
    /// Members whose votes show that at least one honest member agrees: f + 1.
    pub fn honest_quorum(&self) -> usize {
        (self.members.len().saturating_sub(1)) / 3 + 1
    }
}

/// Highest fee rate a member may vote, sat/vB.
pub const MAX_FEE_RATE: u64 = 100_000;

/// Most federation transactions in one block.
pub const MAX_BLOCK_FED_TXS: usize = 1000;

/// An account's balance and next nonce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub balance: Sats,
    /// Nonce the account's next transaction must carry.
    pub nonce: u64,
}

/// A peg-out waiting to be paid on Bitcoin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    pub id: u64,
    pub account: AccountId,
    pub bitcoin_address: String,
    pub amount: Sats,
    pub txid: TxId,
    pub height: u64,
    /// Block time when it was queued, ms.
    pub time_ms: u64,
}

/// The whole ledger state after some height.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub accounts: HashMap<AccountId, Account>,
    /// Fees collected by the federation.
    pub fee_pool: Sats,
    /// Σ balances: pegged BTC in circulation.
    pub supply: Sats,
    /// Queued withdrawals by id.
    pub withdrawals: BTreeMap<u64, Withdrawal>,
    pub next_withdrawal_id: u64,
    /// Accounts whose deposit address every member watches.
    pub registered: HashSet<AccountId>,
    /// Deposits already minted: outpoint → (account, credited, height, deposit amount).
    pub minted: HashMap<OutPoint, (AccountId, Sats, u64, Sats)>,
    /// Members' latest fee-rate votes: member → (sat/vB, height).
    pub fee_votes: BTreeMap<u32, (u64, u64)>,
    /// Federation UTXOs free to spend (minted deposits, confirmed change).
    pub utxos: BTreeMap<OutPoint, Utxo>,
    /// Batches not yet confirmed, by id.
    pub batches: BTreeMap<u64, Batch>,
    /// Withdrawal id → the unconfirmed batch paying it.
    pub withdrawal_batch: BTreeMap<u64, u64>,
    pub next_batch_id: u64,
    pub height: u64,
    pub tip: Hash32,
    pub tip_time_ms: u64,
    pub state_root: Hash32,
}

/// Why a transaction was refused. Every variant says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transaction is for chain {got}, but this node runs chain {expected}; sign it with this chain's id (see `fedpeg status`)")]
    WrongChain { expected: Hash32, got: Hash32 },
    #[error("signature does not verify for the sender's key over this transaction")]
    BadSignature,
    #[error("nonce {got} was already used; the account's next nonce is {expected}")]
    NonceReplayed { expected: u64, got: u64 },
    #[error("nonce {got} skips ahead; the account's next nonce is {expected}")]
    NonceGap { expected: u64, got: u64 },
    #[error("amount must be greater than zero")]
    ZeroAmount,
    #[error("fee {got} is below the minimum fee of {min}")]
    FeeTooLow { min: Sats, got: Sats },
    #[error("amount plus fees overflows; use a smaller amount")]
    Overflow,
    #[error("insufficient balance: this needs {needed} but the account has {available} available")]
    InsufficientBalance { needed: Sats, available: Sats },
    #[error("recipient's balance would overflow; send a smaller amount")]
    RecipientOverflow,
    #[error("{0}")]
    BitcoinAddress(#[from] fedpeg_peg::address::AddressError),
    #[error("peg-out amount {got} is below the dust limit of {min}")]
    BelowDust { min: Sats, got: Sats },
    #[error("peg-out fee {got} is below the current quote of {quote}; ask EstimatePegOutFee again and sign with that fee")]
    PegOutFeeTooLow { quote: Sats, got: Sats },
}

impl TxError {
    /// True for errors about the current state (nonce, balance) rather than
    /// the transaction itself: the same bytes may become valid or never will
    /// because state moved on.
    pub fn is_state_dependent(&self) -> bool {
        matches!(
            self,
            TxError::NonceReplayed { .. }
                | TxError::NonceGap { .. }
                | TxError::InsufficientBalance { .. }
                | TxError::RecipientOverflow
                | TxError::PegOutFeeTooLow { .. }
        )
    }
}

/// Why a federation transaction was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FedTxError {
    #[error("federation transaction is for chain {got}, expected {expected}")]
    WrongChain { expected: Hash32, got: Hash32 },
    #[error("federation transaction is not signed by genesis member {0}")]
    BadSignature(u32),
    #[error("the deposit address of this account is already registered")]
    AlreadyRegistered,
    #[error("deposits to this account are not watched: its deposit address is not registered")]
    NotRegistered,
    #[error("deposit {0} is already minted")]
    AlreadyMinted(OutPoint),
    #[error("deposit of {amount} is below the {cost} it costs to spend; not minted")]
    BelowCost { amount: Sats, cost: Sats },
    #[error("minting would overflow a balance")]
    Overflow,
    #[error("fee rate {0} sat/vB is outside 1..={MAX_FEE_RATE}")]
    BadFeeRate(u64),
    #[error("fee-rate vote is not newer than the member's last vote, or is for a future height")]
    StaleVote,
    #[error("no unconfirmed peg-out batch {0}")]
    UnknownBatch(u64),
    #[error("batch {batch} version {version} is not its newest version")]
    StaleVersion { batch: u64, version: u32 },
    #[error("member {0} already did this for this batch version")]
    Duplicate(u32),
    #[error("peg-out signatures refused: {0}")]
    BadPegOutSignatures(String),
    #[error("transaction {0} is not a version of this batch")]
    NotABatchVersion(String),
}

/// Why a block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block is for chain {got}, expected {expected}")]
    WrongChain { expected: Hash32, got: Hash32 },
    #[error("block height {got}, expected {expected}")]
    WrongHeight { expected: u64, got: u64 },
    #[error("block parent {got}, expected the tip {expected}")]
    WrongParent { expected: Hash32, got: Hash32 },
    #[error("block has {got} transactions; the limit is {max}")]
    TooManyTxs { max: usize, got: usize },
    #[error("block tx_root does not match its transactions")]
    TxRoot,
    #[error("block transaction {index} ({txid}) is invalid: {error}")]
    Tx {
        index: usize,
        txid: TxId,
        error: TxError,
    },
    #[error("block has {got} federation transactions; the limit is {max}")]
    TooManyFedTxs { max: usize, got: usize },
    #[error("block federation transaction {index} is invalid: {error}")]
    FedTx { index: usize, error: FedTxError },
    #[error("block state_root {got} does not match the computed {expected}")]
    StateRoot { expected: Hash32, got: Hash32 },
}

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
        member: u32,
    },
    PegInMinted {
        outpoint: OutPoint,
        account: AccountId,
        amount: Sats,
    },
    /// A peg-out batch moved on: formed, signed by a member, fully signed,
    /// replaced, or confirmed.
    PegOutBatch {
        batch: u64,
        stage: BatchStage,
        /// Bitcoin txid of the version concerned (internal byte order).
        txid: [u8; 32],
        withdrawals: Vec<u64>,
        /// Accounts that burned them, each once.
        accounts: Vec<AccountId>,
    },
}

/// Stages of a peg-out batch, as events report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchStage {
    Formed,
    /// A member's valid signatures of `version` were recorded: `count` of
    /// the `required` (m) so far; more than m once it is broadcast.
    Signature {
        member: u32,
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
        fee_rate: u64,
    },
    Confirmed {
        version: u32,
    },
}

/// Decides whether a transaction's signature is valid. Lets a node skip
/// re-verifying signatures it already checked at mempool admission.
pub trait SignatureCheck {
    /// True if `tx.signature` is valid for `tx` (verify_strict semantics).
    fn is_valid(&self, tx: &Transaction) -> bool;
}

/// For callers that verified the signature themselves (or are checking
/// everything else first): treats every signature as valid.
pub struct AlreadyVerified;

impl SignatureCheck for AlreadyVerified {
    fn is_valid(&self, _: &Transaction) -> bool {
        true
    }
}

/// Verifies every signature.
pub struct VerifyAll;

impl SignatureCheck for VerifyAll {
    fn is_valid(&self, tx: &Transaction) -> bool {
        tx.verify_signature()
    }
}

/// Changes a block makes to the state, applied by [`State::commit`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub accounts: BTreeMap<AccountId, Account>,
    pub fee_pool: Sats,
    pub supply: Sats,
    pub new_withdrawals: Vec<Withdrawal>,
    pub next_withdrawal_id: u64,
    pub new_registrations: Vec<AccountId>,
    /// Minted deposits: (outpoint, account, credited amount, deposit amount).
    pub new_mints: Vec<(OutPoint, AccountId, Sats, Sats)>,
    /// Fee-rate votes: (member, sat/vB, height).
    pub new_fee_votes: Vec<(u32, u64, u64)>,
    /// Federation UTXOs that became spendable.
    pub new_utxos: Vec<(OutPoint, Utxo)>,
    /// UTXOs locked into a new batch.
    pub spent_utxos: Vec<OutPoint>,
    /// New or changed batches (their whole new record).
    pub batches: BTreeMap<u64, Batch>,
    pub next_batch_id: u64,
}

/// The result of applying a block to a state.
#[derive(Clone, Debug)]
pub struct BlockOutcome {
    pub delta: Delta,
    pub events: Vec<Event>,
    pub state_root: Hash32,
}

/// A working view: base state plus pending changes.
struct Overlay<'a> {
    base: &'a State,
    delta: Delta,
}

impl<'a> Overlay<'a> {
    fn new(base: &'a State) -> Self {
        Overlay {
            base,
            delta: Delta {
                fee_pool: base.fee_pool,
                supply: base.supply,
                next_withdrawal_id: base.next_withdrawal_id,
                next_batch_id: base.next_batch_id,
                ..Delta::default()
            },
        }
    }

    fn is_minted(&self, o: &OutPoint) -> bool {
        self.base.minted.contains_key(o) || self.delta.new_mints.iter().any(|(m, _, _, _)| m == o)
    }

    fn is_registered(&self, id: &AccountId) -> bool {
        self.base.registered.contains(id) || self.delta.new_registrations.contains(id)
    }

    /// An unconfirmed batch, with this block's changes.
    fn batch(&self, id: u64) -> Option<Batch> {
        match self.delta.batches.get(&id) {
            Some(b) => Some(b.clone()),
            None => self.base.batches.get(&id).cloned(),
        }
        .filter(|b| b.confirmed.is_none())
    }

    fn unconfirmed_batches(&self) -> usize {
        let mut n = self.base.batches.len();
        for (id, b) in &self.delta.batches {
            match (self.base.batches.contains_key(id), b.confirmed.is_some()) {
                (false, false) => n += 1,
                (true, true) => n -= 1,
                _ => {}
            }
        }
        n
    }

    /// Spendable UTXOs in selection order: largest first, then by outpoint.
    fn available_utxos(&self) -> Vec<(OutPoint, Utxo)> {
        let mut v: Vec<(OutPoint, Utxo)> = self
            .base
            .utxos
            .iter()
            .map(|(o, u)| (*o, *u))
            .chain(self.delta.new_utxos.iter().copied())
            .filter(|(o, _)| !self.delta.spent_utxos.contains(o))
            .collect();
        v.sort_by(|a, b| b.1.amount.cmp(&a.1.amount).then(a.0.cmp(&b.0)));
        v
    }

    fn account(&self, id: &AccountId) -> Account {
        self.delta
            .accounts
            .get(id)
            .or_else(|| self.base.accounts.get(id))
            .copied()
            .unwrap_or_default()
    }
}

/// Checks `tx` against `sender` (the sender's current account) without
/// state access; returns the total debit (amount + fee). A peg-out's fee
/// must cover the quote at `fee_rate`, the agreed Bitcoin fee rate.
/// Used by both block application and mempool admission.
pub fn check_tx(
    params: &LedgerParams,
    fee_rate: u64,
    sender: Account,
    tx: &Transaction,
    sigs: &dyn SignatureCheck,
) -> Result<Sats, TxError> {
    if tx.chain_id != params.chain_id {
        return Err(TxError::WrongChain {
            expected: params.chain_id,
            got: tx.chain_id,
        });
    }
    if tx.nonce < sender.nonce {
        return Err(TxError::NonceReplayed {
            expected: sender.nonce,
            got: tx.nonce,
        });
    }
    if tx.nonce > sender.nonce {
        return Err(TxError::NonceGap {
            expected: sender.nonce,
            got: tx.nonce,
        });
    }
    if tx.fee < params.min_tx_fee {
        return Err(TxError::FeeTooLow {
            min: params.min_tx_fee,
            got: tx.fee,
        });
    }
    let amount = tx.amount();
    if amount == Sats::ZERO {
        return Err(TxError::ZeroAmount);
    }
    let debit = amount.checked_add(tx.fee).ok_or(TxError::Overflow)?;
    if let TxKind::PegOut {
        bitcoin_address, ..
    } = &tx.kind
    {
        let script = fedpeg_peg::address::parse_pegout_address(bitcoin_address, params.network)?
            .script_pubkey();
        let dust = Sats(fedpeg_peg::address::PEGOUT_DUST_LIMIT_SATS);
        if amount < dust {
            return Err(TxError::BelowDust {
                min: dust,
                got: amount,
            });
        }
        let quote = pegout_fee_quote(&params.pegout, params.pegout_fee, fee_rate, &script);
        if tx.fee < quote {
            return Err(TxError::PegOutFeeTooLow { quote, got: tx.fee });
        }
    }
    if debit > sender.balance {
        return Err(TxError::InsufficientBalance {
            needed: debit,
            available: sender.balance,
        });
    }
    // Signature last: it is the expensive check.
    if !sigs.is_valid(tx) {
        return Err(TxError::BadSignature);
    }
    Ok(debit)
}

fn apply_tx(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    (height, time_ms): (u64, u64),
    tx: &Transaction,
    sigs: &dyn SignatureCheck,
    events: &mut Vec<Event>,
) -> Result<(), TxError> {
    let mut sender = o.account(&tx.sender);
    let rate = o.base.fee_rate(params.default_fee_rate);
    let debit = check_tx(params, rate, sender, tx, sigs)?;
    let txid = tx.id();
    // Compute every new value with checked arithmetic first, then write: a
    // rejected transaction leaves the overlay untouched.
    sender.balance = sender.balance.checked_sub(debit).ok_or(TxError::Overflow)?;
    sender.nonce = sender.nonce.checked_add(1).ok_or(TxError::Overflow)?;
    let fee_pool = o
        .delta
        .fee_pool
        .checked_add(tx.fee)
        .ok_or(TxError::Overflow)?;
    match &tx.kind {
        TxKind::Transfer { to, amount } => {
            let recipient = if *to == tx.sender {
                sender.balance = sender
                    .balance
                    .checked_add(*amount)
                    .ok_or(TxError::Overflow)?;
                None
            } else {
                let mut r = o.account(to);
                r.balance = r
                    .balance
                    .checked_add(*amount)
                    .ok_or(TxError::RecipientOverflow)?;
                Some(r)
            };
            // Supply drops by the fee only.
            let supply = o
                .delta
                .supply
                .checked_sub(tx.fee)
                .ok_or(TxError::Overflow)?;
            o.delta.accounts.insert(tx.sender, sender);
            if let Some(r) = recipient {
                o.delta.accounts.insert(*to, r);
            }
            o.delta.supply = supply;
            o.delta.fee_pool = fee_pool;
            events.push(Event::FeePaid {
                txid,
                from: tx.sender,
                amount: tx.fee,
            });
            events.push(Event::Transfer {
                txid,
                from: tx.sender,
                to: *to,
                amount: *amount,
            });
        }
        TxKind::PegOut {
            bitcoin_address,
            amount,
        } => {
            let supply = o.delta.supply.checked_sub(debit).ok_or(TxError::Overflow)?;
            let next_id = o
                .delta
                .next_withdrawal_id
                .checked_add(1)
                .ok_or(TxError::Overflow)?;
            let w = Withdrawal {
                id: o.delta.next_withdrawal_id,
                account: tx.sender,
                bitcoin_address: bitcoin_address.clone(),
                amount: *amount,
                txid,
                height,
                time_ms,
            };
            o.delta.accounts.insert(tx.sender, sender);
            o.delta.supply = supply;
            o.delta.fee_pool = fee_pool;
            o.delta.next_withdrawal_id = next_id;
            o.delta.new_withdrawals.push(w.clone());
            events.push(Event::FeePaid {
                txid,
                from: tx.sender,
                amount: tx.fee,
            });
            events.push(Event::PegOutQueued {
                txid,
                withdrawal: w,
            });
        }
    }
    Ok(())
}

/// Checks and applies one federation transaction.
/// Whether federation transaction `tx` would apply on top of `state` in the
/// next block (nothing is written). Its member signature is not checked here.
pub fn check_fed_tx(
    state: &State,
    params: &LedgerParams,
    tx: &FederationTx,
) -> Result<(), FedTxError> {
    let mut o = Overlay::new(state);
    apply_fed_tx(&mut o, params, state.height + 1, tx, &mut Vec::new())
}

fn apply_fed_tx(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: u64,
    tx: &FederationTx,
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    if tx.chain_id != params.chain_id {
        return Err(FedTxError::WrongChain {
            expected: params.chain_id,
            got: tx.chain_id,
        });
    }
    if !tx.verify(&params.members) {
        return Err(FedTxError::BadSignature(tx.member));
    }
    match &tx.kind {
        FedTxKind::RegisterDepositAddress { account } => {
            if o.is_registered(account) {
                return Err(FedTxError::AlreadyRegistered);
            }
            o.delta.new_registrations.push(*account);
            events.push(Event::DepositAddressRegistered {
                account: *account,
                member: tx.member,
            });
        }
        FedTxKind::FeeRateVote {
            sat_per_vbyte,
            height: at,
        } => {
            if !(1..=MAX_FEE_RATE).contains(sat_per_vbyte) {
                return Err(FedTxError::BadFeeRate(*sat_per_vbyte));
            }
            let last = o
                .delta
                .new_fee_votes
                .iter()
                .rev()
                .find(|(m, _, _)| *m == tx.member)
                .map(|(_, _, h)| *h)
                .or_else(|| o.base.fee_votes.get(&tx.member).map(|(_, h)| *h));
            if *at > height || last.is_some_and(|l| *at <= l) {
                return Err(FedTxError::StaleVote);
            }
            o.delta.new_fee_votes.push((tx.member, *sat_per_vbyte, *at));
        }
        FedTxKind::PegInMint {
            outpoint,
            amount,
            account,
            ..
        } => {
            if !o.is_registered(account) {
                return Err(FedTxError::NotRegistered);
            }
            if o.is_minted(outpoint) {
                return Err(FedTxError::AlreadyMinted(*outpoint));
            }
            let cost = Sats(
                params
                    .pegin_spend_vbytes
                    .saturating_mul(o.base.fee_rate(params.default_fee_rate)),
            );
            let credit = match amount.checked_sub(cost) {
                Some(c) if c > Sats::ZERO => c,
                _ => {
                    return Err(FedTxError::BelowCost {
                        amount: *amount,
                        cost,
                    })
                }
            };
            let mut a = o.account(account);
            a.balance = a.balance.checked_add(credit).ok_or(FedTxError::Overflow)?;
            let supply = o
                .delta
                .supply
                .checked_add(credit)
                .ok_or(FedTxError::Overflow)?;
            // The spend cost funds the Bitcoin fee of the batch that will
            // spend this deposit: reserves = supply + queued + fee pool.
            let fee_pool = o
                .delta
                .fee_pool
                .checked_add(cost)
                .ok_or(FedTxError::Overflow)?;
            o.delta.accounts.insert(*account, a);
            o.delta.supply = supply;
            o.delta.fee_pool = fee_pool;
            o.delta
                .new_mints
                .push((*outpoint, *account, credit, *amount));
            o.delta.new_utxos.push((
                *outpoint,
                Utxo {
                    amount: *amount,
                    owner: Owner::deposit(account),
                },
            ));
            events.push(Event::PegInMinted {
                outpoint: *outpoint,
                account: *account,
                amount: credit,
            });
        }
        FedTxKind::PegOutSignatures {
            batch,
            version,
            signatures,
        } => {
            let mut b = o.batch(*batch).ok_or(FedTxError::UnknownBatch(*batch))?;
            let latest = b.versions.len() - 1;
            if *version as usize != latest {
                return Err(FedTxError::StaleVersion {
                    batch: *batch,
                    version: *version,
                });
            }
            if b.versions[latest].signatures.contains_key(&tx.member) {
                return Err(FedTxError::Duplicate(tx.member));
            }
            let unsigned = b
                .unsigned_tx(&params.federation, latest)
                .map_err(|e| FedTxError::BadPegOutSignatures(e.to_string()))?;
            params
                .federation
                .verify_batch_signatures(
                    &unsigned,
                    &b.batch_inputs(),
                    tx.member as usize,
                    signatures,
                )
                .map_err(|e| FedTxError::BadPegOutSignatures(e.to_string()))?;
            let v = &mut b.versions[latest];
            v.signatures.insert(tx.member, signatures.clone());
            let count = v.signatures.len() as u32;
            let txid = v.txid;
            let withdrawals = b.withdrawal_ids();
            let accounts = b.accounts();
            events.push(Event::PegOutBatch {
                batch: *batch,
                stage: BatchStage::Signature {
                    member: tx.member,
                    count,
                    required: params.federation.threshold() as u32,
                    version: latest as u32,
                },
                txid,
                withdrawals: withdrawals.clone(),
                accounts: accounts.clone(),
            });
            if count as usize == params.federation.threshold() {
                events.push(Event::PegOutBatch {
                    batch: *batch,
                    stage: BatchStage::Signed {
                        version: latest as u32,
                    },
                    txid,
                    withdrawals,
                    accounts,
                });
            }
            o.delta.batches.insert(*batch, b);
        }
        FedTxKind::PegOutBump { batch, version } => {
            let mut b = o.batch(*batch).ok_or(FedTxError::UnknownBatch(*batch))?;
            let latest = b.versions.len() - 1;
            if *version as usize != latest {
                return Err(FedTxError::StaleVersion {
                    batch: *batch,
                    version: *version,
                });
            }
            if !b.versions[latest].bump_votes.insert(tx.member) {
                return Err(FedTxError::Duplicate(tx.member));
            }
            if b.versions[latest].bump_votes.len() >= params.honest_quorum()
                && b.versions.len() < MAX_BATCH_VERSIONS
            {
                let rate = o.base.fee_rate(params.default_fee_rate);
                if let Some((v, extra)) = replacement(&b, params, rate, height, o.delta.fee_pool) {
                    o.delta.fee_pool = o
                        .delta
                        .fee_pool
                        .checked_sub(extra)
                        .ok_or(FedTxError::Overflow)?;
                    b.fee_reserved = b
                        .fee_reserved
                        .checked_add(extra)
                        .ok_or(FedTxError::Overflow)?;
                    events.push(Event::PegOutBatch {
                        batch: *batch,
                        stage: BatchStage::Replaced {
                            version: b.versions.len() as u32,
                            fee_rate: v.fee_rate,
                        },
                        txid: v.txid,
                        withdrawals: b.withdrawal_ids(),
                        accounts: b.accounts(),
                    });
                    b.versions.push(v);
                }
            }
            o.delta.batches.insert(*batch, b);
        }
        FedTxKind::PegOutConfirmed {
            batch,
            txid,
            bitcoin_block,
        } => {
            let mut b = o.batch(*batch).ok_or(FedTxError::UnknownBatch(*batch))?;
            let Some(v) = b.version_of(txid) else {
                return Err(FedTxError::NotABatchVersion(
                    crate::fedtx::OutPoint {
                        txid: *txid,
                        vout: 0,
                    }
                    .to_bitcoin()
                    .txid
                    .to_string(),
                ));
            };
            let version = &b.versions[v];
            // The cheaper version confirmed: refund what the others reserved.
            let refund = b
                .fee_reserved
                .checked_sub(version.fee)
                .ok_or(FedTxError::Overflow)?;
            o.delta.fee_pool = o
                .delta
                .fee_pool
                .checked_add(refund)
                .ok_or(FedTxError::Overflow)?;
            if version.change > Sats::ZERO {
                o.delta.new_utxos.push((
                    OutPoint {
                        txid: *txid,
                        vout: b.outputs.len() as u32,
                    },
                    Utxo {
                        amount: version.change,
                        owner: Owner::Change,
                    },
                ));
            }
            b.confirmed = Some(Confirmation {
                version: v as u32,
                bitcoin_block: *bitcoin_block,
                height,
            });
            events.push(Event::PegOutBatch {
                batch: *batch,
                stage: BatchStage::Confirmed { version: v as u32 },
                txid: *txid,
                withdrawals: b.withdrawal_ids(),
                accounts: b.accounts(),
            });
            o.delta.batches.insert(*batch, b);
        }
    }
    Ok(())
}

/// A replacement of `b`'s newest version at a higher rate (the agreed rate,
/// or 25% more than before, whichever is higher) with the fee BIP125 asks
/// for, paid from the fee pool; with the extra sats it takes from the pool.
fn replacement(
    b: &Batch,
    params: &LedgerParams,
    agreed_rate: u64,
    height: u64,
    fee_pool: Sats,
) -> Option<(BatchVersion, Sats)> {
    let old = b.latest();
    let rate = agreed_rate
        .max(old.fee_rate.saturating_add((old.fee_rate / 4).max(1)))
        .min(MAX_FEE_RATE);
    let out_bytes: u64 = b
        .outputs
        .iter()
        .map(|o| {
            script_of(&o.address, params.network)
                .map(|s| fedpeg_peg::pegout::output_bytes(&s))
                .unwrap_or(0)
        })
        .sum();
    let n_out = b.outputs.len();
    // BIP125: the replacement pays at least the old fee plus its own size
    // at the incremental relay rate (1 sat/vB).
    let min_fee = old.fee.0.saturating_add(params.federation.batch_vbytes(
        b.inputs.len(),
        n_out + 1,
        out_bytes + 43,
    ));
    let (fee, change) = crate::pegout::fee_and_change(
        &params.federation,
        b.inputs.len(),
        b.input_total(),
        n_out,
        out_bytes,
        b.output_total(),
        rate,
        min_fee,
    )?;
    let extra = Sats(fee.saturating_sub(b.fee_reserved.0));
    if extra > fee_pool {
        return None;
    }
    let mut v = BatchVersion {
        fee_rate: rate,
        fee: Sats(fee),
        change: Sats(change),
        txid: [0; 32],
        height,
        signatures: BTreeMap::new(),
        bump_votes: BTreeSet::new(),
    };
    let mut probe = b.clone();
    probe.versions.push(v.clone());
    let tx = probe
        .unsigned_tx(&params.federation, probe.versions.len() - 1)
        .ok()?;
    v.txid = txid_bytes(&tx);
    Some((v, extra))
}

fn txid_bytes(tx: &fedpeg_peg::bitcoin::Transaction) -> [u8; 32] {
    use fedpeg_peg::bitcoin::hashes::Hash;
    tx.compute_txid().to_byte_array()
}

/// Forms a batch at the end of a block when the queue is due: the oldest
/// unbatched peg-out waited `batch_interval_ms`, or the queue is full.
fn form_batch(
    o: &mut Overlay<'_>,
    params: &LedgerParams,
    height: u64,
    time_ms: u64,
    events: &mut Vec<Event>,
) {
    let p = &params.pegout;
    if o.unconfirmed_batches() >= p.max_unconfirmed as usize {
        return;
    }
    let queued: Vec<&Withdrawal> = o
        .base
        .withdrawals
        .values()
        .filter(|w| !o.base.withdrawal_batch.contains_key(&w.id))
        .chain(o.delta.new_withdrawals.iter())
        .collect();
    let Some(oldest) = queued.first() else {
        return;
    };
    let due = oldest.time_ms.saturating_add(p.batch_interval_ms) <= time_ms
        || queued.len() >= p.max_outputs as usize;
    if !due {
        return;
    }
    let utxos = o.available_utxos();
    let amounts: Vec<u64> = utxos.iter().map(|(_, u)| u.amount.0).collect();
    let wanted: Vec<(u64, u64)> = queued
        .iter()
        .map(|w| {
            let bytes = script_of(&w.bitcoin_address, params.network)
                .map(|s| fedpeg_peg::pegout::output_bytes(&s))
                .unwrap_or(43);
            (bytes, w.amount.0)
        })
        .collect();
    let rate = o.base.fee_rate(params.default_fee_rate);
    let Some(plan) = plan_batch(
        &params.federation,
        p,
        &amounts,
        &wanted,
        rate,
        o.delta.fee_pool.0,
    ) else {
        return;
    };
    let id = o.delta.next_batch_id;
    let mut b = Batch {
        id,
        inputs: utxos[..plan.n_inputs].to_vec(),
        outputs: plan
            .withdrawals
            .iter()
            .map(|i| BatchOutput {
                withdrawal: queued[*i].id,
                address: queued[*i].bitcoin_address.clone(),
                amount: queued[*i].amount,
                account: queued[*i].account.0,
            })
            .collect(),
        versions: vec![BatchVersion {
            fee_rate: rate,
            fee: Sats(plan.fee),
            change: Sats(plan.change),
            txid: [0; 32],
            height,
            signatures: BTreeMap::new(),
            bump_votes: BTreeSet::new(),
        }],
        created_height: height,
        fee_reserved: Sats(plan.fee),
        confirmed: None,
    };
    let Ok(tx) = b.unsigned_tx(&params.federation, 0) else {
        return;
    };
    let Some(fee_pool) = o.delta.fee_pool.checked_sub(Sats(plan.fee)) else {
        return;
    };
    b.versions[0].txid = txid_bytes(&tx);
    o.delta.fee_pool = fee_pool;
    o.delta.next_batch_id = id + 1;
    o.delta
        .spent_utxos
        .extend(b.inputs.iter().map(|(op, _)| *op));
    events.push(Event::PegOutBatch {
        batch: id,
        stage: BatchStage::Formed,
        txid: b.versions[0].txid,
        withdrawals: b.withdrawal_ids(),
        accounts: b.accounts(),
    });
    o.delta.batches.insert(id, b);
}

/// State root after applying `delta` on top of a state whose root is `prev`.
/// A hash chain over each block's changes: cheap (proportional to the block,
/// not the state) and identical on every member that applied the same blocks.
fn state_root(prev: Hash32, height: u64, d: &Delta) -> Hash32 {
    let mut buf = Vec::with_capacity(64 + d.accounts.len() * 48);
    buf.extend_from_slice(&prev.0);
    buf.extend_from_slice(&height.to_be_bytes());
    for (id, a) in &d.accounts {
        buf.extend_from_slice(&id.0);
        buf.extend_from_slice(&a.balance.0.to_be_bytes());
        buf.extend_from_slice(&a.nonce.to_be_bytes());
    }
    buf.extend_from_slice(&d.fee_pool.0.to_be_bytes());
    buf.extend_from_slice(&d.supply.0.to_be_bytes());
    buf.extend_from_slice(&d.next_withdrawal_id.to_be_bytes());
    for w in &d.new_withdrawals {
        buf.extend_from_slice(&w.id.to_be_bytes());
        buf.extend_from_slice(&w.account.0);
        buf.extend_from_slice(&(w.bitcoin_address.len() as u16).to_be_bytes());
        buf.extend_from_slice(w.bitcoin_address.as_bytes());
        buf.extend_from_slice(&w.amount.0.to_be_bytes());
    }
    for a in &d.new_registrations {
        buf.extend_from_slice(&a.0);
    }
    for (o, a, credit, amount) in &d.new_mints {
        buf.extend_from_slice(&amount.0.to_be_bytes());
        buf.extend_from_slice(&o.txid);
        buf.extend_from_slice(&o.vout.to_be_bytes());
        buf.extend_from_slice(&a.0);
        buf.extend_from_slice(&credit.0.to_be_bytes());
    }
    for (m, rate, at) in &d.new_fee_votes {
        buf.extend_from_slice(&m.to_be_bytes());
        buf.extend_from_slice(&rate.to_be_bytes());
        buf.extend_from_slice(&at.to_be_bytes());
    }
    for w in &d.new_withdrawals {
        buf.extend_from_slice(&w.time_ms.to_be_bytes());
    }
    for (o, u) in &d.new_utxos {
        buf.extend_from_slice(&o.txid);
        buf.extend_from_slice(&o.vout.to_be_bytes());
        buf.extend_from_slice(&u.amount.0.to_be_bytes());
    }
    for o in &d.spent_utxos {
        buf.extend_from_slice(&o.txid);
        buf.extend_from_slice(&o.vout.to_be_bytes());
    }
    buf.extend_from_slice(&d.next_batch_id.to_be_bytes());
    for b in d.batches.values() {
        // serde_json of these types is deterministic (ordered maps, Vecs).
        buf.extend_from_slice(&serde_json::to_vec(b).unwrap_or_default());
    }
    Hash32::tagged("fedpeg/state/v1", &[&buf])
}

/// Validates `block` against `state` and computes its outcome, without
/// changing `state`. Every transaction must be valid; the header must match.
pub fn apply_block(
    state: &State,
    block: &Block,
    params: &LedgerParams,
    sigs: &dyn SignatureCheck,
) -> Result<BlockOutcome, BlockError> {
    let h = &block.header;
    if h.chain_id != params.chain_id {
        return Err(BlockError::WrongChain {
            expected: params.chain_id,
            got: h.chain_id,
        });
    }
    if h.height != state.height + 1 {
        return Err(BlockError::WrongHeight {
            expected: state.height + 1,
            got: h.height,
        });
    }
    if h.parent != state.tip {
        return Err(BlockError::WrongParent {
            expected: state.tip,
            got: h.parent,
        });
    }
    if block.txs.len() > params.max_block_txs {
        return Err(BlockError::TooManyTxs {
            max: params.max_block_txs,
            got: block.txs.len(),
        });
    }
    if block.fed_txs.len() > MAX_BLOCK_FED_TXS {
        return Err(BlockError::TooManyFedTxs {
            max: MAX_BLOCK_FED_TXS,
            got: block.fed_txs.len(),
        });
    }
    let ids: Vec<TxId> = block.txs.iter().map(Transaction::id).collect();
    if tx_root(&block.txs, &block.fed_txs) != h.tx_root {
        return Err(BlockError::TxRoot);
    }
    let mut o = Overlay::new(state);
    let mut events = Vec::new();
    for (index, tx) in block.txs.iter().enumerate() {
        apply_tx(&mut o, params, (h.height, h.time_ms), tx, sigs, &mut events).map_err(
            |error| BlockError::Tx {
                index,
                txid: ids[index],
                error,
            },
        )?;
    }
    for (index, f) in block.fed_txs.iter().enumerate() {
        apply_fed_tx(&mut o, params, h.height, f, &mut events)
            .map_err(|error| BlockError::FedTx { index, error })?;
    }
    form_batch(&mut o, params, h.height, h.time_ms, &mut events);
    let root = state_root(state.state_root, h.height, &o.delta);
    if root != h.state_root {
        return Err(BlockError::StateRoot {
            expected: root,
            got: h.state_root,
        });
    }
    Ok(BlockOutcome {
        delta: o.delta,
        events,
        state_root: root,
    })
}

/// A block built by a proposer, with what it did and what it left out.
pub struct BuiltBlock {
    pub block: Block,
    pub outcome: BlockOutcome,
    /// Candidates that were invalid against the state, with the reason.
    pub rejected: Vec<(TxId, TxError)>,
}

/// Builds the next block from `candidates` in order, skipping the invalid
/// ones, up to `params.max_block_txs`.
pub fn build_block<'t>(
    state: &State,
    params: &LedgerParams,
    candidates: impl IntoIterator<Item = &'t Transaction>,
    fed_candidates: &[FederationTx],
    time_ms: u64,
    proposer: u32,
    sigs: &dyn SignatureCheck,
) -> BuiltBlock {
    let height = state.height + 1;
    let time_ms = time_ms.max(state.tip_time_ms);
    let mut o = Overlay::new(state);
    let mut events = Vec::new();
    let mut txs = Vec::new();
    let mut rejected = Vec::new();
    for tx in candidates {
        if txs.len() >= params.max_block_txs {
            break;
        }
        let before = (o.account(&tx.sender), o.delta.fee_pool, o.delta.supply);
        let n_events = events.len();
        match apply_tx(&mut o, params, (height, time_ms), tx, sigs, &mut events) {
            Ok(()) => txs.push(tx.clone()),
            Err(e) => {
                // apply_tx writes only after every check passed: nothing to undo.
                debug_assert_eq!(
                    before,
                    (o.account(&tx.sender), o.delta.fee_pool, o.delta.supply)
                );
                events.truncate(n_events);
                rejected.push((tx.id(), e));
            }
        }
    }
    let mut fed_txs = Vec::new();
    for f in fed_candidates.iter().take(MAX_BLOCK_FED_TXS) {
        // Invalid ones (e.g. a registration another member's block already
        // made) are simply left out.
        if apply_fed_tx(&mut o, params, height, f, &mut events).is_ok() {
            fed_txs.push(f.clone());
        }
    }
    form_batch(&mut o, params, height, time_ms, &mut events);
    let root = state_root(state.state_root, height, &o.delta);
    let header = Header {
        chain_id: params.chain_id,
        height,
        parent: state.tip,
        time_ms,
        proposer,
        tx_root: tx_root(&txs, &fed_txs),
        state_root: root,
    };
    BuiltBlock {
        block: Block {
            header,
            txs,
            fed_txs,
        },
        outcome: BlockOutcome {
            delta: o.delta,
            events,
            state_root: root,
        },
        rejected,
    }
}

impl State {
    /// Applies a finalized block's outcome.
    pub fn commit(&mut self, header: &Header, outcome: &BlockOutcome) {
        for (id, a) in &outcome.delta.accounts {
            self.accounts.insert(*id, *a);
        }
        self.fee_pool = outcome.delta.fee_pool;
        self.supply = outcome.delta.supply;
        self.next_withdrawal_id = outcome.delta.next_withdrawal_id;
        for w in &outcome.delta.new_withdrawals {
            self.withdrawals.insert(w.id, w.clone());
        }
        self.registered
            .extend(outcome.delta.new_registrations.iter().copied());
        for (o, a, credit, amount) in &outcome.delta.new_mints {
            self.minted
                .insert(*o, (*a, *credit, header.height, *amount));
        }
        for (m, rate, at) in &outcome.delta.new_fee_votes {
            self.fee_votes.insert(*m, (*rate, *at));
        }
        for (o, u) in &outcome.delta.new_utxos {
            self.utxos.insert(*o, *u);
        }
        for o in &outcome.delta.spent_utxos {
            self.utxos.remove(o);
        }
        for (id, b) in &outcome.delta.batches {
            if b.confirmed.is_some() {
                self.batches.remove(id);
                for out in &b.outputs {
                    self.withdrawals.remove(&out.withdrawal);
                    self.withdrawal_batch.remove(&out.withdrawal);
                }
            } else {
                for out in &b.outputs {
                    self.withdrawal_batch.insert(out.withdrawal, *id);
                }
                self.batches.insert(*id, b.clone());
            }
        }
        self.next_batch_id = outcome.delta.next_batch_id;
        self.height = header.height;
        self.tip = header.hash();
        self.tip_time_ms = header.time_ms;
        self.state_root = outcome.state_root;
    }

    /// The agreed fee rate: the (lower) median of members' latest votes, or
    /// `default` before anyone voted. A minority of members cannot move it
    /// past the honest votes.
    pub fn fee_rate(&self, default: u64) -> u64 {
        let mut rates: Vec<u64> = self.fee_votes.values().map(|(r, _)| *r).collect();
        if rates.is_empty() {
            return default;
        }
        rates.sort_unstable();
        rates[(rates.len() - 1) / 2]
    }

    /// The account, or an empty one.
    pub fn account(&self, id: &AccountId) -> Account {
        self.accounts.get(id).copied().unwrap_or_default()
    }

    /// Σ balances + fee pool + Σ unpaid withdrawals + Σ fees reserved by
    /// unconfirmed batches (u128: cannot overflow).
    pub fn total_value(&self) -> u128 {
        let balances: u128 = self.accounts.values().map(|a| a.balance.0 as u128).sum();
        let queued: u128 = self.withdrawals.values().map(|w| w.amount.0 as u128).sum();
        let reserved: u128 = self
            .batches
            .values()
            .map(|b| b.fee_reserved.0 as u128)
            .sum();
        balances + self.fee_pool.0 as u128 + queued + reserved
    }

    /// The federation's reserves against what it owes.
    pub fn reserves(&self) -> Reserves {
        let sum = |it: &mut dyn Iterator<Item = u64>| it.map(u128::from).sum::<u128>();
        Reserves {
            available: sum(&mut self.utxos.values().map(|u| u.amount.0)),
            locked: sum(&mut self.batches.values().map(|b| b.input_total())),
            pending_change: sum(&mut self.batches.values().map(|b| b.latest().change.0)),
            supply: self.supply.0 as u128,
            queued: sum(&mut self
                .withdrawals
                .values()
                .filter(|w| !self.withdrawal_batch.contains_key(&w.id))
                .map(|w| w.amount.0)),
            in_batches: sum(&mut self
                .withdrawals
                .values()
                .filter(|w| self.withdrawal_batch.contains_key(&w.id))
                .map(|w| w.amount.0)),
            fee_pool: self.fee_pool.0 as u128,
        }
    }
}

/// Federation reserves vs liabilities, in sats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserves {
    /// Confirmed federation UTXOs free to spend.
    pub available: u128,
    /// Confirmed UTXOs spent by batches not yet confirmed.
    pub locked: u128,
    /// Change those batches pay back (newest versions).
    pub pending_change: u128,
    /// Pegged BTC in circulation.
    pub supply: u128,
    /// Peg-outs burned but not yet in a batch.
    pub queued: u128,
    /// Peg-outs in batches not yet confirmed.
    pub in_batches: u128,
    pub fee_pool: u128,
}

impl Reserves {
    /// Confirmed Bitcoin the federation holds.
    pub fn confirmed(&self) -> u128 {
        self.available + self.locked
    }

    /// What it owes: supply plus every unpaid peg-out.
    pub fn liabilities(&self) -> u128 {
        self.supply + self.queued + self.in_batches
    }

    /// True if the confirmed reserves cover every liability.
    pub fn covered(&self) -> bool {
        self.confirmed() >= self.liabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    pub(super) fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i + 1; 32])
    }
    pub(super) fn id(i: u8) -> AccountId {
        AccountId(key(i).verifying_key().to_bytes())
    }
    fn params() -> LedgerParams {
        LedgerParams {
            chain_id: Hash32::tagged("test-chain", &[]),
            network: bitcoin::Network::Regtest,
            min_tx_fee: Sats(1),
            pegout_fee: Sats(1000),
            max_block_txs: 1000,
            members: vec![member_key().verifying_key()],
            pegin_spend_vbytes: 50,
            default_fee_rate: 10,
            federation: crate::pegout::test_federation(),
            pegout: Default::default(),
            confirmations: 1,
        }
    }
    fn member_key() -> SigningKey {
        SigningKey::from_bytes(&[99; 32])
    }
    fn genesis(balances: &[(u8, u64)]) -> State {
        let mut s = State::default();
        for (i, b) in balances {
            s.accounts.insert(
                id(*i),
                Account {
                    balance: Sats(*b),
                    nonce: 0,
                },
            );
            s.supply = Sats(s.supply.0.saturating_add(*b));
        }
        s
    }
    fn transfer(from: u8, to: u8, nonce: u64, amount: u64, fee: u64) -> Transaction {
        Transaction::sign(
            params().chain_id,
            &key(from),
            nonce,
            Sats(fee),
            TxKind::Transfer {
                to: id(to),
                amount: Sats(amount),
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
                balance: Sats(695),
                nonce: 1
            }
        );
        assert_eq!(
            s.account(&id(1)),
            Account {
                balance: Sats(300),
                nonce: 0
            }
        );
        assert_eq!(s.fee_pool, Sats(5));
        assert_eq!(s.supply, Sats(995));
        assert_eq!(s.height, 1);
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
        let e =
            |tx: Transaction| check_tx(&p, 10, s.account(&tx.sender), &tx, &VerifyAll).unwrap_err();
        assert_eq!(
            e(transfer(0, 1, 0, 100, 1)),
            TxError::InsufficientBalance {
                needed: Sats(101),
                available: Sats(100)
            }
        );
        assert_eq!(e(transfer(0, 1, 0, 0, 1)), TxError::ZeroAmount);
        assert_eq!(
            e(transfer(0, 1, 0, 1, 0)),
            TxError::FeeTooLow {
                min: Sats(1),
                got: Sats(0)
            }
        );
        assert_eq!(e(transfer(0, 1, 0, u64::MAX, 1)), TxError::Overflow);
    }

    #[test]
    fn wrong_chain_is_rejected() {
        let s = genesis(&[(0, 100)]);
        let tx = Transaction::sign(
            Hash32::tagged("other-chain", &[]),
            &key(0),
            0,
            Sats(1),
            TxKind::Transfer {
                to: id(1),
                amount: Sats(1),
            },
        );
        assert!(matches!(
            check_tx(&params(), 10, s.account(&id(0)), &tx, &VerifyAll),
            Err(TxError::WrongChain { .. })
        ));
    }

    #[test]
    fn recipient_overflow_is_rejected_not_wrapped() {
        let s = genesis(&[(0, 100), (1, u64::MAX - 50)]);
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
        let ok =
            fedpeg_peg::address::parse_pegout_address(&addr, bitcoin::Network::Regtest).is_ok();
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
            Sats(1000),
            TxKind::PegOut {
                bitcoin_address: addr.clone(),
                amount: Sats(50_000),
            },
        );
        // A fee below the quote is refused, nothing burned.
        let cheap = Transaction::sign(
            params().chain_id,
            &key(0),
            0,
            Sats(999),
            TxKind::PegOut {
                bitcoin_address: addr.clone(),
                amount: Sats(50_000),
            },
        );
        assert_eq!(
            check_tx(&params(), 10, s.account(&id(0)), &cheap, &VerifyAll).unwrap_err(),
            TxError::PegOutFeeTooLow {
                quote: Sats(1000),
                got: Sats(999)
            }
        );
        let before = s.total_value();
        let b = commit_block(&mut s, &[tx]);
        assert!(b.rejected.is_empty(), "{:?}", b.rejected);
        assert_eq!(s.account(&id(0)).balance, Sats(100_000 - 50_000 - 1000));
        assert_eq!(s.withdrawals.len(), 1);
        assert_eq!(s.withdrawals[&0].bitcoin_address, addr);
        // No federation UTXOs yet: queued, not batched.
        assert!(s.batches.is_empty());
        assert_eq!(s.fee_pool, Sats(1000));
        assert_eq!(s.total_value(), before);
    }

    #[test]
    fn peg_out_to_testnet_address_is_rejected_on_regtest() {
        let s = genesis(&[(0, 100_000)]);
        let tx = Transaction::sign(
            params().chain_id,
            &key(0),
            0,
            Sats(10),
            TxKind::PegOut {
                bitcoin_address: "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx".into(),
                amount: Sats(50_000),
            },
        );
        let e = check_tx(&params(), 10, s.account(&id(0)), &tx, &VerifyAll).unwrap_err();
        assert!(matches!(e, TxError::BitcoinAddress(_)), "{e}");
    }

    #[test]
    fn deposit_registration_needs_a_member_signature_and_happens_once() {
        let mut s = genesis(&[]);
        let p = params();
        let reg = |key: &SigningKey, acct: u8| {
            FederationTx::sign(
                p.chain_id,
                0,
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
                error: FedTxError::BadSignature(0),
                ..
            })
        ));
    }

    #[test]
    fn deposit_is_minted_once_minus_spend_cost_and_only_to_registered_accounts() {
        let mut s = genesis(&[]);
        let p = params();
        let fed = |kind| FederationTx::sign(p.chain_id, 0, &member_key(), kind);
        let mint = |vout: u32, amount: u64, acct: u8| {
            fed(FedTxKind::PegInMint {
                outpoint: OutPoint {
                    txid: [7; 32],
                    vout,
                },
                amount: Sats(amount),
                account: id(acct),
                bitcoin_block: [1; 32],
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
        assert_eq!(s.account(&id(1)).balance, Sats(10_000 - 500));
        assert_eq!(s.supply, Sats(10_000 - 500));
        // The deposit's spend cost goes to the fee pool: value grows by the deposit.
        assert_eq!(s.total_value(), before + 10_000);
        assert_eq!(s.fee_pool, Sats(500));
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
        let mut p = params();
        let keys: Vec<SigningKey> = (0..3)
            .map(|i| SigningKey::from_bytes(&[200 + i; 32]))
            .collect();
        p.members = keys.iter().map(|k| k.verifying_key()).collect();
        let vote = |m: u32, rate: u64, at: u64| {
            FederationTx::sign(
                p.chain_id,
                m,
                &keys[m as usize],
                FedTxKind::FeeRateVote {
                    sat_per_vbyte: rate,
                    height: at,
                },
            )
        };
        assert_eq!(s.fee_rate(10), 10);
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
        assert_eq!(s.fee_rate(10), 7);
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
        assert_eq!(s.fee_rate(10), 5);
        // Mints deduct vbytes x the agreed rate.
        let reg = FederationTx::sign(
            p.chain_id,
            0,
            &keys[0],
            FedTxKind::RegisterDepositAddress { account: id(1) },
        );
        let mint = FederationTx::sign(
            p.chain_id,
            0,
            &keys[0],
            FedTxKind::PegInMint {
                outpoint: OutPoint {
                    txid: [5; 32],
                    vout: 0,
                },
                amount: Sats(10_000),
                account: id(1),
                bitcoin_block: [1; 32],
            },
        );
        let b = build_block(&s, &p, &[], &[reg], 1, 0, &VerifyAll);
        s.commit(&b.block.header, &b.outcome);
        let b = build_block(&s, &p, &[], &[mint], 1, 0, &VerifyAll);
        s.commit(&b.block.header, &b.outcome);
        assert_eq!(s.account(&id(1)).balance, Sats(10_000 - 50 * 5));
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
        bad.header.height = 7;
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
            prop_oneof![0u64..2000, Just(u64::MAX), Just(u64::MAX / 2)],
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
            balances in proptest::collection::vec(prop_oneof![0u64..5000, Just(u64::MAX / 8)], 5),
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
                let sum: u128 = s.accounts.values().map(|a| a.balance.0 as u128).sum();
                prop_assert_eq!(sum, s.supply.0 as u128);
                // Resync expected nonces to state (rejected txs do not advance).
                for i in 0..5u8 { nonces[i as usize] = s.account(&id(i)).nonce; }
            }
        }
    }
}

#[cfg(test)]
mod pegout_tests {
    use super::tests::{id as uid, key as user};
    use super::*;
    use crate::pegout::{test_federation, test_peg_secrets};
    use ed25519_dalek::SigningKey;
    use fedpeg_peg::bitcoin;

    fn member(i: u32) -> SigningKey {
        SigningKey::from_bytes(&[100 + i as u8; 32])
    }
    fn params() -> LedgerParams {
        LedgerParams {
            chain_id: Hash32::tagged("pegout-test", &[]),
            network: bitcoin::Network::Regtest,
            min_tx_fee: Sats(1),
            pegout_fee: Sats(1000),
            max_block_txs: 1000,
            members: (0..4).map(|i| member(i).verifying_key()).collect(),
            pegin_spend_vbytes: 132,
            default_fee_rate: 2,
            federation: test_federation(),
            pegout: Default::default(),
            confirmations: 1,
        }
    }
    fn fed(m: u32, kind: FedTxKind) -> FederationTx {
        FederationTx::sign(params().chain_id, m, &member(m), kind)
    }
    fn address(i: u8) -> String {
        bitcoin::Address::p2wpkh(
            &bitcoin::CompressedPublicKey(
                bitcoin::secp256k1::SecretKey::from_slice(&[i + 50; 32])
                    .unwrap()
                    .public_key(&bitcoin::secp256k1::Secp256k1::signing_only()),
            ),
            bitcoin::Network::Regtest,
        )
        .to_string()
    }
    fn pegout(from: u8, nonce: u64, amount: u64, fee: u64) -> Transaction {
        Transaction::sign(
            params().chain_id,
            &user(from),
            nonce,
            Sats(fee),
            TxKind::PegOut {
                bitcoin_address: address(from),
                amount: Sats(amount),
            },
        )
    }
    /// Applies a block of `txs` and `fed` (all must be valid), checks that a
    /// re-application agrees, commits, and returns the events.
    fn step(s: &mut State, txs: &[Transaction], fed: &[FederationTx], time: u64) -> Vec<Event> {
        let p = params();
        let b = build_block(s, &p, txs, fed, time, 0, &VerifyAll);
        assert!(b.rejected.is_empty(), "{:?}", b.rejected);
        assert_eq!(
            b.block.fed_txs.len(),
            fed.len(),
            "a federation tx was left out"
        );
        let again = apply_block(s, &b.block, &p, &VerifyAll).unwrap();
        assert_eq!(again.delta, b.outcome.delta);
        s.commit(&b.block.header, &b.outcome);
        // Reserves always cover supply + unpaid peg-outs, exactly accounted.
        let r = s.reserves();
        assert!(r.covered(), "{r:?}");
        assert_eq!(
            r.confirmed(),
            s.total_value(),
            "reserves = balances + fee pool + unpaid + reserved fees: {r:?}"
        );
        b.outcome.events
    }
    fn deposit(s: &mut State, acct: u8, vout: u32, amount: u64) {
        let mut f = vec![];
        if !s.registered.contains(&uid(acct)) {
            f.push(fed(
                0,
                FedTxKind::RegisterDepositAddress { account: uid(acct) },
            ));
        }
        f.push(fed(
            0,
            FedTxKind::PegInMint {
                outpoint: OutPoint {
                    txid: [acct; 32],
                    vout,
                },
                amount: Sats(amount),
                account: uid(acct),
                bitcoin_block: [1; 32],
            },
        ));
        step(s, &[], &f, 1);
    }
    fn sign(s: &State, batch: u64, m: u32) -> FederationTx {
        let b = &s.batches[&batch];
        let v = b.versions.len() - 1;
        let tx = b.unsigned_tx(&params().federation, v).unwrap();
        let sigs = params()
            .federation
            .sign_batch(&tx, &b.batch_inputs(), &test_peg_secrets()[m as usize])
            .unwrap();
        fed(
            m,
            FedTxKind::PegOutSignatures {
                batch,
                version: v as u32,
                signatures: sigs,
            },
        )
    }

    #[test]
    fn batch_forms_is_signed_bumped_and_confirmed_with_change() {
        let p = params();
        let mut s = State::default();
        deposit(&mut s, 1, 0, 1_000_000);
        deposit(&mut s, 2, 0, 300_000);
        assert_eq!(s.utxos.len(), 2);
        // Two peg-outs in one block: one batch, one input (the largest), change.
        let ev = step(
            &mut s,
            &[pegout(1, 0, 100_000, 1000), pegout(2, 0, 50_000, 1000)],
            &[],
            5,
        );
        assert!(ev.iter().any(|e| matches!(
            e,
            Event::PegOutBatch {
                stage: BatchStage::Formed,
                ..
            }
        )));
        let b = s.batches[&0].clone();
        assert_eq!(b.outputs.len(), 2);
        assert_eq!(b.inputs.len(), 1);
        assert_eq!(b.inputs[0].1.amount, Sats(1_000_000));
        let v0 = b.latest().clone();
        assert_eq!(b.input_total(), b.output_total() + v0.fee.0 + v0.change.0);
        assert_eq!(s.utxos.len(), 1, "the input is locked");
        let tx = b.unsigned_tx(&p.federation, 0).unwrap();
        assert_eq!(tx.compute_txid().to_byte_array_helper(), v0.txid);

        // Invalid signatures (member 1 signs with member 2's key) are refused.
        let mut forged = sign(&s, 0, 2);
        forged.member = 1;
        forged.signature =
            FederationTx::sign(p.chain_id, 1, &member(1), forged.kind.clone()).signature;
        let blk = build_block(&s, &p, &[], &[forged], 6, 0, &VerifyAll);
        assert!(blk.block.fed_txs.is_empty());
        // Two signatures: not yet signed; the third completes it.
        let sigs = [sign(&s, 0, 0), sign(&s, 0, 3)];
        let ev = step(&mut s, &[], &sigs, 6);
        assert!(!ev.iter().any(|e| matches!(
            e,
            Event::PegOutBatch {
                stage: BatchStage::Signed { .. },
                ..
            }
        )));
        let sigs = [sign(&s, 0, 1)];
        let ev = step(&mut s, &[], &sigs, 7);
        assert!(ev.iter().any(|e| matches!(
            e,
            Event::PegOutBatch {
                stage: BatchStage::Signed { .. },
                ..
            }
        )));
        let signed: Vec<(usize, Vec<Vec<u8>>)> = s.batches[&0]
            .latest()
            .signatures
            .iter()
            .map(|(m, v)| (*m as usize, v.clone()))
            .collect();
        let full = p
            .federation
            .assemble_batch(&tx, &s.batches[&0].batch_inputs(), &signed)
            .unwrap();
        assert_eq!(full.compute_txid(), tx.compute_txid());

        // Bump: f + 1 = 2 votes replace it at a higher rate, same inputs.
        let bump = |m| {
            fed(
                m,
                FedTxKind::PegOutBump {
                    batch: 0,
                    version: 0,
                },
            )
        };
        step(&mut s, &[], &[bump(0)], 8);
        assert_eq!(s.batches[&0].versions.len(), 1);
        let pool_before = s.fee_pool;
        let ev = step(&mut s, &[], &[bump(3)], 9);
        assert!(ev.iter().any(|e| matches!(
            e,
            Event::PegOutBatch {
                stage: BatchStage::Replaced { version: 1, .. },
                ..
            }
        )));
        let b = s.batches[&0].clone();
        let v1 = b.latest().clone();
        assert!(v1.fee_rate > v0.fee_rate);
        assert!(v1.fee.0 >= v0.fee.0 + p.federation.batch_vbytes(1, 3, 31 * 2 + 43));
        assert_eq!(s.fee_pool.0, pool_before.0 - (v1.fee.0 - v0.fee.0));
        assert_ne!(v1.txid, v0.txid);
        // Old-version signatures are now stale.
        let stale = fed(
            0,
            FedTxKind::PegOutSignatures {
                batch: 0,
                version: 0,
                signatures: vec![],
            },
        );
        assert!(build_block(&s, &p, &[], &[stale], 10, 0, &VerifyAll)
            .block
            .fed_txs
            .is_empty());

        // The ORIGINAL version confirms: state follows it and refunds the bump.
        let unknown = fed(
            0,
            FedTxKind::PegOutConfirmed {
                batch: 0,
                txid: [9; 32],
                bitcoin_block: [2; 32],
            },
        );
        assert!(build_block(&s, &p, &[], &[unknown], 10, 0, &VerifyAll)
            .block
            .fed_txs
            .is_empty());
        let pool_before = s.fee_pool;
        let ev = step(
            &mut s,
            &[],
            &[fed(
                2,
                FedTxKind::PegOutConfirmed {
                    batch: 0,
                    txid: v0.txid,
                    bitcoin_block: [2; 32],
                },
            )],
            10,
        );
        assert!(ev.iter().any(|e| matches!(
            e,
            Event::PegOutBatch {
                stage: BatchStage::Confirmed { version: 0 },
                ..
            }
        )));
        assert_eq!(s.fee_pool.0, pool_before.0 + (v1.fee.0 - v0.fee.0));
        assert!(s.batches.is_empty());
        assert!(s.withdrawals.is_empty());
        assert!(s.withdrawal_batch.is_empty());
        // Change of the confirmed version is spendable.
        assert_eq!(
            s.utxos
                .get(&OutPoint {
                    txid: v0.txid,
                    vout: 2
                })
                .map(|u| u.amount),
            Some(v0.change)
        );
        // A second confirmation of the same batch is refused.
        let again = fed(
            1,
            FedTxKind::PegOutConfirmed {
                batch: 0,
                txid: v0.txid,
                bitcoin_block: [2; 32],
            },
        );
        assert!(build_block(&s, &p, &[], &[again], 11, 0, &VerifyAll)
            .block
            .fed_txs
            .is_empty());
    }

    #[test]
    fn queue_waits_for_the_interval_and_for_funds() {
        let mut p = params();
        p.pegout.batch_interval_ms = 1000;
        let mut s = State::default();
        // A peg-out queued at block time 100 is batched only once block
        // time reaches 100 + the 1000 ms interval.
        deposit(&mut s, 1, 0, 200_000);
        let b = build_block(
            &s,
            &p,
            &[pegout(1, 0, 150_000, 1000)],
            &[],
            100,
            0,
            &VerifyAll,
        );
        s.commit(&b.block.header, &b.outcome);
        assert!(s.batches.is_empty(), "interval not over");
        let b = build_block(&s, &p, &[], &[], 1099, 0, &VerifyAll);
        s.commit(&b.block.header, &b.outcome);
        assert!(s.batches.is_empty(), "interval not over");
        let b = build_block(&s, &p, &[], &[], 1100, 0, &VerifyAll);
        s.commit(&b.block.header, &b.outcome);
        assert_eq!(s.batches.len(), 1);
        assert!(s.reserves().covered());
    }

    trait TxidBytes {
        fn to_byte_array_helper(&self) -> [u8; 32];
    }
    impl TxidBytes for bitcoin::Txid {
        fn to_byte_array_helper(&self) -> [u8; 32] {
            use bitcoin::hashes::Hash;
            self.to_byte_array()
        }
    }
}
