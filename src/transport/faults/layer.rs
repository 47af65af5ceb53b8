//! Where faults are applied: the server layer (inside the deadline), and the client layer
//! that passes a request's targeted fault headers on to the calls made while handling it.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::body::Body;
use tower::{Layer, Service};

use super::decide::targets_here;
use super::{Faults, APPLIED_HEADER, HEADER_PREFIX, TARGET_HEADER};

tokio::task_local! {
    /// Fault headers to pass on to the calls this task makes (a target not reached yet).
    static PASS_ON: Arc<Vec<(HeaderName, HeaderValue)>>;
}

/// `fut`, to be spawned by the task handling a call, with the fault headers that call passes
/// on (the saga an order's placement starts makes its calls in a task of its own).
pub fn carry<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
    // Read now, in the handling task; the returned future runs in another one.
    let headers = PASS_ON.try_with(Arc::clone).ok();
    async move {
        match headers {
            Some(h) => PASS_ON.scope(h, fut).await,
            None => fut.await,
        }
    }
}

/// The fault headers of `headers`, when they target a server further down.
pub(super) fn passed_on(headers: &HeaderMap) -> Option<Arc<Vec<(HeaderName, HeaderValue)>>> {
    headers.get(TARGET_HEADER)?;
    // All of them, rule selectors (`x-ordermesh-fault-tag`) included, so a rule on a service
    // further down can select on them.
    let found: Vec<(HeaderName, HeaderValue)> = headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with(HEADER_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some(Arc::new(found))
}

/// Services whose calls are never faulted: probes and tooling must see the truth.
fn exempt(method: &str) -> bool {
    method.starts_with("grpc.health.") || method.starts_with("grpc.reflection.")
}

// === Server layer ===

/// Applies faults to the calls a server receives. Goes inside the deadline layer.
#[derive(Clone, Debug)]
pub struct ServerFaultLayer {
    service: &'static str,
    faults: Faults,
}

impl ServerFaultLayer {
    pub fn new(service: &'static str, faults: Faults) -> Self {
        Self { service, faults }
    }
}

impl<S> Layer<S> for ServerFaultLayer {
    type Service = ServerFaults<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerFaults {
            inner,
            service: self.service,
            faults: self.faults.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServerFaults<S> {
    inner: S,
    service: &'static str,
    faults: Faults,
}

impl<S, B> Service<http::Request<B>> for ServerFaults<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(rules) = self.faults.current() else {
            return Box::pin(self.inner.call(req));
        };
        let method = req.uri().path().trim_start_matches('/').to_string();
        if exempt(&method) {
            return Box::pin(self.inner.call(req));
        }
        let decision = rules.decide(self.service, &method, req.headers());
        let pass_on = (!targets_here(req.headers(), self.service, &method))
            .then(|| passed_on(req.headers()))
            .flatten();
        // The inner service was made ready for this call: take it, leave a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let Some(decision) = decision else {
                return match pass_on {
                    Some(h) => PASS_ON.scope(h, inner.call(req)).await,
                    None => inner.call(req).await,
                };
            };
            let label = |kind: &str| {
                crate::telemetry::metrics::FAULTS_INJECTED
                    .with_label_values(&[kind, &method])
                    .inc()
            };
            let applied = HeaderValue::from_str(&decision.describe()).ok();
            if let Some(d) = decision.delay {
                label("delay");
                tokio::time::sleep(d).await;
            }
            if let Some(code) = decision.abort {
                label("abort");
                let mut resp =
                    tonic::Status::new(code, format!("fault injected ({})", decision.describe()))
                        .into_http();
                if let Some(v) = applied {
                    resp.headers_mut().insert(APPLIED_HEADER, v);
                }
                return Ok(resp);
            }
            let mut resp = match pass_on {
                Some(h) => PASS_ON.scope(h, inner.call(req)).await?,
                None => inner.call(req).await?,
            };
            if let Some(v) = applied {
                resp.headers_mut().insert(APPLIED_HEADER, v);
            }
            Ok(resp)
        })
    }
}

// === Client layer ===

/// Adds the fault headers the call being handled passes on to each outgoing call.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassOnLayer;

impl<S> Layer<S> for PassOnLayer {
    type Service = PassOn<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PassOn { inner }
    }
}

#[derive(Clone, Debug)]
pub struct PassOn<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for PassOn<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let _ = PASS_ON.try_with(|headers| {
            for (k, v) in headers.iter() {
                req.headers_mut().insert(k.clone(), v.clone());
            }
        });
        self.inner.call(req)
    }
}
