//! The Bitcoin side of the fedpeg peg.
//!
//! It defines the [`federation::Federation`] (members' peg keys, threshold,
//! network), derives every address the federation controls (per-account
//! deposit addresses and the change address, see [`deposit`]) together with
//! their Bitcoin Core descriptors ([`descriptor`] checksums), estimates what
//! spending a federation output costs, and parses peg-out destinations
//! ([`address`]). [`chain`] says what the peg needs from a Bitcoin node (the
//! [`chain::BitcoinChain`] trait), finds deposits in blocks, and implements
//! the trait over bitcoind's JSON-RPC; that implementation is the crate's
//! only I/O, everything else is pure. With the `testkit` feature,
//! [`testkit`] runs a throw-away `bitcoind -regtest` for tests and offers
//! `MemoryChain`, an in-memory `BitcoinChain` for unit tests.
//! [`pegout`] builds, sizes, signs, verifies and assembles peg-out batch
//! transactions. [`recovery`] builds, signs and finalizes the emergency
//! sweep with the genesis backup keys, for when the federation is gone.
//! Every script is one miniscript descriptor ([`descriptor`]).

pub mod address;
pub mod chain;
pub mod deposit;
pub mod descriptor;
pub mod federation;
pub mod pegout;
pub mod recovery;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use bitcoin;
