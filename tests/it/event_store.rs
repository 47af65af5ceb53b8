//! The event store on SQLite and PostgreSQL: optimistic concurrency (exactly one writer wins
//! each version), reads by version, time and position, upcasting stored old versions, and a
//! reader by position that never skips an event whose transaction committed late.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ordermesh::data::event_store::{
    self as es, Expected, Metadata, NewEvent, StreamBounds, Upcasters,
};
use sea_orm::{DatabaseConnection, TransactionTrait};
use sea_orm_migration::prelude::*;

use crate::migrations::FreshDatabase;

struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(es::Migration)]
    }
}

/// A migrated database of either backend; PostgreSQL's is dropped by `done`.
struct Db {
    conn: DatabaseConnection,
    pg: Option<FreshDatabase>,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn new(postgres: bool) -> Self {
        if postgres {
            let fresh = FreshDatabase::new().await;
            let conn = ordermesh::data::db::connect_and_migrate::<Migrator>(&fresh.url)
                .await
                .unwrap();
            Self {
                conn,
                pg: Some(fresh),
                _dir: None,
            }
        } else {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("es.db").display());
            let conn = ordermesh::data::db::connect_and_migrate::<Migrator>(&url)
                .await
                .unwrap();
            Self {
                conn,
                pg: None,
                _dir: Some(dir),
            }
        }
    }

    async fn done(self) {
        let _ = self.conn.close().await;
        if let Some(pg) = self.pg {
            pg.drop_it().await;
        }
    }
}

fn ev(kind: &str, n: i64) -> NewEvent {
    NewEvent::new(kind, 1, serde_json::json!({ "n": n }))
}

