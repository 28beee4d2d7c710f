//! fedpegd: the federation member / observer daemon.
//!
//! It wires the pure ledger (`fedpeg-ledger`), the consensus engine
//! (`fedpeg-consensus`) and the peg (`fedpeg-peg`) to the world:
//! [`store`] (RocksDB), [`chain`] (the interface the consensus driver
//! calls), [`network`] (libp2p), [`driver`] (the Tendermint engine wired to
//! network, timers, [`wal`] and chain; block sync), [`sync_server`]
//! (serving block sync off the consensus task), [`watcher`] and
//! [`signer`] (bitcoind; [`block_notify`]: its ZMQ block notifications), [`api`] (tonic gRPC), [`backup`] (backups of a
//! running node and offline restore), [`feed`] (explorer streams
//! and paged history over the events stored with each block),
//! [`federation`] (members, reserves, peg-outs), [`web`] (the web app and
//! its read-only JSON + SSE API, over the same handlers), [`telemetry`] and
//! [`metrics`], [`config`] and [`daemon`]; [`halt`] (stopping at a halt
//! height for a coordinated upgrade) and [`build_info`] (this build's version).
//!
//! It holds no ledger rules of its own: what a block or a transaction does is
//! decided in `fedpeg-ledger`, so it can be tested without any of this.

pub mod api;
pub mod backup;
pub mod block_notify;
pub mod build_info;
#[cfg(test)]
mod byzantine_tests;
pub mod chain;
pub mod config;
pub mod daemon;
pub mod driver;
pub mod faults;
pub mod federation;
pub mod feed;
pub mod halt;
pub mod metrics;
pub mod network;
#[cfg(test)]
mod peg_testing;
pub mod pegout_api;
pub mod registration;
pub mod signer;
pub mod store;
pub mod submit_batcher;
pub mod sync_server;
pub mod telemetry;
pub mod wal;
pub mod watcher;
pub mod web;
