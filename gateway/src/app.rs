//! One request, start to end: fixed endpoints, native gRPC pass-through, then for REST the
//! route, the token, the rate limit, the cache, the body, the call and the JSON answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use ordermesh::transport::client::Upstream;
use prost_reflect::{DescriptorPool, DynamicMessage, ServiceDescriptor};
use serde_json::json;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::Code;

use crate::body::{self, Body};
use crate::cache::ResponseCache;
use crate::config::Settings;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::ratelimit::{RateLimiter, Verdict};
use crate::routes::{Resolved, Route, Router};
use crate::template::{Bindings, Template};
use crate::transcode;
use crate::upstream::Upstreams;

/// Metadata the gateway sets itself; a client cannot pass these in.
const SUBJECT_METADATA: &str = "x-ordermesh-subject";

pub struct Gateway {
    pub(crate) router: Router,
    pub(crate) upstreams: Upstreams,
    pub(crate) settings: Settings,
    limiter: Option<RateLimiter>,
    cache: ResponseCache,
    pub metrics: Metrics,
    openapi: Bytes,
    overview: Template,
    /// gRPC service full name -> upstream, for pass-through.
    services: HashMap<String, String>,
}

/// Which upstream serves a service: `ordermesh.<name>.v1.*` is `<name>`; other packages use
/// their first component. The event log is served by every producer, so it is not routed.
pub fn upstream_name(service: &ServiceDescriptor) -> Option<String> {
    let file = service.parent_file();
    let mut parts = file.package_name().split('.');
    let first = parts.next()?;
    let name = if first == "ordermesh" {
        parts.next()?
    } else {
        first
    };
    (name != "events" && !name.is_empty()).then(|| name.to_string())
}

/// The descriptor pool: the shipped contracts plus any extra descriptor sets.
pub fn load_pool(extra: &[Vec<u8>]) -> anyhow::Result<DescriptorPool> {
    let mut pool = DescriptorPool::decode(ordermesh::proto::FILE_DESCRIPTOR_SET)?;
    for bytes in extra {
        pool.decode_file_descriptor_set(bytes.as_slice())?;
    }
    Ok(pool)
}

struct Caller {
    subject: Option<String>,
    rate: Option<Verdict>,
}