async fn exactly_one_writer_wins_each_version(postgres: bool) {
    let db = Db::new(postgres).await;
    let c = &db.conn;
    let txn = c.begin().await.unwrap();
    let first = es::append(
        &txn,
        "s-1",
        Expected::NoStream,
        &[ev("A", 1), ev("B", 2)],
        &Metadata::default(),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(first.version, 2);
    // A stream that exists is not new; a stale version loses, naming both versions.
    let txn = c.begin().await.unwrap();
    let again = es::append(
        &txn,
        "s-1",
        Expected::NoStream,
        &[ev("A", 1)],
        &Metadata::default(),
    )
    .await;
    assert!(again.as_ref().is_err_and(|e| e.is_conflict()), "{again:?}");
    let stale = es::append(
        &txn,
        "s-1",
        Expected::Exact(1),
        &[ev("C", 3)],
        &Metadata::default(),
    )
    .await
    .unwrap_err();
    assert!(stale.to_string().contains("version 2, not 1"), "{stale}");
    assert_eq!(tonic::Status::from(stale).code(), tonic::Code::Aborted);
    drop(txn);
    // Eight writers race for version 3: exactly one gets it, the others learn they lost.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let txn = c.begin().await.unwrap();
                let r = es::append(
                    &txn,
                    "s-1",
                    Expected::Exact(2),
                    &[ev("C", i)],
                    &Metadata::default(),
                )
                .await;
                match r {
                    Ok(_) => txn.commit().await.map(|_| true).unwrap_or(false),
                    Err(e) => {
                        assert!(e.is_conflict(), "{e}");
                        false
                    }
                }
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
    let all = es::read_stream(c, "s-1", StreamBounds::default(), &Upcasters::new())
        .await
        .unwrap();
    let versions: Vec<i64> = all.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    // Bounded reads: up to a version, after a version, and as of a time.
    let upto = StreamBounds {
        to_version: Some(2),
        ..Default::default()
    };
    assert_eq!(
        es::read_stream(c, "s-1", upto, &Upcasters::new())
            .await
            .unwrap()
            .len(),
        2
    );
    let before = StreamBounds {
        as_of: Some(all[0].recorded_at - chrono::Duration::seconds(1)),
        ..Default::default()
    };
    assert!(es::read_stream(c, "s-1", before, &Upcasters::new())
        .await
        .unwrap()
        .is_empty());
    db.done().await;
}

async fn stored_old_versions_are_upcast_on_read(postgres: bool) {
    let db = Db::new(postgres).await;
    let c = &db.conn;
    // Version 1 of "Priced" had a price in whole units; version 2 has minor units and a
    // currency. What is stored stays version 1.
    let old = NewEvent::new("Priced", 1, serde_json::json!({ "price": 12 }));
    let txn = c.begin().await.unwrap();
    es::append(
        &txn,
        "p-1",
        Expected::NoStream,
        &[old],
        &Metadata::default(),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    let up = Upcasters::new()
        .current("Priced", 2)
        .step("Priced", 1, |v| {
            let whole = v["price"].as_i64().ok_or("price missing")?;
            Ok(serde_json::json!({ "price_minor": whole * 100, "currency": "USD" }))
        });
    let read = es::read_stream(c, "p-1", StreamBounds::default(), &up)
        .await
        .unwrap();
    assert_eq!(read[0].schema_version, 2);
    assert_eq!(
        read[0].payload,
        serde_json::json!({ "price_minor": 1200, "currency": "USD" })
    );
    // Code that knows only version 1 refuses a newer event instead of misreading it.
    let newer = NewEvent::new("Priced", 3, serde_json::json!({}));
    let txn = c.begin().await.unwrap();
    es::append(
        &txn,
        "p-1",
        Expected::Exact(1),
        &[newer],
        &Metadata::default(),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    let err = es::read_stream(c, "p-1", StreamBounds::default(), &up)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("v3 is newer"), "{err}");
    db.done().await;
}

/// A writer that owns one kind of event in a shared stream (`Expected::Owned`) is not turned
/// back by the others' events, only by another writer of its kind.
async fn an_owned_kind_of_event_ignores_the_others_in_its_stream(postgres: bool) {
    let db = Db::new(postgres).await;
    let c = &db.conn;
    let meta = Metadata::default();
    let put = |expected: Expected, kind: &'static str| {
        let c = c.clone();
        let meta = meta.clone();
        async move {
            let txn = c.begin().await.unwrap();
            let r = es::append(&txn, "shared", expected, &[ev(kind, 0)], &meta).await;
            if r.is_ok() {
                txn.commit().await.unwrap();
            }
            r
        }
    };
    let owned = |count| Expected::Owned {
        prefix: "Saga",
        count,
    };
    // A stream that does not exist has no owner's events to go by.
    assert!(put(owned(0), "SagaStarted").await.is_err());
    put(Expected::NoStream, "OrderPlaced").await.unwrap();
    put(owned(0), "SagaStarted").await.unwrap();
    put(Expected::Exact(2), "OrderConfirmed").await.unwrap();
    // The saga saw one of its events: the order's event in between does not matter.
    let done = put(owned(1), "SagaCompleted").await.unwrap();
    assert_eq!(done.version, 4);
    // A second saga writer that also saw one is refused.
    let e = put(owned(1), "SagaCompleted").await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    db.done().await;
}

/// A snapshot is read back only by the state schema it was written with.
async fn snapshots_of_another_schema_are_ignored(postgres: bool) {
    use es::snapshot;
    let db = Db::new(postgres).await;
    let c = &db.conn;
    snapshot::save(c, "s-9", 7, 1, &serde_json::json!({"total": 3}))
        .await
        .unwrap();
    let same: Option<(i64, serde_json::Value)> = snapshot::load(c, "s-9", 1).await.unwrap();
    assert_eq!(same, Some((7, serde_json::json!({"total": 3}))));
    let other: Option<(i64, serde_json::Value)> = snapshot::load(c, "s-9", 2).await.unwrap();
    assert_eq!(other, None);
    // A newer snapshot replaces the older one.
    snapshot::save(c, "s-9", 9, 2, &serde_json::json!({"total": 4}))
        .await
        .unwrap();
    let newer: Option<(i64, serde_json::Value)> = snapshot::load(c, "s-9", 2).await.unwrap();
    assert_eq!(newer.map(|(v, _)| v), Some(9));
    db.done().await;
}

/// A slow writer appends and holds its transaction open while fast writers append and
/// commit; a reader follows the store by position the whole time. It must end up having seen
/// every event: a position given to the slow writer must not be passed while it is in flight.
async fn a_reader_by_position_never_skips_a_late_commit(postgres: bool) {
    let db = Db::new(postgres).await;
    let c = db.conn.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut at = 0;
            loop {
                let done = stop.load(std::sync::atomic::Ordering::SeqCst);
                let batch = es::read_all(&c, at, 100, &[], &Upcasters::new())
                    .await
                    .unwrap();
                for e in &batch {
                    seen.push(e.position);
                    at = e.position;
                }
                if done && batch.is_empty() {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut writers = Vec::new();
    for round in 0..4 {
        let slow = {
            let c = c.clone();
            tokio::spawn(async move {
                let txn = c.begin().await.unwrap();
                es::append(
                    &txn,
                    &format!("slow-{round}"),
                    Expected::NoStream,
                    &[ev("Slow", round)],
                    &Metadata::default(),
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(150)).await;
                txn.commit().await.unwrap();
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        for i in 0..5 {
            let c = c.clone();
            writers.push(tokio::spawn(async move {
                let txn = c.begin().await.unwrap();
                es::append(
                    &txn,
                    &format!("fast-{round}-{i}"),
                    Expected::NoStream,
                    &[ev("Fast", i)],
                    &Metadata::default(),
                )
                .await
                .unwrap();
                txn.commit().await.unwrap();
            }));
        }
        writers.push(slow);
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let all: BTreeSet<i64> = es::read_all(&c, 0, 1000, &[], &Upcasters::new())
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(all.len(), 24);
    assert_eq!(
        seen.iter().copied().collect::<BTreeSet<_>>(),
        all,
        "the reader skipped events"
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "positions went back: {seen:?}"
    );
    db.done().await;
}

both!(
    exactly_one_writer_wins_each_version,
    an_owned_kind_of_event_ignores_the_others_in_its_stream,
    snapshots_of_another_schema_are_ignored,
    stored_old_versions_are_upcast_on_read,
    a_reader_by_position_never_skips_a_late_commit
);
