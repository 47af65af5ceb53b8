//! Positions kept by readers of the store (projections, the outbox relay), by name, written in
//! the same transaction as what the reader did with the events up to there.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DatabaseBackend, EntityTrait, QuerySelect, Set};

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "es_checkpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub position: i64,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The position saved under `name` (0 when none). On PostgreSQL the row is locked until the
/// transaction ends, so two runners of one reader take turns instead of both applying a batch.
pub async fn load<C: ConnectionTrait>(c: &C, name: &str) -> Result<i64, sea_orm::DbErr> {
    let mut q = entity::Entity::find_by_id(name);
    if c.get_database_backend() == DatabaseBackend::Postgres {
        q = q.lock_exclusive();
    }
    Ok(q.one(c).await?.map(|r| r.position).unwrap_or(0))
}

/// Saves `position` under `name`.
pub async fn save<C: ConnectionTrait>(
    c: &C,
    name: &str,
    position: i64,
) -> Result<(), sea_orm::DbErr> {
    use entity::Column;
    let row = entity::ActiveModel {
        name: Set(name.to_string()),
        position: Set(position),
        updated_at: Set(crate::types::time::now()),
    };
    entity::Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::Name)
                .update_columns([Column::Position, Column::UpdatedAt])
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    Ok(())
}

/// Removes the position saved under `name`.
pub async fn remove<C: ConnectionTrait>(c: &C, name: &str) -> Result<(), sea_orm::DbErr> {
    entity::Entity::delete_by_id(name).exec(c).await?;
    Ok(())
}
