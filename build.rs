//! Generates the protobuf types from proto/xtcp2.proto and
//! proto/xtcp_flat_record_v1.proto (pure Rust: protox parses the schemas,
//! so no protoc is needed on the build machine).

const PROTOS: [&str; 2] = ["proto/xtcp2.proto", "proto/xtcp_flat_record_v1.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let present: Vec<&str> = PROTOS
        .into_iter()
        .inspect(|p| println!("cargo:rerun-if-changed={p}"))
        .filter(|p| std::path::Path::new(p).exists())
        .collect();
    if !present.is_empty() {
        let descriptors = protox::compile(&present, ["proto"])?;
        prost_build::Config::new().compile_fds(descriptors)?;
    }
    Ok(())
}
