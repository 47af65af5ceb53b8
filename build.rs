//! Compiles the contracts in proto/ with tonic codegen and writes the encoded
//! descriptor set (imports included) that reflection and the gateway read, plus a second set
//! with `google/rpc/error_details.proto` for reflection alone: clients such as grpcurl look the
//! `google.rpc.BadRequest` of a status up by reflection to print its field violations.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let googleapis = std::env::var_os("ORDERMESH_GOOGLEAPIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".deps/googleapis"));
    let error_details = googleapis_rpc(&root, &googleapis);
    if !googleapis.join("google/api/annotations.proto").exists() || !error_details.exists() {
        let status = std::process::Command::new("bash")
            .arg(root.join("scripts/googleapis.sh"))
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            return Err(format!(
                "google/api/annotations.proto or google/rpc/error_details.proto not found \
                 under {}: run scripts/googleapis.sh (needs python3 -m pip and PyPI) or set \
                 ORDERMESH_GOOGLEAPIS",
                googleapis.display()
            )
            .into());
        }
    }
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
        #[allow(clippy::disallowed_methods)] // protoc finds PROTOC only in the environment
        unsafe {
            std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?)
        };
    }
    let proto_dir = root.join("proto");
    let mut files = Vec::new();
    collect_protos(&proto_dir, &mut files)?;
    files.sort();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("ordermesh_descriptor.bin"))
        .compile_protos(&files, &[proto_dir.clone(), googleapis.clone()])?;
    // Descriptors only: the Rust types of google.rpc come from tonic-types, so the generated
    // code goes to a folder nothing includes.
    let rpc_dir = error_details
        .ancestors()
        .nth(3)
        .ok_or("error_details.proto has no google/rpc/ folder")?
        .to_path_buf();
    let unused = out.join("google-rpc-unused");
    std::fs::create_dir_all(&unused)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .out_dir(&unused)
        .file_descriptor_set_path(out.join("error_details_descriptor.bin"))
        .compile_protos(std::slice::from_ref(&error_details), &[rpc_dir])?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed={}", error_details.display());
    println!("cargo:rerun-if-env-changed=ORDERMESH_GOOGLEAPIS");
    Ok(())
}

/// `google/rpc/error_details.proto`: in `ORDERMESH_GOOGLEAPIS` when that holds it (a full
/// googleapis checkout does), else where scripts/googleapis.sh puts it, outside buf's modules.
fn googleapis_rpc(root: &Path, googleapis: &Path) -> PathBuf {
    let beside = googleapis.join("google/rpc/error_details.proto");
    if std::env::var_os("ORDERMESH_GOOGLEAPIS").is_some() && beside.exists() {
        return beside;
    }
    root.join(".deps/googleapis-rpc/google/rpc/error_details.proto")
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
