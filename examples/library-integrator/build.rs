//! Generates the gRPC client for Levensloop's public contract from the `.proto` files.
//!
//! protox is a protobuf compiler written in Rust, so building needs no system `protoc`.
//! Only the client is generated: an integrator calls Levensloop, it never serves it.
//! Well-known types (`Struct`, `Duration`, `Timestamp`) map to `prost-types`, the default.

use std::path::PathBuf;

/// The contract files the client needs; their imports (`google/protobuf/*.proto`) are
/// built into protox.
const FILES: &[&str] = &[
    "levensloop/v1/common.proto",
    "levensloop/v1/life_event.proto",
    "levensloop/v1/registration.proto",
    "levensloop/v1/saga.proto",
    "levensloop/v1/handler.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Relative to this crate, not the current directory, so `cargo build` works from anywhere.
    // When copying this example out of the repository, point this at your copy of the protos.
    let protos = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", protos.display());

    let fds = protox::compile(FILES, [&protos])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
