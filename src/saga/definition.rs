//! What a saga is: a kind name and its typed steps, each with an action, an optional
//! compensation, a retry policy and a timeout; and which way a step runs.

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use super::journal::{InstanceState, SagaState, StepStatus};

/// A saga definition: a kind name, its steps in order, and the event stream an instance is
/// kept in.
pub struct Saga<D> {
    pub kind: &'static str,
    pub steps: Vec<Arc<dyn Step<D>>>,
    /// The stream of instance `saga_id` (`own_stream`: the saga id itself).
    pub stream_of: fn(&str) -> String,
}

/// Each instance in a stream of its own, named by its id.
pub fn own_stream(saga_id: &str) -> String {
    saga_id.to_string()
}

impl<D> Saga<D> {
    /// Where the step called `name` stands among the steps.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name() == name)
    }

    /// Whether `inst` has moved past the step called `name` for good: it completed, or it
    /// is running a later step. A saga that turned back has not passed anything; an unknown
    /// step name has never been passed.
    pub fn has_passed(&self, inst: &SagaState, name: &str) -> bool {
        let Some(idx) = self.index_of(name) else {
            return false;
        };
        match inst.state {
            InstanceState::Completed => true,
            InstanceState::Running => inst.step.max(0) as usize > idx,
            InstanceState::Compensating | InstanceState::Compensated => false,
        }
    }
}

/// Which way a step runs: its action, or the compensation that undoes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Act,
    Compensate,
}

impl Direction {
    /// The idempotency key a participant sees: `<saga id>/<step>`, and `.../undo` for the
    /// compensation, so a resumed saga re-issues exactly the call it made before.
    pub fn key(self, saga_id: &str, step: &str) -> String {
        match self {
            Self::Act => format!("{saga_id}/{step}"),
            Self::Compensate => format!("{saga_id}/{step}/undo"),
        }
    }

    /// The status a step has while an attempt in this direction is under way.
    pub fn in_progress(self) -> StepStatus {
        match self {
            Self::Act => StepStatus::Started,
            Self::Compensate => StepStatus::Compensating,
        }
    }

    /// The crash points around the remote call (`before` it is made, `after` it succeeded).
    pub fn crash_points(self) -> (&'static str, &'static str) {
        match self {
            Self::Act => ("before", "after"),
            Self::Compensate => ("undo-before", "undo-after"),
        }
    }

    /// The `direction` label of `saga_step_attempts_total`.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::Act => "action",
            Self::Compensate => "compensation",
        }
    }
}

/// Why a step did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepError {
    /// Worth trying again (the participant was unavailable, the call timed out): retried
    /// within the step's budget.
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

/// How a step's action is retried: transient failures (the codes below, a timed-out
/// attempt) are tried again with jittered backoff for as long as the budget lasts, counted
/// from the step's first attempt in this run. A participant that is briefly unavailable (its
/// breaker open, shedding, restarting) delays the step instead of turning the saga back.
#[derive(Clone, Debug)]
pub struct StepRetry {
    /// How long transient failures are retried before the step is given up on and the saga
    /// turns back; `None`: until it succeeds or is refused for good (past a point of no
    /// return, only a definitive answer may turn the saga back).
    pub budget: Option<Duration>,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub retry_codes: Vec<Code>,
}

impl Default for StepRetry {
    fn default() -> Self {
        Self {
            budget: Some(Duration::from_secs(30)),
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
