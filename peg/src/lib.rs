//! The Bitcoin side of the fedpeg peg.
//!
//! It defines the [`federation::Federation`] (members' peg keys, threshold,
//! network), derives every address the federation controls (per-account
//! deposit addresses and the change address, see [`deposit`]) together with
//! their Bitcoin Core descriptors ([`descriptor`] checksums), estimates what
//! spending a federation output costs, and parses peg-out destinations
//! ([`address`]). Later issues add deposit verification and deterministic
//! peg-out batches. This crate does no I/O: talking to bitcoind happens
//! behind a trait implemented in the node.

pub mod address;
pub mod deposit;
pub mod descriptor;
pub mod federation;

pub use bitcoin;
