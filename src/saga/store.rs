//! Where instances are kept: as `journal` events in the orchestrator's event store, in the
//! stream the saga definition names for an instance. Loading folds the stream's saga events;
//! recording appends expecting the saga's own events to be as last seen (`Expected::Owned`):
//! another writer's events in a shared stream (the order's own changes) do not stand in its
//! way; another run of the same instance (its saga events changed underneath) stops this one.

use futures::FutureExt;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::journal::{SagaEvent, SagaState};
use super::{Saga, SagaError};
use crate::data::event_store::{self, Expected, Metadata, StreamBounds, Upcasters};
use crate::data::group_commit::GroupCommit;

impl<D> Saga<D>
where
    D: Serialize + DeserializeOwned + Send + Sync,
{
    /// The events that start an instance, to append with whatever creates what the saga is
    /// about (in the same append, so the saga exists exactly when its subject does): the
    /// instance, and its first step's first attempt (so `run_new` does not record it again).
    pub fn start_events(&self, saga_id: &str, data: &D) -> Result<Vec<SagaEvent>, SagaError> {
        let mut events = vec![SagaEvent::SagaStarted {
            saga_id: saga_id.to_string(),
            kind: self.kind.to_string(),
            data: serde_json::to_string(data)?,
        }];
        if let Some(first) = self.steps.first() {
            events.push(SagaEvent::SagaStepStarted {
                step: 0,
                name: first.name().to_string(),
                compensating: false,
            });
        }
        Ok(events)
    }

    /// Starts an instance in a stream of its own, in `txn` (the transaction of its subject).
    pub async fn start_in(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        saga_id: &str,
        data: &D,
    ) -> Result<(), SagaError> {
        let events: Vec<_> = self
            .start_events(saga_id, data)?
            .iter()
            .map(SagaEvent::to_new)
            .collect();
        let stream = (self.stream_of)(saga_id);
        event_store::append(
            txn,
            &stream,
            Expected::NoStream,
            &events,
            &Metadata::current(saga_id, "", ""),
        )
        .await?;
        Ok(())
    }

    /// Ids of this kind's instances that have not finished, oldest first (what start-up
    /// resumes).
    pub async fn unfinished(&self, db: &DatabaseConnection) -> Result<Vec<String>, SagaError> {
        use sea_orm::{FromQueryResult, Statement};
        #[derive(FromQueryResult)]
        struct Row {
            payload: String,
        }
        let backend = db.get_database_backend();
        let sql = "SELECT payload FROM es_events s WHERE s.event_type = 'SagaStarted' \
                   AND NOT EXISTS (SELECT 1 FROM es_events f WHERE f.stream_id = s.stream_id \
                   AND f.event_type IN ('SagaCompleted', 'SagaCompensated')) ORDER BY s.position";
        let rows = Row::find_by_statement(Statement::from_string(backend, sql))
            .all(db)
            .await?;
        let mut ids = Vec::new();
        for r in rows {
            let v: serde_json::Value = serde_json::from_str(&r.payload)?;
            if v["kind"] == self.kind {
                if let Some(id) = v["saga_id"].as_str() {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }

    /// An instance as its events say, when it exists.
    pub async fn state<C: ConnectionTrait>(
        &self,
        c: &C,
        saga_id: &str,
    ) -> Result<Option<SagaState>, SagaError> {
        self.load_at(c, saga_id).await
    }

    /// The recorded steps of an instance, in order.
    pub async fn steps(
        &self,
        db: &DatabaseConnection,
        saga_id: &str,
    ) -> Result<Vec<super::journal::StepView>, SagaError> {
        Ok(self
            .state(db, saga_id)
            .await?
            .map(|s| s.steps)
            .unwrap_or_default())
    }

    /// The instance: the fold of its stream's saga events.
    async fn load_at<C: ConnectionTrait>(
        &self,
        c: &C,
        saga_id: &str,
    ) -> Result<Option<SagaState>, SagaError> {
        let stream = (self.stream_of)(saga_id);
        let bounds = StreamBounds {
            type_prefix: Some(super::journal::PREFIX),
            ..StreamBounds::default()
        };
        let events = event_store::read_stream(c, &stream, bounds, &Upcasters::new()).await?;
        Ok(SagaState::fold(&events)?)
    }

    pub(super) async fn load(
        &self,
        db: &DatabaseConnection,
        saga_id: &str,
    ) -> Result<SagaState, SagaError> {
        self.load_at(db, saga_id)
            .await?
            .ok_or_else(|| SagaError::NotFound(saga_id.to_string()))
    }

    /// Appends `events` (one transition) through the orchestrator's writer (sharing a commit
    /// with the other writes that arrive with it) and returns the state after them. The
    /// append expects the saga's own events to be as this run last saw them
    /// (`Expected::Owned`): others' events in a shared stream do not stand in its way; saga
    /// events of another run are a `SagaError::Conflict`.
    pub(super) async fn record(
        &self,
        w: &GroupCommit,
        state: &SagaState,
        events: &[SagaEvent],
    ) -> Result<SagaState, SagaError> {
        let stream = (self.stream_of)(&state.saga_id);
        let new: Vec<_> = events.iter().map(SagaEvent::to_new).collect();
        let meta = Metadata::current(&state.saga_id, "", "");
        let expected = Expected::Owned {
            prefix: super::journal::PREFIX,
            count: state.events,
        };
        let appended = w
            .write(move |txn| {
                async move { event_store::append(txn, &stream, expected, &new, &meta).await }
                    .boxed()
            })
            .await;
        match appended {
            Ok(done) => {
                let mut next = Some(state.clone());
                for e in events {
                    next = SagaState::apply(next, e, done.recorded_at);
                }
                next.ok_or_else(|| SagaError::NotFound(state.saga_id.clone()))
            }
            Err(event_store::EventStoreError::Conflict { .. }) => {
                Err(SagaError::Conflict(state.saga_id.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }
}
