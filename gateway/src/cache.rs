//! The response cache for safe GETs whose RPC declares a cache lifetime in the gateway config
//! (`GATEWAY_CACHE`), kept by moka: each entry lives for its RPC's time to live, and beyond
//! `capacity` entries the least recently used go. Keys include the caller, so one client's
//! answer is never served to another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use moka::future::Cache;
use moka::policy::{EvictionPolicy, Expiry};

use crate::body::{self, Body};
use crate::error::GatewayError;

pub struct Cached {
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    stored: Instant,
    ttl: Duration,
}

impl Cached {
    pub fn age(&self) -> Duration {
        self.stored.elapsed()
    }
}

/// Each entry expires after its own time to live, counted from when it was (last) stored.
struct TimeToLive;

impl Expiry<String, Arc<Cached>> for TimeToLive {
    fn expire_after_create(&self, _: &String, c: &Arc<Cached>, _: Instant) -> Option<Duration> {
        Some(c.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        c: &Arc<Cached>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(c.ttl)
    }
}

pub struct ResponseCache {
    entries: Cache<String, Arc<Cached>>,
}

impl ResponseCache {
    pub fn new(capacity: u64) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(capacity)
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(TimeToLive)
                .build(),
        }
    }

    /// The live entry under `key`.
    pub async fn get(&self, key: &str) -> Option<Arc<Cached>> {
        self.entries.get(key).await
    }

    pub async fn put(
        &self,
        key: String,
        body: Bytes,
        headers: Vec<(HeaderName, HeaderValue)>,
        ttl: Duration,
    ) {
        let entry = Cached {
            body,
            headers,
            stored: Instant::now(),
            ttl,
        };
        self.entries.insert(key, Arc::new(entry)).await;
    }

    /// Stores a fresh unary answer for `ttl` and returns it marked as a miss. Only the
    /// `Grpc-Metadata-*` headers are kept with the body.
    pub async fn store(
        &self,
        key: String,
        resp: http::Response<Body>,
        ttl: Duration,
    ) -> Result<http::Response<Body>, GatewayError> {
        let headers = resp
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("grpc-metadata-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (parts, b) = resp.into_parts();
        let bytes = b
            .collect()
            .await
            .map_err(|e| GatewayError::internal(e.to_string()))?
            .to_bytes();
        self.put(key, bytes.clone(), headers, ttl).await;
        let mut resp = http::Response::from_parts(parts, body::full(bytes));
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_str(&format!("private, max-age={}", ttl.as_secs())).expect("ascii"),
        );
        resp.headers_mut()
            .insert("x-cache", HeaderValue::from_static("miss"));
        Ok(resp)
    }
}

/// The cache key of a request: who asks (subject, else address) and what (path and query).
pub fn key(subject: Option<&str>, peer: SocketAddr, uri: &http::Uri) -> String {
    format!(
        "{}|{}",
        subject.map_or_else(|| format!("ip:{}", peer.ip()), |s| format!("sub:{s}")),
        uri.path_and_query().map_or("", |p| p.as_str())
    )
}

/// Whether the client asked for a fresh answer (`Cache-Control: no-cache` or `no-store`).
pub fn bypassed(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("no-cache") || v.contains("no-store"))
}

/// A stored answer, with its age.
pub fn hit_response(hit: &Cached) -> http::Response<Body> {
    let mut resp = body::json(hit.body.clone());
    for (k, v) in &hit.headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp.headers_mut()
        .insert(http::header::AGE, HeaderValue::from(hit.age().as_secs()));
    resp.headers_mut()
        .insert("x-cache", HeaderValue::from_static("hit"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_expire_and_capacity_is_kept() {
        let c = ResponseCache::new(2);
        c.put(
            "a".into(),
            Bytes::from_static(b"1"),
            vec![],
            Duration::from_millis(30),
        )
        .await;
        assert_eq!(c.get("a").await.unwrap().body, Bytes::from_static(b"1"));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(c.get("a").await.is_none());
        c.put("b".into(), Bytes::new(), vec![], Duration::from_secs(60))
            .await;
        c.put("c".into(), Bytes::new(), vec![], Duration::from_secs(60))
            .await;
        c.put("d".into(), Bytes::new(), vec![], Duration::from_secs(60))
            .await;
        // moka applies its size bound in batches; this runs the pending batch now.
        c.entries.run_pending_tasks().await;
        assert!(c.get("b").await.is_none(), "oldest evicted");
        assert!(c.get("c").await.is_some() && c.get("d").await.is_some());
    }

    #[tokio::test]
    async fn storing_again_renews_the_time_to_live() {
        let c = ResponseCache::new(10);
        c.put("k".into(), Bytes::new(), vec![], Duration::from_millis(30))
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.put("k".into(), Bytes::new(), vec![], Duration::from_millis(30))
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(c.get("k").await.is_some());
    }
}
