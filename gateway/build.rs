//! Compiles the gateway's test-only contract (tests/proto) into a tonic server for the tests
//! and a descriptor set the tests load into the gateway like any extra contract.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let googleapis = std::env::var_os("ORDERMESH_GOOGLEAPIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../.deps/googleapis"));
    if !googleapis.join("google/api/annotations.proto").exists() {
        let status = std::process::Command::new("bash")
            .arg(root.join("../scripts/googleapis.sh"))
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            return Err("google/api/annotations.proto not found: run scripts/googleapis.sh".into());
        }
    }
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
        #[allow(clippy::disallowed_methods)] // protoc finds PROTOC only in the environment
        unsafe {
            std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?)
        };
    }
    let protos = root.join("tests/proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out.join("echo_descriptor.bin"))
        .compile_protos(
            &[protos.join("ordermesh/echo/v1/echo.proto")],
            &[protos.clone(), googleapis],
        )?;
    println!("cargo:rerun-if-changed=tests/proto");
    println!("cargo:rerun-if-env-changed=ORDERMESH_GOOGLEAPIS");
    Ok(())
}
