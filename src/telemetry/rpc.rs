//! The RPC spans and RED metrics of the mesh, as tower layers: `ServerLayer` in every
//! `MeshServer` (continues the caller's W3C trace from the gRPC metadata, one `server` span per
//! call) and `ClientLayer` in every client stack (one `client` span per call, its context
//! written into the outgoing metadata). Span attributes follow the OpenTelemetry RPC
//! conventions: `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`.
//!
//! A call ends when its answer's body ends (the trailers carry `grpc-status`), so a streaming
//! call's span and duration cover the whole stream. An answer dropped before its end (the
//! caller went away) counts as CANCELLED.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as HttpBody, Frame};
use tonic::body::Body;
use tonic::Code;
use tower::{Layer, Service};
use tracing::field::Empty;

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

/// The status header of a gRPC response (telemetry sits below the transport's header table,
/// so it names the one header it reads itself).
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get(GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
        .map(Code::from_i32)
}

#[derive(Clone, Copy, Debug)]
enum Side {
    Server,
    Client,
}

/// One method's metric handles, looked up once (labelled handles cost a hash and a lock
/// each time they are asked for) and made on first use.
#[derive(Debug)]
struct Method {
    service: Box<str>,
    method: Box<str>,
    duration: OnceLock<prometheus::Histogram>,
    /// By `Code as usize`.
    requests: [OnceLock<prometheus::IntCounter>; 17],
}

impl Method {
    fn new(service: &str, method: &str) -> Arc<Self> {
        Arc::new(Self {
            service: service.into(),
            method: method.into(),
            duration: OnceLock::new(),
            requests: Default::default(),
        })
    }
}

/// Distinct methods a layer keeps series for. Server paths come from callers, so the set is
/// bounded: a path is kept only once a call to it was answered by something other than
/// UNIMPLEMENTED, and past this many, calls to methods not yet kept are counted as `other`.
const MAX_METHODS: usize = 512;

/// The methods one layer has seen, by gRPC path.
#[derive(Debug)]
struct Methods {
    side: Side,
    upstream: Box<str>,
    seen: RwLock<HashMap<Box<str>, Arc<Method>>>,
    other: Arc<Method>,
}

/// A call's method: one kept in `Methods`, or one named after a path not kept yet.
struct Called {
    method: Arc<Method>,
    /// The path, while it is not kept.
    path: Option<Box<str>>,
}

impl Methods {
    fn new(side: Side, upstream: &str) -> Arc<Self> {
        Arc::new(Self {
            side,
            upstream: upstream.into(),
            seen: RwLock::new(HashMap::new()),
            other: Method::new("other", "other"),
        })
    }

    fn get(&self, path: &str) -> Called {
        let seen = self.seen.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = seen.get(path) {
            return Called {
                method: m.clone(),
                path: None,
            };
        }
        drop(seen);
        let (service, method) = split_path(path);
        Called {
            method: Method::new(service, method),
            path: Some(path.into()),
        }
    }

