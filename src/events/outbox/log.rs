//! `ordermesh.events.v1.EventLogService` over the outbox: a subscriber reads the log from a
//! sequence on, then follows it live.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use prost::Message;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use super::entity;
use super::published::PublicEvents;
use crate::proto::events::v1 as pb;
use crate::transport::shutdown::Drain;

/// `ordermesh.events.v1.EventLogService` over the outbox.
#[derive(Clone)]
pub struct EventLog {
    db: DatabaseConnection,
    published: watch::Receiver<i64>,
    drain: Drain,
    /// An event-sourced producer's store and name: the log is read from its events.
    public: Option<(Arc<dyn PublicEvents>, &'static str)>,
}

impl EventLog {
    pub(super) fn new(
        db: DatabaseConnection,
        published: watch::Receiver<i64>,
        drain: Drain,
        public: Option<(Arc<dyn PublicEvents>, &'static str)>,
    ) -> Self {
        Self {
            db,
            published,
            drain,
            public,
        }
    }
}

/// Up to 256 envelopes of the log from sequence `next` on.
async fn read_log(
    db: &DatabaseConnection,
    public: &Option<(Arc<dyn PublicEvents>, &'static str)>,
    next: i64,
    types: &[String],
) -> Result<Vec<pb::EventEnvelope>, Status> {
    if let Some((public, producer)) = public {
        return super::published::read(db, public.as_ref(), producer, next, 256, types)
            .await
            .map_err(crate::types::status::db_error);
    }
    let mut q = entity::Entity::find()
        .filter(entity::Column::Sequence.gte(next))
        .order_by_asc(entity::Column::Sequence)
        .limit(256);
    if !types.is_empty() {
        q = q.filter(entity::Column::EventType.is_in(types.to_vec()));
    }
    let rows = q.all(db).await.map_err(crate::types::status::db_error)?;
    rows.iter().map(decode).collect()
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn decode(row: &entity::Model) -> Result<pb::EventEnvelope, Status> {
    let mut e = pb::EventEnvelope::decode(row.payload.as_slice())
        .map_err(crate::types::status::db_error)?;
    e.sequence = row.sequence.unwrap_or(0) as u64;
    Ok(e)
}

#[tonic::async_trait]
impl pb::event_log_service_server::EventLogService for EventLog {
    type SubscribeStream = BoxStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = request.into_inner();
        if r.types.len() > 32 {
            return Err(crate::types::status::invalid_argument(
                "types",
                "must name at most 32 event types",
            ));
        }
        let mut next = r.from_sequence.max(1) as i64;
        let types = r.types;
        let db = self.db.clone();
        let mut published = self.published.clone();
        let drain = self.drain.clone();
        let public = self.public.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let events = match read_log(&db, &public, next, &types).await {
                    Ok(events) => events,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let got = events.len();
                for e in events {
                    next = e.sequence as i64 + 1;
                    if tx
                        .send(Ok(pb::SubscribeResponse { event: Some(e) }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if got > 0 {
                    continue;
                }
                // Caught up: wait for the relay, the client leaving, or the server draining.
                tokio::select! {
                    changed = published.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tx.closed() => return,
                    _ = drain.draining() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
