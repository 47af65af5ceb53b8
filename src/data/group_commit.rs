//! Group commit: the write transactions of one database that arrive together share one commit.
//!
//! A commit is the expensive part of a small write (SQLite writes its journal and the file and
//! syncs both; PostgreSQL flushes its WAL), and an order makes several small writes in each
//! service. `GroupCommit` runs the writes given to it one after the other in one transaction,
//! each but the first inside a savepoint of its own, and commits once for all of them: while
//! one batch commits, the writes that arrive meanwhile queue and become the next batch, so
//! nobody waits for a timer and a lone write commits at once. Savepoints cost round trips, so
//! the first write of a batch (a lone write: the common case) has none and a kept one is not
//! released (the commit ends it).
//!
//! Each write keeps the meaning of a transaction of its own: a write that fails (or says to
//! discard, or panics) is rolled back to its savepoint and the others keep theirs; the first
//! write has no savepoint, so it takes the transaction down with it alone (nothing else has
//! run in it yet) and the rest of the batch runs in a new one. A caller hears its result only
//! once the batch has committed, so nothing is reported done that a crash could still lose.
//! When the commit itself fails, every write of the batch gets that error. Writes must not
//! wait on anything but the database (no remote call inside a batch: it would hold up every
//! write behind it), and must not themselves wait on this writer.

use std::panic::AssertUnwindSafe;

use futures::future::BoxFuture;
use futures::FutureExt;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// Most writes in one batch: a batch's commit stays short for the readers that share the
/// connection (SQLite has one), and each write's savepoint takes a subtransaction id on
/// PostgreSQL, of which a backend caches 64; past that every snapshot in the cluster gets
/// slower.
pub const MAX_BATCH: usize = 32;

/// What a write asks for its savepoint: keep its changes, or roll them back (and still hand
/// the value to its caller).
pub enum Outcome<T> {
    Keep(T),
    Discard(T),
}

/// A write's result as a transaction's would be: kept when `Ok`, rolled back when `Err`.
impl<T, E> From<Result<T, E>> for Outcome<Result<T, E>> {
    fn from(r: Result<T, E>) -> Self {
        match r {
            Ok(v) => Outcome::Keep(Ok(v)),
            Err(e) => Outcome::Discard(Err(e)),
        }
    }
}

/// A write's delivery, run once its batch's commit is known (the commit's error, if any).
type Deliver = Box<dyn FnOnce(Option<&DbErr>) + Send>;

/// One queued write: `run` runs it in the batch's transaction and says whether to keep its
/// savepoint; `fail` tells its caller that it could not run at all.
type Run =
    Box<dyn for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, (bool, Deliver)> + Send>;

struct Job {
    run: Run,
    fail: Box<dyn FnOnce(DbErr) + Send>,
}

/// The writer of one database. Cheap to clone; the batches are run by a task that lives as long
/// as any clone does.
#[derive(Clone)]
pub struct GroupCommit {
    db: DatabaseConnection,
    jobs: mpsc::UnboundedSender<Job>,
    label: &'static str,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("label", &self.label)
            .finish()
    }
}

impl GroupCommit {
    /// A writer for `db`; `label` names it in `db_group_commit_batch_size{database}`. Needs a
    /// tokio runtime (it spawns the batch task).
    pub fn new(db: DatabaseConnection, label: &'static str) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(db.clone(), rx, label));
        Self { db, jobs, label }
    }

    /// What it is called in `db_group_commit_batch_size{database}`.
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// The database, for reads (and for writes that must stay out of a batch).
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Runs `f` in the next batch and returns its result once the batch committed: an `Err`
    /// from `f` rolls its changes back and is returned as is; a failed commit (or a batch that
    /// could not begin) turns an `Ok` into that database error.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbErr> + Send + 'static,
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
    {
        self.write_with(move |txn| async move { f(txn).await.into() }.boxed())
            .await
            .map_err(E::from)
            .and_then(|r| r)
    }