    /// The method a call that ended with `code` is counted under.
    fn settle(&self, called: &Called, code: Code) -> Arc<Method> {
        let Some(path) = &called.path else {
            return called.method.clone();
        };
        if code == Code::Unimplemented {
            return self.other.clone();
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = seen.get(&**path) {
            return m.clone();
        }
        if seen.len() >= MAX_METHODS {
            return self.other.clone();
        }
        seen.insert(path.clone(), called.method.clone());
        called.method.clone()
    }

    fn record(&self, m: &Method, code: Code, secs: f64) {
        m.requests[code as usize]
            .get_or_init(|| match self.side {
                Side::Server => metrics::RPC_SERVER_REQUESTS.with_label_values(&[
                    &m.service,
                    &m.method,
                    code_name(code),
                ]),
                Side::Client => metrics::RPC_CLIENT_REQUESTS.with_label_values(&[
                    &self.upstream,
                    &m.service,
                    &m.method,
                    code_name(code),
                ]),
            })
            .inc();
        m.duration
            .get_or_init(|| match self.side {
                Side::Server => {
                    metrics::RPC_SERVER_DURATION.with_label_values(&[&m.service, &m.method])
                }
                Side::Client => metrics::RPC_CLIENT_DURATION.with_label_values(&[
                    &self.upstream,
                    &m.service,
                    &m.method,
                ]),
            })
            .observe(secs);
    }
}

/// Records a call's end once: span status, counter, histogram.
struct CallEnd {
    methods: Arc<Methods>,
    called: Called,
    span: tracing::Span,
    started: Instant,
    done: bool,
}

impl CallEnd {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if !self.span.is_none() {
            self.span.record("rpc.grpc.status_code", code as i32);
            // Server spans: only codes that say the server failed are errors; client spans: all.
            let error = match self.methods.side {
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
        }
        let method = self.methods.settle(&self.called, code);
        self.methods
            .record(&method, code, self.started.elapsed().as_secs_f64());
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

/// Server side: one span per sampled call, continuing the caller's trace (an unsampled call
/// runs in the caller's context, with no span); RED metrics per method.
#[derive(Clone, Debug)]
pub struct ServerLayer {
    methods: Arc<Methods>,
}

impl Default for ServerLayer {
    fn default() -> Self {
        Self {
            methods: Methods::new(Side::Server, ""),
        }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerSpan<S>;
    fn layer(&self, inner: S) -> ServerSpan<S> {
        ServerSpan {
            inner,
            methods: self.methods.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServerSpan<S> {
    inner: S,
    methods: Arc<Methods>,
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
        let called = self.methods.get(req.uri().path());
        let method = &called.method;
        let parent = super::context_from_headers(req.headers());
        let traced = super::entry(parent, || {
            tracing::info_span!(
                "grpc",
                otel.name = format!("{}/{}", method.service, method.method),
                otel.kind = "server",
                otel.status_code = Empty,
                rpc.system = "grpc",
                rpc.service = &*method.service,
                rpc.method = &*method.method,
                rpc.grpc.status_code = Empty,
            )
        });
        let end = CallEnd {
            methods: self.methods.clone(),
            called,
            span: traced.span(),
            started: Instant::now(),
            done: false,
        };
        let fut = traced.in_scope(|| self.inner.call(req));
        Box::pin(traced.instrument(async move {
            let resp = fut.await?;
            Ok(observe(resp, end))
        }))
    }
}

/// Client side: one span per sampled call (around retries), the call's W3C context written
/// into the outgoing metadata (a not-sampled one too, so the callee does not sample it
/// again); RED metrics per upstream and method.
#[derive(Clone, Debug)]
pub struct ClientLayer {
    methods: Arc<Methods>,
}

impl ClientLayer {
    pub fn new(upstream: &str) -> Self {
        Self {
            methods: Methods::new(Side::Client, upstream),
        }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientSpan<S>;
    fn layer(&self, inner: S) -> ClientSpan<S> {
        ClientSpan {
            inner,
            methods: self.methods.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientSpan<S> {
    inner: S,
    methods: Arc<Methods>,
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
        let called = self.methods.get(req.uri().path());
        let method = &called.method;
        let traced = if super::enabled() {
            super::entry(super::current_context(), || {
                tracing::info_span!(
                    "grpc.client",
                    otel.name = format!("{}/{}", method.service, method.method),
                    otel.kind = "client",
                    otel.status_code = Empty,
                    rpc.system = "grpc",
                    rpc.service = &*method.service,
                    rpc.method = &*method.method,
                    rpc.grpc.status_code = Empty,
                    server.address = &*self.methods.upstream,
                )
            })
        } else {
            // No OpenTelemetry: a span would carry nothing but log context, which the
            // caller's span gives already.
            super::Traced::Span(tracing::Span::none())
        };
        traced.inject(req.headers_mut());
        let mut end = CallEnd {
            methods: self.methods.clone(),
            called,
            span: traced.span(),
            started: Instant::now(),
            done: false,
        };
        let fut = traced.in_scope(|| self.inner.call(req));
        Box::pin(traced.instrument(async move {
            match fut.await {
                Ok(resp) => Ok(observe(resp, end).map(Body::new)),
                Err(e) => {
                    end.finish(Code::Unavailable);
                    Err(e)
                }
            }
        }))
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

    #[test]
    fn unknown_paths_are_not_kept_and_the_kept_set_is_bounded() {
        let methods = Methods::new(Side::Server, "");
        let kept = || methods.seen.read().unwrap().len();
        // Paths nobody serves are counted as `other` and never kept.
        for i in 0..1000 {
            let c = methods.get(&format!("/junk.Svc/M{i}"));
            assert_eq!(&*methods.settle(&c, Code::Unimplemented).service, "other");
        }
        assert_eq!(kept(), 0);
        // A served method is kept after its first answer, whatever the answer.
        let c = methods.get("/real.Svc/Get");
        assert!(c.path.is_some());
        assert_eq!(&*methods.settle(&c, Code::NotFound).method, "Get");
        assert!(methods.get("/real.Svc/Get").path.is_none());
        for i in 0..2 * MAX_METHODS {
            let c = methods.get(&format!("/many.Svc/M{i}"));
            methods.settle(&c, Code::Ok);
        }
        assert_eq!(kept(), MAX_METHODS);
        // Past the bound a new method is counted as `other` (its span keeps its name), and
        // the ones kept before keep their own series.
        let c = methods.get("/late.Svc/New");
        assert_eq!((&*c.method.service, &*c.method.method), ("late.Svc", "New"));
        assert_eq!(&*methods.settle(&c, Code::Ok).service, "other");
        let c = methods.get("/real.Svc/Get");
        assert_eq!(&*methods.settle(&c, Code::Ok).method, "Get");
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
        let mut svc = ServerLayer::default().layer(inner);
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
