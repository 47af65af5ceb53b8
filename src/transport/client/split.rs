//! A weighted split of one upstream over several backends (e.g. `payment` and
//! `payment-canary`, each its own DNS name and balancer), as SMI TrafficSplit or Gateway API
//! backend weights. The weights are read from the policy in force on every call, so a reload
//! shifts traffic without dropping a call; `x-ordermesh-backend: <name>` pins a call to one
//! backend (a request for an unknown one is refused with the backends named). A backend whose
//! names resolve to no endpoint (a canary not deployed yet, or scaled to zero) is skipped, so
//! its share goes to the others instead of waiting out the deadline.
//!
//! The split sits under the retry layer and the circuit breaker: a retried call draws its
//! backend again, and the breaker sees the upstream as a whole.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use super::policy::{PolicyHandle, PIN_HEADER};
use super::router::pick_weighted;
use super::BoxError;

pub type Backend = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// What a backend's DNS names said, kept by its watchers.
#[derive(Clone, Debug)]
pub struct Discovered {
    /// Endpoints they resolve to now.
    pub known: Arc<AtomicI64>,
    /// How many of them have not answered yet (with endpoints or with none).
    pub unanswered: Arc<AtomicUsize>,
}

impl Discovered {
    /// For a backend found under `names` DNS names (one per zone, or one).
    pub fn new(names: usize) -> Self {
        Self {
            known: Arc::default(),
            unanswered: Arc::new(AtomicUsize::new(names)),
        }
    }
}

/// One backend of a split: its name, its balanced service, and what discovery found for it.
pub struct SplitBackend {
    pub name: String,
    pub discovered: Discovered,
    pub service: Backend,
}

/// A backend with its `split_calls_total` counter, looked up once.
struct Counted {
    backend: SplitBackend,
    calls: prometheus::IntCounter,
}

#[derive(Clone)]
pub struct Split {
    upstream: Arc<str>,
    policy: PolicyHandle,
    backends: Arc<Vec<Counted>>,
}

impl Split {
    pub fn new(upstream: &str, policy: PolicyHandle, backends: Vec<SplitBackend>) -> Self {
        let backends = backends
            .into_iter()
            .map(|backend| Counted {
                calls: crate::telemetry::metrics::SPLIT_CALLS
                    .with_label_values(&[upstream, backend.name.as_str()]),
                backend,
            })
            .collect();
        Self {
            upstream: upstream.into(),
            policy,
            backends: Arc::new(backends),
        }
    }

    /// The backend for this call, or why there is none yet.
    fn pick(&self, req: &http::Request<Body>) -> Choice {
        if let Some(pin) = req.headers().get(PIN_HEADER) {
            let pin = pin.to_str().unwrap_or("");
            return match self.backends.iter().position(|b| b.backend.name == pin) {
                Some(i) => Choice::Go(i),
                None => {
                    let names: Vec<&str> = self
                        .backends
                        .iter()
                        .map(|b| b.backend.name.as_str())
                        .collect();
                    Choice::Refuse(tonic::Status::invalid_argument(format!(
                        "{PIN_HEADER}: '{pin}' is not a backend of {} (one of {})",
                        self.upstream,
                        names.join(", ")
                    )))
                }
            };
        }
        let policy = self.policy.current();
        let route = policy.upstream.get(&*self.upstream);
        let weight = |b: &SplitBackend| {
            route
                .and_then(|r| r.backends.iter().find(|(n, _)| *n == b.name))
                .map_or(0.0, |(_, w)| f64::from(*w))
        };
        let draw = |usable: &dyn Fn(&SplitBackend) -> bool| {
            let weights: Vec<f64> = self
                .backends
                .iter()
                .map(|c| {
                    let b = &c.backend;
                    if usable(b) {
                        weight(b)
                    } else {
                        0.0
                    }
                })
                .collect();
            weights
                .iter()
                .any(|w| *w > 0.0)
                .then(|| pick_weighted(&weights))
        };
        let live = |b: &SplitBackend| b.discovered.known.load(Ordering::Relaxed) > 0;
        let pending = |b: &SplitBackend| b.discovered.unanswered.load(Ordering::Relaxed) > 0;
        // Drawn among the backends with endpoints and those not heard from yet, so the first
        // name to answer at start-up does not take every call; a call that draws one not heard
        // from waits for it.
        if let Some(i) = draw(&|b| live(b) || pending(b)) {
            return match live(&self.backends[i].backend) {
                true => Choice::Go(i),
                false => Choice::Wait(i),
            };
        }
        Choice::Refuse(tonic::Status::unavailable(format!(
            "no backend of {} has an endpoint",
            self.upstream
        )))
    }
}

/// Where a call goes.
enum Choice {
    Go(usize),
    /// A backend whose names have not answered yet (start-up): wait for discovery, then draw
    /// again; past the deadline, this one.
    Wait(usize),
    Refuse(tonic::Status),
}

/// How often a call that found no backend discovered yet looks again.
const DISCOVERY_POLL: Duration = Duration::from_millis(20);
/// How long it looks when the call carries no deadline.
const DISCOVERY_WAIT: Duration = Duration::from_secs(5);

impl Service<http::Request<Body>> for Split {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each backend takes readiness under its own lock when the call is made.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The usual case, decided at once: no extra task state beyond the backend's call.
        match self.pick(&req) {
            Choice::Go(i) => {
                let b = &self.backends[i];
                b.calls.inc();
                return Box::pin(b.backend.service.clone().oneshot(req));
            }
            Choice::Refuse(status) => return Box::pin(async move { Ok(status.into_http()) }),
            Choice::Wait(_) => {}
        }
        let this = self.clone();
        Box::pin(async move {
            let until = req
                .extensions()
                .get::<crate::transport::deadline::CallDeadline>()
                .map(|d| d.0)
                .unwrap_or_else(|| tokio::time::Instant::now() + DISCOVERY_WAIT);
            let i = loop {
                match this.pick(&req) {
                    Choice::Go(i) => break i,
                    Choice::Wait(i) if tokio::time::Instant::now() + DISCOVERY_POLL >= until => {
                        break i
                    }
                    Choice::Wait(_) => tokio::time::sleep(DISCOVERY_POLL).await,
                    Choice::Refuse(status) => return Ok(status.into_http()),
                }
            };
            let b = &this.backends[i];
            b.calls.inc();
            b.backend.service.clone().oneshot(req).await
        })
    }
}
