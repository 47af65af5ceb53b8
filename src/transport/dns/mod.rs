//! DNS for the mesh: a resolver that turns an upstream's name into endpoints (SRV
//! `_grpc._tcp.<name>` for ports, or A/AAAA with a fixed port); with the `dev-dns` feature,
//! also the authoritative zone the local mesh (and tests) serve (`zone`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, Record};
use hickory_resolver::TokioResolver;

#[cfg(feature = "dev-dns")]
mod zone;
#[cfg(feature = "dev-dns")]
pub use zone::{DnsServer, MeshZone};

/// How an upstream's endpoints are named in DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// SRV records `_grpc._tcp.<name>`: each gives a port and a target host.
    Srv,
    /// A/AAAA records of `<name>` (a headless Service), all on this port.
    Address { port: u16 },
}

/// One upstream to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Fully qualified name, e.g. `payment.default.svc.cluster.local.` or `payment.mesh.local.`.
    pub name: String,
    pub lookup: Lookup,
}

/// The endpoints a name resolved to and until when the answer is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub endpoints: BTreeSet<SocketAddr>,
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS lookup of {name} failed: {message}")]
    Lookup { name: String, message: String },
    /// The nameserver answered that the name has no such records (NXDOMAIN or no data).
    #[error("{name} has no records")]
    NoRecords { name: String },
    #[error("DNS resolver: {0}")]
    Setup(String),
}

/// A nameserver setting: `address:port`, or `system` (`None`: the resolvers of
/// `/etc/resolv.conf`, e.g. a cluster's DNS).
pub fn parse_nameserver(value: &str) -> Result<Option<SocketAddr>, String> {
    let value = value.trim();
    if value == "system" {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        format!(
            "'{value}' is not an address:port (or 'system' for the resolvers of /etc/resolv.conf)"
        )
    })
}

/// Resolves targets against one nameserver (or the system's when none is given). Answers are
/// not cached here: the caller re-resolves when the TTL says so.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<TokioResolver>,
}

impl Resolver {
    pub fn new(nameserver: Option<SocketAddr>) -> Result<Self, DnsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match nameserver {
            Some(ns) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = ns.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = ns.port();
                let config = ResolverConfig::from_parts(
                    None,
                    vec![],
                    vec![NameServerConfig::new(ns.ip(), true, vec![udp, tcp])],
                );
                TokioResolver::builder_with_config(config, provider)
            }
            None => TokioResolver::builder(provider).map_err(|e| DnsError::Setup(e.to_string()))?,
        };
        let opts = builder.options_mut();
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        let inner = builder
            .build()
            .map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub async fn resolve(&self, target: &Target) -> Result<Resolved, DnsError> {
        let fail = |name: &str, e: &hickory_resolver::net::NetError| {
            if e.is_no_records_found() {
                DnsError::NoRecords {
                    name: name.to_string(),
                }
            } else {
                DnsError::Lookup {
                    name: name.to_string(),
                    message: e.to_string(),
                }
            }
        };
        match target.lookup {
            Lookup::Address { port } => {
                let ips = self
                    .inner
                    .lookup_ip(target.name.as_str())
                    .await
                    .map_err(|e| fail(&target.name, &e))?;
                let ttl = record_ttl(ips.as_lookup().answers());
                Ok(Resolved {
                    endpoints: ips.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
                    ttl,
                })
            }
            Lookup::Srv => {
                let srv_name = format!("_grpc._tcp.{}", target.name);
                let srv = self
                    .inner
                    .srv_lookup(srv_name.as_str())
                    .await
                    .map_err(|e| fail(&srv_name, &e))?;
                let mut ttl = record_ttl(srv.answers());
                let mut endpoints = BTreeSet::new();
                for record in srv.answers() {
                    let RData::SRV(s) = &record.data else {
                        continue;
                    };
                    let ips = match self.inner.lookup_ip(s.target.clone()).await {
                        Ok(ips) => ips,
                        // A target without addresses is skipped: only an empty answer to
                        // the SRV query itself says the name has no endpoints.
                        Err(e) if e.is_no_records_found() => {
                            tracing::warn!(target = %s.target, "SRV target has no addresses; skipped");
                            continue;
                        }
                        Err(e) => {
                            return Err(DnsError::Lookup {
                                name: s.target.to_string(),
                                message: e.to_string(),
                            })
                        }
                    };
                    ttl = ttl.min(record_ttl(ips.as_lookup().answers()));
                    endpoints.extend(ips.iter().map(|ip| SocketAddr::new(ip, s.port)));
                }
                if endpoints.is_empty() {
                    // Records, but none of their targets has an address: as good as none.
                    return Err(DnsError::NoRecords { name: srv_name });
                }
                Ok(Resolved { endpoints, ttl })
            }
        }
    }
}

/// The smallest TTL of the records in an answer (a day when there are none).
fn record_ttl(records: &[Record]) -> Duration {
    Duration::from_secs(records.iter().map(|r| r.ttl as u64).min().unwrap_or(86_400))
}