impl Gateway {
    /// Builds the route table and one client stack per upstream. Must run inside Tokio.
    pub fn new(
        pool: DescriptorPool,
        upstreams: &HashMap<String, Upstream>,
        settings: Settings,
    ) -> anyhow::Result<Arc<Self>> {
        let router = Router::from_pool(&pool, |s| {
            upstream_name(s).filter(|n| upstreams.contains_key(n))
        })?;
        let mut channels = Upstreams::default();
        for (name, up) in upstreams {
            let unary = up.stack().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            // Streams (watches) may stay open for hours; only the caller's deadline bounds them.
            let streaming = up
                .clone()
                .default_timeout(Duration::from_secs(24 * 3600))
                .retry(None)
                .stack()
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            channels.insert(name, unary, streaming);
        }
        let services = pool
            .services()
            .filter_map(|s| {
                upstream_name(&s)
                    .filter(|n| upstreams.contains_key(n))
                    .map(|n| (s.full_name().to_string(), n))
            })
            .collect();
        let secured = |r: &Route| settings.auth.is_some() && !is_public(&settings.public_routes, r);
        let overview_paths = crate::aggregate::openapi_paths(settings.auth.is_some());
        let doc = crate::openapi::document(&router, "ordermesh gateway", &secured, overview_paths);
        let openapi = Bytes::from(serde_json::to_vec_pretty(&doc)?);
        Ok(Arc::new(Self {
            limiter: settings.rate_limit.map(RateLimiter::new),
            cache: ResponseCache::new(10_000),
            metrics: Metrics::default(),
            overview: Template::parse(crate::aggregate::PATH).expect("valid template"),
            router,

            upstreams: channels,
            settings,
            openapi,
            services,
        }))
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Answers one request (boxed so the connection task stays small).
    pub fn handle(
        self: Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> futures::future::BoxFuture<'static, http::Response<Body>> {
        Box::pin(self.handle_inner(req, peer))
    }

    async fn handle_inner(
        self: Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> http::Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        if is_grpc(req.headers()) {
            return self.grpc(req, peer).await;
        }
        let (label, resp) = match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => return body::json(r#"{"status":"SERVING"}"#),
            ("GET", "/readyz") => {
                let f: futures::future::BoxFuture<'_, _> = Box::pin(self.ready());
                return f.await;
            }
            ("GET", "/metrics") => {
                let text = self.metrics.render() + &ordermesh::telemetry::metrics::render();
                let mut r = http::Response::new(body::full(text));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                return r;
            }
            ("GET", "/openapi.json") => return body::json(self.openapi.clone()),
            _ => {
                if let Some(b) = self.overview.matches(&path) {
                    let label = format!("GET {}", crate::aggregate::PATH);
                    let r = if method == Method::GET {
                        {
                            let f: futures::future::BoxFuture<'static, _> =
                                Box::pin(self.clone().overview(req, peer, b));
                            f.await
                        }
                    } else {
                        GatewayError::new(
                            Code::Unimplemented,
                            format!("{method} is not allowed here"),
                        )
                        .with_http(StatusCode::METHOD_NOT_ALLOWED)
                        .with_header(http::header::ALLOW, HeaderValue::from_static("GET"))
                        .into_response()
                    };
                    (label, r)
                } else {
                    match self.router.resolve(&method, &path) {
                        Resolved::Found(route, bindings) => {
                            let route = route.clone();
                            crate::server::record_route(&method, &route.label);
                            let r = self.clone().rest(&route, bindings, req, peer).await;
                            self.metrics.observe(
                                &route.label,
                                r.status().as_u16(),
                                started.elapsed(),
                            );
                            return r;
                        }
                        Resolved::WrongMethod(allowed) => {
                            let allow = allowed
                                .iter()
                                .map(Method::as_str)
                                .collect::<Vec<_>>()
                                .join(", ");
                            let e = GatewayError::new(
                                Code::Unimplemented,
                                format!("{method} is not allowed on {path} (allowed: {allow})"),
                            )
                            .with_http(StatusCode::METHOD_NOT_ALLOWED);
                            let e = match HeaderValue::from_str(&allow) {
                                Ok(v) => e.with_header(http::header::ALLOW, v),
                                Err(_) => e,
                            };
                            (format!("{method} unmatched"), e.into_response())
                        }
                        Resolved::NotFound => (
                            format!("{method} unmatched"),
                            GatewayError::new(
                                Code::NotFound,
                                format!("no route for {method} {path}"),
                            )
                            .into_response(),
                        ),
                    }
                }
            }
        };
        crate::server::record_route(&method, &label);
        self.metrics
            .observe(&label, resp.status().as_u16(), started.elapsed());
        resp
    }

    /// Token and rate limit, in that order (the limit keys on the token's subject).
    fn admit(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        public: bool,
    ) -> Result<Caller, GatewayError> {
        let mut subject = None;
        if let Some(auth) = &self.settings.auth {
            let header = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match auth.authenticate(header) {
                Ok(s) => subject = Some(s),
                Err(_) if public && header.is_none() => {}
                Err(e) => {
                    self.metrics.unauthenticated();
                    let challenge = HeaderValue::from_str(&e.challenge())
                        .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"ordermesh\""));
                    return Err(GatewayError::new(Code::Unauthenticated, e.to_string())
                        .with_header(http::header::WWW_AUTHENTICATE, challenge));
                }
            }
        }
        let mut rate = None;
        if let Some(limiter) = &self.limiter {
            let key = match (
                &subject,
                headers.get("x-api-key").and_then(|v| v.to_str().ok()),
            ) {
                (Some(s), _) => format!("sub:{s}"),
                (None, Some(k)) if self.settings.api_keys.iter().any(|a| a == k) => {
                    format!("key:{k}")
                }
                _ => format!("ip:{}", peer.ip()),
            };
            let v = limiter.check(&key);
            if !v.allowed {
                self.metrics.rate_limited();
                let retry_after = v.reset.as_secs_f64().ceil().max(1.0) as u64;
                let mut e = GatewayError::new(
                    Code::ResourceExhausted,
                    format!(
                        "rate limit of {} requests exceeded; retry in {retry_after}s",
                        v.limit
                    ),
                )
                .with_header(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
                for (k, val) in rate_headers(&v) {
                    e = e.with_header(k, val);
                }
                return Err(e);
            }
            rate = Some(v);
        }
        Ok(Caller { subject, rate })
    }

