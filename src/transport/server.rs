//! The one way to serve a service: gRPC health (NOT_SERVING while its readiness check fails,
//! e.g. the database is unreachable, or the server drains), reflection v1 and v1alpha,
//! request logs, and a graceful drain on shutdown that is bounded by the configured grace
//! period. Optionally the same health service
//! on a second, plaintext port for probes that cannot do mTLS (the kubelet's gRPC probes).

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::transport::authz::AuthorizeLayer;
use crate::transport::shutdown::Drain;
use crate::transport::tls::Transport;

/// The health service name that stays SERVING for as long as the process serves, whatever the
/// database does: a liveness probe asks for it, so an unreachable database makes pods unready
/// (`""`) but does not get them restarted.
pub const LIVENESS: &str = "liveness";

/// What a server needs to know about its process (built from the service configuration).
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Short service name, for logs.
    pub service: &'static str,
    pub transport: Transport,
    /// How long a drain waits for calls in flight.
    pub grace: Duration,
    /// Most calls served at once before new ones are shed.
    pub max_in_flight: usize,
    /// Plaintext health-only listener, when configured.
    pub health_addr: Option<std::net::SocketAddr>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Fault injection, off unless configured.
    pub faults: crate::transport::faults::FaultSettings,
}

/// Binds a listener for the setting `setting` (e.g. `LISTEN_ADDR`) at `addr`; a failure names
/// both, e.g. `LISTEN_ADDR 127.0.0.1:50051: address already in use`, so the operator knows
/// which setting to change.
pub async fn bind(setting: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::AddrInUse => "address already in use".to_string(),
            std::io::ErrorKind::AddrNotAvailable => {
                "address not available on this host".to_string()
            }
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        anyhow::anyhow!("{setting} {addr}: {reason}")
    })
}

/// Whether the process can do its work right now (e.g. its database answers a ping): health
/// reports NOT_SERVING while it says no.
pub type Readiness = std::sync::Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// A service's routes plus what every ordermesh server adds around them.
pub struct MeshServer {
    service: &'static str,
    transport: Transport,
    grpc_names: Vec<&'static str>,
    routes: Routes,
    readiness: Option<Readiness>,
    /// Extra health names with their own checks (parts of a service that can be unwell while
    /// it serves, e.g. a read model stopped at an event); they do not change its readiness.
    details: Vec<(String, Readiness)>,
    grace: Duration,
    drain: Drain,
    health_interval: Duration,
    shed: crate::transport::shed::LoadShedLayer,
    faults: crate::transport::faults::FaultSettings,
    health_addr: Option<std::net::SocketAddr>,
    health_listener: Option<TcpListener>,
    metrics_addr: Option<std::net::SocketAddr>,
    metrics_listener: Option<TcpListener>,
}

