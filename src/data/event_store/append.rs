//! Appending to a stream with optimistic concurrency, positions in commit order.

use sea_orm::sea_query::{Alias, PostgresQueryBuilder, Query, SqliteQueryBuilder};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction, Statement};

use super::{EventStoreError, Metadata, NewEvent};

/// The PostgreSQL transaction-level advisory lock every append takes before it is given
/// positions ("om-event" in ASCII): appends take positions one at a time, in commit order.
pub const APPEND_LOCK: i64 = 0x6f6d_2d65_7665_6e74;

/// The version a writer expects a stream to be at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// The stream must not exist yet (its first event).
    NoStream,
    /// The stream's last event must have this version.
    Exact(i64),
    /// The stream must exist and hold exactly `count` events whose type starts with `prefix`,
    /// whatever else was appended: a writer that owns one kind of event in a shared stream
    /// (a saga in its order's stream) is not turned back by the others' events, only by a
    /// second writer of its own kind.
    Owned { prefix: &'static str, count: i64 },
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "{v}"),
            Self::Owned { prefix, count } => write!(f, "{count} {prefix}* events"),
        }
    }
}

/// A stream's head as an append sees it: its version, how many of its events are of the
/// `Owned` kind (when asked), and the public log's last sequence; one statement.
struct Head {
    version: i64,
    owned: i64,
    log_seq: i64,
}

async fn head<C: ConnectionTrait>(
    c: &C,
    stream_id: &str,
    prefix: Option<&str>,
) -> Result<Head, sea_orm::DbErr> {
    let backend = c.get_database_backend();
    let p = |n: usize| match backend {
        DatabaseBackend::Postgres => format!("${n}"),
        _ => "?".to_string(),
    };
    // The owned kind is counted only when asked for.
    let (owned, mut values) = match prefix {
        Some(prefix) => (
            format!(
                "COALESCE(SUM(CASE WHEN event_type LIKE {} THEN 1 ELSE 0 END), 0)",
                p(1)
            ),
            vec![sea_orm::Value::from(format!("{prefix}%"))],
        ),
        None => ("0".to_string(), vec![]),
    };
    let sql = format!(
        "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) AS version, \
         CAST({owned} AS BIGINT) AS owned, \
         (SELECT CAST(COALESCE(MAX(log_seq), 0) AS BIGINT) FROM es_events) AS log_seq \
         FROM es_events WHERE stream_id = {}",
        p(values.len() + 1)
    );
    values.push(stream_id.into());
    let row = c
        .query_one(Statement::from_sql_and_values(backend, sql, values))
        .await?
        .ok_or_else(|| sea_orm::DbErr::Custom("stream head: no row".into()))?;
    Ok(Head {
        version: row.try_get("", "version")?,
        owned: row.try_get("", "owned")?,
        log_seq: row.try_get("", "log_seq")?,
    })
}

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The stream's version after the append (its last event's).
    pub version: i64,
    /// The global position of the last event appended.
    pub position: i64,
    /// When the events were recorded.
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// The version of `stream_id`'s last event, 0 when it has none.
pub async fn stream_version<C: ConnectionTrait>(
    c: &C,
    stream_id: &str,
) -> Result<i64, sea_orm::DbErr> {
    use super::entity::{Column, Entity};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
    Ok(Entity::find()
        .select_only()
        .column_as(Column::Version.max(), "max")
        .filter(Column::StreamId.eq(stream_id))
        .into_tuple::<Option<i64>>()
        .one(c)
        .await?
        .flatten()
        .unwrap_or(0))
}

/// The last sequence of the public event log (0 before the first).
pub async fn last_log_seq<C: ConnectionTrait>(c: &C) -> Result<i64, sea_orm::DbErr> {
    use super::entity::{Column, Entity};
    use sea_orm::{ColumnTrait, EntityTrait, QuerySelect};
    Ok(Entity::find()
        .select_only()
        .column_as(Column::LogSeq.max(), "max")
        .into_tuple::<Option<i64>>()
        .one(c)
        .await?
        .flatten()
        .unwrap_or(0))
}

