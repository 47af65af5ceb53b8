//! Reading: one stream by version (up to a version or a time), or every stream by global
//! position.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entity::{Column, Entity};
use super::{decode, EventStoreError, StoredEvent, Upcasters};

/// Which part of a stream to read: from a version on, up to a version and/or a time.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamBounds {
    /// Read events after this version (0: from the first).
    pub after_version: i64,
    /// Stop at this version (inclusive).
    pub to_version: Option<i64>,
    /// Stop at events recorded at or before this time.
    pub as_of: Option<DateTime<Utc>>,
    /// At most this many events.
    pub limit: Option<u64>,
    /// Only events whose type starts with this (e.g. a saga's, in a shared stream).
    pub type_prefix: Option<&'static str>,
}

/// The events of `stream_id` within `bounds`, in version order.
pub async fn read_stream<C: ConnectionTrait>(
    c: &C,
    stream_id: &str,
    bounds: StreamBounds,
    up: &Upcasters,
) -> Result<Vec<StoredEvent>, EventStoreError> {
    let mut q = Entity::find()
        .filter(Column::StreamId.eq(stream_id))
        .filter(Column::Version.gt(bounds.after_version))
        .order_by_asc(Column::Version);
    if let Some(v) = bounds.to_version {
        q = q.filter(Column::Version.lte(v));
    }
    if let Some(t) = bounds.as_of {
        q = q.filter(Column::RecordedAt.lte(t));
    }
    if let Some(p) = bounds.type_prefix {
        q = q.filter(Column::EventType.starts_with(p));
    }
    if let Some(n) = bounds.limit {
        q = q.limit(n);
    }
    q.all(c).await?.into_iter().map(|r| decode(r, up)).collect()
}

/// Whether `stream_id` has any event.
pub async fn stream_exists<C: ConnectionTrait>(
    c: &C,
    stream_id: &str,
) -> Result<bool, EventStoreError> {
    Ok(super::append::stream_version(c, stream_id).await? > 0)
}

/// Up to `limit` events after `position`, in position order, optionally only of some types.
/// Positions are given in commit order, so reading on from the last position seen misses
/// nothing.
pub async fn read_all<C: ConnectionTrait>(
    c: &C,
    after: i64,
    limit: u64,
    types: &[String],
    up: &Upcasters,
) -> Result<Vec<StoredEvent>, EventStoreError> {
    let mut q = Entity::find()
        .filter(Column::Position.gt(after))
        .order_by_asc(Column::Position)
        .limit(limit);
    if !types.is_empty() {
        q = q.filter(Column::EventType.is_in(types.iter().cloned()));
    }
    q.all(c).await?.into_iter().map(|r| decode(r, up)).collect()
}

/// The last position written (0 when the store is empty).
pub async fn head_position<C: ConnectionTrait>(c: &C) -> Result<i64, EventStoreError> {
    Ok(Entity::find()
        .select_only()
        .column_as(Column::Position.max(), "max")
        .into_tuple::<Option<i64>>()
        .one(c)
        .await?
        .flatten()
        .unwrap_or(0))
}
