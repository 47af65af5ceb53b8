//! Orchestrated sagas, persisted step by step.
//!
//! A saga definition is a list of typed steps; each has an action, an optional compensation,
//! a retry policy and a timeout. An instance is a series of events in the orchestrator's event
//! store (`journal`: started, step started/retrying/succeeded/failed/compensated, completed,
//! compensated), in a stream of its own or in the stream of what it is about; its state (the
//! current step, the data as JSON, every step's status, attempts and last error) is their
//! fold. Each transition is appended before and after the remote call it covers, so after a
//! crash `run` picks the instance up where it was:
//! forward by re-issuing the current step (participants deduplicate by the idempotency key
//! `<saga id>/<step>`), or backward when it was compensating.
//!
//! When a step is rejected (or still failing when its retry budget is spent), the saga
//! compensates that step and every completed one in reverse order; compensations are retried
//! until they succeed, because a half-compensated saga is worse than a slow one. A
//! compensation for an action that never arrived is a no-op on the participant's side.
//!
//! `definition` says what a saga is (its steps, their retries, which way a step runs),
//! `journal` its events and their fold, `engine` runs an instance, `store` loads and appends
//! them; `legacy` and `migration` are the tables instances were kept in before (read once by
//! a service moving them into its event store).

mod definition;
mod engine;
pub mod journal;
pub mod legacy;
mod migration;
mod store;

pub use definition::{own_stream, Direction, Saga, Step, StepError, StepRetry};
pub use journal::{InstanceState, SagaEvent, SagaState, StepStatus, StepView};
pub use migration::Migration;

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
    /// Another run of the same instance recorded a transition first; this run stops.
    #[error("saga '{0}' is being run elsewhere")]
    Conflict(String),
    #[error("event store: {0}")]
    Store(#[from] crate::data::event_store::EventStoreError),
}

#[cfg(test)]
mod tests;
