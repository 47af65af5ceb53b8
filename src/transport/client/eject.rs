//! Per-endpoint outlier ejection: an endpoint that fails `consecutive` calls in a row (transport
//! errors or UNAVAILABLE, unless the answer marks the failure as the request's own) is taken
//! out of the balancer for a while, longer each time it is ejected again. At most half of an
//! upstream's endpoints are ejected at once, and never the only one: when everything fails,
//! that is the circuit breaker's business. While ejected its `poll_ready` is pending, so the
//! balancer's p2c picks among the other endpoints; it comes back on its own when the ejection
//! ends.

use std::future::Future as _;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tower::Service;

/// When to eject an endpoint and for how long.
#[derive(Clone, Copy, Debug)]
pub struct EjectionPolicy {
    /// Failures in a row that eject an endpoint.
    pub consecutive: u32,
    /// First ejection; each further ejection lasts one more `base` (up to `max`).
    pub base: Duration,
    pub max: Duration,
}

impl Default for EjectionPolicy {
    fn default() -> Self {
        Self {
            consecutive: 5,
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
        }
    }
}

/// The endpoints of one upstream, counted so that ejection never empties the balancer.
#[derive(Debug, Default)]
pub struct EjectionGroup {
    endpoints: std::sync::atomic::AtomicUsize,
    ejected: std::sync::atomic::AtomicUsize,
}

impl EjectionGroup {
    /// Takes one ejection slot if fewer than half of the endpoints are out.
    fn try_eject(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let total = self.endpoints.load(SeqCst);
        self.ejected
            .fetch_update(SeqCst, SeqCst, |n| ((n + 1) * 2 <= total).then_some(n + 1))
            .is_ok()
    }

    fn restore(&self) {
        let _ = self.ejected.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        );
    }
}

#[derive(Debug)]
struct State {
    failures: u32,
    ejections: u32,
    until: Option<Instant>,
    /// When the endpoint was added or last came back from an ejection (slow start ramps
    /// from here).
    admitted: Instant,
}

/// What a router may read about one endpoint while the balancer holds it.
#[derive(Clone, Debug)]
pub struct EndpointHealth {
    state: Arc<Mutex<State>>,
}

impl EndpointHealth {
    /// Whether the endpoint is ejected now.
    pub fn ejected(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| s.until.is_some_and(|u| Instant::now() < u))
    }

    /// When it was added or last re-admitted after an ejection.
    pub fn admitted(&self) -> Instant {
        self.state
            .lock()
            .map(|s| s.admitted)
            .unwrap_or_else(|_| Instant::now())
    }
}

/// Wraps one endpoint's service.
pub struct Eject<S> {
    inner: S,
    group: Arc<EjectionGroup>,
    endpoint: String,
    policy: EjectionPolicy,
    state: Arc<Mutex<State>>,
    sleep: Option<std::pin::Pin<Box<Sleep>>>,
}

impl<S> Eject<S> {
    pub fn new(
        inner: S,
        group: Arc<EjectionGroup>,
        endpoint: String,
        policy: EjectionPolicy,
    ) -> Self {
        group
            .endpoints
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self {
            inner,
            group,
            endpoint,
            policy,
            state: Arc::new(Mutex::new(State {
                failures: 0,
                ejections: 0,
                until: None,
                admitted: Instant::now(),
            })),
            sleep: None,
        }
    }

    /// A handle on this endpoint's ejection state.
    pub fn health(&self) -> EndpointHealth {
        EndpointHealth {
            state: self.state.clone(),
        }
    }
}

/// Whether a response says the endpoint itself is failing (trailers-only UNAVAILABLE that is
/// not marked as the failure of that one request: every endpoint would answer it the same).
fn unavailable(resp: &http::Response<Body>) -> bool {
    resp.headers()
        .get(crate::transport::headers::GRPC_STATUS)
        .is_some_and(|v| v.as_bytes() == b"14")
        && !crate::transport::headers::request_scoped(resp.headers())
}

impl<S> Drop for Eject<S> {
    fn drop(&mut self) {
        if self.state.lock().is_ok_and(|s| s.until.is_some()) {
            self.group.restore();
        }
        self.group
            .endpoints
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn record(
    state: &Mutex<State>,
    group: &EjectionGroup,
    policy: &EjectionPolicy,
    endpoint: &str,
    failed: bool,
) {
    let Ok(mut s) = state.lock() else {
        return;
    };
    if !failed {
        s.failures = 0;
        return;
    }
    s.failures += 1;
    if s.failures >= policy.consecutive && s.until.is_none() && group.try_eject() {
        s.ejections += 1;
        let d = (policy.base * s.ejections).min(policy.max);
        s.until = Some(Instant::now() + d);
        s.failures = 0;
        tracing::warn!(endpoint, ejected_for = ?d, "endpoint ejected after consecutive failures");
    }
}

impl<S> Service<http::Request<Body>> for Eject<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let until = self.state.lock().ok().and_then(|s| s.until);
        if let Some(until) = until {
            if Instant::now() < until {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                sleep.as_mut().reset(until);
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            if let Ok(mut s) = self.state.lock() {
                s.until = None;
                s.admitted = Instant::now();
            }
            self.group.restore();
            self.sleep = None;
            tracing::info!(endpoint = %self.endpoint, "endpoint back from ejection");
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let fut = self.inner.call(req);
        let state = self.state.clone();
        let policy = self.policy;
        let endpoint = self.endpoint.clone();
        let group = self.group.clone();
        Box::pin(async move {
            let result = fut.await;
            let failed = match &result {
                Ok(resp) => unavailable(resp),
                Err(_) => true,
            };
            record(&state, &group, &policy, &endpoint, failed);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_endpoints_own_failures_count_toward_ejection() {
        let down = tonic::Status::unavailable("shedding").into_http();
        assert!(unavailable(&down));
        let one_card =
            crate::types::status::request_scoped(tonic::Status::unavailable("card")).into_http();
        assert!(!unavailable(&one_card), "the request's own failure");
        assert!(!unavailable(&tonic::Status::not_found("x").into_http()));
    }
}
