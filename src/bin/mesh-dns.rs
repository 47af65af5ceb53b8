//! The local mesh's DNS: serves a zone (default `mesh.local.`) with SRV `_grpc._tcp.<service>`
//! and A records for each service, so local runs discover upstreams the way a cluster does.
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
    let mut by_service: std::collections::BTreeMap<String, Vec<SocketAddr>> = Default::default();
    for (name, addr) in args.services {
        by_service.entry(name).or_default().push(addr);
    }
    for (name, addrs) in &by_service {
        zone.set_endpoints(name, addrs).await?;
        tracing::info!(service = %zone.fqdn(name), endpoints = ?addrs, "serving records");
    }
    let server = zone.serve(args.listen).await?;
    tracing::info!(addr = %server.local_addr(), zone = %args.zone, "mesh DNS serving");
    tokio::select! {
        _ = ordermesh::transport::shutdown::signal() => {}
        _ = server.wait() => {}
    }
    Ok(())
}
