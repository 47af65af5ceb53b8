//! Orchestrated sagas, persisted step by step.
//!
//! A saga definition is a list of typed steps; each has an action, an optional compensation,
//! a retry policy and a timeout. An instance lives in two tables of the orchestrator's own
//! database: `saga_instances` (state, current step, the saga's data as JSON) and `saga_steps`
//! (every step's status, attempts and last error). Each transition is written before and after
//! the remote call it covers, so after a crash `run` picks the instance up where it was:
//! forward by re-issuing the current step (participants deduplicate by the idempotency key
//! `<saga id>/<step>`), or backward when it was compensating.
//!
//! When a step is rejected (or runs out of retries), the saga compensates that step and every
//! completed one in reverse order; compensations are retried until they succeed, because a
//! half-compensated saga is worse than a slow one. A compensation for an action that never
//! arrived is a no-op on the participant's side.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Set, TransactionTrait,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Code;
use tracing::Instrument;

pub mod instance {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "saga_instances")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub saga_id: String,
        pub kind: String,
        /// RUNNING, COMPENSATING, COMPLETED or COMPENSATED.
        pub state: String,
        /// Index of the step being run (RUNNING) or the last one to compensate (COMPENSATING).
        pub step: i32,
        pub data: String,
        /// Why the saga turned back, when it did.
        pub error: String,
        pub created_at: ChronoDateTimeUtc,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod step_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "saga_steps")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub saga_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub step_no: i32,
        pub name: String,
        /// STARTED, SUCCEEDED, FAILED, COMPENSATING, COMPENSATED or COMPENSATION_FAILED.
        pub status: String,
        pub attempts: i32,
        pub error: String,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use migration::Migration;

mod migration {
    use sea_orm_migration::prelude::*;

    /// Creates `saga_instances` and `saga_steps`; an orchestrator's migrator lists it.
    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0000_saga"
        }
    }

    fn text(name: &str, len: u32) -> ColumnDef {
        ColumnDef::new(Alias::new(name))
            .string_len(len)
            .not_null()
            .to_owned()
    }

    fn ts(name: &str) -> ColumnDef {
        ColumnDef::new(Alias::new(name))
            .timestamp_with_time_zone()
            .not_null()
            .to_owned()
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.create_table(
                Table::create()
                    .table(Alias::new("saga_instances"))
                    .if_not_exists()
                    .col(text("saga_id", 128).primary_key())
                    .col(text("kind", 64))
                    .col(text("state", 16))
                    .col(ColumnDef::new(Alias::new("step")).integer().not_null())
                    .col(ColumnDef::new(Alias::new("data")).text().not_null())
                    .col(ColumnDef::new(Alias::new("error")).text().not_null())
                    .col(ts("created_at"))
                    .col(ts("updated_at"))
                    .to_owned(),
            )
            .await?;
            m.create_index(
                Index::create()
                    .name("idx_saga_instances_state")
                    .table(Alias::new("saga_instances"))
                    .col(Alias::new("state"))
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
            m.create_table(
                Table::create()
                    .table(Alias::new("saga_steps"))
                    .if_not_exists()
                    .col(text("saga_id", 128))
                    .col(ColumnDef::new(Alias::new("step_no")).integer().not_null())
                    .col(text("name", 64))
                    .col(text("status", 24))
                    .col(ColumnDef::new(Alias::new("attempts")).integer().not_null())
                    .col(ColumnDef::new(Alias::new("error")).text().not_null())
                    .col(ts("updated_at"))
                    .primary_key(
                        Index::create()
                            .col(Alias::new("saga_id"))
                            .col(Alias::new("step_no")),
                    )
                    .to_owned(),
            )
            .await
        }

        async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.drop_table(Table::drop().table(Alias::new("saga_steps")).to_owned())
                .await?;
            m.drop_table(Table::drop().table(Alias::new("saga_instances")).to_owned())
                .await
        }
    }
}

