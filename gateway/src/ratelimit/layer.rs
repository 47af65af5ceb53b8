//! The per-client rate limit as a tower layer. A client is its token's subject, else a
//! configured API key (`x-api-key`), else its address. A refused request gets
//! RESOURCE_EXHAUSTED (HTTP 429) with `Retry-After`; REST answers carry `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` either way.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{self, BoxFuture, FutureExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Code;

use super::{RateLimiter, Verdict};
use crate::caller::{ClientAddr, Subject};
use crate::error::GatewayError;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
    /// The API keys that name a client (others are ignored: the address counts then).
    api_keys: Arc<[String]>,
    metrics: Arc<Metrics>,
}

impl RateLimitLayer {
    pub fn new(limiter: RateLimiter, api_keys: &[String], metrics: Arc<Metrics>) -> Self {
        Self {
            limiter: Arc::new(limiter),
            api_keys: api_keys.into(),
            metrics,
        }
    }

    /// Which bucket a request takes its token from.
    fn client_key<B>(&self, req: &http::Request<B>) -> String {
        let api_key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
        match (Subject::of(req), api_key) {
            (Some(s), _) => format!("sub:{s}"),
            (None, Some(k)) if self.api_keys.iter().any(|a| a == k) => format!("key:{k}"),
            _ => match req.extensions().get::<ClientAddr>() {
                Some(ClientAddr(peer)) => format!("ip:{}", peer.ip()),
                None => "ip:unknown".to_string(),
            },
        }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The `RateLimit-*` headers (IETF draft) of a verdict.
pub fn rate_headers(v: &Verdict) -> [(HeaderName, HeaderValue); 3] {
    [
        (
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from(v.limit),
        ),
        (
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from(v.remaining),
        ),
        (
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from(v.reset.as_secs_f64().ceil() as u64),
        ),
    ]
}

fn refusal(v: &Verdict) -> GatewayError {
    let retry_after = v.reset.as_secs_f64().ceil().max(1.0) as u64;
    let mut e = GatewayError::new(
        Code::ResourceExhausted,
        format!(
            "rate limit of {} requests exceeded; retry in {retry_after}s",
            v.limit
        ),
    )
    .with_header(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
    for (k, val) in rate_headers(v) {
        e = e.with_header(k, val);
    }
    e
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

// === impl RateLimit ===

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RateLimit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>, Error = GatewayError>,
    S::Future: Send + 'static,
    RB: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<http::Response<RB>, GatewayError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let verdict = self.layer.limiter.check(&self.layer.client_key(&req));
        if !verdict.allowed {
            self.layer.metrics.rate_limited();
            return future::err(refusal(&verdict)).boxed();
        }
        // A gRPC caller learns its limit from the status when refused; headers on its
        // answers would reach it as response metadata.
        let headers = !is_grpc(req.headers());
        let answer = self.inner.call(req);
        async move {
            let mut resp = answer.await?;
            if headers {
                for (k, v) in rate_headers(&verdict) {
                    resp.headers_mut().insert(k, v);
                }
            }
            Ok(resp)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::Limit;
    use std::net::SocketAddr;
    use tower::{Layer, ServiceExt};

    fn layer(metrics: Arc<Metrics>) -> RateLimitLayer {
        // Two at once, then one a minute: nothing comes back during the test.
        let limit = Limit {
            per_second: 1.0 / 60.0,
            burst: 2,
        };
        RateLimitLayer::new(RateLimiter::new(limit), &["k1".to_string()], metrics)
    }

    fn request(peer: &str, subject: Option<&str>, api_key: Option<&str>) -> http::Request<()> {
        let mut req = http::Request::new(());
        let peer: SocketAddr = peer.parse().unwrap();
        req.extensions_mut().insert(ClientAddr(peer));
        if let Some(s) = subject {
            req.extensions_mut().insert(Subject(s.to_string()));
        }
        if let Some(k) = api_key {
            req.headers_mut().insert("x-api-key", k.parse().unwrap());
        }
        req
    }

    async fn call(
        layer: &RateLimitLayer,
        req: http::Request<()>,
    ) -> Result<http::Response<()>, GatewayError> {
        let inner = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, GatewayError>(http::Response::new(()))
        });
        layer.layer(inner).oneshot(req).await
    }

    #[tokio::test]
    async fn a_client_gets_its_burst_then_429_with_retry_after() {
        let metrics = Arc::new(Metrics::default());
        let l = layer(metrics.clone());
        for remaining in ["1", "0"] {
            let ok = call(&l, request("10.0.0.1:1000", None, None))
                .await
                .unwrap();
            assert_eq!(ok.headers()["ratelimit-limit"], "2");
            assert_eq!(ok.headers()["ratelimit-remaining"], remaining);
        }
        // Another connection from the same address is the same client.
        let refused = call(&l, request("10.0.0.1:2000", None, None))
            .await
            .unwrap_err();
        assert_eq!(refused.code, Code::ResourceExhausted);
        let resp = refused.into_response();
        assert_eq!(resp.status(), http::StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((59..=60).contains(&retry), "{retry}");
        assert_eq!(resp.headers()["ratelimit-remaining"], "0");
        assert!(metrics.render().contains("gateway_rate_limited_total 1"));
    }

    #[tokio::test]
    async fn subjects_and_known_api_keys_have_buckets_of_their_own() {
        let l = layer(Arc::default());
        let peer = "10.0.0.2:1000";
        for _ in 0..2 {
            call(&l, request(peer, None, None)).await.unwrap();
        }
        assert!(call(&l, request(peer, None, None)).await.is_err());
        // Same address, but a subject or a configured key: other clients.
        assert!(call(&l, request(peer, Some("alice"), None)).await.is_ok());
        assert!(call(&l, request(peer, None, Some("k1"))).await.is_ok());
        // An unknown key does not buy a fresh bucket.
        assert!(call(&l, request(peer, None, Some("made-up")))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn grpc_answers_carry_no_rate_headers() {
        let l = layer(Arc::default());
        let mut req = request("10.0.0.3:1000", None, None);
        req.headers_mut().insert(
            http::header::CONTENT_TYPE,
            "application/grpc".parse().unwrap(),
        );
        let resp = call(&l, req).await.unwrap();
        assert!(resp.headers().get("ratelimit-limit").is_none());
    }
}
