//! Serves the gateway: HTTP/1.1 and h2c on one port, CORS and compression around every
//! answer, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::app::Gateway;

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(Any)
            .allow_headers(Any)
            .expose_headers(Any)
            .max_age(Duration::from_secs(600)),
    )
}

/// The gateway as a tower service for one connection.
#[derive(Clone)]
struct Entry {
    gateway: Arc<Gateway>,
    peer: SocketAddr,
}

impl tower::Service<http::Request<hyper::body::Incoming>> for Entry {
    type Response = http::Response<crate::body::Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let traced = http_span(&req, self.peer);
        let answer = traced.in_scope(|| self.gateway.clone().handle(req, self.peer));
        Box::pin(traced.instrument(async move {
            let resp = answer.await;
            let status = resp.status().as_u16();
            let span = tracing::Span::current();
            span.record("http.response.status_code", status);
            if status >= 500 {
                span.record("otel.status_code", "ERROR");
            }
            Ok(resp)
        }))
    }
}

/// The HTTP server span of one request (OpenTelemetry HTTP conventions), continuing the
/// caller's W3C trace (`traceparent`, `tracestate`, `baggage`); a request whose trace is not
/// sampled gets no span, only its context. The route is recorded by the gateway once it has
/// matched one (`http.route`, and the span name `METHOD route`).
fn http_span<B>(req: &http::Request<B>, peer: SocketAddr) -> ordermesh::telemetry::Traced {
    let method = req.method().as_str();
    let parent = ordermesh::telemetry::context_from_headers(req.headers());
    ordermesh::telemetry::entry(parent, || {
        tracing::info_span!(
            "http",
            otel.name = %method,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            url.path = %req.uri().path(),
            url.scheme = "http",
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            client.address = %peer.ip(),
            network.protocol.version = ?req.version(),
        )
    })
}

/// Accepts connections until `shutdown`, then lets open requests finish for up to `grace`.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> anyhow::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let cors = cors(&gateway.settings.cors_origins);
    // Streams must reach the client line by line: never compress them.
    let compress_when =
        DefaultPredicate::new().and(NotForContentType::const_new("application/x-ndjson"));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let gw = gateway.clone();
        let svc = ServiceBuilder::new()
            .option_layer(cors.clone())
            .layer(CompressionLayer::new().compress_when(compress_when.clone()))
            .service(Entry { gateway: gw, peer });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace over; dropping open connections"),
    }
    Ok(())
}

/// Names the current HTTP span after the matched route (`label` is `METHOD template`, or
/// `unmatched`): `http.route` and the span name, as the HTTP conventions ask.
pub(crate) fn record_route(method: &http::Method, label: &str) {
    let span = tracing::Span::current();
    let route = label
        .strip_prefix(method.as_str())
        .map(str::trim)
        .unwrap_or(label);
    span.record("http.route", route);
    // The OTel span has started by now, so its name is changed on the span itself.
    use opentelemetry::trace::TraceContextExt;
    tracing_opentelemetry::OpenTelemetrySpanExt::context(&span)
        .span()
        .update_name(label.to_string());
}

/// Serves only `/metrics` (the gateway's own series, then the process's shared registry) on a
/// listener of its own, until the process ends: the runtime's metrics listener, as in every
/// service.
pub async fn serve_metrics(gateway: Arc<Gateway>, listener: TcpListener) {
    ordermesh::telemetry::metrics::serve_with(listener, move || gateway.metrics.render()).await
}