/// Why a step did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepError {
    /// Worth trying again (the participant was unavailable, the call timed out).
    Transient(String),
    /// A definitive answer (declined, out of stock): the saga turns back.
    Rejected(String),
}

impl StepError {
    /// Classifies a gRPC status by the step's retry policy.
    pub fn from_status(s: &tonic::Status, policy: &StepRetry) -> Self {
        let msg = format!("{:?}: {}", s.code(), s.message());
        if policy.retry_codes.contains(&s.code()) {
            Self::Transient(msg)
        } else {
            Self::Rejected(msg)
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Transient(m) | Self::Rejected(m) => m,
        }
    }
}

/// How a step's action is retried.
#[derive(Clone, Debug)]
pub struct StepRetry {
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub retry_codes: Vec<Code>,
}

impl Default for StepRetry {
    fn default() -> Self {
        Self {
            attempts: 8,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            retry_codes: vec![
                Code::Unavailable,
                Code::DeadlineExceeded,
                Code::ResourceExhausted,
                Code::Aborted,
            ],
        }
    }
}

/// One step of a saga over data `D`.
#[async_trait::async_trait]
pub trait Step<D>: Send + Sync {
    fn name(&self) -> &'static str;

    /// Does the step's work. `key` is the idempotency key to send with it.
    async fn action(&self, data: &mut D, key: &str) -> Result<(), StepError>;

    /// Undoes the step; also called when the action may never have arrived.
    async fn compensate(&self, _data: &mut D, _key: &str) -> Result<(), StepError> {
        Ok(())
    }

    fn has_compensation(&self) -> bool {
        false
    }

    fn retry(&self) -> StepRetry {
        StepRetry::default()
    }

    /// Longest one attempt may take.
    fn timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// How a saga ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// Turned back at `step` for `reason`; completed steps were compensated.
    Compensated {
        step: String,
        reason: String,
    },
}

/// A saga definition: a kind name and its steps in order.
pub struct Saga<D> {
    pub kind: &'static str,
    pub steps: Vec<Arc<dyn Step<D>>>,
}

const RUNNING: &str = "RUNNING";
const COMPENSATING: &str = "COMPENSATING";
const COMPLETED: &str = "COMPLETED";
const COMPENSATED: &str = "COMPENSATED";

#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("saga data: {0}")]
    Data(#[from] serde_json::Error),
    #[error("saga '{0}' not found")]
    NotFound(String),
}

/// Environment variable naming a crash point for crash tests, `<step>:<when>` with `when` one
/// of `before`, `after` (the call succeeded, its outcome not yet recorded), `undo-before` and
/// `undo-after`. Unset in normal runs.
pub use crate::faults::crash::CRASH_AT_ENV;

fn crash_point(step: &str, when: &str) {
    crate::faults::crash::point(step, when);
}

fn backoff(policy: &StepRetry, attempt: u32) -> Duration {
    crate::backoff::jittered(policy.backoff, policy.max_backoff, attempt)
}