    async fn rest(
        self: Arc<Self>,
        route: &Route,
        bindings: Bindings,
        req: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> http::Response<Body> {
        let public = is_public(&self.settings.public_routes, route);
        let caller = match self.admit(req.headers(), peer, public) {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        };
        let mut resp = match self
            .clone()
            .transcoded(route, bindings, req, peer, &caller)
            .await
        {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        if let Some(v) = &caller.rate {
            for (k, val) in rate_headers(v) {
                resp.headers_mut().insert(k, val);
            }
        }
        resp
    }

    async fn transcoded(
        self: Arc<Self>,
        route: &Route,
        bindings: Bindings,
        req: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
        caller: &Caller,
    ) -> Result<http::Response<Body>, GatewayError> {
        let (parts, incoming) = req.into_parts();
        let cache_ttl = (route.http_method == Method::GET && !route.server_streaming())
            .then(|| self.settings.cache.get(&route.grpc_method).copied())
            .flatten();
        let no_cache = parts
            .headers
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("no-cache") || v.contains("no-store"));
        let cache_key = cache_ttl.map(|_| {
            format!(
                "{}|{}",
                caller
                    .subject
                    .as_deref()
                    .map_or_else(|| format!("ip:{}", peer.ip()), |s| format!("sub:{s}")),
                parts.uri.path_and_query().map_or("", |p| p.as_str())
            )
        });
        if let (Some(key), false) = (&cache_key, no_cache) {
            if let Some(hit) = self.cache.get(key) {
                self.metrics.cache(true);
                let mut resp = body::json(hit.body.clone());
                for (k, v) in &hit.headers {
                    resp.headers_mut().insert(k.clone(), v.clone());
                }
                resp.headers_mut()
                    .insert(http::header::AGE, HeaderValue::from(hit.age().as_secs()));
                resp.headers_mut()
                    .insert("x-cache", HeaderValue::from_static("hit"));
                return Ok(resp);
            }
        }
        let body = read_body(&parts.headers, incoming, self.settings.max_body).await?;
        let metadata = self.metadata(&parts.headers, caller, peer);
        let requested = parts
            .headers
            .get("grpc-timeout")
            .map(|v| {
                ordermesh::transport::deadline::parse_grpc_timeout(v).ok_or_else(|| {
                    GatewayError::bad_request("grpc-timeout", "not a gRPC timeout (e.g. 200m, 5S)")
                })
            })
            .transpose()?;
        let deadline =
            |default: Option<Duration>| requested.or(default).map(|d| Instant::now() + d);
        let sse = parts
            .headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/event-stream"));
        if route.client_streaming() && route.server_streaming() {
            let msgs = transcode::build_stream(&route.method.input(), &body)?;
            let (md, stream) = self
                .upstreams
                .bidi_call(route, msgs, metadata, deadline(None))
                .await
                .map_err(|s| GatewayError::from_status(&s))?;
            return Ok(self.clone().stream_response(route, &md, stream, sse));
        }
        if route.client_streaming() {
            let msgs = transcode::build_stream(&route.method.input(), &body)?;
            let (md, msg) = self
                .upstreams
                .client_streaming_call(route, msgs, metadata, deadline(Some(self.settings.timeout)))
                .await
                .map_err(|s| GatewayError::from_status(&s))?;
            return unary_response(route, &md, &msg);
        }
        let msg = transcode::build_request(route, bindings, parts.uri.query(), &body)?;
        if route.server_streaming() {
            let (md, stream) = self
                .upstreams
                .server_streaming_call(route, msg, metadata, deadline(None))
                .await
                .map_err(|s| GatewayError::from_status(&s))?;
            return Ok(self.clone().stream_response(route, &md, stream, sse));
        }
        let (md, msg) = self
            .upstreams
            .unary_call(route, msg, metadata, deadline(Some(self.settings.timeout)))
            .await
            .map_err(|s| GatewayError::from_status(&s))?;
        let resp = unary_response(route, &md, &msg)?;
        if let (Some(key), Some(ttl)) = (cache_key, cache_ttl) {
            self.metrics.cache(false);
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
            self.cache.put(key, bytes.clone(), headers, ttl);
            let mut resp = http::Response::from_parts(parts, body::full(bytes));
            resp.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_str(&format!("private, max-age={}", ttl.as_secs()))
                    .expect("ascii"),
            );
            resp.headers_mut()
                .insert("x-cache", HeaderValue::from_static("miss"));
            return Ok(resp);
        }
        Ok(resp)
    }

