//! The gateway's own Prometheus metrics: requests and latency per route and status, open
//! streams, rate-limit refusals and cache hits, in the text exposition format.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latency buckets in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct RouteStats {
    /// (HTTP status, count), few per route.
    statuses: Vec<(u16, u64)>,
    latency: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    /// Per route label (`GET /v1/orders/{order_id}`, or `GET unmatched`): one lock, and no
    /// allocation once a route has been seen.
    routes: Mutex<HashMap<Arc<str>, RouteStats>>,
    open_streams: AtomicI64,
    rate_limited: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    unauthenticated: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, label: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut routes = self.routes.lock().expect("metrics lock");
        let stats = match routes.get_mut(label) {
            Some(s) => s,
            None => routes.entry(Arc::from(label)).or_default(),
        };
        match stats.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => stats.statuses.push((status, 1)),
        }
        let h = &mut stats.latency;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    pub fn stream_started(&self) {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stream_ended(&self) {
        self.open_streams.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn open_streams(&self) -> i64 {
        self.open_streams.load(Ordering::Relaxed)
    }

    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cache(&self, hit: bool) {
        if hit {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn unauthenticated(&self) {
        self.unauthenticated.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let routes = self.routes.lock().expect("metrics lock");
        let mut labels: Vec<&Arc<str>> = routes.keys().collect();
        labels.sort();
        let _ = writeln!(
            out,
            "# HELP gateway_http_requests_total REST requests answered, by route and HTTP status."
        );
        let _ = writeln!(out, "# TYPE gateway_http_requests_total counter");
        for label in &labels {
            let method = label.split(' ').next().unwrap_or_default();
            let mut statuses = routes[*label].statuses.clone();
            statuses.sort();
            for (status, n) in statuses {
                let _ = writeln!(
                    out,
                    "gateway_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(label)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP gateway_http_request_duration_seconds Time to the response head, by route."
        );
        let _ = writeln!(
            out,
            "# TYPE gateway_http_request_duration_seconds histogram"
        );
        for label in &labels {
            let method = label.split(' ').next().unwrap_or_default();
            let h = &routes[*label].latency;
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(label));
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "gateway_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "gateway_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "gateway_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "gateway_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        drop(routes);
        let gauges: [(&str, &str, &str, i64); 5] = [
            (
                "gateway_open_streams",
                "gauge",
                "Server streams being relayed to clients.",
                self.open_streams(),
            ),
            (
                "gateway_rate_limited_total",
                "counter",
                "Requests refused by the per-client rate limit.",
                self.rate_limited.load(Ordering::Relaxed) as i64,
            ),
            (
                "gateway_cache_hits_total",
                "counter",
                "Responses served from the response cache.",
                self.cache_hits.load(Ordering::Relaxed) as i64,
            ),
            (
                "gateway_cache_misses_total",
                "counter",
                "Cacheable requests that went to the upstream.",
                self.cache_misses.load(Ordering::Relaxed) as i64,
            ),
            (
                "gateway_unauthenticated_total",
                "counter",
                "Requests refused for a missing or bad token.",
                self.unauthenticated.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
