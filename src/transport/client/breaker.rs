//! A circuit breaker per upstream. Closed, it counts outcomes over a sliding window of recent
//! calls; when the share of failures (or of slow calls) crosses its threshold it opens and
//! every call fails fast with UNAVAILABLE naming the upstream. After the reset timeout it
//! half-opens and lets a few probe calls through: all succeed and it closes, one fails and it
//! opens again. Transitions are logged and the state can be read from a `BreakerHandle`.
//!
//! The window counts requests, not attempts: the failures of one idempotency key (a saga
//! step retried, a transport retry) count once while that key's failure is in the window. A
//! few requests that keep failing on their own (one card the processor cannot charge) cannot
//! open the breaker every request shares; the same failure on many requests (every card,
//! a service that is down) still does.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tonic::body::Body;
use tower::{Layer, Service};

#[derive(Clone, Copy, Debug)]
pub struct BreakerPolicy {
    /// How many recent calls the window holds.
    pub window: usize,
    /// Fewest calls in the window before the breaker may open.
    pub min_calls: usize,
    /// Share of failed calls in the window that opens the breaker (0-1).
    pub failure_rate: f64,
    /// A call slower than this counts as slow.
    pub slow_call: Duration,
    /// Share of slow calls in the window that opens the breaker (0-1; above 1 disables it).
    pub slow_rate: f64,
    /// How long the breaker stays open before it lets probes through.
    pub reset_timeout: Duration,
    /// Probe calls that must all succeed to close a half-open breaker.
    pub probes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            window: 50,
            min_calls: 10,
            failure_rate: 0.5,
            slow_call: Duration::from_secs(2),
            slow_rate: 0.8,
            reset_timeout: Duration::from_secs(5),
            probes: 3,
        }
    }
}

/// Where a breaker is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Clone, Copy)]
struct Outcome {
    failed: bool,
    slow: bool,
    /// A hash of the call's idempotency key, when it has one.
    key: Option<u64>,
}

/// The last outcomes while closed, with running counts (recording one is O(1) under the
/// lock every call of the upstream takes), and the keys whose failure is among them.
#[derive(Default)]
struct Window {
    outcomes: VecDeque<Outcome>,
    failed: usize,
    slow: usize,
    failed_keys: HashSet<u64>,
}

impl Window {
    /// Records `o`, unless it is another failure of a key that already failed in the window.
    fn push(&mut self, o: Outcome, cap: usize) {
        if o.failed {
            if let Some(k) = o.key {
                if !self.failed_keys.insert(k) {
                    return;
                }
            }
        }
        self.outcomes.push_back(o);
        self.failed += o.failed as usize;
        self.slow += o.slow as usize;
        while self.outcomes.len() > cap {
            if let Some(old) = self.outcomes.pop_front() {
                self.failed -= old.failed as usize;
                self.slow -= old.slow as usize;
                if let (true, Some(k)) = (old.failed, old.key) {
                    self.failed_keys.remove(&k);
                }
            }
        }
    }
}

/// The idempotency key of a call, hashed (a collision merely merges two keys' failures).
fn key_of(req: &http::Request<Body>) -> Option<u64> {
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let v = req
        .headers()
        .get(crate::transport::headers::IDEMPOTENCY_KEY)?;
    Some(SEED.get_or_init(Default::default).hash_one(v.as_bytes()))
}

enum Inner {
    Closed { window: Window },
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

struct Shared {
    upstream: String,
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
    fast_failures: std::sync::atomic::AtomicU64,
}

/// Reads a breaker's state (for metrics, health pages and tests).
#[derive(Clone)]
pub struct BreakerHandle(Arc<Shared>);

impl BreakerHandle {
    pub fn state(&self) -> BreakerState {
        match self.0.inner.lock().map(|g| match &*g {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }) {
            Ok(s) => s,
            Err(_) => BreakerState::Closed,
        }
    }

