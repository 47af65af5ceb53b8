//! The end of a run: the JSON summary (the numbers), three SVG plots and one static HTML page
//! that inlines them, all in the --out folder; and the headline printed to stdout.

mod html;
mod plot;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::record::Recorded;
use crate::schedule::Punctuality;
use crate::shop::Op;

pub const SUMMARY: &str = "summary.json";
pub const HTML: &str = "report.html";
pub const SVGS: [&str; 3] = ["latency-over-time.svg", "percentiles.svg", "throughput.svg"];

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: (h.mean() / 10.0).round() / 100.0,
        })
    }
}

/// How the run was set up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    pub scenario: String,
    pub transport: String,
    pub target: String,
    pub mode: String,
    /// Open loop: shoppers arriving per second.
    pub rate: Option<f64>,
    /// Closed loop: concurrent shoppers.
    pub shoppers: Option<u32>,
    pub duration_s: f64,
    pub max_requests: Option<u64>,
    pub max_orders: Option<u64>,
    pub skus: u32,
    pub hot_skus: Vec<String>,
    pub seed: u64,
    pub run_id: String,
    pub started_at: String,
    /// From the first arrival to the last answer (the load, then the drain).
    pub elapsed_s: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    /// Every `per_s` figure counts what completed in the first `rate_window_s` seconds (while
    /// shoppers were arriving, whole timeline buckets), not the drain after it.
    pub rate_window_s: f64,
    pub requests_per_s: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpSummary {
    pub op: String,
    pub count: u64,
    pub errors: u64,
    pub per_s: f64,
    pub latency_ms: Percentiles,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorCount {
    pub op: String,
    /// `grpc <CODE>`, `http <status>`, `transport`, `timeout` or `protocol`.
    pub kind: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderSummary {
    pub placed: u64,
    /// Confirmed, rejected or cancelled.
    pub final_count: u64,
    /// Placed-and-final orders per second of the run.
    pub final_per_s: f64,
    /// confirmed, rejected, cancelled, timed_out, watch_failed.
    pub outcomes: BTreeMap<String, u64>,
    /// From sending PlaceOrder to seeing the final status.
    pub completion_ms: Option<Percentiles>,
    pub completion_by_outcome_ms: BTreeMap<String, Percentiles>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenLoop {
    pub arrivals: u64,
    /// Started more than 10ms after they were due.
    pub late: u64,
    pub max_lag_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    /// Start of the bucket, seconds from the start.
    pub t_s: f64,
    pub requests_per_s: f64,
    pub errors_per_s: f64,
    pub orders_final_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// p99 per operation that ran in the bucket.
    pub p99_ms_by_op: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub run: RunInfo,
    pub totals: Totals,
    pub operations: Vec<OpSummary>,
    pub errors: Vec<ErrorCount>,
    pub orders: OrderSummary,
    pub open_loop: Option<OpenLoop>,
    /// Shopper sessions still running when the drain ended, cut off.
    pub unfinished_sessions: usize,
    pub timeline: Vec<Point>,
    pub files: Vec<String>,
}

fn per_s(n: u64, d: Duration) -> f64 {
    let v = n as f64 / d.as_secs_f64().max(1e-3);
    (v * 100.0).round() / 100.0
}

impl Summary {
    pub fn build(
        run: RunInfo,
        rec: &Recorded,
        punctuality: Option<Punctuality>,
        unfinished_sessions: usize,
    ) -> Self {
        // Rates over the load phase only: the drain (orders finishing, a 30s processor
        // outage) would otherwise dilute them.
        let load = Duration::from_secs_f64(run.duration_s).min(rec.elapsed);
        let n = ((load.as_secs_f64() / rec.bucket.as_secs_f64()).floor() as usize).max(1);
        let window = rec.bucket * n as u32;
        let in_window = &rec.timeline[..n.min(rec.timeline.len())];
        let op_in_window = |op: Op| -> u64 { in_window.iter().map(|b| b.ops[op.index()].0).sum() };
        let operations: Vec<OpSummary> = Op::ALL
            .iter()
            .filter_map(|op| {
                let r = &rec.ops[op.index()];
                Some(OpSummary {
                    op: op.name().into(),
                    count: r.count(),
                    errors: r.errors(),
                    per_s: per_s(op_in_window(*op), window),
                    latency_ms: Percentiles::of(&r.latency)?,
                })
            })
            .collect();
        let errors = Op::ALL
            .iter()
            .flat_map(|op| {
                rec.ops[op.index()]
                    .failures
                    .iter()
                    .map(|(kind, count)| ErrorCount {
                        op: op.name().into(),
                        kind: kind.clone(),
                        count: *count,
                    })
            })
            .collect();
        let requests: u64 = operations.iter().map(|o| o.count).sum();
        let error_count: u64 = operations.iter().map(|o| o.errors).sum();
        let final_count = rec.orders.completion.len();
        let orders = OrderSummary {
            placed: rec.orders.placed,
            final_count,
            final_per_s: per_s(in_window.iter().map(|b| b.orders_final).sum(), window),
            outcomes: rec
                .orders
                .outcomes
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            completion_ms: Percentiles::of(&rec.orders.completion),
            completion_by_outcome_ms: rec
                .orders
                .completion_by_end
                .iter()
                .filter_map(|(k, h)| Some((k.to_string(), Percentiles::of(h)?)))
                .collect(),
        };
        let width = rec.bucket;
        let timeline = rec
            .timeline
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let all = b.all();
                Point {
                    t_s: (i as f64) * width.as_secs_f64(),
                    requests_per_s: per_s(b.requests(), width),
                    errors_per_s: per_s(b.errors, width),
                    orders_final_per_s: per_s(b.orders_final, width),
                    p50_ms: (!all.is_empty()).then(|| ms(all.value_at_quantile(0.5))),
                    p99_ms: (!all.is_empty()).then(|| ms(all.value_at_quantile(0.99))),
                    p99_ms_by_op: Op::ALL
                        .iter()
                        .filter(|op| b.ops[op.index()].0 > 0)
                        .map(|op| {
                            let h = &b.ops[op.index()].1;
                            (op.name().to_string(), ms(h.value_at_quantile(0.99)))
                        })
                        .collect(),
                }
            })
            .collect();
        Summary {
            run,
            totals: Totals {
                requests,
                errors: error_count,
                rate_window_s: window.as_secs_f64(),
                requests_per_s: per_s(in_window.iter().map(|b| b.requests()).sum(), window),
            },
            operations,
            errors,
            orders,
            open_loop: punctuality.map(|p| OpenLoop {
                arrivals: p.arrivals,
                late: p.late,
                max_lag_ms: ms(p.max_lag.as_micros() as u64),
            }),
            unfinished_sessions,
            timeline,
            files: std::iter::once(SUMMARY)
                .chain(SVGS)
                .chain([HTML])
                .map(String::from)
                .collect(),
        }
    }

    /// The lines printed at the end of a run.
    pub fn headline(&self, out: &Path) -> String {
        use std::fmt::Write;
        let r = &self.run;
        let load = match (r.rate, r.shoppers) {
            (Some(rate), _) => format!("open loop, {rate} shoppers/s"),
            (_, Some(n)) => format!("closed loop, {n} shoppers"),
            _ => r.mode.clone(),
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "loadgen: {} over {} ({}), {load} for {}s, seed {}",
            r.scenario, r.transport, r.target, r.duration_s, r.seed
        );
        let t = &self.totals;
        let _ = writeln!(
            s,
            "requests {} in {:.1}s ({:.1}/s over the first {}s), errors {} ({:.2}%)",
            t.requests,
            r.elapsed_s,
            t.requests_per_s,
            t.rate_window_s,
            t.errors,
            100.0 * t.errors as f64 / (t.requests.max(1)) as f64
        );
        let _ = writeln!(
            s,
            "{:<13} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "operation", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for o in &self.operations {
            let l = &o.latency_ms;
            let _ = writeln!(
                s,
                "{:<13} {:>7} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                o.op, o.count, o.errors, l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
        for e in &self.errors {
            let _ = writeln!(s, "  {} {}: {}", e.op, e.kind, e.count);
        }
        let o = &self.orders;
        if o.placed > 0 {
            let outcomes: Vec<String> =
                o.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                s,
                "orders placed {}, final {} ({:.2}/s): {}",
                o.placed,
                o.final_count,
                o.final_per_s,
                outcomes.join(", ")
            );
            if let Some(c) = &o.completion_ms {
                let _ = writeln!(
                    s,
                    "order completion (placed -> final) p50 {:.0}ms p90 {:.0}ms p99 {:.0}ms max {:.0}ms",
                    c.p50, c.p90, c.p99, c.max
                );
            }
        }
        if let Some(ol) = &self.open_loop {
            let _ = writeln!(
                s,
                "arrivals {}, late {} (max lag {:.1}ms)",
                ol.arrivals, ol.late, ol.max_lag_ms
            );
        }
        if self.unfinished_sessions > 0 {
            let _ = writeln!(
                s,
                "sessions cut off at the end: {}",
                self.unfinished_sessions
            );
        }
        let _ = write!(s, "report: {}", out.join(HTML).display());
        s
    }
}

/// Writes the summary, the plots and the page into `out`.
pub fn write(out: &Path, summary: &Summary, rec: &Recorded) -> anyhow::Result<()> {
    let file = |name: &str| out.join(name);
    let json = serde_json::to_string_pretty(summary)?;
    std::fs::write(file(SUMMARY), json + "\n")
        .with_context(|| format!("writing {}", file(SUMMARY).display()))?;
    let svgs = [
        plot::latency_over_time(summary)?,
        plot::percentile_curves(rec)?,
        plot::throughput(summary)?,
    ];
    for (name, svg) in SVGS.iter().zip(&svgs) {
        std::fs::write(file(name), svg).with_context(|| format!("writing {name}"))?;
    }
    std::fs::write(file(HTML), html::page(summary, &svgs))
        .with_context(|| format!("writing {}", file(HTML).display()))?;
    Ok(())
}
