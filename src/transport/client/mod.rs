//! The one way to call another service. Every outbound call goes through here, so transport
//! concerns live in one place:
//!
//! - **mTLS** with this process's mesh identity, verifying the upstream's service identity;
//! - **discovery**: a fixed address, or DNS (SRV `_grpc._tcp.<name>` or A/AAAA) re-resolved on
//!   the records' TTL (bounded), feeding the balancer `Change::Insert/Remove`; a failed
//!   resolution keeps the last good set;
//! - **balancing**: power-of-two-choices over peak-EWMA latency (default) or over pending
//!   requests (least-requests), or round robin, with per-endpoint outlier ejection (`eject`);
//! - **retries** of calls that are safe to repeat, within a retry budget (`retry`), and a
//!   **circuit breaker** per upstream that fails fast while the upstream is failing (`breaker`);
//! - **deadlines**: the sooner of the upstream's default and what is left of the deadline of
//!   the call being handled (`crate::transport::deadline`);
//! - **traffic management** when the upstream has a traffic policy (`policy`): a weighted
//!   split over several backends (`split`), and per backend a router (`router`) that keeps
//!   calls in the caller's zone, hashes a request key onto a ring (`ring`) and ramps new
//!   endpoints in (slow start).
//!
//! `Upstream::stack()` builds all of it as one cloneable tower service that generated tonic
//! clients take: `PaymentServiceClient::new(upstream.stack()?)`.

pub mod breaker;
mod discovery;
pub mod eject;
pub mod policy;
pub mod retry;
pub mod ring;
pub mod round_robin;
pub mod router;
pub mod shared;
pub mod split;

use std::convert::Infallible;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

use crate::transport::deadline::ClientDeadlineLayer;
use crate::transport::dns::{Resolver, Target};
use crate::transport::tls::MeshIdentity;
pub use breaker::{BreakerHandle, BreakerPolicy, BreakerState};
use discovery::DnsWatcher;
pub use eject::EjectionPolicy;
pub use policy::{PolicyHandle, RoutePolicy, TrafficPolicy};
pub use retry::RetryPolicy;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A channel through the whole client stack; generated tonic clients accept it.
pub type MeshChannel = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, CallError>;

/// Why a call could not be made (no connection, no endpoint, a balancer failure). tonic turns
/// it into a `Status` by looking through `source()`: a refused connection is UNAVAILABLE.
#[derive(Debug)]
pub struct CallError(BoxError);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// How the channel secures its connections.
#[derive(Clone, Debug)]
pub enum Security {
    /// Plaintext HTTP/2: tests and explicit development setups only.
    Plaintext,
    /// mTLS presenting `identity`; the server must prove it is `service`.
    Mesh {
        identity: Arc<MeshIdentity>,
        service: String,
    },
}

/// Which endpoint of an upstream gets the next call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balancer {
    /// Power of two random choices, the one with the lower peak-EWMA latency (default).
    #[default]
    PeakEwma,
    /// Power of two random choices, the one with fewer calls in flight.
    LeastRequests,
    /// Each ready endpoint in turn.
    RoundRobin,
}

impl std::str::FromStr for Balancer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "peak-ewma" | "p2c" => Ok(Self::PeakEwma),
            "least-requests" => Ok(Self::LeastRequests),
            "round-robin" => Ok(Self::RoundRobin),
            other => Err(format!(
                "unknown balancer '{other}' (use peak-ewma, least-requests or round-robin)"
            )),
        }
    }
}

/// Where an upstream's endpoints come from.
#[derive(Clone)]
pub enum Endpoints {
    /// One fixed URI, `http://host:port`.
    Fixed(String),
    /// Names resolved through DNS and followed as they change.
    Dns {
        resolver: Resolver,
        target: Target,
        /// Bounds on how often the name is re-resolved, whatever the records' TTL says.
        min_refresh: Duration,
        max_refresh: Duration,
    },
}

