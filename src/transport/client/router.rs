//! The balancer of an upstream with a traffic policy (`policy`): it knows each endpoint's
//! zone, health and age, so it can keep calls in the caller's zone, hash a request key onto a
//! ring, and ramp a new endpoint's share, none of which tower's p2c can see.
//!
//! For each call, in this order:
//! 1. **zone**: with zones and a caller zone, the pool is the caller's zone or the others, by
//!    the zone rule, counting ejected endpoints as unhealthy;
//! 2. **affinity**: with a hash header present on the request, the first endpoint of the pool
//!    going round the ring from the key's hash (an ejected or busy owner is skipped, so only
//!    its own keys move);
//! 3. otherwise p2c over peak-EWMA, as the default balancer; while an endpoint of the pool is
//!    still ramping up (slow start), a draw in proportion to the endpoints' weights instead
//!    (as Envoy's weighted round robin under slow start). Load is left out on purpose for
//!    that window: a fresh endpoint's queue is empty, so any load-aware rule (p2c, or
//!    Envoy's `weight / (active + 1)`) sends it more than its weight — the flood slow start
//!    is there to prevent.
//!
//! Endpoints come from one or more DNS watchers (one per zone), each change tagged with the
//! zone of the name it was found under. Like the round-robin balancer, readiness is polled for
//! every endpoint that is not ready yet, and a call takes the readiness of the one it uses.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::Stream;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, Load, PeakEwma};
use tower::Service;

use super::eject::{Eject, EndpointHealth};
use super::policy::{PolicyHandle, RoutePolicy, ZoneRule};
use super::ring::{self, Ring};
use super::BoxError;

/// A change to the endpoint set, tagged with the zone it was found in (`None`: no zones).
pub type ZonedChange = (Option<Arc<str>>, Change<String, Eject<Channel>>);

/// Envoy's default overprovisioning factor: a zone at 1/1.4 of its endpoints healthy still
/// takes all of its traffic.
const OVERPROVISIONING: f64 = 1.4;

struct Entry {
    addr: String,
    zone: Option<Arc<str>>,
    svc: PeakEwma<Eject<Channel>, CompleteOnResponse>,
    health: EndpointHealth,
    ready: bool,
    /// `routed_calls_total` for this endpoint's labels, looked up once.
    routed: prometheus::IntCounter,
}

/// Draws an index with probability proportional to its weight (uniformly when all are 0).
pub(crate) fn pick_weighted(weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return rand::random_range(0..weights.len().max(1));
    }
    let mut x = rand::random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// One backend's balancer under a traffic policy.
pub struct Router<D> {
    upstream: String,
    backend: String,
    local_zone: Option<Arc<str>>,
    policy: PolicyHandle,
    changes: D,
    entries: Vec<Entry>,
    ring: Ring,
    /// The ring no longer matches the entries (rebuilt by the first call that hashes after).
    ring_stale: bool,
}

impl<D> Router<D> {
    pub fn new(
        upstream: &str,
        backend: &str,
        local_zone: Option<&str>,
        policy: PolicyHandle,
        changes: D,
    ) -> Self {
        Self {
            upstream: upstream.to_string(),
            backend: backend.to_string(),
            local_zone: local_zone.map(Arc::from),
            policy,
            changes,
            entries: Vec::new(),
            ring: Ring::default(),
            ring_stale: true,
        }
    }

    fn rebuild_ring(&mut self) {
        let names: Vec<&str> = self.entries.iter().map(|e| e.addr.as_str()).collect();
        self.ring = Ring::new(&names);
    }

    fn is_local(&self, e: &Entry) -> bool {
        self.local_zone.is_some() && e.zone == self.local_zone
    }

    /// Whether this call should stay in the caller's zone (`None`: zones are not in play).
    fn stay_local(&self, route: &RoutePolicy) -> Option<bool> {
        if route.zones.is_empty() || self.local_zone.is_none() {
            return None;
        }
        let (mut total, mut healthy) = (0usize, 0usize);
        for e in self.entries.iter().filter(|e| self.is_local(e)) {
            total += 1;
            if !e.health.ejected() {
                healthy += 1;
            }
        }
        if total == 0 {
            return Some(false);
        }
        Some(match route.zone_rule {
            ZoneRule::Priority {
                min_healthy_percent,
            } => healthy > 0 && healthy * 100 >= total * min_healthy_percent as usize,
            ZoneRule::Weighted => {
                let share = (OVERPROVISIONING * healthy as f64 / total as f64).min(1.0);
                rand::random::<f64>() < share
            }
        })
    }

