//! Read models kept from an event store (`data::event_store`): a projection applies events in
//! position order to its own tables and saves its checkpoint in the same transaction, so an
//! event is applied exactly once however often a batch is retried.
//!
//! - `Projector::run` keeps every projection caught up (woken by `poke` after a write, it lets
//!   `BATCH_WINDOW` of writes gather; and every 250 ms). Its position is published for readers that wait for their own write
//!   (`wait_for`).
//! - A projection that fails on an event stops there: its checkpoint stays before the event,
//!   `projection_failed{projection}` is 1, a log line names the event id and position, and
//!   `failure()` says so to readers; it retries with back-off and resumes once the cause is fixed.
//! - `rebuild` builds a projection into shadow tables (suffix `_rebuild`) from position 0 with
//!   its own checkpoint while the live tables keep serving, then swaps them in one transaction.
//! - Metrics: `projection_lag_events`, `projection_lag_seconds`, `projection_rebuild_progress`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};
use tokio::sync::{watch, Notify};

use crate::data::event_store::{self, checkpoint, StoredEvent, Upcasters};
use crate::transport::shutdown::Drain;

/// How long the runner lets writes gather after it is woken before applying them.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// Suffix of the tables a rebuild writes before they replace the live ones.
pub const SHADOW: &str = "_rebuild";

/// One read model.
#[async_trait::async_trait]
pub trait Projection: Send + Sync {
    /// Its name: the checkpoint, the metrics label, the rebuild command's argument.
    fn name(&self) -> &'static str;

    /// The tables it writes (live names).
    fn tables(&self) -> &'static [&'static str];

    /// Its indexes (live names); those of the shadow tables have `SHADOW` appended.
    fn indexes(&self) -> &'static [&'static str];

    /// Creates its tables and indexes, each named with `suffix` appended, when missing.
    async fn create(&self, c: &DatabaseTransaction, suffix: &str) -> Result<(), sea_orm::DbErr>;

    /// Applies `event` to the tables named with `suffix`. An error stops the projection at
    /// this event.
    async fn apply(
        &self,
        txn: &DatabaseTransaction,
        suffix: &str,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// The event cannot be applied (the projection's code must change).
    #[error("{0}")]
    Event(String),
}

/// Why a projection stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub event_id: String,
    pub position: i64,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped at event {} (position {}): {}",
            self.event_id, self.position, self.message
        )
    }
}

/// What one pass over a projection did.
#[derive(Debug)]
pub enum Pass {
    /// Applied this many events; the checkpoint is now at `position`.
    Applied { events: usize, position: i64 },
    /// Applied the events before `failure`'s, up to `position`, and stopped there.
    Failed { failure: Failure, position: i64 },
}

struct Entry {
    projection: Arc<dyn Projection>,
    position: watch::Sender<i64>,
    failure: Mutex<Option<Failure>>,
}

/// Runs projections over one database's event store.
#[derive(Clone)]
pub struct Projector {
    db: DatabaseConnection,
    up: Upcasters,
    entries: Arc<HashMap<&'static str, Entry>>,
    wake: Arc<Notify>,
    batch: u64,
}

impl Projector {
    pub fn new(
        db: DatabaseConnection,
        up: Upcasters,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Self {
        let entries = projections
            .into_iter()
            .map(|p| {
                (
                    p.name(),
                    Entry {
                        projection: p,
                        position: watch::channel(0).0,
                        failure: Mutex::new(None),
                    },
                )
            })
            .collect();
        Self {
            db,
            up,
            entries: Arc::new(entries),
            wake: Arc::new(Notify::new()),
            batch: 256,
        }
    }

    /// The names of the projections, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut n: Vec<_> = self.entries.keys().copied().collect();
        n.sort_unstable();
        n
    }

    /// Creates every projection's live tables (at start-up).
    pub async fn create_tables(&self) -> Result<(), sea_orm::DbErr> {
        let txn = self.db.begin().await?;
        for e in self.entries.values() {
            e.projection.create(&txn, "").await?;
        }
        txn.commit().await
    }

    /// Asks the runner to look for new events now (after a write).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Why `name` stopped, when it did.
    pub fn failure(&self, name: &str) -> Option<Failure> {
        self.entries
            .get(name)
            .and_then(|e| e.failure.lock().ok().and_then(|f| f.clone()))
    }