/// Settings for one upstream service.
#[derive(Clone)]
pub struct Upstream {
    /// Name used in errors and logs, e.g. `payment`.
    pub name: String,
    pub endpoints: Endpoints,
    pub connect_timeout: Duration,
    /// Deadline for calls that carry none of their own.
    pub default_timeout: Duration,
    pub security: Security,
    pub balancer: Balancer,
    pub ejection: EjectionPolicy,
    /// `None` sends every call once.
    pub retry: Option<RetryPolicy>,
    /// `None` never opens.
    pub breaker: Option<BreakerPolicy>,
    /// The traffic policy that steers this upstream's calls, when it is found through DNS.
    pub routing: Option<Routing>,
}

/// Where an upstream's traffic policy comes from, and the caller's own zone.
#[derive(Clone, Debug)]
pub struct Routing {
    pub policy: PolicyHandle,
    /// The caller's zone (`TOPOLOGY_ZONE`); without it, zones are followed but not preferred.
    pub local_zone: Option<String>,
}

/// A per-upstream setting that cannot be used: which variable, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct SettingError {
    pub var: String,
    pub message: String,
}

impl Upstream {
    /// An upstream at one fixed `http://host:port` (the scheme names HTTP/2; TLS comes from
    /// `security`).
    pub fn new(uri: impl Into<String>) -> Self {
        let uri = uri.into();
        Self {
            name: uri.clone(),
            endpoints: Endpoints::Fixed(uri),
            connect_timeout: Duration::from_secs(3),
            default_timeout: Duration::from_secs(10),
            security: Security::Plaintext,
            balancer: Balancer::default(),
            ejection: EjectionPolicy::default(),
            retry: Some(RetryPolicy::default()),
            breaker: Some(BreakerPolicy::default()),
            routing: None,
        }
    }

    /// An upstream found through DNS.
    pub fn dns(name: &str, resolver: Resolver, target: Target) -> Self {
        Self {
            name: name.to_string(),
            endpoints: Endpoints::Dns {
                resolver,
                target,
                min_refresh: Duration::from_millis(500),
                max_refresh: Duration::from_secs(60),
            },
            ..Self::new(String::new())
        }
    }

    /// Calls go over mTLS with this process's identity to the named mesh service.
    pub fn mesh(mut self, identity: Arc<MeshIdentity>, service: &str) -> Self {
        self.security = Security::Mesh {
            identity,
            service: service.to_string(),
        };
        if matches!(self.endpoints, Endpoints::Fixed(_)) {
            self.name = service.to_string();
        }
        self
    }

    pub fn balancer(mut self, balancer: Balancer) -> Self {
        self.balancer = balancer;
        self
    }

    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    pub fn retry(mut self, policy: Option<RetryPolicy>) -> Self {
        self.retry = policy;
        self
    }

    pub fn breaker(mut self, policy: Option<BreakerPolicy>) -> Self {
        self.breaker = policy;
        self
    }

    pub fn ejection(mut self, policy: EjectionPolicy) -> Self {
        self.ejection = policy;
        self
    }

    /// Steers calls by the traffic policy (for upstreams found through DNS).
    pub fn routing(mut self, routing: Option<Routing>) -> Self {
        self.routing = routing;
        self
    }

