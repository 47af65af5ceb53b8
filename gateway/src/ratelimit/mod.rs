//! Per-client rate limits: a token bucket per client key (token subject, API key, or peer
//! address), refilled continuously, with a burst allowance, kept by governor; and the tower
//! layer that applies it to a request.

pub mod layer;

pub use layer::{RateLimit, RateLimitLayer};

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::Quota;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size: how many requests may arrive at once.
    pub burst: u32,
}

impl Limit {
    /// Parses `100/s`, `600/m` or `36000/h`.
    pub fn parse(rate: &str, burst: Option<u32>) -> Result<Self, String> {
        let (n, unit) = rate
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("'{rate}' is not <count>/<s|m|h>"))?;
        let n: f64 = n
            .trim()
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n > 0.0)
            .ok_or_else(|| format!("'{rate}': the count must be a positive number"))?;
        let per = match unit.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("'{rate}': unit '{u}' is not s, m or h")),
        };
        let per_second = n / per;
        let burst = burst.unwrap_or_else(|| (per_second.ceil() as u32).max(1));
        if burst == 0 {
            return Err("burst must be at least 1".into());
        }
        Ok(Self { per_second, burst })
    }
}

/// What a request learned from the limiter (for the `RateLimit-*` headers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again (allowed) or until one token is there (refused).
    pub reset: Duration,
}

type Keyed<C> =
    governor::RateLimiter<String, DashMapStateStore<String>, C, StateInformationMiddleware>;

/// A GCRA limiter (governor) per client key: the same as a bucket of `burst` tokens refilled
/// at `per_second`.
pub struct RateLimiter<C: Clock = DefaultClock> {
    limit: Limit,
    /// The time one token takes to come back.
    period: Duration,
    keyed: Keyed<C>,
    checks: AtomicU64,
}

/// Above this many clients, clients whose bucket is full again are forgotten (they equal a
/// new one); looked at every `FORGET_EVERY` checks.
const MAX_IDLE_KEYS: usize = 10_000;
const FORGET_EVERY: u64 = 4096;

impl RateLimiter {
    pub fn new(limit: Limit) -> Self {
        Self::with_clock(limit, DefaultClock::default())
    }
}

impl<C: Clock> RateLimiter<C> {
    pub fn with_clock(limit: Limit, clock: C) -> Self {
        let period = Duration::from_secs_f64(1.0 / limit.per_second);
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        // A period too short for governor's nanosecond clock is as good as no limit; one
        // nanosecond keeps the burst.
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::with_period(Duration::from_nanos(1)).expect("1ns"))
            .allow_burst(burst);
        let keyed: Keyed<C> =
            governor::RateLimiter::new(quota, DashMapStateStore::default(), clock);
        Self {
            limit,
            period,
            keyed,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one token from `key`'s bucket if there is one.
    pub fn check(&self, key: &str) -> Verdict {
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1
            && self.keyed.len() > MAX_IDLE_KEYS
        {
            self.keyed.retain_recent();
        }
        match self.keyed.check_key(&key.to_string()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Verdict {
                    allowed: true,
                    limit: self.limit.burst,
                    remaining,
                    // Governor keeps the exact refill time to itself: the bucket is full again
                    // at most this long from now.
                    reset: self.period * (self.limit.burst - remaining.min(self.limit.burst)),
                }
            }
            Err(not_until) => Verdict {
                allowed: false,
                limit: self.limit.burst,
                remaining: 0,
                reset: not_until.wait_time_from(self.keyed.clock().now()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn parses_rates() {
        assert_eq!(
            Limit::parse("10/s", None).unwrap(),
            Limit {
                per_second: 10.0,
                burst: 10
            }
        );
        assert_eq!(
            Limit::parse("60/m", Some(5)).unwrap(),
            Limit {
                per_second: 1.0,
                burst: 5
            }
        );
        assert!(Limit::parse("10", None).is_err());
        assert!(Limit::parse("0/s", None).is_err());
        assert!(Limit::parse("5/d", None).is_err());
        assert!(Limit::parse("5/s", Some(0)).is_err());
    }

    #[test]
    fn burst_then_refill_per_client() {
        let clock = FakeRelativeClock::default();
        let l = RateLimiter::with_clock(
            Limit {
                per_second: 2.0,
                burst: 3,
            },
            clock.clone(),
        );
        for i in 0..3 {
            let v = l.check("a");
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 2 - i);
        }
        let refused = l.check("a");
        assert!(!refused.allowed);
        assert_eq!(refused.reset, Duration::from_millis(500));
        // Another client has its own bucket.
        assert!(l.check("b").allowed);
        // Half a second later one token is back.
        clock.advance(Duration::from_millis(500));
        assert!(l.check("a").allowed);
        assert!(!l.check("a").allowed);
    }
}
