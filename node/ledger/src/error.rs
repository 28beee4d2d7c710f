//! Why a transaction, a federation transaction or a block was refused.

use crate::amount::Sats;
use crate::fedtx::OutPoint;
use crate::hash::Hash32;
use crate::ids::{BatchId, FeeRate, MemberIndex};
use crate::tx::TxId;
use fedpeg_consensus::Height;

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
    #[error("peg-out fee {got} is below the current quote of {quote} (a quote stays good for fees.quote_validity_ms after the agreed rate rises, then expires); ask EstimatePegOutFee again and sign with that fee")]
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
    #[error("federation transaction is not signed by member {0} of the epoch in force")]
    BadSignature(MemberIndex),
    #[error("federation transaction names member {member}, but epoch {epoch} in force at this height has {members} members")]
    NotAMember {
        member: MemberIndex,
        epoch: u32,
        members: usize,
    },
    #[error("member {member} holds no peg key of epoch {epoch}'s descriptor, so it cannot sign this batch (its inputs pay that epoch's descriptor); members holding one of its keys sign it")]
    NoPegKey { member: MemberIndex, epoch: u32 },
    #[error("a mint for epoch {epoch} is refused at height {height}: deposits are credited to the epoch in force ({current}), or to the one before it during its deposit grace (DEPOSIT_GRACE_BLOCKS after the activation) while no later change is adopted")]
    MintEpoch {
        epoch: u32,
        current: u32,
        height: Height,
    },
    #[error("epoch {0} has no peg descriptor in this state")]
    NoEpochDescriptor(u32),
    #[error("a change is already adopted; wait until it activates at {activation}")]
    ChangePending { activation: Height },
    #[error("activation height {activation} is out of range: a vote in block {height} must name an activation between {min} and {max} (MIN_ACTIVATION_LEAD..=MAX_ACTIVATION_LEAD blocks later); vote again with one in range")]
    ActivationLead {
        activation: Height,
        height: Height,
        min: Height,
        max: Height,
    },
    #[error("federation change refused: {0}")]
    BadFederationChange(String),
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
    #[error("fee rate {rate} sat/vB is outside the genesis bounds {min}..={max} (fees.min_fee_rate_sat_vb, fees.max_fee_rate_sat_vb)")]
    BadFeeRate {
        rate: FeeRate,
        min: FeeRate,
        max: FeeRate,
    },
    #[error("fee-rate vote is not newer than the member's last vote, or is for a future height")]
    StaleVote,
    #[error("no unconfirmed peg-out batch {0}")]
    UnknownBatch(BatchId),
    #[error("batch {batch} version {version} is not its newest version")]
    StaleVersion { batch: BatchId, version: u32 },
    #[error("member {0} already did this for this batch version")]
    Duplicate(MemberIndex),
    #[error("peg-out signatures refused: {0}")]
    BadPegOutSignatures(String),
    #[error("transaction {0} is not a version of this batch")]
    NotABatchVersion(String),
    #[error("batch {0} is already confirmed with this version")]
    AlreadyConfirmed(BatchId),
    #[error("batch {spender} spent the change of a version of batch {batch} that Bitcoin no longer shows and cannot be rebuilt on the real change (an operator must look: deep-reorg alert)")]
    CannotRebuild { batch: BatchId, spender: BatchId },
    #[error("batch {batch} cannot follow another version: its change {change} was spent by batch {by}, which is confirmed too (an operator must look: deep-reorg alert)")]
    ChangeSpentByConfirmedBatch {
        batch: BatchId,
        change: String,
        by: BatchId,
    },
}

/// Why a block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block is for chain {got}, expected {expected}")]
    WrongChain { expected: Hash32, got: Hash32 },
    #[error("block height {got}, expected {expected}")]
    WrongHeight { expected: Height, got: Height },
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
