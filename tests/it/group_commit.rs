//! Group commit on SQLite and PostgreSQL: writes that queue while a batch commits share the next
//! commit; each keeps the meaning of a transaction of its own (a failed, discarded or panicking
//! write rolls back alone); a commit that fails fails every write of its batch and leaves
//! nothing of them, and the writer goes on.

use std::time::Duration;

use futures::FutureExt;
use ordermesh::data::group_commit::{GroupCommit, Outcome, MAX_BATCH};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult, Statement};
use tokio::sync::oneshot;

use crate::migrations::FreshDatabase;

/// Where a test's database lives: a fresh PostgreSQL database (dropped by `done`) or a SQLite
/// file in a folder of its own.
enum Place {
    Postgres(FreshDatabase),
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
}

impl Place {
    async fn done(self) {
        if let Place::Postgres(db) = self {
            db.drop_it().await;
        }
    }
}

async fn setup(postgres: bool) -> (Place, DatabaseConnection) {
    let (place, url) = if postgres {
        let db = FreshDatabase::new().await;
        let url = db.url.clone();
        (Place::Postgres(db), url)
    } else {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("gc.db").display());
        (Place::Sqlite(dir), url)
    };
    let conn = ordermesh::data::db::connect(&url).await.unwrap();
    for sql in [
        "CREATE TABLE gc_rows (id BIGINT PRIMARY KEY, v TEXT NOT NULL)",
        "CREATE TABLE gc_parents (id BIGINT PRIMARY KEY)",
        "CREATE TABLE gc_children (id BIGINT PRIMARY KEY, \
         parent_id BIGINT NOT NULL REFERENCES gc_parents (id) DEFERRABLE INITIALLY DEFERRED)",
    ] {
        conn.execute_unprepared(sql).await.unwrap();
    }
    (place, conn)
}

/// A writer with a label of its own, so its batch counts are this test's alone.
fn writer(conn: &DatabaseConnection) -> GroupCommit {
    let label: &'static str = Box::leak(format!("gc-{}", uuid::Uuid::new_v4()).into_boxed_str());
    GroupCommit::new(conn.clone(), label)
}

fn batches(w: &GroupCommit) -> u64 {
    ordermesh::telemetry::metrics::DB_BATCH_SIZE
        .with_label_values(&[w.label()])
        .get_sample_count()
}

async fn ids(conn: &DatabaseConnection, table: &str) -> Vec<i64> {
    #[derive(FromQueryResult)]
    struct Row {
        id: i64,
    }
    Row::find_by_statement(Statement::from_string(
        conn.get_database_backend(),
        format!("SELECT id FROM {table} ORDER BY id"),
    ))
    .all(conn)
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.id)
    .collect()
}

fn insert(table: &'static str, id: i64) -> String {
    match table {
        "gc_children" => format!("INSERT INTO gc_children (id, parent_id) VALUES ({id}, {id})"),
        _ => format!("INSERT INTO {table} (id, v) VALUES ({id}, 'x')"),
    }
}

/// Starts a write that holds the writer for `hold` (so the writes sent meanwhile queue into
/// one batch) and returns once it runs, with its result to come.
async fn hold_writer(
    w: &GroupCommit,
    id: i64,
    hold: Duration,
) -> tokio::task::JoinHandle<Result<(), DbErr>> {
    let (started, running) = oneshot::channel();
    let w2 = w.clone();
    let first = tokio::spawn(async move {
        w2.write(move |txn| {
            async move {
                txn.execute_unprepared(&insert("gc_rows", id)).await?;
                let _ = started.send(());
                tokio::time::sleep(hold).await;
                Ok::<_, DbErr>(())
            }
            .boxed()
        })
        .await
    });
    running.await.expect("the first write runs");
    first
}

async fn writes_that_arrive_together_share_one_commit(postgres: bool) {
    let (place, conn) = setup(postgres).await;
    let w = writer(&conn);
    let first = hold_writer(&w, 0, Duration::from_millis(300)).await;
    let mut rest = Vec::new();
    let queued = MAX_BATCH as i64 + 8;
    for id in 1..=queued {
        let w = w.clone();
        rest.push(tokio::spawn(async move {
            w.write(move |txn| {
                async move { txn.execute_unprepared(&insert("gc_rows", id)).await }.boxed()
            })
            .await
        }));
    }
    first.await.unwrap().unwrap();
    for r in rest {
        r.await.unwrap().unwrap();
    }
    assert_eq!(
        ids(&conn, "gc_rows").await,
        (0..=queued).collect::<Vec<_>>()
    );
    assert_eq!(
        batches(&w),
        3,
        "the writes sent while the first one held the writer commit together, {MAX_BATCH} at most at a time"
    );
    let _ = conn.close().await;
    place.done().await;
}

