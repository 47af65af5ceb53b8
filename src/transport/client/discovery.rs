//! Discovery for the client stack: a watcher per DNS name that re-resolves it on its TTL and
//! tells the balancer (or a traffic-policy router) which endpoints came and went, counting them
//! for the `balancer_endpoints` gauge and for a split.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::transport::Channel;
use tower::discover::Change;

use super::{eject, Upstream};
use crate::transport::dns::{DnsError, Resolved, Resolver, Target};

/// Follows an upstream's DNS name and tells the balancer what changed.
pub(super) struct DnsWatcher {
    pub(super) upstream: Upstream,
    pub(super) resolver: Resolver,
    pub(super) target: Target,
    pub(super) min_refresh: Duration,
    pub(super) max_refresh: Duration,
    /// The endpoints that count together for ejection (one backend's, across its zones).
    pub(super) group: Arc<eject::EjectionGroup>,
    /// Whether an answer of "no such records" empties the set (a zone's name: its emptiness
    /// is what fails calls over to the other zones) instead of keeping the last good one.
    pub(super) empty_when_absent: bool,
    /// Counters of known endpoints this watcher adds its own to (the stack's, for the
    /// `balancer_endpoints` gauge, which two stacks of one upstream each set whole; and the
    /// backend's, which a split reads).
    pub(super) known: Vec<Arc<AtomicI64>>,
    /// The backend's names still to answer for the first time (with endpoints or with none),
    /// for a split; this watcher takes its one off once.
    pub(super) unanswered: Option<Arc<AtomicUsize>>,
}

impl DnsWatcher {
    pub(super) async fn run(self, tx: mpsc::Sender<Change<String, eject::Eject<Channel>>>) {
        let gauge =
            crate::telemetry::metrics::BALANCER_ENDPOINTS.with_label_values(&[&self.upstream.name]);
        let mut current: BTreeSet<SocketAddr> = BTreeSet::new();
        self.follow(&tx, &mut current, &gauge).await;
        // The balancer is gone: its endpoints no longer count.
        // The counters lose its endpoints; the gauge is left to the stacks still running (each
        // sets it whole), as before traffic policies.
        for k in &self.known {
            k.fetch_sub(current.len() as i64, Ordering::Relaxed);
        }
    }

    fn count(&self, delta: i64, gauge: &prometheus::IntGauge) {
        for k in &self.known {
            k.fetch_add(delta, Ordering::Relaxed);
        }
        gauge.set(self.known[0].load(Ordering::Relaxed));
    }

    /// The first answer of this name (endpoints, or none): one name fewer to wait for.
    fn answered(&self, first: &mut bool) {
        if std::mem::take(first) {
            if let Some(u) = &self.unanswered {
                u.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    async fn follow(
        &self,
        tx: &mpsc::Sender<Change<String, eject::Eject<Channel>>>,
        current: &mut BTreeSet<SocketAddr>,
        gauge: &prometheus::IntGauge,
    ) {
        let group = self.group.clone();
        let mut failures = 0u32;
        let mut first = true;
        loop {
            let answer = match self.resolver.resolve(&self.target).await {
                Err(DnsError::NoRecords { .. }) if self.empty_when_absent => Ok(Resolved {
                    endpoints: BTreeSet::new(),
                    ttl: self.min_refresh,
                }),
                other => other,
            };
            let wait = match answer {
                Ok(resolved) => {
                    failures = 0;
                    for gone in current.difference(&resolved.endpoints) {
                        tracing::info!(upstream = %self.upstream.name, endpoint = %gone, "endpoint removed");
                        if tx.send(Change::Remove(gone.to_string())).await.is_err() {
                            return;
                        }
                    }
                    for new in resolved.endpoints.difference(current) {
                        let uri = format!("http://{new}");
                        let channel = match self.upstream.endpoint(&uri) {
                            Ok(e) => self.upstream.lazy(e),
                            Err(e) => {
                                tracing::warn!(endpoint = %new, error = %e, "bad endpoint");
                                continue;
                            }
                        };
                        tracing::info!(upstream = %self.upstream.name, endpoint = %new, "endpoint added");
                        let svc = eject::Eject::new(
                            channel,
                            group.clone(),
                            new.to_string(),
                            self.upstream.ejection,
                        );
                        if tx.send(Change::Insert(new.to_string(), svc)).await.is_err() {
                            return;
                        }
                    }
                    // Several watchers (zones, backends) may feed one upstream: each adds
                    // what it changed.
                    self.count(
                        resolved.endpoints.len() as i64 - current.len() as i64,
                        gauge,
                    );
                    self.answered(&mut first);
                    *current = resolved.endpoints;
                    resolved.ttl.clamp(self.min_refresh, self.max_refresh)
                }
                Err(e) => {
                    // "No such records" is an answer too (the split stops waiting for this
                    // name), though the last good set is kept.
                    if matches!(e, DnsError::NoRecords { .. }) {
                        self.answered(&mut first);
                    }
                    // Keep the last good set; try again soon, backing off.
                    failures += 1;
                    tracing::warn!(upstream = %self.upstream.name, error = %e, kept = current.len(), "DNS resolution failed; keeping the last endpoints");
                    (self.min_refresh * 2u32.saturating_pow(failures.min(6))).min(self.max_refresh)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tx.closed() => return,
            }
        }
    }
}
