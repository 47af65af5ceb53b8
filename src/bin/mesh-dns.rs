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

/// The records of a file's text: one `name=address:port` per line; the error names the line.
fn parse_records(text: &str) -> Result<Records, String> {
    let mut out = Records::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (name, addr) = parse_service(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        out.entry(name).or_default().push(addr);
    }
    Ok(out)
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

/// Re-reads `path` every second and applies what changed, on top of the `--service` records.
async fn follow(
    zone: MeshZone,
    path: std::path::PathBuf,
    fixed: Records,
    mut current: Records,
    applied: String,
) {
    // Compared with the text applied at start-up, so a change made meanwhile is not missed.
    let mut seen = Some(applied);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let text = std::fs::read_to_string(&path).ok();
        if text == seen {
            continue;
        }
        seen = text.clone();
        let parsed = text
            .ok_or_else(|| format!("cannot read {}", path.display()))
            .and_then(|t| parse_records(&t));
        match parsed {
            Ok(file) => {
                let mut next = fixed.clone();
                for (name, addrs) in file {
                    next.entry(name).or_default().extend(addrs);
                }
                match apply(&zone, &current, &next).await {
                    Ok(()) => current = next,
                    Err(e) => tracing::error!(error = %e, "records not applied"),
                }
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "records refused; the previous ones stay")
            }
        }
    }
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
    let mut all = fixed.clone();
    let mut applied = String::new();
    if let Some(path) = &args.records {
        applied = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("MESH_DNS_RECORDS: cannot read {}: {e}", path.display())
        })?;
        let file = parse_records(&applied)
            .map_err(|e| anyhow::anyhow!("MESH_DNS_RECORDS: {}: {e}", path.display()))?;
        for (name, addrs) in file {
            all.entry(name).or_default().extend(addrs);
        }
    }
    apply(&zone, &Records::new(), &all).await?;
    if let Some(path) = args.records.clone() {
        tokio::spawn(follow(zone.clone(), path, fixed, all, applied));
    }
    let server = zone.serve(args.listen).await?;
    tracing::info!(addr = %server.local_addr(), zone = %args.zone, "mesh DNS serving");
    tokio::select! {
        _ = ordermesh::transport::shutdown::signal() => {}
        _ = server.wait() => {}
    }
    Ok(())
}
