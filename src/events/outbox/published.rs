//! The outbox of an event-sourced service is its event store: the events it appended as
//! published, in their log sequence (`data::event_store`), mapped to the public envelopes other
//! services know. Consumers see the same envelopes, sequences and event ids as from a table
//! outbox.

use prost::Message;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::data::event_store::{self, entity, StoredEvent, Upcasters};
use crate::proto::common::v1::TraceContext;
use crate::proto::events::v1 as pb;
use crate::proto::events::v1::event_envelope::Payload;

/// The type of an event moved from a table outbox into the store: its payload is
/// `{"envelope": <base64 of the stored EventEnvelope>}`, served as it was (same event id).
pub const OUTBOX_ENVELOPE: &str = "OutboxEnvelope";

/// How a service's stored events look to other services.
pub trait PublicEvents: Send + Sync {
    /// Reads the service's stored events (their current shapes).
    fn upcasters(&self) -> &Upcasters;

    /// The aggregate type of the envelope (e.g. `order`).
    fn aggregate_type(&self) -> &'static str;

    /// The public payload of a published event.
    fn payload(&self, event: &StoredEvent) -> Result<Payload, String>;
}

/// The envelope of a published stored event.
pub fn envelope(
    public: &dyn PublicEvents,
    producer: &str,
    e: &StoredEvent,
) -> Result<pb::EventEnvelope, String> {
    Ok(pb::EventEnvelope {
        event_id: e.event_id.clone(),
        aggregate_type: public.aggregate_type().to_string(),
        aggregate_id: e.stream_id.clone(),
        sequence: e.log_seq.unwrap_or(0) as u64,
        occurred_at: Some(crate::types::time::to_proto(e.recorded_at)),
        trace_context: Some(TraceContext {
            traceparent: e.metadata.traceparent.clone(),
            tracestate: e.metadata.tracestate.clone(),
            baggage: String::new(),
        }),
        producer: producer.to_string(),
        payload: Some(public.payload(e)?),
    })
}

/// Up to `limit` published events from log sequence `from` on, of `types` (all when empty),
/// as envelopes.
pub async fn read<C: ConnectionTrait>(
    c: &C,
    public: &dyn PublicEvents,
    producer: &str,
    from: i64,
    limit: u64,
    types: &[String],
) -> Result<Vec<pb::EventEnvelope>, event_store::EventStoreError> {
    let mut q = entity::Entity::find()
        .filter(entity::Column::LogSeq.gte(from))
        .order_by_asc(entity::Column::LogSeq)
        .limit(limit);
    if !types.is_empty() {
        q = q.filter(entity::Column::EventType.is_in(types.iter().cloned()));
    }
    let mut out = Vec::new();
    for row in q.all(c).await? {
        let position = row.position;
        if row.event_type == OUTBOX_ENVELOPE {
            out.push(
                moved_envelope(&row).map_err(|message| event_store::EventStoreError::Corrupt {
                    position,
                    message,
                })?,
            );
            continue;
        }
        let e = event_store::decode(row, public.upcasters())?;
        out.push(
            envelope(public, producer, &e)
                .map_err(|message| event_store::EventStoreError::Corrupt { position, message })?,
        );
    }
    Ok(out)
}

/// The envelope kept by an `OUTBOX_ENVELOPE` row, with the row's log sequence.
fn moved_envelope(row: &entity::Model) -> Result<pb::EventEnvelope, String> {
    use base64::Engine;
    let v: serde_json::Value = serde_json::from_str(&row.payload).map_err(|e| e.to_string())?;
    let b64 = v["envelope"].as_str().ok_or("envelope missing")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| e.to_string())?;
    let mut e = pb::EventEnvelope::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    e.sequence = row.log_seq.unwrap_or(0) as u64;
    Ok(e)
}

/// The checkpoint of the relay to RabbitMQ over an event store: the last log sequence the
/// broker confirmed.
pub const BROKER_CHECKPOINT: &str = "outbox.amqp";

/// Moves a table outbox's rows (`outbox_events`) into the event store as `OUTBOX_ENVELOPE`
/// events of the stream `stream`, for a service that becomes event-sourced: published rows
/// keep their sequences, the rest take the next ones in the order they were recorded, and the
/// broker checkpoint starts after the last published row, so consumers of the service's log
/// see it continue where it was. Runs where nothing else appends (a migration); a second run
/// finds the stream there and does nothing.
pub async fn move_table_outbox<C: ConnectionTrait>(
    c: &C,
    stream: &str,
) -> Result<(), sea_orm::DbErr> {
    use super::entity as outbox;
    use base64::Engine;
    if event_store::stream_exists(c, stream)
        .await
        .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?
    {
        return Ok(());
    }
    let rows = outbox::Entity::find()
        .order_by_asc(outbox::Column::Sequence)
        .order_by_asc(outbox::Column::Id)
        .all(c)
        .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let last_published = rows.iter().filter_map(|r| r.sequence).max().unwrap_or(0);
    let (published, waiting): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|r| r.sequence.is_some());
    let mut next_seq = last_published;
    let moved: Vec<event_store::Row> = published
        .into_iter()
        .chain(waiting)
        .enumerate()
        .map(|(i, r)| event_store::Row {
            event_id: r.event_id,
            stream_id: stream.to_string(),
            version: i as i64 + 1,
            event_type: OUTBOX_ENVELOPE.to_string(),
            schema_version: 1,
            payload: serde_json::json!({
                "envelope": base64::engine::general_purpose::STANDARD.encode(&r.payload),
            })
            .to_string(),
            metadata: "{}".to_string(),
            recorded_at: r.occurred_at,
            log_seq: Some(r.sequence.unwrap_or_else(|| {
                next_seq += 1;
                next_seq
            })),
        })
        .collect();
    for chunk in moved.chunks(500) {
        event_store::insert_rows(c, chunk).await?;
    }
    event_store::checkpoint::save(c, BROKER_CHECKPOINT, last_published).await
}
