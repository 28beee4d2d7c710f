//! fedpeg node: everything `fedpegd` (the federation member / observer
//! daemon) and `fedpeg` (the CLI wallet) are made of.
//!
//! The pure core — [`ledger`] (the state transition), [`tx`], [`block`],
//! [`genesis`] — does no I/O and is tested exhaustively. The rest wires it to
//! the world: [`store`] (RocksDB), [`mempool`], [`chain`] (the interface the
//! consensus driver calls), [`network`] (libp2p), [`driver`] (the Tendermint
//! engine wired to network, timers, [`wal`] and chain; block sync),
//! [`api`] (tonic gRPC), [`feed`] (explorer streams and paged history over
//! the [`events`] stored with each block), [`federation`] (members,
//! reserves, peg-outs), [`telemetry`] and [`metrics`], [`config`], [`keys`]
//! and [`daemon`].
//! Bitcoin logic lives in `fedpeg-peg`, consensus in `fedpeg-consensus`.

pub mod account;
pub mod amount;
pub mod api;
pub mod block;
pub mod chain;
pub mod config;
pub mod daemon;
pub mod driver;
pub mod events;
pub mod federation;
pub mod fedtx;
pub mod feed;
pub mod genesis;
pub mod hash;
pub mod keys;
pub mod ledger;
pub mod mempool;
pub mod metrics;
pub mod network;
pub mod pegout;
pub mod pegout_api;
pub mod signer;
pub mod store;
pub mod telemetry;
pub mod tx;
pub mod wal;
pub mod watcher;