    /// One batch of `projection` into the tables with `suffix`, from checkpoint `ckpt`. The
    /// events before one it cannot apply are applied and kept; the checkpoint stops there.
    async fn pass(
        &self,
        projection: &dyn Projection,
        suffix: &str,
        ckpt: &str,
    ) -> Result<Pass, sea_orm::DbErr> {
        match self.pass_until(projection, suffix, ckpt, None).await? {
            Pass::Failed { failure, .. } => {
                // Keep what came before the event (a new transaction: the failed one may have
                // written part of it).
                let position = match self
                    .pass_until(projection, suffix, ckpt, Some(failure.position - 1))
                    .await?
                {
                    Pass::Applied { position, .. } | Pass::Failed { position, .. } => position,
                };
                Ok(Pass::Failed { failure, position })
            }
            applied => Ok(applied),
        }
    }

    async fn pass_until(
        &self,
        projection: &dyn Projection,
        suffix: &str,
        ckpt: &str,
        until: Option<i64>,
    ) -> Result<Pass, sea_orm::DbErr> {
        let txn = self.db.begin().await?;
        let from = checkpoint::load(&txn, ckpt).await?;
        let mut events = event_store::read_all(&txn, from, self.batch, &[], &self.up)
            .await
            .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
        if let Some(until) = until {
            events.retain(|e| e.position <= until);
        }
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(Pass::Applied {
                events: 0,
                position: from,
            });
        };
        for e in &events {
            match projection.apply(&txn, suffix, e).await {
                Ok(()) => {}
                Err(ProjectionError::Db(db)) => return Err(db),
                Err(ProjectionError::Event(message)) => {
                    return Ok(Pass::Failed {
                        failure: Failure {
                            event_id: e.event_id.clone(),
                            position: e.position,
                            message,
                        },
                        position: from,
                    })
                }
            }
        }
        checkpoint::save(&txn, ckpt, last).await?;
        txn.commit().await?;
        Ok(Pass::Applied {
            events: events.len(),
            position: last,
        })
    }

    /// Brings `name` up to date once (what `run` does on every wake-up).
    pub async fn catch_up(&self, name: &str) -> Result<Pass, sea_orm::DbErr> {
        let Some(entry) = self.entries.get(name) else {
            return Err(sea_orm::DbErr::Custom(format!(
                "no projection named '{name}'"
            )));
        };
        loop {
            let pass = self.pass(entry.projection.as_ref(), "", name).await?;
            match &pass {
                Pass::Applied { events, position } => {
                    entry
                        .position
                        .send_if_modified(|p| std::mem::replace(p, *position) != *position);
                    if let Ok(mut f) = entry.failure.lock() {
                        if f.take().is_some() {
                            tracing::info!(projection = name, "projection resumed");
                            crate::telemetry::metrics::projection_failed(name, false);
                        }
                    }
                    if (*events as u64) < self.batch {
                        return Ok(pass);
                    }
                }
                Pass::Failed { failure, position } => {
                    if let Ok(mut f) = entry.failure.lock() {
                        if f.as_ref() != Some(failure) {
                            tracing::error!(
                                projection = name,
                                event_id = %failure.event_id,
                                position = failure.position,
                                error = %failure.message,
                                "projection stopped at an event it cannot apply"
                            );
                        }
                        *f = Some(failure.clone());
                    }
                    // After the failure is recorded, so a reader woken by the move sees why it
                    // stopped there.
                    entry
                        .position
                        .send_if_modified(|p| std::mem::replace(p, *position) != *position);
                    crate::telemetry::metrics::projection_failed(name, true);
                    return Ok(pass);
                }
            }
        }
    }

    /// Keeps every projection caught up until `drain` starts.
    pub async fn run(self, drain: Drain) {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        let mut measured = std::time::Instant::now() - Duration::from_secs(1);
        loop {
            let mut wait = Duration::from_millis(250);
            let mut failing = false;
            for name in self.names() {
                match self.catch_up(name).await {
                    Ok(Pass::Failed { .. }) => failing = true,
                    Ok(Pass::Applied { .. }) => {}
                    Err(e) => {
                        tracing::warn!(projection = name, error = %e, "projection pass failed; retrying");
                        failing = true;
                    }
                }
            }
            if failing {
                wait = wait.max(backoff.next_wait());
            } else {
                backoff.reset();
            }
            if measured.elapsed() >= Duration::from_secs(1) {
                self.measure_lag().await;
                measured = std::time::Instant::now();
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {
                    // Writes come in bursts: gather a few milliseconds of them into one
                    // transaction per projection instead of one per write.
                    tokio::time::sleep(BATCH_WINDOW).await;
                }
                _ = drain.draining() => return,
            }
        }
    }

    async fn measure_lag(&self) {
        let Ok(head) = event_store::head_position(&self.db).await else {
            return;
        };
        for (name, e) in self.entries.iter() {
            let at = *e.position.borrow();
            let oldest = if at < head {
                event_store::read_all(&self.db, at, 1, &[], &Upcasters::new())
                    .await
                    .ok()
                    .and_then(|v| v.first().map(|e| e.recorded_at))
            } else {
                None
            };
            let secs = oldest
                .map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            crate::telemetry::metrics::projection_lag(name, head - at, secs);
        }
    }

    /// Waits until `name` has applied every event up to `position`, at most `within`. Errors
    /// say why it did not: the projection stopped on an event, or it is still behind.
    pub async fn wait_for(
        &self,
        name: &str,
        position: i64,
        within: Duration,
    ) -> Result<i64, String> {
        let Some(entry) = self.entries.get(name) else {
            return Err(format!("no projection named '{name}'"));
        };
        let mut rx = entry.position.subscribe();
        if *rx.borrow() < position {
            self.poke();
        }
        let reached = tokio::time::timeout(within, async {
            loop {
                let at = *rx.borrow_and_update();
                if at >= position {
                    return Ok(at);
                }
                if let Some(f) = self.failure(name) {
                    if f.position <= position {
                        return Err(format!("the {name} read model {f}"));
                    }
                }
                // A failure is also looked for every 100 ms (it need not move the position).
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() {
                        return Err("the projector stopped".to_string());
                    },
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        })
        .await;
        match reached {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the {name} read model has not reached position {position} yet (at {})",
                *entry.position.borrow()
            )),
        }
    }

    /// Rebuilds `name` from position 0 into shadow tables while the live ones serve, calling
    /// `progress(position, head)` after every batch, then swaps the shadow tables in and moves
    /// the live checkpoint to where the rebuild got. Returns the number of events applied.
    pub async fn rebuild(
        &self,
        name: &str,
        mut progress: impl FnMut(i64, i64),
    ) -> Result<usize, String> {
        let entry = self.entries.get(name).ok_or_else(|| {
            format!(
                "no projection named '{name}' (known: {})",
                self.names().join(", ")
            )
        })?;
        let p = entry.projection.as_ref();
        let shadow_ckpt = format!("{name}{SHADOW}");
        let db = |e: sea_orm::DbErr| e.to_string();
        // Start clean: drop what an interrupted rebuild left.
        let txn = self.db.begin().await.map_err(db)?;
        for t in p.tables() {
            txn.execute_unprepared(&format!("DROP TABLE IF EXISTS {t}{SHADOW}"))
                .await
                .map_err(db)?;
        }
        // A swapped-in shadow kept its index names; the live ones are made again at the swap.
        for i in p.indexes() {
            txn.execute_unprepared(&format!("DROP INDEX IF EXISTS {i}{SHADOW}"))
                .await
                .map_err(db)?;
        }
        p.create(&txn, SHADOW).await.map_err(db)?;
        checkpoint::remove(&txn, &shadow_ckpt).await.map_err(db)?;
        txn.commit().await.map_err(db)?;
        let mut applied = 0;
        loop {
            let head = event_store::head_position(&self.db)
                .await
                .map_err(|e| e.to_string())?;
            match self.pass(p, SHADOW, &shadow_ckpt).await.map_err(db)? {
                Pass::Applied { events, position } => {
                    applied += events;
                    progress(position, head);
                    crate::telemetry::metrics::projection_rebuild(
                        name,
                        if head > 0 {
                            position as f64 / head as f64
                        } else {
                            1.0
                        },
                    );
                    if position >= head {
                        break;
                    }
                }
                Pass::Failed { failure, .. } => return Err(format!("rebuild of {name} {failure}")),
            }
        }
        // Swap: the shadow tables take the live names, and the live checkpoint moves to the
        // shadow's. Events appended since the last pass are applied by the live runner.
        let txn = self.db.begin().await.map_err(db)?;
        let at = checkpoint::load(&txn, &shadow_ckpt).await.map_err(db)?;
        checkpoint::load(&txn, name).await.map_err(db)?;
        for t in p.tables() {
            txn.execute_unprepared(&format!("DROP TABLE IF EXISTS {t}"))
                .await
                .map_err(db)?;
            txn.execute_unprepared(&format!("ALTER TABLE {t}{SHADOW} RENAME TO {t}"))
                .await
                .map_err(db)?;
        }
        p.create(&txn, "").await.map_err(db)?;
        checkpoint::save(&txn, name, at).await.map_err(db)?;
        checkpoint::remove(&txn, &shadow_ckpt).await.map_err(db)?;
        txn.commit().await.map_err(db)?;
        entry.position.send_replace(at);
        crate::telemetry::metrics::projection_rebuild(name, 1.0);
        Ok(applied)
    }
}
