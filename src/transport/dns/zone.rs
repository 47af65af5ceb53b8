//! An authoritative zone held in memory and served over UDP and TCP: what `make run`'s
//! `mesh-dns` and the discovery tests answer from. Records can change while it runs.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_resolver::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

use super::DnsError;

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
        // UDP and TCP on one port. With port 0 the kernel picks the UDP port, and that port
        // may be taken for TCP by someone else (tests run side by side): pick again.
        let mut tries = if addr.port() == 0 { 20 } else { 1 };
        let (udp, tcp) = loop {
            let udp = tokio::net::UdpSocket::bind(addr).await.map_err(io)?;
            let bound = udp.local_addr().map_err(io)?;
            match tokio::net::TcpListener::bind(bound).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if tries > 1 && e.kind() == std::io::ErrorKind::AddrInUse => tries -= 1,
                Err(e) => return Err(io(e)),
            }
        };
        let bound = udp.local_addr().map_err(io)?;
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&self.origin),
            vec![self.handler.clone() as Arc<dyn ZoneHandler>],
        );
        let mut server = hickory_server::Server::new(QueryLog(catalog));
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        Ok(DnsServer {
            addr: bound,
            server,
        })
    }
}

/// The zone's catalog, logging each answered query at DEBUG: every process re-resolves its
/// upstreams on the records' TTL, so at INFO the queries would be most of a quiet log.
pub struct QueryLog(Catalog);

#[async_trait::async_trait]
impl RequestHandler for QueryLog {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let answered = self
            .0
            .handle_request::<R, T>(request, response_handle)
            .await;
        for query in request.queries.queries() {
            tracing::debug!(
                src = %request.src(),
                name = %query.name(),
                qtype = %query.query_type(),
                code = %answered.response_code,
                answers = answered.counts().answers,
                "dns query"
            );
        }
        answered
    }
}

/// A running DNS server; stops when dropped or shut down.
pub struct DnsServer {
    addr: SocketAddr,
    server: hickory_server::Server<QueryLog>,
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
    use super::super::{Lookup, Resolver, Target};
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

    #[tokio::test]
    async fn queries_are_logged_at_debug_and_not_at_the_default_level() {
        use crate::telemetry::capture::capture;
        let zone = MeshZone::new("mesh.test.", 1).unwrap();
        let a: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        zone.set_endpoints("payment", &[a]).await.unwrap();
        let server = zone.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let srv = Target {
            name: zone.fqdn("payment"),
            lookup: Lookup::Srv,
        };

        // Without RUST_LOG: nothing per query.
        let (quiet, guard) = capture(crate::telemetry::DEFAULT_LOG_FILTER);
        let resolver = Resolver::new(Some(server.local_addr())).unwrap();
        resolver.resolve(&srv).await.unwrap();
        drop(guard);
        assert_eq!(quiet.text(), "", "no log line per query by default");

        // With RUST_LOG=debug: one line per query, naming it.
        let (verbose, guard) = capture("info,ordermesh=debug");
        let resolver = Resolver::new(Some(server.local_addr())).unwrap();
        resolver.resolve(&srv).await.unwrap();
        drop(guard);
        let text = verbose.text();
        assert!(
            text.contains("DEBUG")
                && text.contains("dns query")
                && text.contains("_grpc._tcp.payment.mesh.test."),
            "{text}"
        );
        server.shutdown().await;
    }
}
