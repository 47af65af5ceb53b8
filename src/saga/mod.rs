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
//! When a step is rejected (or still failing when its retry budget is spent), the saga
//! compensates that step and every completed one in reverse order; compensations are retried
//! until they succeed, because a half-compensated saga is worse than a slow one. A
//! compensation for an action that never arrived is a no-op on the participant's side.
//!
//! `definition` says what a saga is (its steps, their retries, which way a step runs),
//! `engine` runs an instance, `store` keeps instances and steps with their states, and
//! `migration` creates the tables.

mod definition;
mod engine;
mod migration;
mod store;

pub use definition::{Direction, Saga, Step, StepError, StepRetry};
pub use migration::Migration;
pub use store::{instance, step_row, InstanceState, StepStatus};

/// Environment variable naming a crash point for crash tests, `<step>:<when>` with `when` one
/// of `before`, `after` (the call succeeded, its outcome not yet recorded), `undo-before` and
/// `undo-after`. Unset in normal runs.
pub use crate::faults::crash::CRASH_AT_ENV;

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

#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("saga data: {0}")]
    Data(#[from] serde_json::Error),
    #[error("saga '{0}' not found")]
    NotFound(String),
}

#[cfg(test)]
mod tests;
