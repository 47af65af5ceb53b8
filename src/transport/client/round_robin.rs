//! Round-robin balancing over a changing set of endpoints (tower has p2c but no round robin).
//! Each call goes to the next ready endpoint in turn; an endpoint that is not ready (ejected,
//! connecting) is skipped, one that fails readiness is dropped until discovery re-adds it.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::discover::{Change, Discover};
use tower::Service;

use super::BoxError;

pub struct RoundRobin<D: Discover> {
    discover: D,
    services: Vec<(D::Key, D::Service)>,
    next: usize,
    chosen: Option<usize>,
}

impl<D: Discover> RoundRobin<D> {
    pub fn new(discover: D) -> Self {
        Self {
            discover,
            services: Vec::new(),
            next: 0,
            chosen: None,
        }
    }
}

impl<D, Req> Service<Req> for RoundRobin<D>
where
    D: Discover + Unpin,
    D::Key: PartialEq,
    D::Error: Into<BoxError>,
    D::Service: Service<Req>,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
    <D::Service as Service<Req>>::Future: Send + 'static,
    <D::Service as Service<Req>>::Response: 'static,
{
    type Response = <D::Service as Service<Req>>::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            match Pin::new(&mut self.discover).poll_discover(cx) {
                Poll::Ready(Some(Ok(Change::Insert(key, svc)))) => {
                    self.services.retain(|(k, _)| *k != key);
                    self.services.push((key, svc));
                    self.chosen = None;
                }
                Poll::Ready(Some(Ok(Change::Remove(key)))) => {
                    self.services.retain(|(k, _)| *k != key);
                    self.chosen = None;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
                Poll::Ready(None) => return Poll::Ready(Err("endpoint discovery ended".into())),
                Poll::Pending => break,
            }
        }
        if self.chosen.is_some() {
            return Poll::Ready(Ok(()));
        }
        let n = self.services.len();
        let mut failed = Vec::new();
        for i in 0..n {
            let idx = (self.next + i) % n;
            match self.services[idx].1.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.chosen = Some(idx);
                    self.next = idx + 1;
                    break;
                }
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e.into(), "endpoint failed; dropped until rediscovered");
                    failed.push(idx);
                }
                Poll::Pending => {}
            }
        }
        for idx in failed.into_iter().rev() {
            self.services.remove(idx);
            if let Some(c) = self.chosen {
                if c > idx {
                    self.chosen = Some(c - 1);
                }
            }
        }
        if self.chosen.is_some() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(idx) = self.chosen.take() else {
            return Box::pin(async { Err("round robin called before it was ready".into()) });
        };
        let fut = self.services[idx].1.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}
