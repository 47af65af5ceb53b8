//! Running an instance: forward step by step, each transition written before and after the
//! remote call it covers, and backward through the compensations once a step is rejected.

use sea_orm::{DatabaseConnection, TransactionTrait};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use super::definition::{Direction, Saga, StepError, StepRetry};
use super::store::{self, InstanceMove, InstanceState, StepMark, StepStatus};
use super::{Outcome, SagaError};

fn backoff(policy: &StepRetry, attempt: u32) -> std::time::Duration {
    crate::backoff::jittered(policy.backoff, policy.max_backoff, attempt)
}

impl<D> Saga<D>
where
    D: Serialize + DeserializeOwned + Send + Sync,
{
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
        // Whether the current step's first attempt was already recorded as STARTED, in the
        // transaction that finished the step before it (one commit per step instead of two).
        let mut premarked = false;
        // The instance as this run last wrote it, so a step's success is not read back.
        let mut written = None;
        loop {
            let inst = match written.take() {
                Some(inst) => inst,
                None => store::load(db, saga_id).await?,
            };
            let mut data: D = serde_json::from_str(&inst.data)?;
            let idx = inst.step.max(0) as usize;
            if inst.state.is_unfinished() {
                *moved = true;
            }
            match inst.state {
                InstanceState::Completed => return Ok(Outcome::Completed),
                InstanceState::Compensated => {
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
                InstanceState::Running if idx >= self.steps.len() => {
                    let done = InstanceMove {
                        state: InstanceState::Completed,
                        step: inst.step,
                        data: None,
                        error: None,
                    };
                    store::set_instance(db, &inst, done).await?;
                }
                InstanceState::Running => {
                    let step = &self.steps[idx];
                    let mark = |status, error| StepMark {
                        saga_id,
                        step_no: idx as i32,
                        name: step.name(),
                        status,
                        error,
                        count_attempt: false,
                    };
                    let first_marked = std::mem::take(&mut premarked);
                    match self
                        .attempt(db, saga_id, idx, &mut data, Direction::Act, first_marked)
                        .await?
                    {
                        Ok(()) => {
                            // The step's success, the instance's move and the next step's
                            // start (or the saga's completion) in one transaction.
                            let following = self.steps.get(idx + 1);
                            let next = InstanceMove {
                                state: if following.is_some() {
                                    InstanceState::Running
                                } else {
                                    InstanceState::Completed
                                },
                                step: inst.step + 1,
                                data: Some(serde_json::to_string(&data)?),
                                error: None,
                            };
                            let txn = db.begin().await?;
                            store::mark_step(&txn, mark(StepStatus::Succeeded, String::new()))
                                .await?;
                            let moved = store::set_instance(&txn, &inst, next).await?;
                            if let Some(following) = following {
                                let start = StepMark {
                                    saga_id,
                                    step_no: idx as i32 + 1,
                                    name: following.name(),
                                    status: Direction::Act.in_progress(),
                                    error: String::new(),
                                    count_attempt: true,
                                };
                                store::mark_step(&txn, start).await?;
                            }
                            txn.commit().await?;
                            premarked = following.is_some();
                            written = Some(moved);
                        }
                        Err(e) => {
                            tracing::warn!(
                                saga_id,
                                step = step.name(),
                                error = e.message(),
                                "saga step failed; compensating"
                            );
                            store::mark_step(db, mark(StepStatus::Failed, e.message().to_string()))
                                .await?;
                            let back = InstanceMove {
                                state: InstanceState::Compensating,
                                step: inst.step,
                                data: Some(serde_json::to_string(&data)?),
                                error: Some(format!("{}: {}", step.name(), e.message())),
                            };
                            store::set_instance(db, &inst, back).await?;
                        }
                    }
                }
                InstanceState::Compensating => {
                    // Compensate from the failed step down to the first, skipping those done.
                    let done = store::compensated_steps(db, saga_id).await?;
                    for i in (0..=idx.min(self.steps.len().saturating_sub(1))).rev() {
                        let step = &self.steps[i];
                        if !step.has_compensation() || done.contains(&(i as i32)) {
                            continue;
                        }
                        let result = self
                            .attempt(db, saga_id, i, &mut data, Direction::Compensate, false)
                            .await?;
                        let (status, err) = match &result {
                            Ok(()) => (StepStatus::Compensated, String::new()),
                            Err(e) => {
                                tracing::error!(
                                    saga_id,
                                    step = step.name(),
                                    error = e.message(),
                                    "compensation rejected; needs an operator"
                                );
                                (StepStatus::CompensationFailed, e.message().to_string())
                            }
                        };
                        let mark = StepMark {
                            saga_id,
                            step_no: i as i32,
                            name: step.name(),
                            status,
                            error: err,
                            count_attempt: false,
                        };
                        store::mark_step(db, mark).await?;
                        store::save_data(db, &inst, serde_json::to_string(&data)?).await?;
                    }
                    let over = InstanceMove {
                        state: InstanceState::Compensated,
                        step: inst.step,
                        data: Some(serde_json::to_string(&data)?),
                        error: None,
                    };
                    store::set_instance(db, &inst, over).await?;
                }
            }
        }
    }

    /// Runs one action (or compensation) with its retries and timeout, recording each attempt
    /// before it is made (the first one already is when `first_marked`). Actions retry
    /// transient failures within their budget; compensations keep retrying them.
    async fn attempt(
        &self,
        db: &DatabaseConnection,
        saga_id: &str,
        idx: usize,
        data: &mut D,
        direction: Direction,
        first_marked: bool,
    ) -> Result<Result<(), StepError>, SagaError> {
        let step = &self.steps[idx];
        let policy = step.retry();
        let key = direction.key(saga_id, step.name());
        let compensating = direction == Direction::Compensate;
        let (crash_before, crash_after) = direction.crash_points();
        let mark = |error: String, count_attempt| StepMark {
            saga_id,
            step_no: idx as i32,
            name: step.name(),
            status: direction.in_progress(),
            error,
            count_attempt,
        };
        let mut attempt = 0u32;
        let first_try = std::time::Instant::now();
        loop {
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
            if attempt > 0 || !first_marked {
                store::mark_step(db, mark(String::new(), true))
                    .instrument(span.clone())
                    .await?;
            }
            crate::faults::crash::point(step.name(), crash_before);
            let fut = async {
                match direction {
                    Direction::Act => step.action(data, &key).await,
                    Direction::Compensate => step.compensate(data, &key).await,
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
                .with_label_values(&[self.kind, step.name(), direction.metric_label(), outcome])
                .inc();
            if result.is_ok() {
                crate::faults::crash::point(step.name(), crash_after);
            }
            match result {
                Err(StepError::Transient(msg))
                    if compensating || policy.budget.is_none_or(|b| first_try.elapsed() < b) =>
                {
                    span.in_scope(|| tracing::info!(saga_id, step = step.name(), attempt, error = %msg, "saga step will be retried"));
                    store::mark_step(db, mark(msg, false)).await?;
                    tokio::time::sleep(backoff(&policy, attempt)).await;
                    attempt += 1;
                }
                other => return Ok(other),
            }
        }
    }
}
