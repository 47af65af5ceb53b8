//! Compiles the contracts in proto/ with tonic codegen and writes the encoded
//! descriptor set (imports included) that reflection and the gateway read.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let googleapis = std::env::var_os("ORDERMESH_GOOGLEAPIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".deps/googleapis"));
    if !googleapis.join("google/api/annotations.proto").exists() {
        let status = std::process::Command::new("bash")
            .arg(root.join("scripts/googleapis.sh"))
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            return Err(format!(
                "google/api/annotations.proto not found under {}: run scripts/googleapis.sh \
                 (needs python3 -m pip and PyPI) or set ORDERMESH_GOOGLEAPIS",
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
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=ORDERMESH_GOOGLEAPIS");
    Ok(())
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
