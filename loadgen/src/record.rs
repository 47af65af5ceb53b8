//! What a run measured: an HDR histogram of latency per operation, failures by operation and
//! kind, orders by outcome with their completion latency, a timeline in fixed buckets, and a
//! rolling window for the progress line. Latencies are kept in microseconds.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::shop::{Failure, Op, OrderEnd};

/// An hour, in microseconds: the largest latency kept exactly; longer ones count as an hour.
const MAX_MICROS: u64 = 3_600_000_000;

/// A histogram for the final report: 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// A histogram per timeline bucket: 2 significant digits are enough for a line on a plot and
/// take a tenth of the memory.
fn coarse_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_MICROS)
}

/// How orders placed in the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ended(OrderEnd),
    /// No final status within --order-timeout.
    TimedOut,
    /// The watch failed (its failure is counted under watch_order).
    WatchFailed,
}

/// One operation's numbers.
pub struct OpRecord {
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub failures: BTreeMap<String, u64>,
}

impl OpRecord {
    fn new() -> Self {
        Self {
            latency: histogram(),
            ok: 0,
            failures: BTreeMap::new(),
        }
    }

    pub fn count(&self) -> u64 {
        self.ok + self.errors()
    }

    pub fn errors(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// One slice of the timeline, by completion time.
pub struct Bucket {
    /// Per operation: calls and their latency.
    pub ops: Vec<(u64, Histogram<u64>)>,
    pub errors: u64,
    pub orders_final: u64,
}

impl Bucket {
    fn new() -> Self {
        Self {
            ops: (0..Op::COUNT).map(|_| (0, coarse_histogram())).collect(),
            errors: 0,
            orders_final: 0,
        }
    }

    pub fn requests(&self) -> u64 {
        self.ops.iter().map(|(n, _)| n).sum()
    }

    /// Every operation's latency together.
    pub fn all(&self) -> Histogram<u64> {
        let mut h = coarse_histogram();
        for (_, o) in &self.ops {
            h.add(o).expect("same bounds");
        }
        h
    }
}

/// Orders: how many were placed and how they ended.
pub struct Orders {
    pub placed: u64,
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Placing to a final status, every final order.
    pub completion: Histogram<u64>,
    pub completion_by_end: BTreeMap<&'static str, Histogram<u64>>,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ended(e) => e.name(),
            Outcome::TimedOut => "timed_out",
            Outcome::WatchFailed => "watch_failed",
        }
    }
}

/// Since the last progress tick.
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

impl Window {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            latency: coarse_histogram(),
        }
    }
}

/// The totals the progress line shows besides the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub orders_placed: u64,
    pub orders_final: u64,
}

struct Inner {
    ops: Vec<OpRecord>,
    timeline: Vec<Bucket>,
    orders: Orders,
    window: Window,
    totals: Totals,
    last_completion: Instant,
}

/// Shared by every shopper; one short lock per record.
pub struct Recorder {
    start: Instant,
    bucket: Duration,
    inner: Mutex<Inner>,
}

/// Everything recorded, for the report.
pub struct Recorded {
    pub start: Instant,
    /// From the start to the last completion.
    pub elapsed: Duration,
    pub bucket: Duration,
    pub ops: Vec<OpRecord>,
    pub timeline: Vec<Bucket>,
    pub orders: Orders,
}

impl Recorder {
    /// A recorder whose timeline is cut in `bucket`-long slices from `start`.
    pub fn new(start: Instant, bucket: Duration) -> Self {
        Self {
            start,
            bucket: bucket.max(Duration::from_millis(100)),
            inner: Mutex::new(Inner {
                ops: (0..Op::COUNT).map(|_| OpRecord::new()).collect(),
                timeline: Vec::new(),
                orders: Orders {
                    placed: 0,
                    outcomes: BTreeMap::new(),
                    completion: histogram(),
                    completion_by_end: BTreeMap::new(),
                },
                window: Window::new(),
                totals: Totals::default(),
                last_completion: start,
            }),
        }
    }

