//! The `Watch*` server streams (WatchOrder, WatchStock, TrackShipment): a `WatchFeed<T>` that
//! handlers publish committed changes to, and the one loop that serves a watcher from it.
//!
//! The loop keeps the rules every watch stream needs, so a service writes only what its stream
//! means (`Watch`): subscribe before reading the current state, so nothing committed between
//! the read and the subscription is lost; on a lag (the feed ran past this watcher) read the
//! state again instead of guessing; and end when the client leaves, the server drains, the
//! feed closes, or the watched thing reaches a final state.

use std::future::Future;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::transport::shutdown::Drain;
use crate::transport::streams::OpenStreams;

/// Changes a watcher may have missed before it falls behind and re-reads.
const DEFAULT_CAPACITY: usize = 1024;

/// Fan-out of committed changes to the watch streams of this process.
#[derive(Clone, Debug)]
pub struct WatchFeed<T> {
    tx: broadcast::Sender<T>,
    watchers: OpenStreams,
}

impl<T: Clone> Default for WatchFeed<T> {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl<T: Clone> WatchFeed<T> {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
            watchers: OpenStreams::default(),
        }
    }

    /// Watch streams currently open; a stream whose client left is no longer counted.
    pub fn active_watchers(&self) -> usize {
        self.watchers.count()
    }

    /// Whether anyone listens, so a handler can skip reading what nobody would hear.
    pub fn is_watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Tells every watcher about a committed change (nobody listening is fine).
    pub fn publish(&self, change: T) {
        let _ = self.tx.send(change);
    }

    /// Starts listening. Call it before reading the current state, then hand both to
    /// `Subscription::stream`.
    pub fn subscribe(&self) -> Subscription<T> {
        Subscription {
            updates: self.tx.subscribe(),
            watchers: self.watchers.clone(),
        }
    }
}

/// What one watch stream makes of the feed.
pub trait Watch<T>: Send + 'static {
    type Message: Send + 'static;

    /// What a change published to the feed means for this stream.
    fn update(&mut self, change: T) -> Seen<T>;

    /// The current state again, after changes were missed (or `Seen::Gap`). An error ends
    /// the stream with that status.
    fn reread(&mut self) -> impl Future<Output = Result<Vec<T>, Status>> + Send;

    /// The message that tells the client about `item`, or `None` when it has heard it already.
    fn message(&mut self, item: T) -> Option<Self::Message>;

    /// Whether the stream is over once `item` was sent (the watched thing is final).
    fn is_last(&self, _item: &T) -> bool {
        false
    }
}

/// How a stream takes one change from the feed.
pub enum Seen<T> {
    /// Not about what this stream watches.
    Ignore,
    /// Send it (if the client has not heard it yet).
    Send(T),
    /// It shows that something was missed: read the state again.
    Gap,
}

/// A watcher's place in the feed, taken before it read the current state.
pub struct Subscription<T> {
    updates: broadcast::Receiver<T>,
    watchers: OpenStreams,
}

impl<T: Clone + Send + 'static> Subscription<T> {
    /// Serves one watch stream: `first` (the state read after subscribing), then every change
    /// the feed brings, as `watch` makes messages of them. Counted by `active_watchers` until
    /// it ends.
    pub fn stream<W: Watch<T>>(
        self,
        watch: W,
        first: Vec<T>,
        drain: Drain,
        buffer: usize,
    ) -> ReceiverStream<Result<W::Message, Status>> {
        let (tx, rx) = mpsc::channel(buffer);
        let guard = self.watchers.enter();
        tokio::spawn(async move {
            let _guard = guard;
            serve(watch, self.updates, first, &tx, &drain).await;
        });
        ReceiverStream::new(rx)
    }
}

type Sender<M> = mpsc::Sender<Result<M, Status>>;

async fn serve<T: Clone, W: Watch<T>>(
    mut watch: W,
    mut updates: broadcast::Receiver<T>,
    first: Vec<T>,
    tx: &Sender<W::Message>,
    drain: &Drain,
) {
    if !send(&mut watch, tx, first).await {
        return;
    }
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            _ = drain.draining() => return,
            n = updates.recv() => n,
        };
        let seen = match next {
            Ok(change) => watch.update(change),
            Err(broadcast::error::RecvError::Lagged(_)) => Seen::Gap,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let items = match seen {
            Seen::Ignore => continue,
            Seen::Send(item) => vec![item],
            // Missed some changes: the state as it is now says enough.
            Seen::Gap => match watch.reread().await {
                Ok(items) => items,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            },
        };
        if !send(&mut watch, tx, items).await {
            return;
        }
    }
}

