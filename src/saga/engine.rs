//! Running an instance: forward step by step, each transition appended before and after the
//! remote call it covers (a step's success and the next one's start in one append), and
//! backward through the compensations once a step is rejected.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::data::group_commit::GroupCommit;

use super::definition::{Direction, Saga, StepError, StepRetry};
use super::journal::{InstanceState, SagaEvent, SagaState};
use super::{Outcome, SagaError};

/// A run's hold on its instance: the state as last recorded.
struct Run<'a> {
    db: &'a GroupCommit,
    inst: SagaState,
}

impl Run<'_> {
    async fn record<D>(&mut self, saga: &Saga<D>, events: &[SagaEvent]) -> Result<(), SagaError>
    where
        D: Serialize + DeserializeOwned + Send + Sync,
    {
        self.inst = saga.record(self.db, &self.inst, events).await?;
        Ok(())
    }
}

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
    pub async fn run(&self, db: &GroupCommit, saga_id: &str) -> Result<Outcome, SagaError> {
        self.run_from(db, saga_id, false).await
    }

    /// `run` of an instance right after `start_events` started it (with its first step's
    /// first attempt already recorded as started).
    pub async fn run_new(&self, db: &GroupCommit, saga_id: &str) -> Result<Outcome, SagaError> {
        self.run_from(db, saga_id, true).await
    }

    async fn run_from(
        &self,
        db: &GroupCommit,
        saga_id: &str,
        premarked: bool,
    ) -> Result<Outcome, SagaError> {
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
            .drive(db, saga_id, &mut moved, premarked)
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
        db: &GroupCommit,
        saga_id: &str,
        moved: &mut bool,
        mut premarked: bool,
    ) -> Result<Outcome, SagaError> {
        // `premarked`: whether the current step's first attempt is already recorded as
        // started, in the append that finished the step before it (or started the saga), so
        // a step costs one append instead of two.
        let mut inst = self.load(db.db(), saga_id).await?;
        loop {
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
                    inst = self
                        .record(db, &inst, &[SagaEvent::SagaCompleted {}])
                        .await?;
                }
                InstanceState::Running => {
                    let step = &self.steps[idx];
                    let first_marked = std::mem::take(&mut premarked);
                    let mut run = Run { db, inst };
                    let result = self
                        .attempt(&mut run, idx, &mut data, Direction::Act, first_marked)
                        .await?;
                    inst = run.inst;
                    let data = serde_json::to_string(&data)?;
                    match result {
                        Ok(()) => {
                            // The step's success and the next step's start (or the saga's
                            // completion) in one append.
                            let mut events = vec![SagaEvent::SagaStepSucceeded {
                                step: idx as i32,
                                data,
                            }];
                            match self.steps.get(idx + 1) {
                                Some(next) => {
                                    events.push(SagaEvent::SagaStepStarted {
                                        step: idx as i32 + 1,
                                        name: next.name().to_string(),
                                        compensating: false,
                                    });
                                    premarked = true;
                                }
                                None => events.push(SagaEvent::SagaCompleted {}),
                            }
                            inst = self.record(db, &inst, &events).await?;
                        }
                        Err(e) => {
                            tracing::warn!(
                                saga_id,
                                step = step.name(),
                                error = e.message(),
                                "saga step failed; compensating"
                            );
                            let failed = SagaEvent::SagaStepFailed {
                                step: idx as i32,
                                error: e.message().to_string(),
                                data,
                            };
                            inst = self.record(db, &inst, &[failed]).await?;
                        }
                    }
                }
                InstanceState::Compensating => {
                    // Compensate from the failed step down to the first, skipping those done.
                    let done = inst.compensated_steps();
                    for i in (0..=idx.min(self.steps.len().saturating_sub(1))).rev() {
                        let step = &self.steps[i];
                        if !step.has_compensation() || done.contains(&(i as i32)) {
                            continue;
                        }
                        let mut run = Run { db, inst };
                        let result = self
                            .attempt(&mut run, i, &mut data, Direction::Compensate, false)
                            .await?;
                        inst = run.inst;
                        let (refused, error) = match &result {
                            Ok(()) => (false, String::new()),
                            Err(e) => {
                                tracing::error!(
                                    saga_id,
                                    step = step.name(),
                                    error = e.message(),
                                    "compensation rejected; needs an operator"
                                );
                                (true, e.message().to_string())
                            }
                        };
                        let over = SagaEvent::SagaStepCompensated {
                            step: i as i32,
                            refused,
                            error,
                            data: serde_json::to_string(&data)?,
                        };
                        inst = self.record(db, &inst, &[over]).await?;
                    }
                    inst = self
                        .record(db, &inst, &[SagaEvent::SagaCompensated {}])
                        .await?;
                }
            }
        }
    }

    /// Runs one action (or compensation) with its retries and timeout, recording each attempt
    /// before it is made (the first one already is when `first_marked`). Actions retry
    /// transient failures within their budget; compensations keep retrying them.
    async fn attempt(
        &self,
        run: &mut Run<'_>,
        idx: usize,
        data: &mut D,
        direction: Direction,
        first_marked: bool,
    ) -> Result<Result<(), StepError>, SagaError> {
        let step = &self.steps[idx];
        let policy = step.retry();
        let saga_id = run.inst.saga_id.clone();
        let saga_id = saga_id.as_str();
        let key = direction.key(saga_id, step.name());
        let compensating = direction == Direction::Compensate;
        let (crash_before, crash_after) = direction.crash_points();
        let started = || SagaEvent::SagaStepStarted {
            step: idx as i32,
            name: step.name().to_string(),
            compensating,
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
                run.record(self, &[started()])
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
                    let retrying = SagaEvent::SagaStepRetrying {
                        step: idx as i32,
                        error: msg,
                    };
                    run.record(self, &[retrying]).await?;
                    tokio::time::sleep(backoff(&policy, attempt)).await;
                    attempt += 1;
                }
                other => return Ok(other),
            }
        }
    }
}
