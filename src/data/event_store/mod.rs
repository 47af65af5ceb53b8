//! An append-only event store in the service's own database (SQLite or PostgreSQL): the truth
//! of an event-sourced service, its outbox, and what its read models are projected from.
//!
//! - `es_events` holds every event once: a global `position`, the `stream_id` it belongs to
//!   and its `version` there (unique together), its type and schema version, the payload and
//!   metadata as JSON, and when it was recorded. Rows are never updated or deleted.
//! - Appending states the version the writer expects the stream to be at (`Expected`). A
//!   writer that lost a race gets `EventStoreError::Conflict` (ABORTED to a caller): it re-reads
//!   and decides again, nothing is merged silently.
//! - Positions are given in commit order, so a reader that has seen position `p` will never
//!   see a smaller one appear later. SQLite has one writer at a time, so that holds by itself.
//!   On PostgreSQL every append first takes the transaction-level advisory lock
//!   `APPEND_LOCK`: appending transactions take their positions one after the other and hold
//!   the lock until they have committed (PostgreSQL makes a commit visible before it releases
//!   the transaction's locks). A reader by position therefore never skips an event whose
//!   transaction committed late. Appending is meant to be the last write of a transaction;
//!   the lock is held only from there to the commit.
//! - Events other services hear about also get a `log_seq`: the next sequence of the
//!   service's public event log, given under the same ordering, so that log is dense and in
//!   commit order. The outbox relay and `EventLogService` read it (`events::outbox`): the
//!   event store is the outbox.
//! - `es_snapshots` keeps one snapshot per stream (`snapshot`), ignored when the state's
//!   schema version changed; `upcast` turns stored old event versions into the current shape
//!   on read; `es_checkpoints` is where projections keep their positions.

mod append;
pub mod checkpoint;
mod migration;
mod read;
pub mod snapshot;
mod upcast;

pub use append::{
    append, append_exclusive, insert_rows, last_log_seq, stream_version, Appended, Expected, Row,
    APPEND_LOCK,
};
pub use migration::Migration;
pub use read::{head_position, read_all, read_stream, stream_exists, StreamBounds};
pub use upcast::Upcasters;

use serde::{Deserialize, Serialize};

/// An event to append: its type, the schema version its payload is written in, the payload,
/// and whether other services hear about it (it gets the next sequence of the service's
/// public event log).
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub published: bool,
}

impl NewEvent {
    pub fn new(
        event_type: impl Into<String>,
        schema_version: i32,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            event_type: event_type.into(),
            schema_version,
            payload,
            published: false,
        }
    }

    /// The same event, published in the service's event log.
    pub fn published(mut self) -> Self {
        self.published = true;
        self
    }
}

/// What an event says about where it came from: the trace it was written in, the request
/// it belongs to (`correlation_id`), what caused it (`causation_id`: the request, or the id
/// of the event that led to it) and the idempotency key of the command, when there was one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub traceparent: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tracestate: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub correlation_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub causation_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub idempotency_key: String,
}

impl Metadata {
    /// Metadata carrying the current trace (when there is one) and these ids.
    pub fn current(correlation_id: &str, causation_id: &str, idempotency_key: &str) -> Self {
        let tc = crate::telemetry::trace_context();
        Self {
            traceparent: tc.traceparent,
            tracestate: tc.tracestate,
            correlation_id: correlation_id.to_string(),
            causation_id: causation_id.to_string(),
            idempotency_key: idempotency_key.to_string(),
        }
    }
}

/// An event as stored, its payload upcast to the current schema version when read through
/// `Upcasters`.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub position: i64,
    pub event_id: String,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: Metadata,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    /// Its sequence in the service's public event log, when it is published.
    pub log_seq: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    /// The stream was not at the version the writer expected: another writer got there first.
    #[error("stream '{stream}' is at version {actual}, not {expected}; re-read and retry")]
    Conflict {
        stream: String,
        expected: String,
        actual: i64,
    },
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A stored row that cannot be read back (bad JSON, an event version newer than this
    /// code knows, no upcaster for an old one).
    #[error("event at position {position}: {message}")]
    Corrupt { position: i64, message: String },
}

impl EventStoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
            || matches!(self, Self::Db(e) if crate::data::store_error::is_contention(e))
    }
}

impl From<EventStoreError> for tonic::Status {
    fn from(e: EventStoreError) -> Self {
        match e {
            EventStoreError::Conflict { .. } => crate::types::status::contended(e),
            EventStoreError::Db(db) => crate::data::db_status(db),
            EventStoreError::Corrupt { .. } => crate::types::status::db_error(e),
        }
    }
}

/// The `es_events` row.
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "es_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub position: i64,
        pub event_id: String,
        pub stream_id: String,
        pub version: i64,
        pub event_type: String,
        pub schema_version: i32,
        /// JSON.
        pub payload: String,
        /// JSON (`Metadata`).
        pub metadata: String,
        pub recorded_at: ChronoDateTimeUtc,
        /// Sequence in the public event log (dense, in commit order); NULL when unpublished.
        pub log_seq: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Turns a row into a `StoredEvent`, upcasting its payload through `up`.
pub fn decode(row: entity::Model, up: &Upcasters) -> Result<StoredEvent, EventStoreError> {
    let corrupt = |message: String| EventStoreError::Corrupt {
        position: row.position,
        message,
    };
    let payload: serde_json::Value =
        serde_json::from_str(&row.payload).map_err(|e| corrupt(format!("payload: {e}")))?;
    let metadata: Metadata =
        serde_json::from_str(&row.metadata).map_err(|e| corrupt(format!("metadata: {e}")))?;
    let (schema_version, payload) = up
        .upcast(&row.event_type, row.schema_version, payload)
        .map_err(corrupt)?;
    Ok(StoredEvent {
        position: row.position,
        event_id: row.event_id,
        stream_id: row.stream_id,
        version: row.version,
        event_type: row.event_type,
        schema_version,
        payload,
        metadata,
        recorded_at: row.recorded_at,
        log_seq: row.log_seq,
    })
}
