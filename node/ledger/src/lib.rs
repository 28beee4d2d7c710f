//! fedpeg's ledger: the pure state machine of the sidechain.
//!
//! Accounts and their bech32m addresses ([`account`]), amounts
//! ([`amount::Sats`]), hashes, user transactions ([`tx`]) and federation
//! transactions ([`fedtx`]) with their signing encodings, blocks, the
//! [`State`] and the functions that check and apply transactions and blocks
//! ([`apply_block`], [`build_block`], [`check_tx`], [`check_fed_tx`]),
//! peg-out batches ([`pegout_batch`]), events, the mempool and the
//! federation-transaction pool ([`fed_pool`]), genesis
//! parameters and the state root with its canonical [`encoding`].
//!
//! Applying a block is a pure function `(state, block) -> (delta, events)`:
//! no tokio, no disk, no sockets, no clock. It does not read files (genesis
//! is parsed from bytes), talk to bitcoind or the network: the daemon crate
//! (`fedpegd`) does that and calls in here.
//!
//! Money is conserved: for every block, `Σ balances + fee_pool + Σ unpaid
//! withdrawals` changes only by mints and by batches paying peg-outs, and
//! confirmed reserves cover it exactly (see [`State::reserves`]). Arithmetic
//! is checked; an overflow rejects the transaction.

pub mod account;
pub mod amount;
mod apply;
mod batching;
pub mod block;
pub mod encoding;
pub mod epoch;
mod error;
pub mod events;
mod fed;
pub mod fed_pool;
pub mod fedtx;
pub mod genesis;
pub mod hash;
pub mod ids;
pub mod mempool;
mod overlay;
pub mod pegout_batch;
pub mod quote_grace;
mod reserves;
pub mod rollover;
mod state;
pub mod state_root;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod transfer;
pub mod tx;

pub use apply::{
    apply_block, build_block, AlreadyVerified, BlockOutcome, BuiltBlock, Delta, SignatureCheck,
    VerifyAll,
};
pub use error::{BlockError, FedTxError, TxError};
pub use events::{BatchStage, Event};
pub use fed::{check_fed_tx, check_fed_tx_unsigned};
pub use quote_grace::QuoteGrace;
pub use reserves::Reserves;
pub use state::{
    Account, LedgerParams, State, Withdrawal, MAX_BLOCK_FED_TXS, MAX_FEE_RATE, SETTLED_KEPT,
};
pub use transfer::check_tx;

#[cfg(test)]
mod tests;
