//! A saga's transitions as events, and its state as the fold of them.
//!
//! An instance is kept as events of a stream in the orchestrator's event store
//! (`data::event_store`): the saga's own stream, or the stream of what it is about (the order
//! service keeps an order's saga in the order's stream, so a cancel and a step cannot cross).
//! Each transition is one append: a step's success and the next step's start go together.
//! Other events of a shared stream are skipped by the fold.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::data::event_store::{NewEvent, StoredEvent};

/// Every saga event type starts with this.
pub const PREFIX: &str = "Saga";

/// Where an instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    /// Running its steps forward; `step` is the one to run next.
    Running,
    /// Turned back; `step` is the last one to compensate.
    Compensating,
    Completed,
    Compensated,
}

impl InstanceState {
    /// Not finished: what start-up resumes.
    pub fn is_unfinished(self) -> bool {
        matches!(self, Self::Running | Self::Compensating)
    }
}

/// Where one step of an instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    /// An attempt of the action is under way (recorded before the call).
    Started,
    Succeeded,
    /// The action was rejected or ran out of retries: the saga turned back here.
    Failed,
    /// An attempt of the compensation is under way.
    Compensating,
    Compensated,
    /// The participant refused the compensation: an operator must look.
    CompensationFailed,
}

impl StepStatus {
    /// The upper-case name, as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "STARTED",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Compensating => "COMPENSATING",
            Self::Compensated => "COMPENSATED",
            Self::CompensationFailed => "COMPENSATION_FAILED",
        }
    }
}

/// One transition of a saga instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SagaEvent {
    /// The instance exists; `data` is what its steps carry (JSON).
    SagaStarted {
        saga_id: String,
        kind: String,
        data: String,
    },
    /// An attempt of a step's action (or compensation) is about to be made.
    SagaStepStarted {
        step: i32,
        name: String,
        compensating: bool,
    },
    /// An attempt failed in a way worth retrying.
    SagaStepRetrying {
        step: i32,
        error: String,
    },
    /// The action succeeded; the instance moves to the next step.
    SagaStepSucceeded {
        step: i32,
        data: String,
    },
    /// The action was refused (or ran out of budget): the instance turns back.
    SagaStepFailed {
        step: i32,
        error: String,
        data: String,
    },
    /// A compensation is over: done, or refused for good (`error` says why).
    SagaStepCompensated {
        step: i32,
        refused: bool,
        error: String,
        data: String,
    },
    SagaCompleted {},
    SagaCompensated {},
}

impl SagaEvent {
    /// The stored event type (the variant's name).
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::SagaStarted { .. } => "SagaStarted",
            Self::SagaStepStarted { .. } => "SagaStepStarted",
            Self::SagaStepRetrying { .. } => "SagaStepRetrying",
            Self::SagaStepSucceeded { .. } => "SagaStepSucceeded",
            Self::SagaStepFailed { .. } => "SagaStepFailed",
            Self::SagaStepCompensated { .. } => "SagaStepCompensated",
            Self::SagaCompleted {} => "SagaCompleted",
            Self::SagaCompensated {} => "SagaCompensated",
        }
    }

    /// As an event to append (schema version 1).
    pub fn to_new(&self) -> NewEvent {
        let mut payload = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = payload.as_object_mut() {
            o.remove("type");
        }
        NewEvent::new(self.event_type(), 1, payload)
    }

    /// The saga event a stored event is, if it is one.
    pub fn from_stored(e: &StoredEvent) -> Option<Result<Self, serde_json::Error>> {
        if !e.event_type.starts_with(PREFIX) {
            return None;
        }
        let mut payload = e.payload.clone();
        if let Some(o) = payload.as_object_mut() {
            o.insert("type".into(), e.event_type.clone().into());
        }
        Some(serde_json::from_value(payload))
    }
}

/// One step as the instance last recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepView {
    pub step_no: i32,
    pub name: String,
    pub status: StepStatus,
    pub attempts: i32,
    pub error: String,
    pub updated_at: DateTime<Utc>,
}