    /// Per-upstream settings read through `get`, named after `prefix` (e.g. `PAYMENT`):
    /// `<PREFIX>_BALANCER` (`peak-ewma`, `least-requests`, `round-robin`), `<PREFIX>_TIMEOUT`
    /// (default deadline, e.g. `2s`), `<PREFIX>_RETRY_ATTEMPTS` (1 sends each call once) and
    /// `<PREFIX>_BREAKER` (`on` or `off`). A bad value is an error naming the variable.
    pub fn configure(
        mut self,
        prefix: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingError> {
        let var = |name: &str| format!("{prefix}_{name}");
        let bad = |name: &str, message: String| SettingError {
            var: var(name),
            message,
        };
        if let Some(v) = get(&var("BALANCER")) {
            self.balancer = v.trim().parse().map_err(|e: String| bad("BALANCER", e))?;
        }
        if let Some(v) = get(&var("TIMEOUT")) {
            let d = crate::types::time::parse_duration(&v)
                .map_err(|e| bad("TIMEOUT", format!("'{v}' {e}")))?;
            if d.is_zero() {
                return Err(bad("TIMEOUT", "must be more than 0".into()));
            }
            self.default_timeout = d;
        }
        if let Some(v) = get(&var("RETRY_ATTEMPTS")) {
            let n: u32 = v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=10).contains(n))
                .ok_or_else(|| {
                    bad(
                        "RETRY_ATTEMPTS",
                        format!("'{v}' is not a number from 1 to 10"),
                    )
                })?;
            self.retry = (n > 1).then(|| RetryPolicy {
                max_attempts: n,
                ..self.retry.unwrap_or_default()
            });
        }
        if let Some(v) = get(&var("BREAKER")) {
            self.breaker = match v.trim() {
                "on" => Some(self.breaker.unwrap_or_default()),
                "off" => None,
                other => return Err(bad("BREAKER", format!("'{other}' is not on or off"))),
            };
        }
        Ok(self)
    }

    fn endpoint(&self, uri: &str) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(uri.to_string())?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true))
    }

    fn lazy(&self, endpoint: Endpoint) -> Channel {
        match &self.security {
            Security::Plaintext => endpoint.connect_lazy(),
            Security::Mesh { identity, service } => endpoint.connect_with_connector_lazy(
                crate::transport::tls::connector(identity.clone(), service),
            ),
        }
    }

    fn fixed_uri(&self) -> Result<&str, BoxError> {
        match &self.endpoints {
            Endpoints::Fixed(uri) => Ok(uri),
            Endpoints::Dns { .. } => Err(format!(
                "{} is discovered through DNS: use stack() for a balanced channel",
                self.name
            )
            .into()),
        }
    }

    /// A plain channel to a fixed upstream that connects on first use (no balancing, no
    /// deadline layer).
    pub fn channel(&self) -> Result<Channel, BoxError> {
        let endpoint = self
            .endpoint(self.fixed_uri()?)?
            .timeout(self.default_timeout);
        Ok(self.lazy(endpoint))
    }

    /// A plain channel to a fixed upstream whose first connection is made now, so a bad
    /// address or identity fails here.
    pub async fn connect(&self) -> Result<Channel, BoxError> {
        let endpoint = self
            .endpoint(self.fixed_uri()?)?
            .timeout(self.default_timeout);
        Ok(match &self.security {
            Security::Plaintext => endpoint.connect().await?,
            Security::Mesh { identity, service } => {
                endpoint
                    .connect_with_connector(crate::transport::tls::connector(
                        identity.clone(),
                        service,
                    ))
                    .await?
            }
        })
    }

    /// The full client stack: discovery, balancing with outlier ejection, retries within a
    /// budget, a circuit breaker and deadlines. Must be called inside a Tokio runtime (it
    /// spawns the balancer and the DNS watcher).
    pub fn stack(&self) -> Result<MeshChannel, BoxError> {
        Ok(self.build()?.0)
    }

    /// Like `stack`, also returning a handle on the upstream's circuit breaker.
    pub fn build(&self) -> Result<(MeshChannel, Option<BreakerHandle>), BoxError> {
        type Balanced = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;
        let (tx, rx) = mpsc::channel::<Change<String, eject::Eject<Channel>>>(64);
        match &self.endpoints {
            Endpoints::Fixed(uri) => {
                // One fixed address: nothing to balance or eject; the channel reconnects.
                let channel = self.lazy(self.endpoint(uri)?);
                crate::telemetry::metrics::BALANCER_ENDPOINTS
                    .with_label_values(&[&self.name])
                    .set(1);
                let direct: Balanced =
                    BoxCloneSyncService::new(channel.map_err(|e| Box::new(e) as BoxError));
                return Ok(self.resilient(direct));
            }
            Endpoints::Dns {
                resolver,
                target,
                min_refresh,
                max_refresh,
            } => {
                if let Some(routing) = &self.routing {
                    if let Some(route) = routing.policy.route(&self.name) {
                        let stack_known = Arc::new(AtomicI64::new(0));
                        let routed = self.routed(
                            routing,
                            &route,
                            target,
                            |target, group, absent_is_empty, backend| DnsWatcher {
                                upstream: self.clone(),
                                resolver: resolver.clone(),
                                empty_when_absent: absent_is_empty,
                                target,
                                min_refresh: *min_refresh,
                                max_refresh: *max_refresh,
                                group,
                                known: vec![stack_known.clone(), backend.known],
                                unanswered: Some(backend.unanswered),
                            },
                        );
                        return Ok(self.resilient(routed));
                    }
                }
                let watcher = DnsWatcher {
                    upstream: self.clone(),
                    resolver: resolver.clone(),
                    target: target.clone(),
                    min_refresh: *min_refresh,
                    max_refresh: *max_refresh,
                    group: Arc::default(),
                    empty_when_absent: false,
                    known: vec![Arc::default()],
                    unanswered: None,
                };
                tokio::spawn(watcher.run(tx));
            }
        }
        let changes = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
        let balanced: Balanced = match self.balancer {
            Balancer::PeakEwma => {
                let discover = PeakEwmaDiscover::new(
                    changes,
                    // A new endpoint starts as if it answered in 1ms, so it is tried soon
                    // after it appears; its real latency takes over from there.
                    Duration::from_millis(1),
                    Duration::from_secs(5),
                    CompleteOnResponse::default(),
                );
                BoxCloneSyncService::new(shared::Shared::new(Balance::new(discover)))
            }
            Balancer::LeastRequests => {
                let discover = PendingRequestsDiscover::new(changes, CompleteOnResponse::default());
                BoxCloneSyncService::new(shared::Shared::new(Balance::new(discover)))
            }
            Balancer::RoundRobin => {
                BoxCloneSyncService::new(shared::Shared::new(round_robin::RoundRobin::new(changes)))
            }
        };
        Ok(self.resilient(balanced))
    }

    /// The split and routers of an upstream with a traffic policy: per backend, one DNS
    /// watcher per zone (`<backend>-<zone>.<domain>`, or `<backend>.<domain>` without zones)
    /// feeding one router; several backends go behind a weighted split.
    fn routed(
        &self,
        routing: &Routing,
        route: &RoutePolicy,
        target: &Target,
        watcher: impl Fn(Target, Arc<eject::EjectionGroup>, bool, split::Discovered) -> DnsWatcher,
    ) -> split::Backend {
        // The domain the upstream's own name lives in: `payment.mesh.local.` -> `mesh.local.`.
        let domain = target
            .name
            .strip_prefix(&format!("{}.", self.name))
            .or_else(|| target.name.split_once('.').map(|(_, d)| d))
            .unwrap_or("")
            .to_string();
        let mut backends = Vec::new();
        for backend in route.backend_names(&self.name) {
            let group = Arc::new(eject::EjectionGroup::default());
            // What this backend's names resolved to: a split skips a backend with none.
            let names = route.zones.len().max(1);
            let discovered = split::Discovered::new(names);
            let zones: Vec<Option<Arc<str>>> = if route.zones.is_empty() {
                vec![None]
            } else {
                route
                    .zones
                    .iter()
                    .map(|z| Some(Arc::from(z.as_str())))
                    .collect()
            };
            let mut streams = Vec::new();
            for zone in zones {
                let name = match &zone {
                    None if backend == self.name => target.name.clone(),
                    None => format!("{backend}.{domain}"),
                    Some(z) => format!("{backend}-{z}.{domain}"),
                };
                let (tx, rx) = mpsc::channel::<Change<String, eject::Eject<Channel>>>(64);
                // A zone's or another backend's name that has no records is empty (the zone
                // fails over, the split skips the backend); the upstream's own name keeps its
                // last good endpoints, as without a policy.
                let absent_is_empty = zone.is_some() || backend != self.name;
                let w = watcher(
                    Target {
                        name,
                        lookup: target.lookup.clone(),
                    },
                    group.clone(),
                    absent_is_empty,
                    discovered.clone(),
                );
                tokio::spawn(w.run(tx));
                streams.push(ReceiverStream::new(rx).map(move |c| (zone.clone(), c)));
            }
            let router = router::Router::new(
                &self.name,
                &backend,
                routing.local_zone.as_deref(),
                routing.policy.clone(),
                futures::stream::select_all(streams),
            );
            backends.push(split::SplitBackend {
                name: backend,
                discovered,
                service: BoxCloneSyncService::new(shared::Shared::new(router)),
            });
        }
        if route.backends.is_empty() && backends.len() == 1 {
            return backends.remove(0).service;
        }
        BoxCloneSyncService::new(split::Split::new(
            &self.name,
            routing.policy.clone(),
            backends,
        ))
    }

    /// Deadline, retries and the circuit breaker around the balanced (or direct) service.
    fn resilient(
        &self,
        balanced: BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>,
    ) -> (MeshChannel, Option<BreakerHandle>) {
        let breaker = self
            .breaker
            .map(|p| breaker::CircuitBreakerLayer::new(&self.name, p));
        let handle = breaker.as_ref().map(|b| b.handle());
        let retry = self.retry.map(|p| retry::RetryLayer::new(&self.name, p));
        // The client span outermost: one span per call, however many attempts it takes.
        let svc = tower::ServiceBuilder::new()
            .layer(crate::telemetry::rpc::ClientLayer::new(&self.name))
            .layer(ClientDeadlineLayer::new(&self.name, self.default_timeout))
            // Fault headers the call being handled passes on (a target further down).
            .layer(crate::transport::faults::PassOnLayer)
            .option_layer(retry)
            .option_layer(breaker)
            .service(balanced)
            .map_err(|e: BoxError| CallError(e));
        (BoxCloneSyncService::new(svc), handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn per_upstream_settings_from_the_environment() {
        let u = Upstream::new("http://127.0.0.1:1")
            .configure(
                "PAYMENT",
                lookup(&[
                    ("PAYMENT_BALANCER", "round-robin"),
                    ("PAYMENT_TIMEOUT", "250ms"),
                    ("PAYMENT_RETRY_ATTEMPTS", "1"),
                    ("PAYMENT_BREAKER", "off"),
                ]),
            )
            .unwrap();
        assert_eq!(u.balancer, Balancer::RoundRobin);
        assert_eq!(u.default_timeout, Duration::from_millis(250));
        assert!(u.retry.is_none() && u.breaker.is_none());
        let u = Upstream::new("x")
            .configure("INVENTORY", lookup(&[("INVENTORY_RETRY_ATTEMPTS", "5")]))
            .unwrap();
        assert_eq!(u.retry.unwrap().max_attempts, 5);
        for (k, v) in [
            ("P_BALANCER", "random"),
            ("P_TIMEOUT", "soon"),
            ("P_TIMEOUT", "0s"),
            ("P_RETRY_ATTEMPTS", "0"),
            ("P_BREAKER", "maybe"),
        ] {
            let e = Upstream::new("x")
                .configure("P", lookup(&[(k, v)]))
                .err()
                .unwrap();
            assert!(e.to_string().starts_with(k), "{e}");
        }
    }
}
