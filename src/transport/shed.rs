//! Load shedding for servers: at most `limit` calls run at once; a call beyond that is refused
//! at once with RESOURCE_EXHAUSTED instead of waiting in a queue that grows without bound.
//! Health checks and reflection are never shed, so an overloaded server still answers probes.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tonic::body::Body;
use tower::{Layer, Service};

#[derive(Clone, Debug)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl LoadShedLayer {
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadShed<S> {
    inner: S,
    layer: LoadShedLayer,
}

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for LoadShed<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        if exempt(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        match self.layer.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let r = fut.await;
                    drop(permit);
                    r
                })
            }
            Err(_) => {
                let limit = self.layer.limit;
                tracing::warn!(method = req.uri().path(), limit, "overloaded: call shed");
                Box::pin(async move {
                    Ok(tonic::Status::resource_exhausted(format!(
                        "server overloaded: {limit} calls already in flight; retry with backoff"
                    ))
                    .into_http())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::ServiceExt;

    fn call(path: &str) -> http::Request<Body> {
        http::Request::builder()
            .uri(format!("http://x{path}"))
            .body(Body::empty())
            .unwrap()
    }

    fn grpc_status(r: &http::Response<Body>) -> Option<String> {
        r.headers()
            .get(crate::transport::headers::GRPC_STATUS)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn calls_beyond_the_limit_are_refused_not_queued() {
        let layer = LoadShedLayer::new(2);
        let (release, released) = tokio::sync::watch::channel(false);
        let svc = layer.layer(tower::service_fn(move |_req: http::Request<Body>| {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|r| *r).await;
                Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
            }
        }));
        let slow1 = tokio::spawn(svc.clone().oneshot(call("/a.B/C")));
        let slow2 = tokio::spawn(svc.clone().oneshot(call("/a.B/C")));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(layer.in_flight(), 2);
        let shed = svc.clone().oneshot(call("/a.B/C")).await.unwrap();
        assert_eq!(
            grpc_status(&shed).as_deref(),
            Some("8"),
            "RESOURCE_EXHAUSTED"
        );
        // Probes pass even now.
        let health = tokio::spawn(svc.clone().oneshot(call("/grpc.health.v1.Health/Check")));
        release.send(true).unwrap();
        for t in [slow1, slow2, health] {
            assert_eq!(grpc_status(&t.await.unwrap().unwrap()), None);
        }
        assert_eq!(layer.in_flight(), 0);
        let after = svc.oneshot(call("/a.B/C")).await.unwrap();
        assert_eq!(grpc_status(&after), None, "capacity is back");
    }
}
