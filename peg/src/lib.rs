//! The Bitcoin side of the fedpeg peg.
//!
//! Today: parsing and checking peg-out destination addresses against the
//! federation's Bitcoin network. Later issues add the federation descriptor,
//! per-account deposit addresses, deposit verification and deterministic
//! peg-out batches. This crate does no I/O: talking to bitcoind happens
//! behind a trait implemented in the node.

pub mod address;

pub use bitcoin;
