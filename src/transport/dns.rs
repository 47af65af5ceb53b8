//! DNS for the mesh: a resolver that turns an upstream's name into endpoints (SRV
//! `_grpc._tcp.<name>` for ports, or A/AAAA with a fixed port), and an authoritative zone the
//! local mesh (and tests) serve, whose records can change while it runs.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_resolver::proto::rr::{LowerName, Name, RData, Record};
use hickory_resolver::TokioResolver;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

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
        let fail = |name: &str, e: &dyn std::fmt::Display| DnsError::Lookup {
            name: name.to_string(),
            message: e.to_string(),
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
                    let ips = self
                        .inner
                        .lookup_ip(s.target.clone())
                        .await
                        .map_err(|e| fail(&s.target.to_string(), &e))?;
                    ttl = ttl.min(record_ttl(ips.as_lookup().answers()));
                    endpoints.extend(ips.iter().map(|ip| SocketAddr::new(ip, s.port)));
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

/// An authoritative zone held in memory. `set_endpoints` replaces a service's records, which
/// the next query sees.
#[derive(Clone)]
pub struct MeshZone {
    origin: Name,
    ttl: u32,
    serial: Arc<AtomicU32>,
    handler: Arc<InMemoryZoneHandler<TokioRuntimeProvider>>,
}

fn name(s: &str) -> Result<Name, DnsError> {
    Name::from_ascii(s).map_err(|e| DnsError::Setup(format!("'{s}': {e}")))
}

impl MeshZone {
    /// A zone for `origin` (e.g. `mesh.local.`) whose records live `ttl_secs` seconds.
    pub fn new(origin: &str, ttl_secs: u32) -> Result<Self, DnsError> {
        let origin = name(origin)?;
        let mut handler =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            name("ns")?
                .append_domain(&origin)
                .map_err(|e| DnsError::Setup(e.to_string()))?,
            name("hostmaster")?
                .append_domain(&origin)
                .map_err(|e| DnsError::Setup(e.to_string()))?,
            1,
            60,
            60,
            3600,
            ttl_secs,
        );
        handler.upsert_mut(
            Record::from_rdata(origin.clone(), ttl_secs, RData::SOA(soa)),
            1,
        );
        Ok(Self {
            origin,
            ttl: ttl_secs,
            serial: Arc::new(AtomicU32::new(1)),
            handler: Arc::new(handler),
        })
    }

    /// The fully qualified name of `service` in this zone, e.g. `payment.mesh.local.`.
    pub fn fqdn(&self, service: &str) -> String {
        format!("{service}.{}", self.origin)
    }

    fn child(&self, label: &str) -> Result<Name, DnsError> {
        name(label)?
            .append_domain(&self.origin)
            .map_err(|e| DnsError::Setup(e.to_string()))
    }

    /// Replaces the records of `service`: A/AAAA for each distinct IP, and one SRV record
    /// `_grpc._tcp.<service>` per endpoint pointing at a per-endpoint host name.
    pub async fn set_endpoints(
        &self,
        service: &str,
        endpoints: &[SocketAddr],
    ) -> Result<(), DnsError> {
        let svc = self.child(service)?;
        let lower = LowerName::new(&svc);
        let serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
        self.handler
            .records_mut()
            .await
            .retain(|key, _| !lower.zone_of(&key.name));
        let rdata_of = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        let ips: BTreeSet<IpAddr> = endpoints.iter().map(|e| e.ip()).collect();
        for ip in ips {
            self.handler
                .upsert(
                    Record::from_rdata(svc.clone(), self.ttl, rdata_of(ip)),
                    serial,
                )
                .await;
        }
        let srv_name = self.child(&format!("_grpc._tcp.{service}"))?;
        for ep in endpoints {
            let host_label = format!(
                "ep-{}-{}.{service}",
                ep.ip().to_string().replace(['.', ':'], "-"),
                ep.port()
            );
            let host = self.child(&host_label)?;
            self.handler
                .upsert(
                    Record::from_rdata(host.clone(), self.ttl, rdata_of(ep.ip())),
                    serial,
                )
                .await;
            self.handler
                .upsert(
                    Record::from_rdata(
                        srv_name.clone(),
                        self.ttl,
                        RData::SRV(SRV::new(0, 1, ep.port(), host)),
                    ),
                    serial,
                )
                .await;
        }
        Ok(())
    }

    /// Serves the zone over UDP and TCP on `addr` (port 0 picks one) until dropped.
    pub async fn serve(&self, addr: SocketAddr) -> Result<DnsServer, DnsError> {
        let io = |e: std::io::Error| DnsError::Setup(format!("binding {addr}: {e}"));
        let udp = tokio::net::UdpSocket::bind(addr).await.map_err(io)?;
        let bound = udp.local_addr().map_err(io)?;
        let tcp = tokio::net::TcpListener::bind(bound).await.map_err(io)?;
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&self.origin),
            vec![self.handler.clone() as Arc<dyn ZoneHandler>],
        );
        let mut server = hickory_server::Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        Ok(DnsServer {
            addr: bound,
            server,
        })
    }
}

/// A running DNS server; stops when dropped or shut down.
pub struct DnsServer {
    addr: SocketAddr,
    server: hickory_server::Server<Catalog>,
}

impl DnsServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn shutdown(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }

    /// Runs until the server stops.
    pub async fn wait(mut self) {
        let _ = self.server.block_until_done().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_change_while_the_zone_is_served() {
        let zone = MeshZone::new("mesh.test.", 1).unwrap();
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:7002".parse().unwrap();
        zone.set_endpoints("payment", &[a, b]).await.unwrap();
        let server = zone.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let resolver = Resolver::new(Some(server.local_addr())).unwrap();
        let srv = Target {
            name: zone.fqdn("payment"),
            lookup: Lookup::Srv,
        };
        let got = resolver.resolve(&srv).await.unwrap();
        assert_eq!(got.endpoints, BTreeSet::from([a, b]));
        assert!(got.ttl <= Duration::from_secs(1));
        let plain = Target {
            name: zone.fqdn("payment"),
            lookup: Lookup::Address { port: 9000 },
        };
        let got = resolver.resolve(&plain).await.unwrap();
        assert_eq!(
            got.endpoints,
            BTreeSet::from([
                "127.0.0.1:9000".parse().unwrap(),
                "127.0.0.2:9000".parse().unwrap()
            ])
        );

        zone.set_endpoints("payment", &[b]).await.unwrap();
        let got = resolver.resolve(&srv).await.unwrap();
        assert_eq!(got.endpoints, BTreeSet::from([b]));
        let missing = Target {
            name: zone.fqdn("nothing"),
            lookup: Lookup::Srv,
        };
        assert!(resolver.resolve(&missing).await.is_err());
        server.shutdown().await;
    }
}
