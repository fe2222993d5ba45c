//! Generates the protobuf types from proto/xtcp2.proto (pure Rust: protox
//! parses the schema, so no protoc is needed on the build machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/xtcp2.proto");
    if std::path::Path::new("proto/xtcp2.proto").exists() {
        let descriptors = protox::compile(["proto/xtcp2.proto"], ["proto"])?;
        prost_build::Config::new().compile_fds(descriptors)?;
    }
    Ok(())
}