/// Appends `events` to `stream_id` in `c` (the transaction of the command that decided
/// them), if the stream is at `expected`. Returns the new version and the last position.
/// Nothing is appended for an empty `events`.
///
/// A stream at another version is a `Conflict`; so is a concurrent append that wins the race
/// for the same versions (the unique (stream, version) key refuses ours). Either way the
/// caller's transaction is no good any more: it rolls back and the command is decided again.
///
/// It takes a transaction, not a connection: on PostgreSQL the lock that orders positions
/// lives as long as the transaction, and a statement on its own would let it go before the
/// events are written.
pub async fn append(
    txn: &DatabaseTransaction,
    stream_id: &str,
    expected: Expected,
    events: &[NewEvent],
    metadata: &Metadata,
) -> Result<Appended, EventStoreError> {
    let backend = txn.get_database_backend();
    if backend == DatabaseBackend::Postgres {
        txn.execute(Statement::from_string(
            backend,
            format!("SELECT pg_advisory_xact_lock({APPEND_LOCK})"),
        ))
        .await?;
    }
    append_exclusive(txn, stream_id, expected, events, metadata).await
}

/// `append` without taking the append lock: only for a caller that knows nothing else
/// appends meanwhile (a migration, which runs before the service serves, under the migration
/// lock).
pub async fn append_exclusive<C: ConnectionTrait>(
    c: &C,
    stream_id: &str,
    expected: Expected,
    events: &[NewEvent],
    metadata: &Metadata,
) -> Result<Appended, EventStoreError> {
    let prefix = match expected {
        Expected::Owned { prefix, .. } => Some(prefix),
        _ => None,
    };
    let h = head(c, stream_id, prefix).await?;
    let actual = h.version;
    let holds = match expected {
        Expected::NoStream => actual == 0,
        Expected::Exact(v) => actual == v,
        Expected::Owned { count, .. } => actual > 0 && h.owned == count,
    };
    if !holds {
        return Err(EventStoreError::Conflict {
            stream: stream_id.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    let now = crate::types::time::now();
    if events.is_empty() {
        return Ok(Appended {
            version: actual,
            position: 0,
            recorded_at: now,
        });
    }
    let mut log_seq = h.log_seq;
    let meta =
        serde_json::to_string(metadata).map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
    let rows: Vec<Row> = events
        .iter()
        .enumerate()
        .map(|(i, e)| Row {
            event_id: uuid::Uuid::new_v4().to_string(),
            stream_id: stream_id.to_string(),
            version: actual + 1 + i as i64,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            payload: e.payload.to_string(),
            metadata: meta.clone(),
            recorded_at: now,
            log_seq: e.published.then(|| {
                log_seq += 1;
                log_seq
            }),
        })
        .collect();
    let position = match insert_rows(c, &rows).await {
        Ok(positions) => positions.into_iter().max().unwrap_or(0),
        Err(e)
            if matches!(
                e.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) =>
        {
            return Err(EventStoreError::Conflict {
                stream: stream_id.to_string(),
                expected: expected.to_string(),
                actual: actual + 1,
            })
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Appended {
        version: actual + events.len() as i64,
        position,
        recorded_at: now,
    })
}

/// A row of `es_events` as it is inserted.
pub struct Row {
    pub event_id: String,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    /// JSON.
    pub payload: String,
    /// JSON (`Metadata`).
    pub metadata: String,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    pub log_seq: Option<i64>,
}

/// Inserts `rows` as they are, in one statement; returns their positions. `append` is the way
/// to add events; this is its last step, and how events moved from elsewhere keep their ids,
/// times and log sequences (under the same exclusivity as `append_exclusive`).
pub async fn insert_rows<C: ConnectionTrait>(
    c: &C,
    rows: &[Row],
) -> Result<Vec<i64>, sea_orm::DbErr> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let backend = c.get_database_backend();
    let mut insert = Query::insert();
    insert.into_table(Alias::new("es_events")).columns(
        [
            "event_id",
            "stream_id",
            "version",
            "event_type",
            "schema_version",
            "payload",
            "metadata",
            "recorded_at",
            "log_seq",
        ]
        .map(Alias::new),
    );
    for r in rows {
        insert
            .values([
                r.event_id.clone().into(),
                r.stream_id.clone().into(),
                r.version.into(),
                r.event_type.clone().into(),
                r.schema_version.into(),
                r.payload.clone().into(),
                r.metadata.clone().into(),
                r.recorded_at.into(),
                r.log_seq.into(),
            ])
            .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
    }
    insert.returning_col(Alias::new("position"));
    let (sql, values) = match backend {
        DatabaseBackend::Postgres => insert.build(PostgresQueryBuilder),
        _ => insert.build(SqliteQueryBuilder),
    };
    let out = c
        .query_all(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    out.iter().map(|r| r.try_get_by_index::<i64>(0)).collect()
}