impl<D> Saga<D>
where
    D: Serialize + DeserializeOwned + Send + Sync,
{
    /// Records a new instance in `txn`, the transaction that creates what the saga is about,
    /// so the saga exists exactly when its subject does.
    pub async fn start_in<C: ConnectionTrait>(
        &self,
        txn: &C,
        saga_id: &str,
        data: &D,
    ) -> Result<(), SagaError> {
        let now = crate::types::time::now();
        instance::ActiveModel {
            saga_id: Set(saga_id.to_string()),
            kind: Set(self.kind.to_string()),
            state: Set(RUNNING.into()),
            step: Set(0),
            data: Set(serde_json::to_string(data)?),
            error: Set(String::new()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(txn)
        .await?;
        Ok(())
    }

    /// Instances of this kind that have not finished, oldest first (what start-up resumes).
    pub async fn unfinished(&self, db: &DatabaseConnection) -> Result<Vec<String>, SagaError> {
        Ok(instance::Entity::find()
            .filter(instance::Column::Kind.eq(self.kind))
            .filter(instance::Column::State.is_in([RUNNING, COMPENSATING]))
            .order_by_asc(instance::Column::CreatedAt)
            .all(db)
            .await?
            .into_iter()
            .map(|i| i.saga_id)
            .collect())
    }

    async fn mark_step<C: ConnectionTrait>(
        db: &C,
        saga_id: &str,
        step_no: i32,
        name: &str,
        status: &str,
        error: &str,
        count_attempt: bool,
    ) -> Result<(), SagaError> {
        let now = crate::types::time::now();
        match step_row::Entity::find_by_id((saga_id.to_string(), step_no))
            .one(db)
            .await?
        {
            Some(row) => {
                let attempts = row.attempts + i32::from(count_attempt);
                let mut a: step_row::ActiveModel = row.into();
                a.status = Set(status.into());
                // A compensated step keeps the error that made the saga turn back.
                if !error.is_empty() || matches!(status, "STARTED" | "SUCCEEDED") {
                    a.error = Set(error.into());
                }
                a.attempts = Set(attempts);
                a.updated_at = Set(now);
                a.update(db).await?;
            }
            None => {
                step_row::ActiveModel {
                    saga_id: Set(saga_id.into()),
                    step_no: Set(step_no),
                    name: Set(name.into()),
                    status: Set(status.into()),
                    attempts: Set(i32::from(count_attempt)),
                    error: Set(error.into()),
                    updated_at: Set(now),
                }
                .insert(db)
                .await?;
            }
        }
        Ok(())
    }

    /// Runs (or resumes) an instance to its end, in a `saga` span (a child of the current
    /// span: the request that started it, or none when resumed at start-up) with one
    /// `saga.step` span per attempt. A run that moved the saga is counted in
    /// `saga_finished_total` and `saga_duration_seconds`.
    pub async fn run(&self, db: &DatabaseConnection, saga_id: &str) -> Result<Outcome, SagaError> {
        let span = tracing::info_span!(
            "saga",
            otel.name = format!("saga {}", self.kind),
            saga.kind = self.kind,
            saga.id = saga_id,
            saga.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let mut moved = false;
        let result = self
            .drive(db, saga_id, &mut moved)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(Outcome::Completed) => "completed",
            Ok(Outcome::Compensated { .. }) => "compensated",
            Err(_) => "error",
        };
        span.record("saga.outcome", outcome);
        if outcome != "completed" {
            span.record("otel.status_code", "ERROR");
        }
        if moved && result.is_ok() {
            use crate::telemetry::metrics::{SAGAS, SAGA_DURATION};
            SAGAS.with_label_values(&[self.kind, outcome]).inc();
            SAGA_DURATION
                .with_label_values(&[self.kind, outcome])
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }

    async fn drive(
        &self,
        db: &DatabaseConnection,
        saga_id: &str,
        moved: &mut bool,
    ) -> Result<Outcome, SagaError> {
        loop {
            let inst = instance::Entity::find_by_id(saga_id)
                .one(db)
                .await?
                .ok_or_else(|| SagaError::NotFound(saga_id.to_string()))?;
            let mut data: D = serde_json::from_str(&inst.data)?;
            let idx = inst.step.max(0) as usize;
            if matches!(inst.state.as_str(), RUNNING | COMPENSATING) {
                *moved = true;
            }
            match inst.state.as_str() {
                COMPLETED => return Ok(Outcome::Completed),
                COMPENSATED => {
                    let step = self
                        .steps
                        .get(idx)
                        .map(|s| s.name())
                        .unwrap_or("")
                        .to_string();
                    return Ok(Outcome::Compensated {
                        step,
                        reason: inst.error,
                    });
                }
                RUNNING if idx >= self.steps.len() => {
                    self.set_instance(db, &inst, COMPLETED, inst.step, None, None)
                        .await?;
                }
                RUNNING => {
                    let step = &self.steps[idx];
                    let key = format!("{saga_id}/{}", step.name());
                    match self
                        .attempt(db, saga_id, idx, &mut data, &key, false)
                        .await?
                    {
                        Ok(()) => {
                            let json = serde_json::to_string(&data)?;
                            let txn = db.begin().await?;
                            Self::mark_step(
                                &txn,
                                saga_id,
                                idx as i32,
                                step.name(),
                                "SUCCEEDED",
                                "",
                                false,
                            )
                            .await?;
                            self.set_instance(
                                &txn,
                                &inst,
                                RUNNING,
                                inst.step + 1,
                                Some(json),
                                None,
                            )
                            .await?;
                            txn.commit().await?;
                        }
                        Err(e) => {
                            tracing::warn!(
                                saga_id,
                                step = step.name(),
                                error = e.message(),
                                "saga step failed; compensating"
                            );
                            Self::mark_step(
                                db,
                                saga_id,
                                idx as i32,
                                step.name(),
                                "FAILED",
                                e.message(),
                                false,
                            )
                            .await?;
                            let json = serde_json::to_string(&data)?;
                            self.set_instance(
                                db,
                                &inst,
                                COMPENSATING,
                                inst.step,
                                Some(json),
                                Some(format!("{}: {}", step.name(), e.message())),
                            )
                            .await?;
                        }
                    }
                }
                COMPENSATING => {
                    // Compensate from the failed step down to the first, skipping those done.
                    let done: Vec<i32> = step_row::Entity::find()
                        .filter(step_row::Column::SagaId.eq(saga_id))
                        .filter(
                            step_row::Column::Status.is_in(["COMPENSATED", "COMPENSATION_FAILED"]),
                        )
                        .all(db)
                        .await?
                        .into_iter()
                        .map(|r| r.step_no)
                        .collect();
                    for i in (0..=idx.min(self.steps.len().saturating_sub(1))).rev() {
                        let step = &self.steps[i];
                        if !step.has_compensation() || done.contains(&(i as i32)) {
                            continue;
                        }
                        let key = format!("{saga_id}/{}/undo", step.name());
                        let result = self.attempt(db, saga_id, i, &mut data, &key, true).await?;
                        let (status, err) = match &result {
                            Ok(()) => ("COMPENSATED", String::new()),
                            Err(e) => {
                                tracing::error!(
                                    saga_id,
                                    step = step.name(),
                                    error = e.message(),
                                    "compensation rejected; needs an operator"
                                );
                                ("COMPENSATION_FAILED", e.message().to_string())
                            }
                        };
                        Self::mark_step(db, saga_id, i as i32, step.name(), status, &err, false)
                            .await?;
                        let json = serde_json::to_string(&data)?;
                        let mut a: instance::ActiveModel = inst.clone().into();
                        a.data = Set(json);
                        a.updated_at = Set(crate::types::time::now());
                        a.update(db).await?;
                    }
                    let json = serde_json::to_string(&data)?;
                    self.set_instance(db, &inst, COMPENSATED, inst.step, Some(json), None)
                        .await?;
                }
                other => {
                    return Err(SagaError::Data(serde::de::Error::custom(format!(
                        "unknown saga state '{other}'"
                    ))))
                }
            }
        }
    }

    async fn set_instance<C: ConnectionTrait>(
        &self,
        c: &C,
        inst: &instance::Model,
        state: &str,
        step: i32,
        data: Option<String>,
        error: Option<String>,
    ) -> Result<(), SagaError> {
        let mut a: instance::ActiveModel = inst.clone().into();
        a.state = Set(state.into());
        a.step = Set(step);
        if let Some(d) = data {
            a.data = Set(d);
        }
        if let Some(e) = error {
            a.error = Set(e);
        }
        a.updated_at = Set(crate::types::time::now());
        a.update(c).await?;
        Ok(())
    }

    /// Runs one action (or compensation) with its retries and timeout, recording each attempt
    /// before it is made. Compensations keep retrying transient failures.
    async fn attempt(
        &self,
        db: &DatabaseConnection,
        saga_id: &str,
        idx: usize,
        data: &mut D,
        key: &str,
        compensating: bool,
    ) -> Result<Result<(), StepError>, SagaError> {
        let step = &self.steps[idx];
        let policy = step.retry();
        let mut attempt = 0u32;
        loop {
            let status = if compensating {
                "COMPENSATING"
            } else {
                "STARTED"
            };
            let span = tracing::info_span!(
                "saga.step",
                otel.name = format!("saga step {}", step.name()),
                saga.id = saga_id,
                saga.step = step.name(),
                saga.step.index = idx,
                saga.attempt = attempt + 1,
                saga.compensating = compensating,
                saga.outcome = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            Self::mark_step(db, saga_id, idx as i32, step.name(), status, "", true)
                .instrument(span.clone())
                .await?;
            crash_point(
                step.name(),
                if compensating {
                    "undo-before"
                } else {
                    "before"
                },
            );
            let fut = async {
                if compensating {
                    step.compensate(data, key).await
                } else {
                    step.action(data, key).await
                }
            };
            let result = match tokio::time::timeout(step.timeout(), fut)
                .instrument(span.clone())
                .await
            {
                Ok(r) => r,
                Err(_) => Err(StepError::Transient(format!(
                    "timed out after {:?}",
                    step.timeout()
                ))),
            };
            let outcome = match &result {
                Ok(()) => "ok",
                Err(StepError::Transient(_)) => "transient",
                Err(_) => "rejected",
            };
            span.record("saga.outcome", outcome);
            if outcome != "ok" {
                span.record("otel.status_code", "ERROR");
            }
            crate::telemetry::metrics::SAGA_STEPS
                .with_label_values(&[
                    self.kind,
                    step.name(),
                    if compensating {
                        "compensation"
                    } else {
                        "action"
                    },
                    outcome,
                ])
                .inc();
            if result.is_ok() {
                crash_point(
                    step.name(),
                    if compensating { "undo-after" } else { "after" },
                );
            }
            match result {
                Err(StepError::Transient(msg)) if compensating || attempt + 1 < policy.attempts => {
                    span.in_scope(|| tracing::info!(saga_id, step = step.name(), attempt, error = %msg, "saga step will be retried"));
                    Self::mark_step(db, saga_id, idx as i32, step.name(), status, &msg, false)
                        .await?;
                    tokio::time::sleep(backoff(&policy, attempt)).await;
                    attempt += 1;
                }
                other => return Ok(other),
            }
        }
    }

    /// The recorded steps of an instance, in order.
    pub async fn steps(
        db: &DatabaseConnection,
        saga_id: &str,
    ) -> Result<Vec<step_row::Model>, SagaError> {
        Ok(step_row::Entity::find()
            .filter(step_row::Column::SagaId.eq(saga_id))
            .order_by_asc(step_row::Column::StepNo)
            .all(db)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct TestMigrator;

    #[async_trait::async_trait]
    impl sea_orm_migration::MigratorTrait for TestMigrator {
        fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
            vec![Box::new(Migration)]
        }
    }

    #[derive(Clone, Copy)]
    enum Behaviour {
        Succeed,
        Reject,
        /// Fails transiently this many times, then succeeds.
        Flaky(u32),
    }

    struct Probe {
        name: &'static str,
        behaviour: Behaviour,
        log: Arc<Mutex<Vec<String>>>,
        failures: Mutex<u32>,
    }

    #[derive(Serialize, serde::Deserialize, Default)]
    struct Data {
        done: Vec<String>,
    }

    #[async_trait::async_trait]
    impl Step<Data> for Probe {
        fn name(&self) -> &'static str {
            self.name
        }

        async fn action(&self, data: &mut Data, key: &str) -> Result<(), StepError> {
            self.log.lock().unwrap().push(format!("do {key}"));
            match self.behaviour {
                Behaviour::Succeed => {}
                Behaviour::Reject => return Err(StepError::Rejected("no".into())),
                Behaviour::Flaky(n) => {
                    let mut f = self.failures.lock().unwrap();
                    if *f < n {
                        *f += 1;
                        return Err(StepError::Transient("busy".into()));
                    }
                }
            }
            data.done.push(self.name.to_string());
            Ok(())
        }

        async fn compensate(&self, _data: &mut Data, key: &str) -> Result<(), StepError> {
            self.log.lock().unwrap().push(format!("undo {key}"));
            Ok(())
        }

        fn has_compensation(&self) -> bool {
            true
        }

        fn retry(&self) -> StepRetry {
            StepRetry {
                attempts: 3,
                backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
                ..StepRetry::default()
            }
        }
    }

    fn saga(behaviours: &[(&'static str, Behaviour)], log: &Arc<Mutex<Vec<String>>>) -> Saga<Data> {
        Saga {
            kind: "test",
            steps: behaviours
                .iter()
                .map(|(name, b)| {
                    Arc::new(Probe {
                        name,
                        behaviour: *b,
                        log: log.clone(),
                        failures: Mutex::new(0),
                    }) as Arc<dyn Step<Data>>
                })
                .collect(),
        }
    }

    async fn db() -> DatabaseConnection {
        crate::data::db::connect_and_migrate::<TestMigrator>("sqlite::memory:")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_rejected_step_compensates_in_reverse() {
        let db = db().await;
        let log = Arc::new(Mutex::new(Vec::new()));
        let s = saga(
            &[
                ("a", Behaviour::Succeed),
                ("b", Behaviour::Flaky(2)),
                ("c", Behaviour::Reject),
                ("d", Behaviour::Succeed),
            ],
            &log,
        );
        s.start_in(&db, "s1", &Data::default()).await.unwrap();
        let out = s.run(&db, "s1").await.unwrap();
        assert_eq!(
            out,
            Outcome::Compensated {
                step: "c".into(),
                reason: "c: no".into()
            }
        );
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            [
                "do s1/a",
                "do s1/b",
                "do s1/b",
                "do s1/b",
                "do s1/c",
                "undo s1/c/undo",
                "undo s1/b/undo",
                "undo s1/a/undo"
            ]
        );
        let steps = Saga::<Data>::steps(&db, "s1").await.unwrap();
        let statuses: Vec<(&str, &str, i32)> = steps
            .iter()
            .map(|r| (r.name.as_str(), r.status.as_str(), r.attempts))
            .collect();
        assert_eq!(
            statuses,
            [
                ("a", "COMPENSATED", 2),
                ("b", "COMPENSATED", 4),
                ("c", "COMPENSATED", 2),
            ]
        );
        assert!(s.unfinished(&db).await.unwrap().is_empty());
        // Running a finished saga again changes nothing.
        assert!(matches!(
            s.run(&db, "s1").await.unwrap(),
            Outcome::Compensated { .. }
        ));
    }

    #[tokio::test]
    async fn a_resumed_saga_continues_where_it_stopped() {
        let db = db().await;
        let log = Arc::new(Mutex::new(Vec::new()));
        let s = saga(
            &[("a", Behaviour::Succeed), ("b", Behaviour::Succeed)],
            &log,
        );
        s.start_in(&db, "s2", &Data::default()).await.unwrap();
        // As if the process died after step a: the instance says step 1 is next.
        let inst = instance::Entity::find_by_id("s2")
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        let mut a: instance::ActiveModel = inst.into();
        a.step = Set(1);
        a.data = Set(r#"{"done":["a"]}"#.into());
        a.update(&db).await.unwrap();
        assert_eq!(s.unfinished(&db).await.unwrap(), ["s2"]);
        assert_eq!(s.run(&db, "s2").await.unwrap(), Outcome::Completed);
        assert_eq!(log.lock().unwrap().clone(), ["do s2/b"]);
        let inst = instance::Entity::find_by_id("s2")
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(inst.data, r#"{"done":["a","b"]}"#);
        assert_eq!(inst.state, "COMPLETED");
    }
}
