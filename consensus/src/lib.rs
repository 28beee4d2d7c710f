//! Tendermint BFT consensus for the fedpeg federation, as a sans-IO state machine.
//!
//! This crate is for deciding, height after height, one value id (a block hash)
//! among a fixed [`ValidatorSet`] of n = 3f+1 members, safely with up to f
//! Byzantine members and live once the network heals. The node feeds an
//! [`Engine`] [`Input`]s (messages, fired timers, application answers) and
//! carries out the returned [`Output`]s (persist to the WAL, broadcast,
//! schedule a timer, ask for / validate a value, commit a decision). It also
//! defines the signed message formats and their wire encoding, commit
//! certificates that followers verify, equivocation evidence, and the vote
//! floor of a member restored from a backup ([`rejoin`]).
//!
//! It is not a node: it owns no clock, socket, thread or disk, never sees block
//! bytes, and does not do block sync, peer scoring or validator-set changes.
//! Those belong to `fedpegd`. With the `sim` feature it also contains a
//! deterministic fault-injecting simulator (module `sim`) used by its tests.
//!
//! # Driving the engine
//!
//! 1. `Engine::new` (or [`Engine::restore`] with the WAL entries of the current
//!    height after a restart), then `handle(Input::StartHeight(h))`.
//! 2. For each output, in order: [`Output::Persist`] must be durable before any
//!    later output of the same call leaves the node (write-ahead: a vote is
//!    never sent unless it survives a crash); [`Output::Broadcast`] sends to all
//!    members; [`Output::ScheduleTimeout`] calls back with
//!    [`Input::TimeoutElapsed`]; [`Output::RequestValue`] and
//!    [`Output::Validate`] are answered with [`Input::ProposeValue`] and
//!    [`Input::ValidationResult`]; [`Output::Decide`] is final: store the block
//!    and certificate, prune the WAL, then send `StartHeight(h + 1)`.
//! 3. When a peer sends messages for a height this node already decided, the
//!    peer is lagging: send it the stored [`CommitCertificate`]; it feeds it to
//!    its engine as [`Input::Certificate`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod certificate;
mod engine;
mod evidence;
mod message;
pub mod rejoin;
pub mod signature_rule;
mod types;
mod validator;
mod votes;

#[cfg(feature = "sim")]
pub mod sim;

pub use certificate::{CertError, CommitCertificate};
#[cfg(feature = "sim")]
#[doc(hidden)]
pub use engine::Mutant;
pub use engine::{
    Engine, EngineConfig, EngineError, Input, Output, TimeoutParams, Timeouts, WalEntry,
    MAX_BUFFERED_PER_SIGNER, MAX_ROUNDS_AHEAD,
};
pub use evidence::{Equivocation, EvidenceError};
pub use message::{
    DecodeError, Message, MessageError, SignedProposal, SignedVote, Verified, DOMAIN,
    PROPOSAL_WIRE_LEN, SIGN_BYTES_LEN, VOTE_WIRE_LEN,
};
pub use rejoin::{Rejoin, TipReport, Verdict};
pub use types::{ChainId, Height, Round, Step, TimeoutKind, ValidatorIndex, ValueId, VoteKind};
pub use validator::{Validator, ValidatorSet, ValidatorSetError, MAX_VALIDATORS};
pub use votes::MAX_VOTES_PER_SLOT;

/// Re-export of the ed25519 key types used in the API.
pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
