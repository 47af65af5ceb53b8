//! Exponential back-off with jitter: the one formula every retry and reconnect loop in the
//! mesh waits by (client retries, saga steps, the outbox relay, event consumers).

use std::time::Duration;

/// The wait before retry `n` (0-based): a random point in [d/2, d], where d is `first`
/// doubled `n` times and capped at `max`.
pub fn jittered(first: Duration, max: Duration, n: u32) -> Duration {
    let d = first.saturating_mul(1u32 << n.min(16)).min(max);
    d.mul_f64(rand::random_range(0.5..=1.0))
}

/// `jittered` for a loop that keeps its own count: each wait doubles the next, until `reset`.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    tries: u32,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            tries: 0,
        }
    }

    /// The next wait, and doubles the one after.
    pub fn next_wait(&mut self) -> Duration {
        let d = jittered(self.first, self.max, self.tries);
        self.tries = self.tries.saturating_add(1);
        d
    }

    pub fn reset(&mut self) {
        self.tries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let waits: Vec<Duration> = (0..6).map(|_| b.next_wait()).collect();
        let caps = [100, 200, 400, 800, 800, 800];
        for (w, cap) in waits.iter().zip(caps) {
            let cap = Duration::from_millis(cap);
            assert!(
                *w <= cap && *w >= cap / 2,
                "{w:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }
}
