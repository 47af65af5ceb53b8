//! When shoppers start. Open loop: the n-th shopper is due at `t0 + n / rate` whatever
//! happened before, and its latency is measured from that intended start, so a stall shows up
//! in the numbers of everyone it delayed (no coordinated omission). Closed loop: N shoppers,
//! each starting a new session when its last one ended.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// An arrival started this much after it was due counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(10);

/// The open-loop timetable: arrival `n` is due at `start + n / rate`.
#[derive(Clone, Copy, Debug)]
pub struct Arrivals {
    start: Instant,
    rate: f64,
}

impl Arrivals {
    /// `rate` arrivals per second from `start`; the rate is positive (checked by the flags).
    pub fn new(start: Instant, rate: f64) -> Self {
        Self { start, rate }
    }

    /// When arrival `n` is due: computed from the start each time, so rounding never adds up
    /// and a late arrival never moves the ones after it.
    pub fn due(&self, n: u64) -> Instant {
        self.start + Duration::from_secs_f64(n as f64 / self.rate)
    }
}

/// How the open loop kept its timetable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Punctuality {
    /// Arrivals started.
    pub arrivals: u64,
    /// Arrivals started more than [`LATE_AFTER`] after they were due (the generator was
    /// behind, or --max-in-flight shoppers were already running).
    pub late: u64,
    /// The latest any arrival started.
    pub max_lag: Duration,
}

/// Starts `arrive(n, due)` for every arrival due before `until` while `more()` holds, at most
/// `max_in_flight` at once: an arrival beyond that waits for a slot and starts late, its due
/// time unchanged. Returns the tasks still running.
pub async fn open_loop<F, Fut>(
    arrivals: Arrivals,
    until: Instant,
    max_in_flight: usize,
    more: impl Fn() -> bool,
    mut arrive: F,
) -> (Punctuality, JoinSet<()>)
where
    F: FnMut(u64, Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let mut p = Punctuality::default();
    for n in 0.. {
        let due = arrivals.due(n);
        if due >= until || !more() {
            break;
        }
        tokio::time::sleep_until(due).await;
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        let lag = Instant::now().saturating_duration_since(due);
        p.arrivals += 1;
        if lag > LATE_AFTER {
            p.late += 1;
        }
        p.max_lag = p.max_lag.max(lag);
        let shopper = arrive(n, due);
        tasks.spawn(async move {
            shopper.await;
            drop(slot);
        });
        while tasks.try_join_next().is_some() {}
    }
    (p, tasks)
}

/// `shoppers` loops, each running `session(i, now)` back to back until `until` or `more()`
/// says stop. Returns the running loops.
pub fn closed_loop<F, Fut>(
    shoppers: u32,
    until: Instant,
    more: impl Fn() -> bool + Clone + Send + 'static,
    session: F,
) -> JoinSet<()>
where
    F: Fn(u64, Instant) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    let sessions = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..shoppers {
        let (more, session, sessions) = (more.clone(), session.clone(), sessions.clone());
        tasks.spawn(async move {
            loop {
                let now = Instant::now();
                if now >= until || !more() {
                    break;
                }
                let n = sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                session(n, now).await;
            }
        });
    }
    tasks
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs an open loop of 10 arrivals/s for 1s where arrival 0 stalls for `stall` and the
    /// others take 10ms; answers each arrival's latency from its due time.
    async fn latencies(max_in_flight: usize, stall: Duration) -> (Punctuality, Vec<Duration>) {
        let t0 = Instant::now();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (p, mut tasks) = open_loop(
            Arrivals::new(t0, 10.0),
            t0 + Duration::from_secs(1),
            max_in_flight,
            || true,
            |n, due| {
                let seen = seen.clone();
                async move {
                    tokio::time::sleep(if n == 0 { stall } else { 10 * MS }).await;
                    seen.lock().unwrap().push((n, Instant::now() - due));
                }
            },
        )
        .await;
        while tasks.join_next().await.is_some() {}
        let mut v = seen.lock().unwrap().clone();
        v.sort();
        (p, v.into_iter().map(|(_, d)| d).collect())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_is_charged_to_every_arrival_it_delayed() {
        // One shopper at a time: arrival 0 holds the only slot for 550ms, so arrivals 1-5,
        // due at 100..500ms, start at 550ms and on; their latency counts from when they were due.
        let (p, lat) = latencies(1, 550 * MS).await;
        assert_eq!(p.arrivals, 10, "the rate is not reduced");
        assert_eq!(lat[0], 550 * MS);
        assert_eq!(
            lat[1],
            460 * MS,
            "due at 100ms, started at 550ms, took 10ms"
        );
        assert_eq!(
            lat[2],
            370 * MS,
            "due at 200ms, started after arrival 1 ended at 560ms"
        );
        assert!(lat[5] > 10 * MS, "still behind: {:?}", lat[5]);
        assert_eq!(lat[9], 10 * MS, "caught up by the end");
        assert!(p.late >= 5, "{p:?}");
        assert_eq!(p.max_lag, 450 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_stall_every_arrival_is_on_time() {
        let (p, lat) = latencies(1, 10 * MS).await;
        assert_eq!((p.arrivals, p.late), (10, 0));
        assert!(lat.iter().all(|d| *d == 10 * MS), "{lat:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn with_room_a_stall_delays_no_one_else() {
        let (p, lat) = latencies(64, 550 * MS).await;
        assert_eq!((p.arrivals, p.late), (10, 0));
        assert_eq!(lat[0], 550 * MS);
        assert!(lat[1..].iter().all(|d| *d == 10 * MS), "{lat:?}");
    }

    #[test]
    fn due_times_do_not_drift() {
        let t0 = Instant::now();
        let a = Arrivals::new(t0, 3.0);
        assert_eq!(a.due(3_000_000) - t0, Duration::from_secs(1_000_000));
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_shoppers_start_sessions_until_the_end() {
        let t0 = Instant::now();
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = count.clone();
        let mut tasks = closed_loop(
            4,
            t0 + Duration::from_secs(1),
            || true,
            move |_, _| {
                let c = c.clone();
                async move {
                    tokio::time::sleep(100 * MS).await;
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            },
        );
        while tasks.join_next().await.is_some() {}
        assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 40);
    }
}