/// An instance: the fold of its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaState {
    pub saga_id: String,
    pub kind: String,
    pub state: InstanceState,
    /// The step being run (RUNNING) or the last one to compensate (COMPENSATING).
    pub step: i32,
    pub data: String,
    /// Why the saga turned back, when it did.
    pub error: String,
    /// The steps it reached, by step number.
    pub steps: Vec<StepView>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// How many saga events made this state (a second runner shows up as a change here).
    pub events: i64,
}

impl SagaState {
    /// Step numbers whose compensation is over (done, or refused for good).
    pub fn compensated_steps(&self) -> Vec<i32> {
        self.steps
            .iter()
            .filter(|s| {
                matches!(
                    s.status,
                    StepStatus::Compensated | StepStatus::CompensationFailed
                )
            })
            .map(|s| s.step_no)
            .collect()
    }

    fn step_mut(&mut self, step: i32, name: Option<&str>, at: DateTime<Utc>) -> &mut StepView {
        let i = match self.steps.iter().position(|s| s.step_no == step) {
            Some(i) => i,
            None => {
                self.steps.push(StepView {
                    step_no: step,
                    name: name.unwrap_or_default().to_string(),
                    status: StepStatus::Started,
                    attempts: 0,
                    error: String::new(),
                    updated_at: at,
                });
                self.steps.sort_by_key(|s| s.step_no);
                self.steps
                    .iter()
                    .position(|s| s.step_no == step)
                    .unwrap_or(0)
            }
        };
        let s = &mut self.steps[i];
        s.updated_at = at;
        s
    }

    /// The state after `event`, recorded at `at`. `None` before `SagaStarted`.
    pub fn apply(state: Option<Self>, event: &SagaEvent, at: DateTime<Utc>) -> Option<Self> {
        if let SagaEvent::SagaStarted {
            saga_id,
            kind,
            data,
        } = event
        {
            return Some(Self {
                saga_id: saga_id.clone(),
                kind: kind.clone(),
                state: InstanceState::Running,
                step: 0,
                data: data.clone(),
                error: String::new(),
                steps: Vec::new(),
                started_at: at,
                updated_at: at,
                events: 1,
            });
        }
        let mut s = state?;
        s.events += 1;
        s.updated_at = at;
        match event {
            SagaEvent::SagaStarted { .. } => {}
            SagaEvent::SagaStepStarted {
                step,
                name,
                compensating,
            } => {
                let v = s.step_mut(*step, Some(name), at);
                v.status = if *compensating {
                    StepStatus::Compensating
                } else {
                    StepStatus::Started
                };
                v.attempts += 1;
                // A new attempt of the action starts clean; a compensation keeps the error that
                // made the saga turn back.
                if !*compensating {
                    v.error.clear();
                }
            }
            SagaEvent::SagaStepRetrying { step, error } => {
                s.step_mut(*step, None, at).error = error.clone();
            }
            SagaEvent::SagaStepSucceeded { step, data } => {
                let v = s.step_mut(*step, None, at);
                v.status = StepStatus::Succeeded;
                v.error.clear();
                s.step = step + 1;
                s.data = data.clone();
            }
            SagaEvent::SagaStepFailed { step, error, data } => {
                let v = s.step_mut(*step, None, at);
                v.status = StepStatus::Failed;
                v.error = error.clone();
                let name = v.name.clone();
                s.state = InstanceState::Compensating;
                s.step = *step;
                s.data = data.clone();
                s.error = format!("{name}: {error}");
            }
            SagaEvent::SagaStepCompensated {
                step,
                refused,
                error,
                data,
            } => {
                let v = s.step_mut(*step, None, at);
                if *refused {
                    v.status = StepStatus::CompensationFailed;
                    v.error = error.clone();
                } else {
                    v.status = StepStatus::Compensated;
                }
                s.data = data.clone();
            }
            SagaEvent::SagaCompleted {} => s.state = InstanceState::Completed,
            SagaEvent::SagaCompensated {} => s.state = InstanceState::Compensated,
        }
        Some(s)
    }

    /// The state of the saga among `events` (a stream, possibly shared with other events).
    pub fn fold<'a>(
        events: impl IntoIterator<Item = &'a StoredEvent>,
    ) -> Result<Option<Self>, serde_json::Error> {
        let mut state = None;
        for e in events {
            if let Some(ev) = SagaEvent::from_stored(e) {
                state = Self::apply(state, &ev?, e.recorded_at);
            }
        }
        Ok(state)
    }
}