    /// `write` for a write that decides itself whether its changes stay (`Outcome`): a
    /// discarded write's value reaches its caller whatever the commit did, a kept one's only
    /// when the commit succeeded (else the commit's error).
    pub async fn write_with<T, F>(&self, f: F) -> Result<T, DbErr>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, Outcome<T>> + Send + 'static,
    {
        type Reply<T> = std::sync::Mutex<Option<oneshot::Sender<Result<T, DbErr>>>>;
        fn send<T>(slot: &Reply<T>, out: Result<T, DbErr>) {
            if let Some(tx) = slot.lock().ok().and_then(|mut s| s.take()) {
                let _ = tx.send(out);
            }
        }
        let (tx, rx) = oneshot::channel();
        let reply: std::sync::Arc<Reply<T>> = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
        let on_fail = reply.clone();
        // The write runs on the batch task; it keeps the caller's span, so its statements are
        // traced (and its events' metadata carry the trace) as if it ran here.
        let span = tracing::Span::current();
        let run: Run = Box::new(move |txn: &DatabaseTransaction| {
            async move {
                let outcome = AssertUnwindSafe(f(txn)).catch_unwind().await;
                let (keep, value) = match outcome {
                    Ok(Outcome::Keep(v)) => (true, Ok(v)),
                    Ok(Outcome::Discard(v)) => (false, Ok(v)),
                    Err(_) => {
                        tracing::error!("a batched write panicked; its savepoint is rolled back");
                        (false, Err(DbErr::Custom("the write panicked".into())))
                    }
                };
                let deliver: Deliver = Box::new(move |commit: Option<&DbErr>| {
                    let out = match (value, commit) {
                        (Ok(_), Some(e)) if keep => Err(copy(e)),
                        (value, _) => value,
                    };
                    send(&reply, out);
                });
                (keep, deliver)
            }
            .instrument(span)
            .boxed()
        });
        let fail = Box::new(move |e: DbErr| send(&on_fail, Err(e)));
        if self.jobs.send(Job { run, fail }).is_err() {
            return Err(stopped());
        }
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> DbErr {
    DbErr::Custom("the database writer stopped".into())
}

/// The commit's error for each caller of the batch (`DbErr` is not `Clone`).
fn copy(e: &DbErr) -> DbErr {
    DbErr::Custom(format!("the batch's transaction failed: {e}"))
}

async fn run(db: DatabaseConnection, mut rx: mpsc::UnboundedReceiver<Job>, label: &'static str) {
    let sizes = crate::telemetry::metrics::DB_BATCH_SIZE.with_label_values(&[label]);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        sizes.observe(batch.len() as f64);
        commit_batch(&db, std::mem::take(&mut batch)).await;
    }
}

async fn commit_batch(db: &DatabaseConnection, batch: Vec<Job>) {
    let postgres = db.get_database_backend() == DatabaseBackend::Postgres;
    let mut jobs = batch.into_iter();
    while let Some(first) = jobs.next() {
        let txn = match db.begin().await {
            Ok(t) => t,
            Err(e) => {
                // Nothing ran: each write fails as its own `begin` would have.
                (first.fail)(copy(&e));
                for job in jobs {
                    (job.fail)(copy(&e));
                }
                return;
            }
        };
        // The first write runs in the transaction itself, without a savepoint (a lone write,
        // the common case, needs none): when it is not kept, the transaction rolls back with
        // it, nothing else having run in it yet, and the rest start over in a new one.
        let (keep, deliver) = (first.run)(&txn).await;
        if !keep {
            let _ = txn.rollback().await;
            deliver(None);
            continue;
        }
        let mut delivers = vec![deliver];
        let mut broken: Option<DbErr> = None;
        for (n, job) in jobs.by_ref().enumerate() {
            if let Some(e) = &broken {
                // A savepoint that could not be taken or rolled back to leaves the
                // transaction in doubt: the rest of the batch does not run in it.
                (job.fail)(copy(e));
                continue;
            }
            match savepoint(&txn, n, job).await {
                Ok(d) => delivers.push(d),
                Err(e) => broken = Some(e),
            }
        }
        // PostgreSQL aborts a transaction at its first failed statement and answers its
        // COMMIT with a quiet rollback: a write that swallowed such an error and asked to be
        // kept must not be reported done. One statement tells (it fails in an aborted
        // transaction); SQLite has no such state.
        if postgres && broken.is_none() {
            if let Err(e) = txn.execute_unprepared("SELECT 1").await {
                broken = Some(e);
            }
        }
        let committed = match broken {
            None => txn.commit().await,
            Some(e) => {
                let _ = txn.rollback().await;
                Err(e)
            }
        };
        for d in delivers {
            d(committed.as_ref().err());
        }
    }
}

/// Runs the `n`th job after a batch's first inside a savepoint of `txn`, rolled back to when
/// the job says so; a kept one is not released (the commit ends it, one round trip fewer).
/// Its delivery waits for the batch's commit. An error means the savepoint could not be
/// taken or rolled back to: the job's caller has been told, and the batch must not commit.
async fn savepoint(txn: &DatabaseTransaction, n: usize, job: Job) -> Result<Deliver, DbErr> {
    if let Err(e) = txn.execute_unprepared(&format!("SAVEPOINT gc_{n}")).await {
        (job.fail)(copy(&e));
        return Err(e);
    }
    let (keep, deliver) = (job.run)(txn).await;
    if keep {
        return Ok(deliver);
    }
    match txn
        .execute_unprepared(&format!("ROLLBACK TO SAVEPOINT gc_{n}"))
        .await
    {
        Ok(_) => Ok(deliver),
        Err(e) => {
            deliver(Some(&e));
            Err(e)
        }
    }
}