    fn stream_response(
        self: Arc<Self>,
        route: &Route,
        md: &MetadataMap,
        stream: tonic::Streaming<DynamicMessage>,
        sse: bool,
    ) -> http::Response<Body> {
        /// Counts the stream as open until its body is dropped: ended, or the client gone
        /// (dropping the upstream stream with it cancels the call).
        struct Open(Arc<Gateway>);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.metrics.stream_ended();
            }
        }
        self.metrics.stream_started();
        let open = Open(self.clone());
        let response_body = route.response_body.clone();
        let items = futures::stream::unfold((stream, false, open), move |(mut s, done, open)| {
            let response_body = response_body.clone();
            async move {
                if done {
                    return None;
                }
                let (chunk, done) = match s.message().await {
                    Ok(Some(m)) => match transcode::to_value(&m, response_body.as_ref()) {
                        Ok(v) => (frame(sse, None, &json!({"result": v}), &v), false),
                        Err(e) => (
                            frame(
                                sse,
                                Some("error"),
                                &json!({"error": e.to_json()}),
                                &e.to_json(),
                            ),
                            true,
                        ),
                    },
                    Ok(None) => return None,
                    Err(status) => {
                        let e = GatewayError::from_status(&status).to_json();
                        (frame(sse, Some("error"), &json!({"error": e}), &e), true)
                    }
                };
                Some((Ok::<_, body::BoxError>(chunk), (s, done, open)))
            }
        });
        let mut resp = http::Response::new(body::stream(items));
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(if sse {
                "text/event-stream"
            } else {
                "application/x-ndjson"
            }),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        metadata_headers(md, h);
        resp
    }

    fn metadata(&self, headers: &HeaderMap, caller: &Caller, peer: SocketAddr) -> MetadataMap {
        let mut md = MetadataMap::new();
        for name in &self.settings.forward_headers {
            for v in headers.get_all(name) {
                if let (Ok(k), Ok(v)) = (
                    MetadataKey::from_bytes(name.as_str().as_bytes()),
                    MetadataValue::try_from(v.as_bytes()),
                ) {
                    md.append(k, v);
                }
            }
        }
        for (name, v) in headers {
            if let Some(rest) = name.as_str().strip_prefix("grpc-metadata-") {
                if rest == SUBJECT_METADATA || rest.starts_with("grpc-") {
                    continue;
                }
                if let (Ok(k), Ok(v)) = (
                    MetadataKey::from_bytes(rest.as_bytes()),
                    MetadataValue::try_from(v.as_bytes()),
                ) {
                    md.append(k, v);
                }
            }
        }
        if let Some(s) = caller
            .subject
            .as_deref()
            .and_then(|s| MetadataValue::try_from(s).ok())
        {
            md.insert(SUBJECT_METADATA, s);
        }
        if let Ok(v) = MetadataValue::try_from(peer.ip().to_string()) {
            md.insert("x-forwarded-for", v);
        }
        md
    }

    /// Native gRPC (HTTP/2, `application/grpc*`) goes to the service that owns the path.
    async fn grpc(
        self: Arc<Self>,
        mut req: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> http::Response<Body> {
        let service = req
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let Some(upstream) = self.services.get(&service).cloned() else {
            return grpc_status(tonic::Status::unimplemented(format!(
                "unknown service {service}"
            )));
        };
        // The same token check and rate limit as REST; the subject is the gateway's to set.
        let method = req.uri().path().trim_start_matches('/').to_string();
        let public = self
            .settings
            .public_routes
            .iter()
            .any(|p| rule_matches(p, &method, None));
        let caller = match self.admit(req.headers(), peer, public) {
            Ok(c) => c,
            Err(e) => return grpc_status(tonic::Status::new(e.code, e.message)),
        };
        let headers = req.headers_mut();
        headers.remove(SUBJECT_METADATA);
        if let Some(v) = caller
            .subject
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            headers.insert(SUBJECT_METADATA, v);
        }
        // gRPC-Web (browsers) is turned into gRPC here and back on the way out.
        let web = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc-web"));
        let upstreams = self.upstreams.clone();
        let forward = tower::service_fn(move |r: http::Request<tonic::body::Body>| {
            let upstreams = upstreams.clone();
            let upstream = upstream.clone();
            async move {
                Ok::<_, std::convert::Infallible>(match upstreams.forward(&upstream, r).await {
                    Ok(r) => r,
                    Err(s) => s.into_http(),
                })
            }
        });
        let resp = if web {
            use tower::{Layer, ServiceExt};
            match tonic_web::GrpcWebLayer::new()
                .layer(forward)
                .oneshot(req)
                .await
            {
                Ok(r) => r,
                Err(never) => match never {},
            }
        } else {
            use tower::ServiceExt;
            let (parts, body) = req.into_parts();
            let req = http::Request::from_parts(parts, tonic::body::Body::new(body));
            match forward.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        };
        resp.map(|b| {
            b.map_err(|e| -> body::BoxError { Box::new(e) })
                .boxed_unsync()
        })
    }

    async fn ready(&self) -> http::Response<Body> {
        let names: Vec<String> = self.upstreams.names().map(str::to_string).collect();
        let mut checks = Vec::with_capacity(names.len());
        for name in names {
            let channel = self.upstreams.unary(&name);
            checks.push(async move {
                let result = async {
                    let mut client = tonic_health::pb::health_client::HealthClient::new(channel?);
                    let r = tokio::time::timeout(
                        Duration::from_secs(2),
                        client.check(tonic_health::pb::HealthCheckRequest {
                            service: String::new(),
                        }),
                    )
                    .await
                    .map_err(|_| tonic::Status::deadline_exceeded("no answer within 2s"))??;
                    Ok::<_, tonic::Status>(r.into_inner().status)
                }
                .await;
                (name, result)
            });
        }
        let results = futures::future::join_all(checks).await;
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        let all_ok = results
            .iter()
            .all(|(_, r)| matches!(r, Ok(s) if *s == serving));
        let detail: serde_json::Map<String, serde_json::Value> = results
            .into_iter()
            .map(|(n, r)| {
                let v = match r {
                    Ok(s) if s == serving => json!("SERVING"),
                    Ok(_) => json!("NOT_SERVING"),
                    Err(e) => json!(format!("{:?}: {}", e.code(), e.message())),
                };
                (n, v)
            })
            .collect();
        let mut resp = body::json(
            serde_json::to_vec(&json!({"ready": all_ok, "upstreams": detail})).unwrap_or_default(),
        );
        if !all_ok {
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        resp
    }

    async fn overview(
        self: Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
        bindings: Bindings,
    ) -> http::Response<Body> {
        let caller = match self.admit(req.headers(), peer, false) {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        };
        let customer = bindings
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or_default();
        let metadata = self.metadata(req.headers(), &caller, peer);
        let mut resp =
            match crate::aggregate::overview(&self, &customer, req.uri().query(), metadata).await {
                Ok(v) => body::json(serde_json::to_vec(&v).unwrap_or_default()),
                Err(e) => e.into_response(),
            };
        if let Some(v) = &caller.rate {
            for (k, val) in rate_headers(v) {
                resp.headers_mut().insert(k, val);
            }
        }
        resp
    }

    /// The route of a gRPC method, by full name (`package.Service.Method`).
    pub(crate) fn route_of(&self, method: &str) -> Option<&Route> {
        self.router
            .routes()
            .iter()
            .find(|r| r.method.full_name() == method)
            .map(|r| &**r)
    }
}

