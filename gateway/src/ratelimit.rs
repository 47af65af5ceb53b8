//! Per-client rate limits: a token bucket per client key (token subject, API key, or peer
//! address), refilled continuously, with a burst allowance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    limit: Limit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Above this many clients, full buckets are forgotten (they equal a new one).
const MAX_IDLE_KEYS: usize = 10_000;

impl RateLimiter {
    pub fn new(limit: Limit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, key: &str) -> Verdict {
        self.check_at(key, Instant::now())
    }

    pub fn check_at(&self, key: &str, now: Instant) -> Verdict {
        let burst = f64::from(self.limit.burst);
        let rate = self.limit.per_second;
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > MAX_IDLE_KEYS {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
        }
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        let allowed = b.tokens >= 1.0;
        if allowed {
            b.tokens -= 1.0;
        }
        let reset = if allowed {
            Duration::from_secs_f64((burst - b.tokens) / rate)
        } else {
            Duration::from_secs_f64((1.0 - b.tokens) / rate)
        };
        Verdict {
            allowed,
            limit: self.limit.burst,
            remaining: b.tokens.floor() as u32,
            reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let l = RateLimiter::new(Limit {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for i in 0..3 {
            let v = l.check_at("a", t0);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 2 - i);
        }
        let refused = l.check_at("a", t0);
        assert!(!refused.allowed);
        assert_eq!(refused.reset, Duration::from_millis(500));
        // Another client has its own bucket.
        assert!(l.check_at("b", t0).allowed);
        // Half a second later one token is back.
        assert!(l.check_at("a", t0 + Duration::from_millis(500)).allowed);
        assert!(!l.check_at("a", t0 + Duration::from_millis(500)).allowed);
    }
}
