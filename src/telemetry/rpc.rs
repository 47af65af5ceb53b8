//! The RPC spans and RED metrics of the mesh, as tower layers: `ServerLayer` in every
//! `MeshServer` (continues the caller's W3C trace from the gRPC metadata, one `server` span per
//! call) and `ClientLayer` in every client stack (one `client` span per call, its context
//! written into the outgoing metadata). Span attributes follow the OpenTelemetry RPC
//! conventions: `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`.
//!
//! A call ends when its answer's body ends (the trailers carry `grpc-status`), so a streaming
//! call's span and duration cover the whole stream. An answer dropped before its end (the
//! caller went away) counts as CANCELLED.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as HttpBody, Frame};
use tonic::body::Body;
use tonic::Code;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::metrics;

/// `/pkg.Service/Method` -> (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (&str, &str) {
    let p = path.trim_start_matches('/');
    p.split_once('/').unwrap_or((p, ""))
}

/// The name Prometheus labels and logs use for a code, e.g. `UNAVAILABLE`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
        .map(Code::from_i32)
}

#[derive(Clone, Copy)]
enum Side {
    Server,
    Client,
}

/// Records a call's end once: span status, counter, histogram.
struct CallEnd {
    side: Side,
    span: tracing::Span,
    labels: [String; 3],
    started: Instant,
    done: bool,
}

impl CallEnd {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let n = code as i32;
        self.span.record("rpc.grpc.status_code", n);
        // Server spans: only codes that say the server failed are errors; client spans: all.
        let error = match self.side {
            Side::Server => matches!(
                code,
                Code::Unknown
                    | Code::DeadlineExceeded
                    | Code::Unimplemented
                    | Code::Internal
                    | Code::Unavailable
                    | Code::DataLoss
            ),
            Side::Client => code != Code::Ok,
        };
        if error {
            self.span.record("otel.status_code", "ERROR");
        }
        let secs = self.started.elapsed().as_secs_f64();
        let [a, b, c] = &self.labels;
        match self.side {
            Side::Server => {
                metrics::RPC_SERVER_REQUESTS
                    .with_label_values(&[a, b, code_name(code)])
                    .inc();
                metrics::RPC_SERVER_DURATION
                    .with_label_values(&[a, b])
                    .observe(secs);
            }
            Side::Client => {
                metrics::RPC_CLIENT_REQUESTS
                    .with_label_values(&[a, b, c, code_name(code)])
                    .inc();
                metrics::RPC_CLIENT_DURATION
                    .with_label_values(&[a, b, c])
                    .observe(secs);
            }
        }
    }
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

pin_project_lite::pin_project! {
    /// An answer's body that ends its call when the trailers (or the end) go by.
    pub struct Observed<B> {
        #[pin]
        inner: B,
        end: CallEnd,
    }
}

impl<B> HttpBody for Observed<B>
where
    B: HttpBody,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref() {
                    this.end.finish(status_of(t).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) => this.end.finish(Code::Internal),
            // A body that ends without trailers: the status was in the head, or it is missing.
            Poll::Ready(None) => this.end.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn observe<B>(resp: http::Response<B>, mut end: CallEnd) -> http::Response<Observed<B>> {
    // Trailers-only answers (most errors) carry the status in the head.
    if let Some(code) = status_of(resp.headers()) {
        end.finish(code);
    }
    resp.map(|inner| Observed { inner, end })
}

/// Server side: one span per call, continuing the caller's trace; RED metrics per method.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerLayer;

impl<S> Layer<S> for ServerLayer {
    type Service = ServerSpan<S>;
    fn layer(&self, inner: S) -> ServerSpan<S> {
        ServerSpan { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ServerSpan<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ServerSpan<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = split_path(req.uri().path());
        let span = tracing::info_span!(
            "grpc",
            otel.name = format!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
        );
        let parent = super::context_from_headers(req.headers());
        if opentelemetry::trace::TraceContextExt::span(&parent)
            .span_context()
            .is_valid()
        {
            let _ = span.set_parent(parent);
        }
        let end = CallEnd {
            side: Side::Server,
            span: span.clone(),
            labels: [service.to_string(), method.to_string(), String::new()],
            started: Instant::now(),
            done: false,
        };
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let resp = fut.await?;
                Ok(observe(resp, end))
            }
            .instrument(span),
        )
    }
}

/// Client side: one span per call (around retries), its W3C context written into the
/// outgoing metadata; RED metrics per upstream and method.
#[derive(Clone, Debug)]
pub struct ClientLayer {
    upstream: String,
}

impl ClientLayer {
    pub fn new(upstream: &str) -> Self {
        Self {
            upstream: upstream.to_string(),
        }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientSpan<S>;
    fn layer(&self, inner: S) -> ClientSpan<S> {
        ClientSpan {
            inner,
            upstream: self.upstream.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientSpan<S> {
    inner: S,
    upstream: String,
}

impl<S> Service<http::Request<Body>> for ClientSpan<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path().to_string();
        let (service, method) = split_path(&path);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = format!("{service}/{method}"),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = Empty,
            server.address = %self.upstream,
        );
        super::inject_headers(&span, req.headers_mut());
        let mut end = CallEnd {
            side: Side::Client,
            span: span.clone(),
            labels: [
                self.upstream.clone(),
                service.to_string(),
                method.to_string(),
            ],
            started: Instant::now(),
            done: false,
        };
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                match fut.await {
                    Ok(resp) => Ok(observe(resp, end).map(Body::new)),
                    Err(e) => {
                        end.finish(Code::Unavailable);
                        Err(e)
                    }
                }
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/ordermesh.order.v1.OrderService/PlaceOrder"),
            ("ordermesh.order.v1.OrderService", "PlaceOrder")
        );
        assert_eq!(split_path("/odd"), ("odd", ""));
    }

    #[tokio::test]
    async fn a_call_is_counted_once_with_its_status() {
        use http_body_util::BodyExt;
        let inner = tower::service_fn(|_req: http::Request<Body>| async {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
            let body = http_body_util::StreamBody::new(futures::stream::iter(vec![
                Ok::<_, tonic::Status>(Frame::data(bytes::Bytes::from_static(b"x"))),
                Ok(Frame::trailers(trailers)),
            ]));
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::new(body)))
        });
        let mut svc = ServerLayer.layer(inner);
        let req = http::Request::builder()
            .uri("/test.Svc/Counted")
            .body(Body::empty())
            .unwrap();
        let resp = svc.call(req).await.unwrap();
        let _ = resp.into_body().collect().await.unwrap();
        let count = |code: &str| {
            metrics::RPC_SERVER_REQUESTS
                .with_label_values(&["test.Svc", "Counted", code])
                .get()
        };
        assert_eq!((count("NOT_FOUND"), count("CANCELLED")), (1, 0));
        assert_eq!(
            metrics::RPC_SERVER_DURATION
                .with_label_values(&["test.Svc", "Counted"])
                .get_sample_count(),
            1
        );
    }
}