impl MeshServer {
    /// `grpc_names` are the fully qualified gRPC service names health reports on.
    pub fn new(settings: ServerSettings, routes: Routes, grpc_names: &[&'static str]) -> Self {
        Self {
            service: settings.service,
            transport: settings.transport,
            grpc_names: grpc_names.to_vec(),
            routes,
            readiness: None,
            details: Vec::new(),
            grace: settings.grace,
            drain: Drain::new(),
            health_interval: Duration::from_secs(1),
            shed: crate::transport::shed::LoadShedLayer::new(settings.max_in_flight),
            health_addr: settings.health_addr,
            health_listener: None,
            metrics_addr: settings.metrics_addr,
            metrics_listener: None,
            faults: settings.faults,
        }
    }

    /// Serves the plaintext health-only port on this listener (instead of binding the
    /// configured `HEALTH_LISTEN_ADDR`).
    pub fn health_listener(mut self, listener: TcpListener) -> Self {
        self.health_listener = Some(listener);
        self
    }

    /// Serves Prometheus `/metrics` on this listener (instead of binding the configured
    /// `METRICS_ADDR`).
    pub fn metrics_listener(mut self, listener: TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// Health follows this check (asked at start, then once per health interval bounded by a
    /// timeout): NOT_SERVING while it fails.
    pub fn readiness(mut self, ready: Readiness) -> Self {
        self.readiness = Some(ready);
        self
    }

    /// Reports `check` under the health name `name` (SERVING or NOT_SERVING, polled with
    /// readiness), without changing the service's own status.
    pub fn health_detail(mut self, name: impl Into<String>, check: Readiness) -> Self {
        self.details.push((name.into(), check));
        self
    }

    /// Streams that watch this drain end when the server starts shutting down.
    pub fn drain(mut self, drain: Drain) -> Self {
        self.drain = drain;
        self
    }

    pub fn health_interval(mut self, every: Duration) -> Self {
        self.health_interval = every;
        self
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting, reports
    /// NOT_SERVING, ends watched streams and waits up to the grace period for calls in flight.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        let metrics_task = match (self.metrics_listener, self.metrics_addr) {
            (Some(l), _) => {
                tracing::info!(addr = %l.local_addr()?, "serving Prometheus metrics on /metrics");
                Some(tokio::spawn(crate::telemetry::metrics::serve(l)))
            }
            (None, Some(a)) => {
                let l = bind("METRICS_ADDR", a).await?;
                tracing::info!(addr = %l.local_addr()?, "serving Prometheus metrics on /metrics");
                Some(tokio::spawn(crate::telemetry::metrics::serve(l)))
            }
            (None, None) => None,
        };
        let (reporter, health) = tonic_health::server::health_reporter();
        let mut names: Vec<&str> = vec![""];
        names.extend(self.grpc_names.iter().copied());
        let initial = match &self.readiness {
            Some(ready) if !ready().await => ServingStatus::NotServing,
            _ => ServingStatus::Serving,
        };
        for n in &names {
            reporter.set_service_status(*n, initial).await;
        }
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        if !self.details.is_empty() {
            let reporter = reporter.clone();
            let details = std::mem::take(&mut self.details);
            let drain = self.drain.clone();
            let every = self.health_interval;
            tokio::spawn(async move {
                loop {
                    for (name, check) in &details {
                        let status = if check().await {
                            ServingStatus::Serving
                        } else {
                            ServingStatus::NotServing
                        };
                        reporter.set_service_status(name, status).await;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = drain.draining() => return,
                    }
                }
            });
        }
        if let Some(ready) = self.readiness.clone() {
            let reporter = reporter.clone();
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let drain = self.drain.clone();
            let every = self.health_interval;
            tokio::spawn(async move {
                let mut last = initial;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = drain.draining() => return,
                    }
                    let ok = matches!(
                        tokio::time::timeout(every.max(Duration::from_secs(2)), ready()).await,
                        Ok(true)
                    );
                    let now = if ok {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    if now != last && !drain.is_draining() {
                        if ok {
                            tracing::info!("ready again: SERVING");
                        } else {
                            tracing::warn!("not ready (database unreachable?): NOT_SERVING");
                        }
                        for n in &names {
                            reporter.set_service_status(n, now).await;
                        }
                        last = now;
                    }
                }
            });
        }

        // Reflection advertises what this server serves, not every contract in the descriptor set;
        // it also knows the google.rpc error details, so a client can decode a status's details.
        let reflection = || {
            let mut b = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(crate::proto::ERROR_DETAILS_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health");
            for name in &self.grpc_names {
                b = b.with_service_name(*name);
            }
            b
        };
        let health_only = match (self.health_listener, self.health_addr) {
            (Some(l), _) => Some(l),
            (None, Some(addr)) => Some(bind("HEALTH_LISTEN_ADDR", addr).await?),
            (None, None) => None,
        };
        // Only grpc.health.v1, without TLS: it tells whether the process serves, nothing more.
        let health_task = match health_only {
            Some(l) => {
                tracing::info!(addr = %l.local_addr()?, "serving plaintext grpc.health.v1 for probes");
                let server = tonic::transport::Server::builder()
                    .add_service(health.clone())
                    .serve_with_incoming(TcpListenerStream::new(l));
                Some(tokio::spawn(server))
            }
            None => None,
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let routes = self
            .routes
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let drain = self.drain.clone();
        let signal_names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let signal = async move {
            shutdown.await;
            drain.start();
            for n in &signal_names {
                reporter
                    .set_service_status(n, ServingStatus::NotServing)
                    .await;
            }
            tracing::info!("draining in-flight calls");
        };
        let (policy, identity) = match &self.transport {
            Transport::Plaintext => {
                tracing::warn!(service = self.service, %addr, "serving PLAINTEXT gRPC without caller authentication");
                (None, None)
            }
            Transport::MutualTls(tls) => {
                let identity = crate::transport::tls::MeshIdentity::load(tls.paths.clone())
                    .map_err(|e| anyhow::anyhow!("mesh certificate: {e}"))?;
                tracing::info!(service = self.service, %addr, identity = %identity.id(), "serving gRPC over mTLS");
                (Some(tls.policy.clone()), Some((identity, tls.reload_every)))
            }
        };
        let faults = self
            .faults
            .start()
            .map_err(|e| anyhow::anyhow!("FAULTS_FILE: {e}"))?;
        if faults.enabled() {
            tracing::warn!(service = self.service, file = ?self.faults.file, "fault injection is ON: calls may be delayed or failed on purpose");
        }
        // The RPC span and RED metrics outermost, so they see every answer, refusals included.
        // The request log has a line per answered call at DEBUG (`RUST_LOG=info,tower_http=debug`)
        // and one per failed call at ERROR: at INFO, one JSON line for every call cost a quarter
        // of a hop's calls/s (hop-bench), and the spans and RED metrics already count them.
        let router = tonic::transport::Server::builder()
            .layer(crate::telemetry::rpc::ServerLayer::default())
            .layer(
                tower_http::trace::TraceLayer::new_for_grpc()
                    .on_request(())
                    .on_response(
                        tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG),
                    ),
            )
            .layer(self.shed.clone())
            .layer(AuthorizeLayer::new(policy))
            .layer(crate::transport::deadline::ServerDeadlineLayer)
            // Inside the deadline: an injected delay longer than it ends in DEADLINE_EXCEEDED.
            .layer(crate::transport::faults::ServerFaultLayer::new(
                self.service,
                faults,
            ))
            .add_routes(routes);
        let mut watcher = None;
        let server: std::pin::Pin<
            Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
        > = match identity {
            None => {
                // As on the TLS path: small answers go out at once, not after a delayed ACK.
                let incoming =
                    tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |c| {
                        c.inspect(|tcp| {
                            let _ = tcp.set_nodelay(true);
                        })
                    });
                Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
            }
            Some((identity, every)) => {
                watcher = Some(identity.watch(every));
                let incoming = crate::transport::tls::tls_incoming(
                    listener,
                    identity,
                    Duration::from_secs(10),
                );
                Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
            }
        };
        let grace = self.grace;
        let drain = self.drain.clone();
        tokio::select! {
            r = server => {
                r?;
                tracing::info!("drained, stopped");
            }
            _ = async { drain.draining().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "grace period over, closing remaining calls");
            }
        }
        if let Some(w) = watcher {
            w.abort();
        }
        if let Some(t) = health_task {
            t.abort();
        }
        if let Some(t) = metrics_task {
            t.abort();
        }
        Ok(())
    }
}
