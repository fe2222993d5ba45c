//! Generates the protobuf types and the gRPC services from `proto/` (pure
//! Rust: protox parses the schemas, so no protoc is needed on the build
//! machine), and writes the descriptor set that gRPC reflection serves.

use prost::Message;

const PROTOS: [&str; 3] = [
    "proto/xtcp2.proto",
    "proto/xtcp_flat_record_v1.proto",
    "proto/xtcp_config_v1.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?
        .file_descriptor_set();
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("descriptors.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The record streams send records encoded once and shared by every
        // client (src/grpc/records.rs), not prost structs built per client.
        .extern_path(
            ".xtcp_flat_record.v1.FlatRecordsResponse",
            "crate::grpc::records::EncodedRecord",
        )
        .extern_path(
            ".xtcp_flat_record.v1.PollFlatRecordsResponse",
            "crate::grpc::records::EncodedRecord",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
