//! Snapshots: a stream's state as of a version, so a long stream is not replayed from its
//! first event on every read. One row per stream, replaced as the stream grows. A snapshot
//! written by another schema version of the state is ignored (the state is rebuilt from the
//! events and a new snapshot replaces it).

use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, EntityTrait, Set};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "es_snapshots")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub stream_id: String,
        pub version: i64,
        pub schema_version: i32,
        /// JSON.
        pub state: String,
        pub taken_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The snapshot of `stream_id` when there is one of `schema_version`: (version, state).
pub async fn load<C: ConnectionTrait, S: DeserializeOwned>(
    c: &C,
    stream_id: &str,
    schema_version: i32,
) -> Result<Option<(i64, S)>, sea_orm::DbErr> {
    let Some(row) = entity::Entity::find_by_id(stream_id).one(c).await? else {
        return Ok(None);
    };
    if row.schema_version != schema_version {
        return Ok(None);
    }
    // A snapshot that does not parse is as good as none: the events are the truth.
    Ok(serde_json::from_str(&row.state)
        .ok()
        .map(|s| (row.version, s)))
}

/// Saves `state` as `stream_id`'s snapshot at `version` (replacing an older one).
pub async fn save<C: ConnectionTrait, S: Serialize>(
    c: &C,
    stream_id: &str,
    version: i64,
    schema_version: i32,
    state: &S,
) -> Result<(), sea_orm::DbErr> {
    use entity::Column;
    let state = serde_json::to_string(state).map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
    let row = entity::ActiveModel {
        stream_id: Set(stream_id.to_string()),
        version: Set(version),
        schema_version: Set(schema_version),
        state: Set(state),
        taken_at: Set(crate::types::time::now()),
    };
    entity::Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::StreamId)
                .update_columns([
                    Column::Version,
                    Column::SchemaVersion,
                    Column::State,
                    Column::TakenAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    Ok(())
}
