//! Compiles `levensloop/v1/*.proto` with protox (a protobuf compiler in Rust), so a fresh
//! clone builds without a system `protoc`; then generates the prost messages, the tonic
//! clients and servers, and serde (proto3 JSON mapping) with pbjson.

use prost::Message;
use std::path::PathBuf;

const FILES: &[&str] = &[
    "levensloop/v1/common.proto",
    "levensloop/v1/life_event.proto",
    "levensloop/v1/registration.proto",
    "levensloop/v1/saga.proto",
    "levensloop/v1/command.proto",
    "levensloop/v1/ingest.proto",
    "levensloop/v1/handler.proto",
    "levensloop/v1/operations.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=levensloop");

    // protox keeps the source info (so the .proto comments become rustdoc) and includes the
    // imported well-known types, which gRPC reflection needs to resolve every message.
    let fds = protox::compile(FILES, ["."])?;
    // Written here rather than through `file_descriptor_set_path`: prost-build only writes that
    // file when it runs protoc itself, and `compile_fds` never does.
    let descriptor_path = out_dir.join("levensloop_descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    // Well-known types come from pbjson-types (prost types with serde), not prost-types;
    // "compile well-known types" only stops prost from mapping them to prost-types itself.
    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .preserve_proto_field_names()
        .build(&[".levensloop"])?;
    Ok(())
}
