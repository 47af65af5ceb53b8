//! One request, start to end: the fixed endpoints (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`), native gRPC pass-through, the customer overview, then REST by the route
//! table. gRPC, the overview and REST go through admission first: the token check, then the
//! rate limit (tower layers, see `auth::layer` and `ratelimit::layer`).
//!
//! The parts, one file each: `rest` (a transcoded call and the response cache), `streams`
//! (SSE / NDJSON framing), `grpc` (gRPC and gRPC-Web pass-through), `ready` (readiness),
//! `metadata` (headers to metadata and back).

mod grpc;
mod metadata;
mod ready;
mod rest;
mod streams;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use ordermesh::transport::client::Upstream;
use prost_reflect::{DescriptorPool, ServiceDescriptor};
use tokio::time::Instant;
use tonic::Code;
use tower::{ServiceBuilder, ServiceExt};

use crate::aggregate::CustomerOverview;
use crate::auth::{self, AuthLayer, PublicRoute};
use crate::body::{self, Body};
use crate::cache::ResponseCache;
use crate::caller::{ClientAddr, Subject};
use crate::config::Settings;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::ratelimit::{RateLimitLayer, RateLimiter};
use crate::routes::{Resolved, Route, Router};
use crate::template::{Bindings, Template};
use crate::upstream::Upstreams;

pub use auth::is_public;

/// Entries of the response cache, across routes and clients.
const CACHE_CAPACITY: u64 = 10_000;

