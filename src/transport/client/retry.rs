//! Retries for calls that are safe to repeat: those carrying an `idempotency-key` (or
//! `x-ordermesh-idempotent: true`) and reads (`Get*`/`List*` methods). Only UNAVAILABLE,
//! RESOURCE_EXHAUSTED (the server shed the call before running it) and connection failures are
//! retried, with jittered exponential backoff, and every retry must be paid for from a budget
//! (a share of recent requests plus a small floor per second), so retries cannot multiply an
//! outage. A retry never outlives the caller's deadline. A retry-safe request is read into memory
//! first (up to 4 MiB, gRPC's default message limit) so it can be sent again.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tonic::body::Body;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service, ServiceExt};

/// Largest request body kept for replay: gRPC's default message limit, so a request that
/// could be sent at all fits; a bigger one is refused here as the server would refuse it.
const MAX_REPLAY_BYTES: usize = 4 << 20;

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Retries allowed as a share of requests over the last `budget_window`.
    pub budget_ratio: f32,
    /// Retries allowed per second whatever the traffic.
    pub budget_floor_per_sec: u32,
    pub budget_window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(500),
            budget_ratio: 0.2,
            budget_floor_per_sec: 5,
            budget_window: Duration::from_secs(10),
        }
    }
}

#[derive(Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
    budget: Arc<TpsBudget>,
    upstream: Arc<str>,
}

impl RetryLayer {
    pub fn new(upstream: &str, policy: RetryPolicy) -> Self {
        Self {
            budget: Arc::new(TpsBudget::new(
                policy.budget_window,
                policy.budget_floor_per_sec,
                policy.budget_ratio,
            )),
            policy,
            upstream: upstream.into(),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    layer: RetryLayer,
}

/// Whether a call may be sent more than once.
pub fn is_retry_safe(req: &http::Request<Body>) -> bool {
    let h = req.headers();
    if h.contains_key(crate::transport::headers::IDEMPOTENCY_KEY)
        || h.get(crate::transport::headers::IDEMPOTENT)
            .is_some_and(|v| v.as_bytes() == b"true")
    {
        return true;
    }
    let method = req.uri().path().rsplit('/').next().unwrap_or("");
    method.starts_with("Get") || method.starts_with("List")
}

/// Transport errors, UNAVAILABLE and RESOURCE_EXHAUSTED, unless the answer marks the failure as
/// the request's own (another endpoint would answer the same; the caller retries later).
fn retryable(result: &Result<http::Response<Body>, impl Sized>) -> bool {
    match result {
        Ok(resp) => {
            matches!(
                resp.headers()
                    .get(crate::transport::headers::GRPC_STATUS)
                    .map(|v| v.as_bytes()),
                Some(b"14" | b"8")
            ) && !crate::transport::headers::request_scoped(resp.headers())
        }
        Err(_) => true,
    }
}

fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    crate::backoff::jittered(policy.base_backoff, policy.max_backoff, retry)
}

fn rebuild(
    method: &http::Method,
    uri: &http::Uri,
    version: http::Version,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> http::Request<Body> {
    let mut req = http::Request::new(Body::new(Full::new(body.clone())));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri.clone();
    *req.version_mut() = version;
    *req.headers_mut() = headers.clone();
    req
}

impl<S> Service<http::Request<Body>> for Retry<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
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
        let budget = self.layer.budget.clone();
        budget.deposit();
        if !is_retry_safe(&req) {
            return Box::pin(self.inner.call(req));
        }
        // The service that was made ready goes first; retries use clones made ready again.
        let clone = self.inner.clone();
        let mut first = std::mem::replace(&mut self.inner, clone);
        let inner = self.inner.clone();
        let policy = self.layer.policy;
        let upstream = self.layer.upstream.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let deadline = crate::transport::deadline::current();
            let bytes = match Body::new(http_body_util::Limited::new(body, MAX_REPLAY_BYTES))
                .collect()
                .await
            {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    return Ok(tonic::Status::invalid_argument(format!(
                        "request body could not be read for {upstream}: {e}"
                    ))
                    .into_http())
                }
            };
            let call_deadline = parts
                .extensions
                .get::<crate::transport::deadline::CallDeadline>()
                .map(|d| d.0);
            let deadline = match (deadline, call_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // Each attempt is told what is left of the deadline, and carries it on.
            let make = || {
                let mut req = rebuild(
                    &parts.method,
                    &parts.uri,
                    parts.version,
                    &parts.headers,
                    &bytes,
                );
                if let Some(d) = deadline {
                    let left = d.saturating_duration_since(Instant::now());
                    req.headers_mut().insert(
                        crate::transport::headers::GRPC_TIMEOUT,
                        crate::transport::deadline::encode_grpc_timeout(left),
                    );
                    req.extensions_mut()
                        .insert(crate::transport::deadline::CallDeadline(d));
                }
                req
            };
            let mut result = first.call(make()).await;
            let mut attempt = 1;
            while attempt < policy.max_attempts && retryable(&result) {
                let wait = backoff(&policy, attempt - 1);
                if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                    break;
                }
                if !budget.withdraw() {
                    tracing::debug!(%upstream, "retry budget spent; not retrying");
                    crate::telemetry::metrics::RETRY_BUDGET_EXHAUSTED
                        .with_label_values(&[&upstream])
                        .inc();
                    break;
                }
                tokio::time::sleep(wait).await;
                attempt += 1;
                tracing::debug!(%upstream, attempt, "retrying");
                crate::telemetry::metrics::RETRIES
                    .with_label_values(&[&upstream])
                    .inc();
                let mut svc = inner.clone();
                result = match svc.ready().await {
                    Ok(s) => s.call(make()).await,
                    Err(e) => Err(e),
                };
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str) -> http::Request<Body> {
        http::Request::builder()
            .uri(format!("http://x{path}"))
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn only_safe_calls_are_retried() {
        assert!(is_retry_safe(&req("/a.v1.S/GetPayment")));
        assert!(is_retry_safe(&req("/a.v1.S/ListOrders")));
        assert!(!is_retry_safe(&req("/a.v1.S/CapturePayment")));
        let mut keyed = req("/a.v1.S/CapturePayment");
        keyed
            .headers_mut()
            .insert("idempotency-key", "k1".parse().unwrap());
        assert!(is_retry_safe(&keyed));
    }

    #[test]
    fn a_failure_of_the_request_itself_is_not_retried_on_another_endpoint() {
        let ok: Result<_, ()> = Ok(tonic::Status::unavailable("down").into_http());
        assert!(retryable(&ok));
        let one_card: Result<_, ()> = Ok(crate::types::status::request_scoped(
            tonic::Status::unavailable("card"),
        )
        .into_http());
        assert!(!retryable(&one_card));
        let refused: Result<_, ()> = Ok(tonic::Status::invalid_argument("x").into_http());
        assert!(!retryable(&refused));
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let p = RetryPolicy::default();
        for retry in 0..10 {
            let d = backoff(&p, retry);
            let step = p.base_backoff.saturating_mul(1 << retry).min(p.max_backoff);
            assert!(d >= step / 2 && d <= step, "{retry}: {d:?} vs {step:?}");
        }
    }
}