fn frame(
    sse: bool,
    event: Option<&str>,
    ndjson: &serde_json::Value,
    data: &serde_json::Value,
) -> Bytes {
    if sse {
        let mut s = String::new();
        if let Some(e) = event {
            s.push_str("event: ");
            s.push_str(e);
            s.push('\n');
        }
        s.push_str("data: ");
        s.push_str(&data.to_string());
        s.push_str("\n\n");
        Bytes::from(s)
    } else {
        let mut v = serde_json::to_vec(ndjson).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

fn unary_response(
    route: &Route,
    md: &MetadataMap,
    msg: &DynamicMessage,
) -> Result<http::Response<Body>, GatewayError> {
    let bytes = transcode::render(msg, route.response_body.as_ref())?;
    let mut resp = body::json(bytes);
    metadata_headers(md, resp.headers_mut());
    Ok(resp)
}

/// Response metadata back to the client as `Grpc-Metadata-<key>` headers.
fn metadata_headers(md: &MetadataMap, h: &mut HeaderMap) {
    for entry in md.iter() {
        let tonic::metadata::KeyAndValueRef::Ascii(k, v) = entry else {
            continue;
        };
        let name = k.as_str();
        if name.starts_with("grpc-")
            || name == "content-type"
            || name == "date"
            || name.ends_with("-bin")
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(format!("grpc-metadata-{name}").as_bytes()),
            HeaderValue::from_bytes(v.as_encoded_bytes()),
        ) {
            h.append(n, v);
        }
    }
}

fn rate_headers(v: &Verdict) -> [(HeaderName, HeaderValue); 3] {
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

fn grpc_status(s: tonic::Status) -> http::Response<Body> {
    s.into_http::<tonic::body::Body>().map(|b| {
        b.map_err(|e| -> body::BoxError { Box::new(e) })
            .boxed_unsync()
    })
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

pub fn is_public(rules: &[String], route: &Route) -> bool {
    rules
        .iter()
        .any(|p| rule_matches(p, &route.grpc_method, Some(&route.label)))
}

fn rule_matches(rule: &str, grpc_method: &str, http_rule: Option<&str>) -> bool {
    if http_rule == Some(rule) || rule == grpc_method {
        return true;
    }
    match rule.strip_suffix("/*") {
        Some(service) => grpc_method
            .split_once('/')
            .is_some_and(|(s, _)| s == service),
        None => false,
    }
}

async fn read_body(
    headers: &HeaderMap,
    incoming: hyper::body::Incoming,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            Code::InvalidArgument,
            format!("request body is larger than {limit} bytes"),
        )
        .with_http(StatusCode::PAYLOAD_TOO_LARGE)
    };
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    let bytes = http_body_util::Limited::new(incoming, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                GatewayError::bad_request("body", format!("could not read the body: {e}"))
            }
        })?
        .to_bytes();
    if !bytes.is_empty() {
        if let Some(ct) = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            // curl -d sends its form type by default; the body is parsed as JSON either way.
            let json = mime == "application/json"
                || mime.ends_with("+json")
                || mime == "application/x-ndjson"
                || mime == "application/x-www-form-urlencoded";
            if !json {
                return Err(GatewayError::new(
                    Code::InvalidArgument,
                    format!("content-type '{ct}' is not accepted; send application/json"),
                )
                .with_http(StatusCode::UNSUPPORTED_MEDIA_TYPE));
            }
        }
    }
    Ok(bytes)
}
