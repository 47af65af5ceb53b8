//! Native gRPC (HTTP/2, `application/grpc*`) and gRPC-Web passed through, once admitted, to the
//! service that owns the path; gRPC-Web is turned into gRPC here and back on the way out.

use std::convert::Infallible;
use std::sync::Arc;

use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::{Layer, ServiceExt};

use super::{metadata, Gateway};
use crate::body::{self, Body};
use crate::caller::Subject;

/// Whether a request is gRPC or gRPC-Web (by its content type).
pub fn is_grpc(h: &HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The service part of a gRPC path: `package.Service` of `/package.Service/Method`.
pub fn service_of(path: &str) -> &str {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
}

/// A gRPC status as a whole HTTP answer (trailers-only).
pub fn status_response(s: tonic::Status) -> http::Response<Body> {
    s.into_http::<tonic::body::Body>().map(|b| {
        b.map_err(|e| -> body::BoxError { Box::new(e) })
            .boxed_unsync()
    })
}

impl Gateway {
    pub(super) async fn grpc(
        self: Arc<Self>,
        upstream: String,
        mut req: http::Request<Incoming>,
    ) -> http::Response<Body> {
        let subject = Subject::of(&req).map(str::to_string);
        metadata::set_subject(req.headers_mut(), subject.as_deref());
        let privileged = metadata::Privileged::for_caller(
            crate::caller::Operator::of(&req),
            self.settings.faults.enabled(),
        );
        metadata::strip_privileged(req.headers_mut(), privileged);
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
                Ok::<_, Infallible>(match upstreams.forward(&upstream, r).await {
                    Ok(r) => r,
                    Err(s) => s.into_http(),
                })
            }
        });
        let resp = if web {
            match tonic_web::GrpcWebLayer::new()
                .layer(forward)
                .oneshot(req)
                .await
            {
                Ok(r) => r,
                Err(never) => match never {},
            }
        } else {
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
}