/// Sends what the client has not heard yet; false when the stream is over.
async fn send<T, W: Watch<T>>(watch: &mut W, tx: &Sender<W::Message>, items: Vec<T>) -> bool {
    for item in items {
        let last = watch.is_last(&item);
        let Some(message) = watch.message(item) else {
            continue;
        };
        if tx.send(Ok(message)).await.is_err() || last {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::*;

    /// A watched thing at some version; version 9 is final.
    #[derive(Clone, Debug, PartialEq)]
    struct Thing {
        id: u32,
        version: u64,
    }

    /// Watches thing `id`; `stored` plays the database a re-read goes to.
    struct ThingWatch {
        id: u32,
        seen: u64,
        stored: Arc<Mutex<Thing>>,
    }

    impl Watch<Thing> for ThingWatch {
        type Message = u64;

        fn update(&mut self, change: Thing) -> Seen<Thing> {
            if change.id == self.id {
                Seen::Send(change)
            } else {
                Seen::Ignore
            }
        }

        async fn reread(&mut self) -> Result<Vec<Thing>, Status> {
            Ok(vec![self.stored.lock().unwrap().clone()])
        }

        fn message(&mut self, item: Thing) -> Option<u64> {
            (item.version > self.seen).then(|| {
                self.seen = item.version;
                item.version
            })
        }

        fn is_last(&self, item: &Thing) -> bool {
            item.version == 9
        }
    }

    fn thing(id: u32, version: u64) -> Thing {
        Thing { id, version }
    }

    fn watch(stored: &Arc<Mutex<Thing>>) -> ThingWatch {
        ThingWatch {
            id: 1,
            seen: 0,
            stored: stored.clone(),
        }
    }

    async fn next<S: tokio_stream::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("the stream answers")
    }

    async fn until_no_watchers<T: Clone>(feed: &WatchFeed<T>) {
        for _ in 0..500 {
            if feed.active_watchers() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("a watcher is still counted");
    }

    #[tokio::test]
    async fn sends_the_first_state_then_new_changes_until_final() {
        let feed = WatchFeed::default();
        let stored = Arc::new(Mutex::new(thing(1, 1)));
        let sub = feed.subscribe();
        let mut s = sub.stream(watch(&stored), vec![thing(1, 1)], Drain::new(), 4);
        assert_eq!(next(&mut s).await.unwrap().unwrap(), 1);
        assert_eq!(feed.active_watchers(), 1);
        feed.publish(thing(2, 5)); // another thing
        feed.publish(thing(1, 1)); // heard already
        feed.publish(thing(1, 2));
        assert_eq!(next(&mut s).await.unwrap().unwrap(), 2);
        feed.publish(thing(1, 9));
        assert_eq!(next(&mut s).await.unwrap().unwrap(), 9);
        assert!(
            next(&mut s).await.is_none(),
            "a final state ends the stream"
        );
        until_no_watchers(&feed).await;
    }

    #[tokio::test]
    async fn a_lagging_watcher_reads_the_state_again() {
        let feed = WatchFeed::with_capacity(2);
        let stored = Arc::new(Mutex::new(thing(1, 1)));
        // Subscribed before the read; then more changes than the feed keeps.
        let sub = feed.subscribe();
        for v in 2..=6 {
            *stored.lock().unwrap() = thing(1, v);
            feed.publish(thing(1, v));
        }
        let mut s = sub.stream(watch(&stored), vec![thing(1, 1)], Drain::new(), 4);
        assert_eq!(next(&mut s).await.unwrap().unwrap(), 1);
        assert_eq!(
            next(&mut s).await.unwrap().unwrap(),
            6,
            "re-read, not replayed"
        );
    }

    #[tokio::test]
    async fn ends_when_the_client_leaves_or_the_server_drains() {
        let feed = WatchFeed::default();
        let stored = Arc::new(Mutex::new(thing(1, 1)));
        let s = feed
            .subscribe()
            .stream(watch(&stored), vec![], Drain::new(), 4);
        assert_eq!(feed.active_watchers(), 1);
        drop(s);
        until_no_watchers(&feed).await;

        let drain = Drain::new();
        let mut s = feed
            .subscribe()
            .stream(watch(&stored), vec![], drain.clone(), 4);
        drain.start();
        assert!(next(&mut s).await.is_none());
        until_no_watchers(&feed).await;
        assert!(!feed.is_watched());
    }
}