    /// The timeline slice for `duration` of load: about 120 points, at least a second each.
    pub fn bucket_for(duration: Duration) -> Duration {
        Duration::from_secs(duration.as_secs().div_ceil(120).max(1))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bucket_of(inner: &mut Inner, start: Instant, width: Duration, at: Instant) -> &mut Bucket {
        let i =
            (at.saturating_duration_since(start).as_millis() / width.as_millis().max(1)) as usize;
        while inner.timeline.len() <= i {
            inner.timeline.push(Bucket::new());
        }
        &mut inner.timeline[i]
    }

    /// A call that started (or was meant to start) at `start` and finished at `end`.
    pub fn record(&self, op: Op, start: Instant, end: Instant, result: Result<(), &Failure>) {
        let us = micros(end.saturating_duration_since(start));
        let mut g = self.lock();
        let inner = &mut *g;
        let rec = &mut inner.ops[op.index()];
        rec.latency.saturating_record(us);
        let failed = match result {
            Ok(()) => {
                rec.ok += 1;
                false
            }
            Err(f) => {
                *rec.failures.entry(f.label()).or_default() += 1;
                true
            }
        };
        inner.totals.requests += 1;
        inner.window.requests += 1;
        inner.window.latency.saturating_record(us);
        if failed {
            inner.totals.errors += 1;
            inner.window.errors += 1;
        }
        inner.last_completion = inner.last_completion.max(end);
        let b = Self::bucket_of(inner, self.start, self.bucket, end);
        b.ops[op.index()].0 += 1;
        b.ops[op.index()].1.saturating_record(us);
        b.errors += u64::from(failed);
    }

    pub fn order_placed(&self) {
        let mut g = self.lock();
        g.orders.placed += 1;
        g.totals.orders_placed += 1;
    }

    /// How a placed order ended, `completion` after it was sent.
    pub fn order_ended(&self, outcome: Outcome, completion: Duration, at: Instant) {
        let us = micros(completion);
        let mut g = self.lock();
        let inner = &mut *g;
        *inner.orders.outcomes.entry(outcome.name()).or_default() += 1;
        if let Outcome::Ended(end) = outcome {
            inner.orders.completion.saturating_record(us);
            inner
                .orders
                .completion_by_end
                .entry(end.name())
                .or_insert_with(histogram)
                .saturating_record(us);
            inner.totals.orders_final += 1;
            Self::bucket_of(inner, self.start, self.bucket, at).orders_final += 1;
        }
    }

    pub fn totals(&self) -> Totals {
        self.lock().totals
    }

    /// What happened since the last call, and the totals.
    pub fn take_window(&self) -> (Window, Totals) {
        let mut g = self.lock();
        (std::mem::replace(&mut g.window, Window::new()), g.totals)
    }

    /// Everything recorded so far; the recorder starts over empty.
    pub fn finish(&self) -> Recorded {
        let fresh = Recorder::new(self.start, self.bucket).inner.into_inner();
        let inner = std::mem::replace(&mut *self.lock(), fresh.unwrap_or_else(|p| p.into_inner()));
        Recorded {
            start: self.start,
            elapsed: inner.last_completion.saturating_duration_since(self.start),
            bucket: self.bucket,
            ops: inner.ops,
            timeline: inner.timeline,
            orders: inner.orders,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_latency_failures_timeline_and_orders() {
        let t0 = Instant::now();
        let r = Recorder::new(t0, Duration::from_secs(1));
        let ms = Duration::from_millis;
        r.record(Op::GetItem, t0, t0 + ms(5), Ok(()));
        r.record(Op::GetItem, t0 + ms(1500), t0 + ms(1520), Ok(()));
        r.record(Op::PlaceOrder, t0, t0 + ms(40), Err(&Failure::Http(429)));
        r.order_placed();
        r.order_ended(Outcome::Ended(OrderEnd::Confirmed), ms(900), t0 + ms(2100));
        r.order_ended(Outcome::TimedOut, ms(45_000), t0 + ms(2200));
        let (w, totals) = r.take_window();
        assert_eq!((w.requests, w.errors), (3, 1));
        assert_eq!(
            totals,
            Totals {
                requests: 3,
                errors: 1,
                orders_placed: 1,
                orders_final: 1
            }
        );
        assert_eq!(r.take_window().0.requests, 0);
        let done = r.finish();
        let get = &done.ops[Op::GetItem.index()];
        assert_eq!((get.count(), get.errors()), (2, 0));
        assert!(get.latency.max() >= 19_000 && get.latency.min() <= 5_010);
        assert_eq!(done.ops[Op::PlaceOrder.index()].failures["http 429"], 1);
        assert_eq!(done.timeline.len(), 3);
        assert_eq!(done.timeline[0].requests(), 2);
        assert_eq!(done.timeline[1].requests(), 1);
        assert_eq!(done.timeline[2].orders_final, 1);
        assert_eq!(done.orders.outcomes["confirmed"], 1);
        assert_eq!(done.orders.outcomes["timed_out"], 1);
        assert_eq!(done.orders.completion.len(), 1);
        assert_eq!(done.elapsed, ms(1520));
    }

    #[test]
    fn buckets_keep_about_120_points() {
        assert_eq!(
            Recorder::bucket_for(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert_eq!(
            Recorder::bucket_for(Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
    }
}
