//! Writes the mesh CA and one leaf certificate per service (SPIFFE URI SAN) into a folder.
//! Existing files are kept unless --rotate is given, which re-issues the leaves from the same CA.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ordermesh::transport::tls::{ensure_dev_certs, write_leaf, CertPaths, MeshCa, SpiffeId};

#[derive(Parser)]
#[command(about = "Issue ordermesh mesh certificates")]
struct Args {
    /// Output folder: ca.pem, ca-key.pem, <service>.pem, <service>-key.pem.
    #[arg(long, default_value = "var/certs")]
    dir: PathBuf,
    #[arg(long, env = "TRUST_DOMAIN", default_value = "ordermesh.local")]
    trust_domain: String,
    #[arg(long, env = "MESH_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Re-issue the leaves of the named services even if they exist.
    #[arg(long)]
    rotate: bool,
    /// Leaf lifetime in days.
    #[arg(long, default_value_t = 90)]
    days: u64,
    /// Services (and other workloads, e.g. operator, gateway) to issue leaves for.
    #[arg(default_values_t = ["order", "payment", "inventory", "shipping", "gateway", "operator"].map(String::from))]
    services: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let names: Vec<&str> = args.services.iter().map(String::as_str).collect();
    let written = ensure_dev_certs(&args.dir, &args.trust_domain, &args.namespace, &names)?;
    for s in &written {
        println!("issued {}/{s}.pem", args.dir.display());
    }
    if args.rotate {
        let ca = MeshCa::load(
            &std::fs::read_to_string(args.dir.join("ca.pem"))?,
            &std::fs::read_to_string(args.dir.join("ca-key.pem"))?,
        )?;
        for s in names.iter().filter(|s| !written.iter().any(|w| w == *s)) {
            let id = SpiffeId::new(&args.trust_domain, &args.namespace, s);
            write_leaf(
                &CertPaths::in_dir(&args.dir, s),
                &ca.issue(&id, Duration::from_secs(args.days * 86_400))?,
            )?;
            println!("rotated {}/{s}.pem ({id})", args.dir.display());
        }
    }
    println!("mesh CA: {}/ca.pem", args.dir.display());
    Ok(())
}