pub struct Gateway {
    pub(crate) router: Router,
    pub(crate) upstreams: Upstreams,
    pub(crate) settings: Settings,
    auth: Option<AuthLayer>,
    rate_limit: Option<RateLimitLayer>,
    cache: ResponseCache,
    pub metrics: Arc<Metrics>,
    openapi: Bytes,
    overview_path: Template,
    overview: CustomerOverview,
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

/// An HTTP/1.1 request must carry exactly one `Host` (RFC 9112 section 3.2: a server answers
/// 400 otherwise); HTTP/2 has `:authority` instead and HTTP/1.0 predates the rule.
fn require_host<B>(req: &http::Request<B>) -> Result<(), GatewayError> {
    if req.version() != http::Version::HTTP_11 {
        return Ok(());
    }
    match req.headers().get_all(http::header::HOST).iter().count() {
        1 => Ok(()),
        0 => Err(GatewayError::bad_request(
            "host",
            "an HTTP/1.1 request needs a Host header",
        )),
        _ => Err(GatewayError::bad_request(
            "host",
            "an HTTP/1.1 request takes one Host header",
        )),
    }
}

/// The descriptor pool: the shipped contracts plus any extra descriptor sets.
pub fn load_pool(extra: &[Vec<u8>]) -> anyhow::Result<DescriptorPool> {
    let mut pool = DescriptorPool::decode(ordermesh::proto::FILE_DESCRIPTOR_SET)?;
    for bytes in extra {
        pool.decode_file_descriptor_set(bytes.as_slice())?;
    }
    Ok(pool)
}

// === impl Gateway ===

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
        let metrics = Arc::new(Metrics::default());
        Ok(Arc::new(Self {
            auth: settings
                .auth
                .clone()
                .map(|a| AuthLayer::new(a, metrics.clone())),
            rate_limit: settings.rate_limit.map(|l| {
                RateLimitLayer::new(RateLimiter::new(l), &settings.api_keys, metrics.clone())
            }),
            cache: ResponseCache::new(CACHE_CAPACITY),
            metrics,
            overview_path: Template::parse(crate::aggregate::PATH).expect("valid template"),
            overview: CustomerOverview::new(&router, channels.clone(), settings.overview_timeout),
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
        mut req: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> BoxFuture<'static, http::Response<Body>> {
        // gRPC bodies are streamed to the service, not read here.
        let body_read = if grpc::is_grpc(req.headers()) {
            None
        } else {
            body::BodyRead::track(&mut req)
        };
        Box::pin(async move {
            let mut resp = self.dispatch(req, peer).await;
            if let Some(read) = body_read {
                read.close_if_unread(&mut resp);
            }
            resp
        })
    }

    async fn dispatch(
        self: Arc<Self>,
        mut req: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> http::Response<Body> {
        let started = Instant::now();
        req.extensions_mut().insert(ClientAddr(peer));
        let method = req.method().clone();
        if let Err(e) = require_host(&req) {
            return self.refuse(&method, e, started);
        }
        if grpc::is_grpc(req.headers()) {
            return self.grpc_admitted(req).await;
        }
        let path = match crate::template::normalize_path(req.uri().path()) {
            Ok(p) => p.into_owned(),
            Err(m) => return self.refuse(&method, GatewayError::bad_request("path", m), started),
        };
        let (label, resp) = match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => return body::json(r#"{"status":"SERVING"}"#),
            ("GET", "/readyz") => {
                let f: BoxFuture<'_, _> = Box::pin(self.ready());
                return f.await;
            }
            ("GET", "/metrics") => {
                return ordermesh::telemetry::metrics::scrape(&self.metrics.render())
                    .map(|b| b.map_err(|never| match never {}).boxed_unsync());
            }
            ("GET", "/openapi.json") => return body::json(self.openapi.clone()),
            _ => {
                if let Some(b) = self.overview_path.matches(&path) {
                    let label = format!("GET {}", crate::aggregate::PATH);
                    let r = if method == Method::GET {
                        let f: BoxFuture<'static, _> =
                            Box::pin(self.clone().overview_admitted(req, peer, b));
                        f.await
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
                            let label = route.label.clone();
                            let r = self.clone().rest_admitted(route, bindings, req, peer).await;
                            self.metrics
                                .observe(&label, r.status().as_u16(), started.elapsed());
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

    /// Answers a request refused before routing (a malformed request line or headers).
    fn refuse(&self, method: &Method, e: GatewayError, started: Instant) -> http::Response<Body> {
        let label = format!("{method} unmatched");
        crate::server::record_route(method, &label);
        let resp = e.into_response();
        self.metrics
            .observe(&label, resp.status().as_u16(), started.elapsed());
        resp
    }

    /// Runs `handler` behind admission: the token check, then the rate limit (which keys on
    /// the token's subject). `Err` is a refusal, for the caller to render in its protocol.
    fn admitted<F>(
        &self,
        mut req: http::Request<Incoming>,
        public: bool,
        handler: F,
    ) -> impl Future<Output = Result<http::Response<Body>, GatewayError>> + Send + 'static
    where
        F: FnOnce(http::Request<Incoming>) -> BoxFuture<'static, http::Response<Body>>
            + Send
            + 'static,
    {
        if public {
            req.extensions_mut().insert(PublicRoute);
        }
        let mut handler = Some(handler);
        let inner = tower::service_fn(move |req| {
            let handler = handler
                .take()
                .expect("an admission stack serves one request");
            let answer = handler(req);
            async move { Ok::<_, GatewayError>(answer.await) }
        });
        ServiceBuilder::new()
            .option_layer(self.auth.clone())
            .option_layer(self.rate_limit.clone())
            .service(inner)
            .oneshot(req)
    }

    async fn rest_admitted(
        self: Arc<Self>,
        route: Arc<Route>,
        bindings: Bindings,
        req: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> http::Response<Body> {
        let public = is_public(&self.settings.public_routes, &route);
        let gateway = self.clone();
        let answer = self.admitted(req, public, move |req| {
            Box::pin(async move {
                match gateway.rest(route, bindings, req, peer).await {
                    Ok(r) => r,
                    Err(e) => e.into_response(),
                }
            })
        });
        answer.await.unwrap_or_else(GatewayError::into_response)
    }

    async fn grpc_admitted(self: Arc<Self>, req: http::Request<Incoming>) -> http::Response<Body> {
        let service = grpc::service_of(req.uri().path());
        let Some(upstream) = self.services.get(service).cloned() else {
            return grpc::status_response(tonic::Status::unimplemented(format!(
                "unknown service {service}"
            )));
        };
        // The same token check and rate limit as REST; the subject is the gateway's to set.
        let method = req.uri().path().trim_start_matches('/');
        let public = auth::is_public_method(&self.settings.public_routes, method);
        let gateway = self.clone();
        let answer = self.admitted(req, public, move |req| {
            Box::pin(gateway.grpc(upstream, req))
        });
        match answer.await {
            Ok(r) => r,
            Err(e) => grpc::status_response(tonic::Status::new(e.code, e.message)),
        }
    }

    async fn overview_admitted(
        self: Arc<Self>,
        req: http::Request<Incoming>,
        peer: SocketAddr,
        bindings: Bindings,
    ) -> http::Response<Body> {
        let gateway = self.clone();
        let answer = self.admitted(req, false, move |req| {
            Box::pin(async move {
                let customer = bindings
                    .into_iter()
                    .next()
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                let md = metadata::request_metadata(
                    &gateway.settings.forward_headers,
                    req.headers(),
                    Subject::of(&req),
                    peer,
                    metadata::Privileged::for_caller(
                        crate::caller::Operator::of(&req),
                        gateway.settings.faults.enabled(),
                    ),
                );
                let overview = gateway.overview.answer(&customer, req.uri().query(), md);
                match overview.await {
                    Ok(v) => body::json(serde_json::to_vec(&v).unwrap_or_default()),
                    Err(e) => e.into_response(),
                }
            })
        });
        answer.await.unwrap_or_else(GatewayError::into_response)
    }
}
