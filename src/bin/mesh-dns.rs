//! The local mesh's DNS: serves a zone (default `mesh.local.`) with SRV `_grpc._tcp.<service>`
//! and A records for each service, so local runs discover upstreams the way a cluster does.
//! `--records FILE` adds the `name=address:port` lines of a file, re-read every second while it
//! runs, so records can change under a running mesh (a canary appears, a zone empties).
//! `--resolve NAME` instead asks a nameserver and prints the endpoints it returns.

use std::net::SocketAddr;

use clap::Parser;
use ordermesh::transport::dns::{Lookup, MeshZone, Resolver, Target};

#[derive(Parser, Debug)]
#[command(about = "Serve the local mesh DNS zone, or resolve a service through it")]
struct Args {
    /// Address to serve DNS on (UDP and TCP).
    #[arg(long, env = "MESH_DNS_LISTEN", default_value = "127.0.0.1:5354")]
    listen: SocketAddr,
    /// Zone origin.
    #[arg(long, default_value = "mesh.local.")]
    zone: String,
    /// Record TTL in seconds.
    #[arg(long, default_value_t = 5)]
    ttl: u32,
    /// A service and its address, e.g. payment=127.0.0.1:50052 (repeatable).
    #[arg(long = "service", value_parser = parse_service)]
    services: Vec<(String, SocketAddr)>,
    /// A file of more `name=address:port` lines (`#` starts a comment), re-read every second;
    /// a bad file at start-up stops the server, a bad change is refused and logged.
    #[arg(long = "records", env = "MESH_DNS_RECORDS")]
    records: Option<std::path::PathBuf>,
    /// Resolve this name (SRV _grpc._tcp.<name>) against --nameserver and print the endpoints.
    #[arg(long)]
    resolve: Option<String>,
    /// Nameserver for --resolve (MESH_DNS, as the services read it).
    #[arg(long, env = "MESH_DNS", default_value = "127.0.0.1:5354")]
    nameserver: SocketAddr,
}

fn parse_service(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not name=address:port"))?;
    let addr = addr
        .parse()
        .map_err(|_| format!("'{addr}' is not an address:port"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("'{name}' is not a service name"));
    }
    Ok((name.to_string(), addr))
}

type Records = std::collections::BTreeMap<String, Vec<SocketAddr>>;

/// The records of a `--records` file: one `name=address:port` per line.
#[derive(Debug)]
struct RecordsFile(Records);

impl ordermesh::transport::reload::Reloadable for RecordsFile {
    const WHAT: &'static str = "DNS records";

    /// The error names the line.
    fn parse(text: &str) -> Result<Self, String> {
        let mut out = Records::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (name, addr) = parse_service(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            out.entry(name).or_default().push(addr);
        }
        Ok(Self(out))
    }
}

/// The `--service` records with a file's on top.
fn merged(fixed: &Records, file: &RecordsFile) -> Records {
    let mut all = fixed.clone();
    for (name, addrs) in &file.0 {
        all.entry(name.clone())
            .or_default()
            .extend(addrs.iter().copied());
    }
    all
}

/// Applies `next` over `current`: every name whose endpoints changed is replaced (a name gone
/// from `next` is emptied, so it answers NXDOMAIN).
async fn apply(zone: &MeshZone, current: &Records, next: &Records) -> anyhow::Result<()> {
    let names: std::collections::BTreeSet<&String> = current.keys().chain(next.keys()).collect();
    for name in names {
        let want = next.get(name).cloned().unwrap_or_default();
        if current.get(name) != Some(&want) {
            zone.set_endpoints(name, &want).await?;
            tracing::info!(service = %zone.fqdn(name), endpoints = ?want, "serving records");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(name) = args.resolve {
        let resolver = Resolver::new(Some(args.nameserver))?;
        let resolved = resolver
            .resolve(&Target {
                name,
                lookup: Lookup::Srv,
            })
            .await?;
        for e in &resolved.endpoints {
            println!("{e}");
        }
        return Ok(());
    }
    let _telemetry =
        ordermesh::telemetry::init("mesh-dns", ordermesh::telemetry::LogFormat::Pretty);
    let zone = MeshZone::new(&args.zone, args.ttl)?;
    let mut fixed = Records::new();
    for (name, addr) in args.services {
        fixed.entry(name).or_default().push(addr);
    }
    match args.records.clone() {
        None => apply(&zone, &Records::new(), &fixed).await?,
        Some(path) => {
            // Re-read every second (`transport::reload`): a bad change is refused and logged.
            let mut file = ordermesh::transport::reload::watch_file::<RecordsFile>(
                path,
                std::time::Duration::from_secs(1),
            )
            .map_err(|e| anyhow::anyhow!("MESH_DNS_RECORDS: {e}"))?;
            let mut current = merged(&fixed, &file.borrow_and_update());
            apply(&zone, &Records::new(), &current).await?;
            let zone = zone.clone();
            tokio::spawn(async move {
                while file.changed().await.is_ok() {
                    let next = merged(&fixed, &file.borrow_and_update());
                    match apply(&zone, &current, &next).await {
                        Ok(()) => current = next,
                        Err(e) => tracing::error!(error = %e, "records not applied"),
                    }
                }
            });
        }
    }
    let server = zone.serve(args.listen).await?;
    tracing::info!(addr = %server.local_addr(), zone = %args.zone, "mesh DNS serving");
    tokio::select! {
        _ = ordermesh::transport::shutdown::signal() => {}
        _ = server.wait() => {}
    }
    Ok(())
}
