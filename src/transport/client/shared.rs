//! A balancer shared by every clone of a channel, without a worker task: each call takes the
//! lock, waits for the balancer to pick a ready endpoint, starts the call on it and lets go, so
//! the response itself is awaited outside the lock. This saves the extra queue hop and task
//! switch a `tower::buffer::Buffer` would add in front of the balancer.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::sync::Mutex;
use tower::Service;

use super::BoxError;

pub struct Shared<S> {
    inner: Arc<Mutex<S>>,
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S> Shared<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }
}

impl<S, B> Service<http::Request<B>> for Shared<S>
where
    S: Service<http::Request<B>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is taken under the lock at call time.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Fast path: the lock is free and the balancer has a ready endpoint now.
        if let Ok(mut svc) = self.inner.try_lock() {
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            match svc.poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => {
                    let fut = svc.call(req);
                    return Box::pin(async move { fut.await.map_err(Into::into) });
                }
                Poll::Ready(Err(e)) => {
                    let e = e.into();
                    return Box::pin(async move { Err(e) });
                }
                // Wait below, with a waker that will be woken.
                Poll::Pending => {}
            }
        }
        let inner = self.inner.clone();
        let deadline = req
            .extensions()
            .get::<crate::transport::deadline::CallDeadline>()
            .map(|d| d.0);
        Box::pin(async move {
            let wait = async {
                let mut svc = inner.lock().await;
                futures::future::poll_fn(|cx| svc.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                Ok::<_, BoxError>(svc.call(req))
            };
            let fut = match deadline {
                Some(d) => tokio::time::timeout_at(d, wait)
                    .await
                    .map_err(|_| BoxError::from("no endpoint was ready before the deadline"))??,
                None => wait.await?,
            };
            fut.await.map_err(Into::into)
        })
    }
}