async fn a_failed_write_rolls_back_alone(postgres: bool) {
    let (place, conn) = setup(postgres).await;
    conn.execute_unprepared(&insert("gc_rows", 100))
        .await
        .unwrap();
    let w = writer(&conn);
    let first = hold_writer(&w, 1, Duration::from_millis(300)).await;
    let spawn = |f: fn(i64) -> String, id: i64, end: &'static str| {
        let w = w.clone();
        tokio::spawn(async move {
            w.write(move |txn| {
                async move {
                    txn.execute_unprepared(&f(id)).await?;
                    match end {
                        "fail" => Err(DbErr::Custom("the write said no".into())),
                        "panic" => panic!("a write that panics"),
                        _ => Ok(()),
                    }
                }
                .boxed()
            })
            .await
        })
    };
    let said_no = spawn(|id| insert("gc_rows", id), 2, "fail");
    let duplicate = spawn(|_| insert("gc_rows", 100), 3, "ok");
    let kept = spawn(|id| insert("gc_rows", id), 4, "ok");
    let panicked = spawn(|id| insert("gc_rows", id), 5, "panic");
    let (w2, discarded) = (w.clone(), 6);
    let discarded = tokio::spawn(async move {
        w2.write_with(move |txn| {
            async move {
                match txn.execute_unprepared(&insert("gc_rows", discarded)).await {
                    Ok(_) => Outcome::Discard("seen, not kept"),
                    Err(_) => Outcome::Keep("insert failed"),
                }
            }
            .boxed()
        })
        .await
    });
    first.await.unwrap().unwrap();
    let said_no = said_no.await.unwrap().unwrap_err();
    assert!(
        said_no.to_string().contains("the write said no"),
        "{said_no}"
    );
    assert!(duplicate.await.unwrap().is_err(), "a duplicate key fails");
    kept.await.unwrap().unwrap();
    let panicked = panicked.await.unwrap().unwrap_err();
    assert!(panicked.to_string().contains("panicked"), "{panicked}");
    assert_eq!(discarded.await.unwrap().unwrap(), "seen, not kept");
    assert_eq!(batches(&w), 2);
    assert_eq!(
        ids(&conn, "gc_rows").await,
        vec![1, 4, 100],
        "only the kept writes stay; the failed, duplicate, panicking and discarded ones left nothing"
    );
    let _ = conn.close().await;
    place.done().await;
}

async fn a_commit_that_fails_fails_its_whole_batch_and_the_writer_goes_on(postgres: bool) {
    let (place, conn) = setup(postgres).await;
    let w = writer(&conn);
    let first = hold_writer(&w, 1, Duration::from_millis(300)).await;
    let mut batch = Vec::new();
    // A child without its parent passes its statement (the key is checked at commit) and
    // fails the batch's commit.
    for (table, id) in [("gc_rows", 2), ("gc_children", 7), ("gc_rows", 3)] {
        let w = w.clone();
        batch.push(tokio::spawn(async move {
            w.write(move |txn| {
                async move { txn.execute_unprepared(&insert(table, id)).await }.boxed()
            })
            .await
        }));
    }
    first.await.unwrap().unwrap();
    for r in batch {
        let e = r.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("transaction failed"), "{e}");
    }
    assert_eq!(
        ids(&conn, "gc_rows").await,
        vec![1],
        "nothing of the failed batch"
    );
    assert!(ids(&conn, "gc_children").await.is_empty());
    // The writer is still there and its connection usable.
    w.write(|txn| async move { txn.execute_unprepared(&insert("gc_rows", 9)).await }.boxed())
        .await
        .unwrap();
    assert_eq!(ids(&conn, "gc_rows").await, vec![1, 9]);
    let _ = conn.close().await;
    place.done().await;
}

