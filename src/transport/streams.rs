//! Bookkeeping for long-lived server streams: how many are open right now. A stream's task
//! holds a guard; when the client leaves (or the server drains) the task ends, the guard drops
//! and the count goes down, which is how tests see that a departed client was let go.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct OpenStreams(Arc<AtomicUsize>);

impl OpenStreams {
    /// Counts one more open stream until the guard is dropped.
    pub fn enter(&self) -> StreamGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        StreamGuard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
pub struct StreamGuard(Arc<AtomicUsize>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_open_streams() {
        let open = OpenStreams::default();
        let a = open.enter();
        let b = open.clone().enter();
        assert_eq!(open.count(), 2);
        drop(a);
        assert_eq!(open.count(), 1);
        drop(b);
        assert_eq!(open.count(), 0);
    }
}
