//! Idempotency keys: the first result of a keyed request is stored in the same transaction as
//! its effect, and a repeat of the key gets that stored result back. A repeat with a different
//! request is ALREADY_EXISTS.

use futures::future::BoxFuture;
use prost::Message;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, SqlErr, TransactionTrait,
};
use sha2::Digest;
use tonic::Status;

use crate::data::db_status;
use crate::types::status::db_error;

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub request_hash: String,
        pub response: Vec<u8>,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use migration::Migration;

mod migration {
    use sea_orm_migration::prelude::*;

    /// The migration that creates `idempotency_keys`; every service's migrator lists it.
    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0000_idempotency_keys"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new("idempotency_keys"))
                        .if_not_exists()
                        .col(
                            ColumnDef::new(Alias::new("scope"))
                                .string_len(64)
                                .not_null(),
                        )
                        .col(ColumnDef::new(Alias::new("key")).string_len(200).not_null())
                        .col(
                            ColumnDef::new(Alias::new("request_hash"))
                                .string_len(64)
                                .not_null(),
                        )
                        .col(ColumnDef::new(Alias::new("response")).binary().not_null())
                        .col(
                            ColumnDef::new(Alias::new("created_at"))
                                .timestamp_with_time_zone()
                                .not_null(),
                        )
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
                .drop_table(
                    Table::drop()
                        .table(Alias::new("idempotency_keys"))
                        .to_owned(),
                )
                .await
        }
    }
}

fn hash<M: Message>(m: &M) -> String {
    let digest = sha2::Sha256::digest(m.encode_to_vec());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a stored key says about a request.
enum Stored<R> {
    Replay(R),
    Conflict,
}

async fn lookup<C: ConnectionTrait, R: Message + Default>(
    conn: &C,
    scope: &str,
    key: &str,
    request_hash: &str,
) -> Result<Option<Stored<R>>, Status> {
    let row = entity::Entity::find_by_id((scope.to_string(), key.to_string()))
        .one(conn)
        .await
        .map_err(db_error)?;
    Ok(match row {
        None => None,
        Some(row) if row.request_hash != request_hash => Some(Stored::Conflict),
        Some(row) => Some(Stored::Replay(
            R::decode(row.response.as_slice()).map_err(db_error)?,
        )),
    })
}

fn conflict(key: &str) -> Status {
    Status::already_exists(format!(
        "idempotency_key '{key}' was already used with a different request"
    ))
}

/// Runs `action` in a transaction unless `key` already has a result in `scope`.
///
/// A stored result for the same request is returned as it was; a stored key with another
/// request is ALREADY_EXISTS. An action that fails stores nothing, so it may be retried.
///
/// Every operation is also a crash point named by its scope (`ordermesh::faults::crash`): with
/// `ORDERMESH_CRASH_AT=<scope>:before` the process dies before it does anything, with
/// `<scope>:after` once the result is committed and before the caller gets it.
pub async fn execute<Req, Resp, F>(
    db: &DatabaseConnection,
    scope: &str,
    key: &str,
    request: &Req,
    action: F,
) -> Result<Resp, Status>
where
    Req: Message,
    Resp: Message + Default,
    F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<Resp, Status>>,
{
    crate::faults::crash::around(scope, run(db, scope, key, request, action)).await
}

async fn run<Req, Resp, F>(
    db: &DatabaseConnection,
    scope: &str,
    key: &str,
    request: &Req,
    action: F,
) -> Result<Resp, Status>
where
    Req: Message,
    Resp: Message + Default,
    F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<Resp, Status>>,
{
    let request_hash = hash(request);
    let txn = db.begin().await.map_err(db_status)?;
    match lookup::<_, Resp>(&txn, scope, key, &request_hash).await? {
        Some(Stored::Replay(r)) => return Ok(r),
        Some(Stored::Conflict) => return Err(conflict(key)),
        None => {}
    }
    let response = action(&txn).await?;
    let row = entity::ActiveModel {
        scope: sea_orm::Set(scope.to_string()),
        key: sea_orm::Set(key.to_string()),
        request_hash: sea_orm::Set(request_hash.clone()),
        response: sea_orm::Set(response.encode_to_vec()),
        created_at: sea_orm::Set(crate::types::time::now()),
    };
    let inserted = entity::Entity::insert(row).exec(&txn).await;
    match inserted {
        Ok(_) => {
            txn.commit().await.map_err(db_status)?;
            Ok(response)
        }
        Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            // A concurrent request with the same key committed first: ours rolls back
            // and the caller gets the winner's result.
            drop(txn);
            match lookup::<_, Resp>(db, scope, key, &request_hash).await? {
                Some(Stored::Replay(r)) => Ok(r),
                _ => Err(conflict(key)),
            }
        }
        Err(e) => Err(db_status(e)),
    }
}
