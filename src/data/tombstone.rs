//! Per-key gates that a compensation can close before the action it undoes ever arrives.
//!
//! A saga that compensates a step whose answer it never saw cannot know whether the action
//! was applied, is still in flight, or never left. The participant closes the gate for the key
//! (e.g. the order id) as part of the compensation; every later action for the key opens it
//! first and is refused if it is closed. Opening and closing are upserts of the same row, so on
//! PostgreSQL they take the same row lock and serialize: a compensation either sees the action's
//! effect (and undoes it) or the action sees the closed gate (and does nothing).

use sea_orm::{ConnectionTrait, DbErr, Statement};

/// Opens the gate for `key` in `scope` (a no-op if it is open) and says whether it was
/// closed. Call it in the transaction of the action, before its effect.
pub async fn open<C: ConnectionTrait>(c: &C, scope: &str, key: &str) -> Result<bool, DbErr> {
    upsert(c, scope, key, false).await
}

/// Closes the gate for `key` in `scope`: every later `open` answers closed. Call it in the
/// transaction of the compensation, before looking for the effects to undo.
pub async fn close<C: ConnectionTrait>(c: &C, scope: &str, key: &str) -> Result<(), DbErr> {
    upsert(c, scope, key, true).await.map(|_| ())
}

async fn upsert<C: ConnectionTrait>(
    c: &C,
    scope: &str,
    key: &str,
    close: bool,
) -> Result<bool, DbErr> {
    let backend = c.get_database_backend();
    // The conflict branch always writes the row, so it is locked until the transaction ends.
    let sql = match backend {
        sea_orm::DatabaseBackend::Postgres => {
            "INSERT INTO tombstones (scope, key, closed) VALUES ($1, $2, $3) \
             ON CONFLICT (scope, key) DO UPDATE SET closed = tombstones.closed OR EXCLUDED.closed \
             RETURNING closed"
        }
        _ => {
            "INSERT INTO tombstones (scope, key, closed) VALUES (?, ?, ?) \
             ON CONFLICT (scope, key) DO UPDATE SET closed = tombstones.closed OR excluded.closed \
             RETURNING closed"
        }
    };
    let row = c
        .query_one(Statement::from_sql_and_values(
            backend,
            sql,
            [scope.into(), key.into(), close.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("tombstone upsert returned no row".into()))?;
    row.try_get_by_index::<bool>(0)
}

pub use migration::Migration;

mod migration {
    use sea_orm_migration::prelude::*;

    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0000_tombstones"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("tombstones"))
                        .if_not_exists()
                        .col(
                            ColumnDef::new(Alias::new("scope"))
                                .string_len(64)
                                .not_null(),
                        )
                        .col(ColumnDef::new(Alias::new("key")).string_len(200).not_null())
                        .col(ColumnDef::new(Alias::new("closed")).boolean().not_null())
                        .primary_key(
                            Index::create()
                                .col(Alias::new("scope"))
                                .col(Alias::new("key")),
                        )
                        .to_owned(),
                )
                .await
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_table(Table::drop().table(Alias::new("tombstones")).to_owned())
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{Database, TransactionTrait};
    use sea_orm_migration::MigratorTrait;

    struct Migrator;
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
            vec![Box::new(Migration)]
        }
    }

    #[tokio::test]
    async fn a_closed_gate_stays_closed_and_keys_are_separate() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        assert!(!open(&db, "payment.order", "o1").await.unwrap());
        assert!(!open(&db, "payment.order", "o1").await.unwrap());
        let txn = db.begin().await.unwrap();
        close(&txn, "payment.order", "o1").await.unwrap();
        txn.commit().await.unwrap();
        assert!(open(&db, "payment.order", "o1").await.unwrap());
        // Closing before any action, too.
        close(&db, "payment.order", "o2").await.unwrap();
        assert!(open(&db, "payment.order", "o2").await.unwrap());
        assert!(!open(&db, "shipping.order", "o2").await.unwrap());
        assert!(!open(&db, "payment.order", "o3").await.unwrap());
    }
}
