//! A weighted split of one upstream over several backends (e.g. `payment` and
//! `payment-canary`, each its own DNS name and balancer), as SMI TrafficSplit or Gateway API
//! backend weights. The weights are read from the policy in force on every call, so a reload
//! shifts traffic without dropping a call; `x-ordermesh-backend: <name>` pins a call to one
//! backend (a request for an unknown one is refused with the backends named).
//!
//! The split sits under the retry layer and the circuit breaker: a retried call draws its
//! backend again, and the breaker sees the upstream as a whole.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use super::policy::{PolicyHandle, PIN_HEADER};
use super::router::pick_weighted;
use super::BoxError;

pub type Backend = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

#[derive(Clone)]
pub struct Split {
    upstream: Arc<str>,
    policy: PolicyHandle,
    backends: Arc<Vec<(String, Backend)>>,
}

impl Split {
    pub fn new(upstream: &str, policy: PolicyHandle, backends: Vec<(String, Backend)>) -> Self {
        Self {
            upstream: upstream.into(),
            policy,
            backends: Arc::new(backends),
        }
    }

    fn pick(&self, req: &http::Request<Body>) -> Result<usize, String> {
        if let Some(pin) = req.headers().get(PIN_HEADER) {
            let pin = pin.to_str().unwrap_or("");
            return self
                .backends
                .iter()
                .position(|(name, _)| name == pin)
                .ok_or_else(|| {
                    let names: Vec<&str> = self.backends.iter().map(|(n, _)| n.as_str()).collect();
                    format!(
                        "{PIN_HEADER}: '{pin}' is not a backend of {} (one of {})",
                        self.upstream,
                        names.join(", ")
                    )
                });
        }
        let policy = self.policy.current();
        let route = policy.upstream.get(&*self.upstream);
        let weights: Vec<f64> = self
            .backends
            .iter()
            .map(|(name, _)| {
                route
                    .and_then(|r| r.backends.iter().find(|(n, _)| n == name))
                    .map_or(0.0, |(_, w)| f64::from(*w))
            })
            .collect();
        Ok(pick_weighted(&weights))
    }
}

impl Service<http::Request<Body>> for Split {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each backend takes readiness under its own lock when the call is made.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let i = match self.pick(&req) {
            Ok(i) => i,
            Err(message) => {
                let resp = tonic::Status::invalid_argument(message).into_http();
                return Box::pin(async move { Ok(resp) });
            }
        };
        let (name, backend) = &self.backends[i];
        crate::telemetry::metrics::SPLIT_CALLS
            .with_label_values(&[&*self.upstream, name.as_str()])
            .inc();
        let backend = backend.clone();
        Box::pin(backend.oneshot(req))
    }
}
