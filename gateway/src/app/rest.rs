//! A REST call once admitted: the response cache, the body, the deadline, the upstream call in
//! the route's shape (unary, server, client or bidi stream) and the JSON answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use hyper::body::Incoming;
use prost_reflect::DynamicMessage;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

use super::{metadata, streams, Gateway};
use crate::body::{self, Body};
use crate::cache;
use crate::caller::Subject;
use crate::error::GatewayError;
use crate::routes::Route;
use crate::template::Bindings;
use crate::transcode;

impl Gateway {
    pub(super) async fn rest(
        self: Arc<Self>,
        route: Arc<Route>,
        bindings: Bindings,
        req: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<http::Response<Body>, GatewayError> {
        // A rule's header selectors count only for callers allowed to send fault headers;
        // anyone else sees the rules that select on nothing.
        let selectors = match crate::caller::Operator::of(&req) {
            true => req.headers().clone(),
            false => http::HeaderMap::new(),
        };
        let Some(fault) = self.settings.faults.decide_route(&route.label, &selectors) else {
            return self.rest_call(route, bindings, req, peer).await;
        };
        self.injected(&route, &fault).await?;
        let mut resp = self.rest_call(route, bindings, req, peer).await?;
        if let Ok(v) = http::HeaderValue::from_str(&fault.describe()) {
            // Beside any the service applied.
            resp.headers_mut()
                .append(ordermesh::transport::faults::APPLIED_HEADER, v);
        }
        Ok(resp)
    }

    async fn rest_call(
        self: Arc<Self>,
        route: Arc<Route>,
        bindings: Bindings,
        req: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<http::Response<Body>, GatewayError> {
        let subject = Subject::of(&req).map(str::to_string);
        let (parts, incoming) = req.into_parts();
        let cache_ttl = (route.http_method == Method::GET && !route.server_streaming())
            .then(|| self.settings.cache.get(&route.grpc_method).copied())
            .flatten();
        let cache_key = cache_ttl.map(|_| cache::key(subject.as_deref(), peer, &parts.uri));
        if let (Some(key), false) = (&cache_key, cache::bypassed(&parts.headers)) {
            if let Some(hit) = self.cache.get(key).await {
                self.metrics.cache(true);
                return Ok(cache::hit_response(&hit));
            }
        }
        if route.client_streaming() {
            transcode::refuse_stream_query(parts.uri.query())?;
        }
        let body = body::read(&parts, incoming, self.settings.max_body).await?;
        let metadata = metadata::request_metadata(
            &self.settings.forward_headers,
            &parts.headers,
            subject.as_deref(),
            peer,
            metadata::Privileged::for_caller(
                parts.extensions.get::<crate::caller::Operator>().is_some(),
                self.settings.faults.enabled(),
            ),
        );
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
        let sse = streams::wants_sse(&parts.headers);
        let upstreams = &self.upstreams;
        if route.client_streaming() && route.server_streaming() {
            let msgs = transcode::build_stream(&route.method.input(), &body)?;
            let (md, stream) = upstreams
                .bidi_call(&route, msgs, metadata, deadline(None))
                .await
                .map_err(|s| transcode::upstream_error(&route.method.input(), &s))?;
            return Ok(streams::response(
                self.metrics.clone(),
                &route,
                &md,
                stream,
                sse,
            ));
        }
        if route.client_streaming() {
            let msgs = transcode::build_stream(&route.method.input(), &body)?;
            let (md, msg) = upstreams
                .client_streaming_call(
                    &route,
                    msgs,
                    metadata,
                    deadline(Some(self.settings.timeout)),
                )
                .await
                .map_err(|s| transcode::upstream_error(&route.method.input(), &s))?;
            return unary_response(&route, &md, &msg);
        }
        let msg = transcode::build_request(&route, bindings, parts.uri.query(), &body)?;
        if route.server_streaming() {
            let (md, stream) = upstreams
                .server_streaming_call(&route, msg, metadata, deadline(None))
                .await
                .map_err(|s| transcode::upstream_error(&route.method.input(), &s))?;
            return Ok(streams::response(
                self.metrics.clone(),
                &route,
                &md,
                stream,
                sse,
            ));
        }
        let (md, msg) = upstreams
            .unary_call(&route, msg, metadata, deadline(Some(self.settings.timeout)))
            .await
            .map_err(|s| transcode::upstream_error(&route.method.input(), &s))?;
        let resp = unary_response(&route, &md, &msg)?;
        match (cache_key, cache_ttl) {
            (Some(key), Some(ttl)) => {
                self.metrics.cache(false);
                self.cache.store(key, resp, ttl).await
            }
            _ => Ok(resp),
        }
    }
}

fn unary_response(
    route: &Route,
    md: &MetadataMap,
    msg: &DynamicMessage,
) -> Result<http::Response<Body>, GatewayError> {
    let bytes = transcode::render(msg, route.response_body.as_ref())?;
    let mut resp = body::json(bytes);
    metadata::response_headers(md, resp.headers_mut());
    Ok(resp)
}

impl Gateway {
    /// A route rule's faults (`transport::faults`): the delay, bounded by the gateway's
    /// timeout (past it, DEADLINE_EXCEEDED as an upstream would answer), then the abort.
    async fn injected(
        &self,
        route: &Route,
        f: &ordermesh::transport::faults::Decision,
    ) -> Result<(), GatewayError> {
        let count = |kind: &str| {
            ordermesh::telemetry::metrics::FAULTS_INJECTED
                .with_label_values(&[kind, &route.label])
                .inc()
        };
        let applied = http::HeaderValue::from_str(&f.describe())
            .unwrap_or_else(|_| http::HeaderValue::from_static("fault"));
        let header = http::HeaderName::from_static(ordermesh::transport::faults::APPLIED_HEADER);
        if let Some(d) = f.delay {
            count("delay");
            if d >= self.settings.timeout {
                tokio::time::sleep(self.settings.timeout).await;
                return Err(GatewayError::new(
                    tonic::Code::DeadlineExceeded,
                    format!(
                        "fault injected ({}): the gateway's timeout passed",
                        f.describe()
                    ),
                )
                .with_header(header, applied));
            }
            tokio::time::sleep(d).await;
        }
        if let Some(code) = f.abort {
            count("abort");
            let mut e = GatewayError::new(code, format!("fault injected ({})", f.describe()))
                .with_header(header, applied);
            if let Some(st) = f
                .http_status
                .and_then(|s| http::StatusCode::from_u16(s).ok())
            {
                e = e.with_http(st);
            }
            return Err(e);
        }
        Ok(())
    }
}
