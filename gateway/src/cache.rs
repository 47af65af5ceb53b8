//! A small TTL cache for safe GETs whose RPC declares a cache lifetime in the gateway config.
//! Keys include the caller, so one client's answer is never served to another.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Clone)]
pub struct Cached {
    pub body: Bytes,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    stored: Instant,
    ttl: Duration,
}

impl Cached {
    pub fn age(&self) -> Duration {
        self.stored.elapsed()
    }
}

pub struct ResponseCache {
    entries: Mutex<HashMap<String, Cached>>,
    capacity: usize,
}

impl ResponseCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    pub fn get(&self, key: &str) -> Option<Cached> {
        let mut entries = self.entries.lock().expect("cache lock");
        match entries.get(key) {
            Some(c) if c.stored.elapsed() < c.ttl => Some(c.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn put(
        &self,
        key: String,
        body: Bytes,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        ttl: Duration,
    ) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() >= self.capacity {
            entries.retain(|_, c| c.stored.elapsed() < c.ttl);
            if entries.len() >= self.capacity {
                // Still full of live entries: drop the oldest.
                if let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, c)| c.stored)
                    .map(|(k, _)| k.clone())
                {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            key,
            Cached {
                body,
                headers,
                stored: Instant::now(),
                ttl,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_capacity_is_kept() {
        let c = ResponseCache::new(2);
        c.put(
            "a".into(),
            Bytes::from_static(b"1"),
            vec![],
            Duration::from_millis(30),
        );
        assert_eq!(c.get("a").unwrap().body, Bytes::from_static(b"1"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get("a").is_none());
        c.put("b".into(), Bytes::new(), vec![], Duration::from_secs(60));
        c.put("c".into(), Bytes::new(), vec![], Duration::from_secs(60));
        c.put("d".into(), Bytes::new(), vec![], Duration::from_secs(60));
        assert!(c.get("b").is_none(), "oldest evicted");
        assert!(c.get("c").is_some() && c.get("d").is_some());
    }
}