    /// The endpoint for this request, among the ready ones.
    fn choose(&self, req: &http::Request<Body>, route: Option<&RoutePolicy>) -> Option<usize> {
        let default = RoutePolicy::default();
        let route = route.unwrap_or(&default);
        let stay = self.stay_local(route);
        // Ready entries are not ejected: poll_ready took readiness from any that were.
        let in_pool = |e: &Entry| e.ready && stay.is_none_or(|l| self.is_local(e) == l);
        let mut pool: Vec<usize> = (0..self.entries.len())
            .filter(|&i| in_pool(&self.entries[i]))
            .collect();
        if pool.is_empty() {
            // Nothing ready where the rule points: any ready endpoint beats failing the call.
            pool = (0..self.entries.len())
                .filter(|&i| self.entries[i].ready)
                .collect();
        }
        if pool.is_empty() {
            return None;
        }
        if let Some(value) = route
            .hash_header
            .as_deref()
            .and_then(|h| req.headers().get(h))
        {
            let key = ring::hash(value.as_bytes());
            if let Some(i) = self.ring.owners(key).find(|i| pool.contains(i)) {
                return Some(i);
            }
        }
        if pool.len() == 1 {
            return Some(pool[0]);
        }
        if let Some(slow) = &route.slow_start {
            let now = Instant::now();
            let weights: Vec<f64> = pool
                .iter()
                .map(|&i| {
                    let e = &self.entries[i];
                    slow.weight(now.saturating_duration_since(e.health.admitted()))
                })
                .collect();
            if weights.iter().any(|w| *w < 1.0) {
                return Some(pool[pick_weighted(&weights)]);
            }
        }
        let a = pool[rand::random_range(0..pool.len())];
        let b = pool[rand::random_range(0..pool.len())];
        Some(if self.entries[b].svc.load() < self.entries[a].svc.load() {
            b
        } else {
            a
        })
    }
}

impl<D> Service<http::Request<Body>> for Router<D>
where
    D: Stream<Item = ZonedChange> + Unpin,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut changed = false;
        loop {
            match Pin::new(&mut self.changes).poll_next(cx) {
                Poll::Ready(Some((zone, Change::Insert(addr, svc)))) => {
                    self.entries.retain(|e| !(e.addr == addr && e.zone == zone));
                    let health = svc.health();
                    let locality = match (&self.local_zone, &zone) {
                        (Some(local), Some(z)) if local == z => "local",
                        (Some(_), Some(_)) => "remote",
                        _ => "",
                    };
                    let routed = crate::telemetry::metrics::ROUTED_CALLS.with_label_values(&[
                        &self.upstream,
                        &self.backend,
                        zone.as_deref().unwrap_or(""),
                        locality,
                    ]);
                    self.entries.push(Entry {
                        addr,
                        zone,
                        // A new endpoint starts as if it answered in 1ms, as in the default
                        // balancer, so it is tried soon; slow start limits how often.
                        svc: PeakEwma::new(
                            svc,
                            Duration::from_millis(1),
                            Duration::from_secs(5).as_nanos() as f64,
                            CompleteOnResponse::default(),
                        ),
                        health,
                        ready: false,
                        routed,
                    });
                    changed = true;
                }
                Poll::Ready(Some((zone, Change::Remove(addr)))) => {
                    self.entries.retain(|e| !(e.addr == addr && e.zone == zone));
                    changed = true;
                }
                Poll::Ready(None) => return Poll::Ready(Err("endpoint discovery ended".into())),
                Poll::Pending => break,
            }
        }
        let before = self.entries.len();
        self.entries.retain_mut(|e| {
            // Ejected by a call that was in flight when it was polled ready: poll it again,
            // which waits out the ejection.
            if e.ready && e.health.ejected() {
                e.ready = false;
            }
            if e.ready {
                return true;
            }
            match e.svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    e.ready = true;
                    true
                }
                Poll::Ready(Err(err)) => {
                    tracing::warn!(endpoint = %e.addr, error = %err, "endpoint failed; dropped until rediscovered");
                    false
                }
                Poll::Pending => true,
            }
        });
        if changed || self.entries.len() != before {
            // Rebuilt by the next call that hashes, not here for every change.
            self.ring_stale = true;
        }
        if self.entries.iter().any(|e| e.ready) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let policy = self.policy.current();
        let route = policy.upstream.get(&self.upstream);
        if self.ring_stale && route.is_some_and(|r| r.hash_header.is_some()) {
            self.rebuild_ring();
            self.ring_stale = false;
        }
        let Some(i) = self.choose(&req, route) else {
            return Box::pin(async { Err("the router was called before it was ready".into()) });
        };
        let e = &mut self.entries[i];
        e.routed.inc();
        e.ready = false;
        let fut = e.svc.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_picks_follow_the_weights() {
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[pick_weighted(&[1.0, 3.0, 0.0])] += 1;
        }
        assert_eq!(counts[2], 0, "a zero weight is never drawn");
        let share = counts[1] as f64 / 20_000.0;
        assert!((0.72..0.78).contains(&share), "{share}");
        // All zero: uniform rather than stuck.
        let mut seen = [false; 2];
        for _ in 0..100 {
            seen[pick_weighted(&[0.0, 0.0])] = true;
        }
        assert_eq!(seen, [true, true]);
    }
}