/// The first write of a batch runs without a savepoint of its own: when it fails or discards,
/// its transaction rolls back with it and the writes behind it run in a new one, so it still
/// rolls back alone, as does every first write after it.
async fn the_first_write_of_a_batch_rolls_back_alone_too(postgres: bool) {
    let (place, conn) = setup(postgres).await;
    let w = writer(&conn);
    let first = hold_writer(&w, 1, Duration::from_millis(400)).await;
    let mut next = Vec::new();
    // Sent one after the other while the first batch holds the writer, so they make the next
    // batch in this order: a failing first write, a discarding one that is first after it,
    // then a kept one, a failing one behind it and a kept one.
    for (id, end) in [
        (2, "fail"),
        (3, "discard"),
        (4, "ok"),
        (5, "fail"),
        (6, "ok"),
    ] {
        let w = w.clone();
        next.push(tokio::spawn(async move {
            w.write_with(move |txn| {
                async move {
                    if let Err(e) = txn.execute_unprepared(&insert("gc_rows", id)).await {
                        return Outcome::Discard(Err(e.to_string()));
                    }
                    match end {
                        "fail" => Outcome::Discard(Err("the write said no".to_string())),
                        "discard" => Outcome::Discard(Ok("seen, not kept")),
                        _ => Outcome::Keep(Ok("kept")),
                    }
                }
                .boxed()
            })
            .await
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.await.unwrap().unwrap();
    let mut results = Vec::new();
    for r in next {
        results.push(r.await.unwrap().unwrap());
    }
    assert_eq!(
        results,
        vec![
            Err("the write said no".to_string()),
            Ok("seen, not kept"),
            Ok("kept"),
            Err("the write said no".to_string()),
            Ok("kept"),
        ]
    );
    assert_eq!(batches(&w), 2);
    assert_eq!(
        ids(&conn, "gc_rows").await,
        vec![1, 4, 6],
        "the first writes that failed or discarded left nothing, nor took the others down"
    );
    let _ = conn.close().await;
    place.done().await;
}

/// PostgreSQL aborts a transaction at its first failed statement, and then answers COMMIT with a
/// quiet rollback. A write that swallows such an error and asks to keep its savepoint must not
/// let the batch report success for what was rolled back: the batch is failed as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_write_that_leaves_the_transaction_aborted_fails_its_batch() {
    let (place, conn) = setup(true).await;
    let w = writer(&conn);
    let first = hold_writer(&w, 1, Duration::from_millis(400)).await;
    // Sent one after the other while the first batch holds the writer, so they make the next
    // batch in this order.
    let mut next = Vec::new();
    for (id, careless) in [(3, false), (1, true), (2, false)] {
        let w = w.clone();
        next.push(tokio::spawn(async move {
            w.write(move |txn| {
                async move {
                    let done = txn.execute_unprepared(&insert("gc_rows", id)).await;
                    if careless {
                        // The duplicate key fails and aborts the transaction; the error is
                        // dropped.
                        return Ok(());
                    }
                    done.map(|_| ())
                }
                .boxed()
            })
            .await
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.await.unwrap().unwrap();
    for (r, which) in
        next.into_iter()
            .zip(["the write before", "the careless write", "the write after"])
    {
        let r = r.await.unwrap();
        assert!(r.is_err(), "{which} is not reported done: {r:?}");
    }
    assert_eq!(
        ids(&conn, "gc_rows").await,
        vec![1],
        "nothing of the second batch stays"
    );
    // A careless write alone in its batch (no savepoint: the batch's transaction is its own)
    // is not reported done either.
    let alone = w
        .write(|txn| {
            async move {
                let _ = txn.execute_unprepared(&insert("gc_rows", 1)).await;
                Ok::<_, DbErr>(())
            }
            .boxed()
        })
        .await;
    assert!(alone.is_err(), "a lone careless write: {alone:?}");
    w.write(|txn| async move { txn.execute_unprepared(&insert("gc_rows", 9)).await }.boxed())
        .await
        .unwrap();
    assert_eq!(
        ids(&conn, "gc_rows").await,
        vec![1, 9],
        "and the writer goes on"
    );
    let _ = conn.close().await;
    place.done().await;
}

both!(
    writes_that_arrive_together_share_one_commit,
    a_failed_write_rolls_back_alone,
    the_first_write_of_a_batch_rolls_back_alone_too,
    a_commit_that_fails_fails_its_whole_batch_and_the_writer_goes_on
);
