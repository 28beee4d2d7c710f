//! Protobuf definitions of fedpeg (package `fedpeg.v1`): the public gRPC API
//! (wallet, explorer and node services) and the messages members exchange
//! and store (transactions, blocks, consensus envelopes, block sync).
//!
//! This crate is generated code plus the encoded file descriptor set for
//! server reflection. It holds no validation logic: decoding a message here
//! says nothing about whether it is valid; `fedpeg-ledger` and `fedpegd`
//! check that. Without the default `grpc` feature it is prost messages
//! only (no tonic): that is how the ledger crate uses it. The `json` feature
//! adds `serde::Serialize` in the proto3 JSON shape (the web app's API).

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// Generated types and services of package `fedpeg.v1`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/fedpeg.v1.rs"));
}

/// Encoded `FileDescriptorSet` of all fedpeg protos (for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fedpeg_descriptor.bin"));

pub use v1::*;

#[cfg(feature = "json")]
pub mod json;
