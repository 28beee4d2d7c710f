//! Compiles the .proto files with protox (pure Rust; no system `protoc`) and
//! generates prost messages, plus tonic clients/servers with the `grpc`
//! feature. The encoded file
//! descriptor set is written to OUT_DIR for gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["fedpeg/v1/types.proto", "fedpeg/v1/api.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("fedpeg_descriptor.bin"), fds.encode_to_vec())?;
    // Service code (tonic clients and servers) only with the `grpc` feature:
    // the ledger crate uses the messages alone and must not link tonic.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .compile_fds(fds)?;
    Ok(())
}