    /// Calls refused without reaching the upstream since the breaker was built.
    pub fn fast_failures(&self) -> u64 {
        self.0
            .fast_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct CircuitBreakerLayer {
    shared: Arc<Shared>,
}

impl CircuitBreakerLayer {
    pub fn new(upstream: &str, policy: BreakerPolicy) -> Self {
        crate::telemetry::metrics::breaker_state(upstream, "closed");
        Self {
            shared: Arc::new(Shared {
                upstream: upstream.to_string(),
                policy,
                inner: Mutex::new(Inner::Closed {
                    window: Window::default(),
                }),
                fast_failures: Default::default(),
            }),
        }
    }

    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle(self.shared.clone())
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Whether the call may go out, and whether it is a half-open probe.
enum Admit {
    Yes { probe: bool },
    No { retry_in: Duration },
}

impl Shared {
    fn admit(&self) -> Admit {
        let Ok(mut g) = self.inner.lock() else {
            return Admit::Yes { probe: false };
        };
        if matches!(&*g, Inner::Closed { .. }) {
            return Admit::Yes { probe: false };
        }
        let now = Instant::now();
        if let Inner::Open { until } = &*g {
            if now < *until {
                return Admit::No {
                    retry_in: *until - now,
                };
            }
            tracing::info!(upstream = %self.upstream, "circuit breaker half-open: probing");
            crate::telemetry::metrics::breaker_transition(&self.upstream, "half_open");
            *g = Inner::HalfOpen {
                admitted: 0,
                succeeded: 0,
            };
        }
        match &mut *g {
            Inner::Closed { .. } => Admit::Yes { probe: false },
            Inner::HalfOpen { admitted, .. } if *admitted < self.policy.probes => {
                *admitted += 1;
                Admit::Yes { probe: true }
            }
            Inner::HalfOpen { .. } => Admit::No {
                retry_in: Duration::ZERO,
            },
            Inner::Open { until } => Admit::No {
                retry_in: until.saturating_duration_since(now),
            },
        }
    }

    fn record(&self, outcome: Outcome, probe: bool) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        let p = &self.policy;
        let open = |why: String| {
            tracing::warn!(upstream = %self.upstream, reason = %why, open_for = ?p.reset_timeout, "circuit breaker opened");
            crate::telemetry::metrics::breaker_transition(&self.upstream, "open");
            Inner::Open {
                until: Instant::now() + p.reset_timeout,
            }
        };
        match &mut *g {
            Inner::Closed { window } if !probe => {
                window.push(outcome, p.window);
                if window.outcomes.len() >= p.min_calls {
                    let n = window.outcomes.len() as f64;
                    let failed = window.failed as f64 / n;
                    let slow = window.slow as f64 / n;
                    if failed >= p.failure_rate {
                        *g = open(format!(
                            "{:.0}% of the last {n} calls failed",
                            failed * 100.0
                        ));
                    } else if slow >= p.slow_rate {
                        *g = open(format!(
                            "{:.0}% of the last {n} calls took over {:?}",
                            slow * 100.0,
                            p.slow_call
                        ));
                    }
                }
            }
            Inner::HalfOpen { succeeded, .. } if probe => {
                if outcome.failed {
                    *g = open("a half-open probe failed".into());
                } else {
                    *succeeded += 1;
                    if *succeeded >= p.probes {
                        tracing::info!(upstream = %self.upstream, "circuit breaker closed after successful probes");
                        crate::telemetry::metrics::breaker_transition(&self.upstream, "closed");
                        *g = Inner::Closed {
                            window: Window::default(),
                        };
                    }
                }
            }
            // An outcome from before the last transition says nothing about now.
            _ => {}
        }
    }
}

/// A call on its way. A caller that gives up (its deadline, a dropped future) never sees the
/// outcome; a half-open probe abandoned like that counts as failed, or its slot would stay
/// taken and the breaker half-open for good.
struct Pending {
    shared: Arc<Shared>,
    probe: bool,
    done: std::cell::Cell<bool>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done.get() && self.probe {
            self.shared.record(
                Outcome {
                    failed: true,
                    slow: true,
                    key: None,
                },
                true,
            );
        }
    }
}

/// Codes that say the upstream is failing, as opposed to the request being wrong.
fn failed_status(resp: &http::Response<Body>) -> bool {
    matches!(
        resp.headers()
            .get(crate::transport::headers::GRPC_STATUS)
            .map(|v| v.as_bytes()),
        Some(b"14" | b"4" | b"13" | b"2" | b"8")
    )
}

impl<S> Service<http::Request<Body>> for CircuitBreaker<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let probe = match self.shared.admit() {
            Admit::Yes { probe } => probe,
            Admit::No { retry_in } => {
                self.shared
                    .fast_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::telemetry::metrics::BREAKER_REJECTED
                    .with_label_values(&[&self.shared.upstream])
                    .inc();
                let msg = format!(
                    "circuit breaker for {} is open; failing fast (next probe in {retry_in:?})",
                    self.shared.upstream
                );
                return Box::pin(async move { Ok(tonic::Status::unavailable(msg).into_http()) });
            }
        };
        let started = Instant::now();
        let key = key_of(&req);
        let fut = self.inner.call(req);
        let pending = Pending {
            shared: self.shared.clone(),
            probe,
            done: std::cell::Cell::new(false),
        };
        Box::pin(async move {
            let result = fut.await;
            let failed = match &result {
                Ok(resp) => failed_status(resp),
                Err(_) => true,
            };
            let slow = started.elapsed() > pending.shared.policy.slow_call;
            pending.shared.record(Outcome { failed, slow, key }, probe);
            pending.done.set(true);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn req(mode: &str) -> http::Request<Body> {
        http::Request::builder()
            .uri("http://x/a.B/C")
            .header("mode", mode)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn an_abandoned_probe_does_not_leave_the_breaker_half_open() {
        let layer = CircuitBreakerLayer::new("up", policy(1, 1, Duration::from_millis(50)));
        let handle = layer.handle();
        let svc = layer.layer(tower::service_fn(|r: http::Request<Body>| async move {
            match r.headers().get("mode").map(|v| v.as_bytes()) {
                Some(b"hang") => std::future::pending::<()>().await,
                Some(b"fail") => {
                    return Ok::<_, std::convert::Infallible>(
                        tonic::Status::unavailable("down").into_http(),
                    )
                }
                _ => {}
            }
            Ok(http::Response::new(Body::empty()))
        }));
        svc.clone().oneshot(req("fail")).await.unwrap();
        assert_eq!(handle.state(), BreakerState::Open);
        tokio::time::sleep(Duration::from_millis(60)).await;
        // The probe's caller gives up before it answers.
        let abandoned =
            tokio::time::timeout(Duration::from_millis(20), svc.clone().oneshot(req("hang"))).await;
        assert!(abandoned.is_err());
        assert_eq!(
            handle.state(),
            BreakerState::Open,
            "counted as a failed probe"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        let ok = svc.clone().oneshot(req("ok")).await.unwrap();
        assert!(
            ok.headers().get("grpc-status").is_none(),
            "a new probe went through"
        );
        assert_eq!(handle.state(), BreakerState::Closed);
    }

    /// A breaker on a short window that only failures open (slow calls never do).
    fn policy(window: usize, min_calls: usize, reset_timeout: Duration) -> BreakerPolicy {
        BreakerPolicy {
            window,
            min_calls,
            failure_rate: 0.5,
            slow_call: Duration::from_secs(5),
            slow_rate: 2.0,
            reset_timeout,
            probes: 1,
        }
    }

    fn keyed(mode: &str, key: &str) -> http::Request<Body> {
        let mut r = req(mode);
        r.headers_mut()
            .insert("idempotency-key", key.parse().unwrap());
        r
    }

    #[tokio::test]
    async fn one_request_failing_again_and_again_counts_once_but_many_requests_open_it() {
        let layer = CircuitBreakerLayer::new("keys", policy(20, 4, Duration::from_secs(60)));
        let handle = layer.handle();
        let svc = layer.layer(tower::service_fn(|r: http::Request<Body>| async move {
            if r.headers().get("mode").is_some_and(|v| v == "fail") {
                return Ok::<_, std::convert::Infallible>(
                    tonic::Status::unavailable("this card cannot be charged now").into_http(),
                );
            }
            Ok(http::Response::new(Body::empty()))
        }));
        for _ in 0..3 {
            svc.clone().oneshot(req("ok")).await.unwrap();
        }
        // One poisoned request retried 30 times, with a good call now and then.
        for i in 0..30 {
            svc.clone()
                .oneshot(keyed("fail", "saga-1/authorize_payment"))
                .await
                .unwrap();
            if i % 10 == 0 {
                svc.clone().oneshot(req("ok")).await.unwrap();
            }
        }
        assert_eq!(
            handle.state(),
            BreakerState::Closed,
            "one request, one failure"
        );
        // The same failure on many requests: the upstream is failing for everyone.
        for i in 0..6 {
            svc.clone()
                .oneshot(keyed("fail", &format!("saga-{i}/authorize_payment")))
                .await
                .unwrap();
        }
        assert_eq!(handle.state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn calls_without_a_key_each_count() {
        let layer = CircuitBreakerLayer::new("nokeys", policy(10, 4, Duration::from_secs(60)));
        let handle = layer.handle();
        let svc = layer.layer(tower::service_fn(|_r: http::Request<Body>| async move {
            Ok::<_, std::convert::Infallible>(tonic::Status::internal("boom").into_http())
        }));
        for _ in 0..3 {
            svc.clone().oneshot(req("fail")).await.unwrap();
        }
        assert_eq!(handle.state(), BreakerState::Closed, "below min_calls");
        svc.clone().oneshot(req("fail")).await.unwrap();
        assert_eq!(handle.state(), BreakerState::Open);
    }
}
