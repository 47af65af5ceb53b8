//! Idempotency keys: the first result of a keyed request is stored in the same transaction as
//! its effect, and a repeat of the key gets that stored result back. A repeat with a different
//! request is ALREADY_EXISTS.

use futures::future::BoxFuture;
use futures::FutureExt;
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseTransaction, EntityTrait, SqlErr};
use sha2::Digest;
use tonic::Status;

use crate::data::db_status;
use crate::data::group_commit::GroupCommit;
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

/// What a keyed write came to inside its batch.
enum Attempt<R> {
    Done(R),
    /// A concurrent request with the same key committed first.
    Raced,
}

/// Runs `action` unless `key` already has a result in `scope`: in a transaction of its own
/// as far as the caller can tell, through the service's writer (`GroupCommit`), so it shares a
/// commit with the writes that arrive with it.
///
/// A stored result for the same request is returned as it was; a stored key with another
/// request is ALREADY_EXISTS. An action that fails stores nothing, so it may be retried.
///
/// Every operation is also a crash point named by its scope (`ordermesh::faults::crash`): with
/// `ORDERMESH_CRASH_AT=<scope>:before` the process dies before it does anything, with
/// `<scope>:after` once the result is committed and before the caller gets it.
pub async fn execute<Req, Resp, F>(
    w: &GroupCommit,
    scope: &'static str,
    key: &str,
    request: &Req,
    action: F,
) -> Result<Resp, Status>
where
    Req: Message,
    Resp: Message + Default + 'static,
    F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<Resp, Status>>
        + Send
        + 'static,
{
    crate::faults::crash::around(scope, run(w, scope, key, request, action)).await
}

async fn run<Req, Resp, F>(
    w: &GroupCommit,
    scope: &'static str,
    key: &str,
    request: &Req,
    action: F,
) -> Result<Resp, Status>
where
    Req: Message,
    Resp: Message + Default + 'static,
    F: for<'t> FnOnce(&'t DatabaseTransaction) -> BoxFuture<'t, Result<Resp, Status>>
        + Send
        + 'static,
{
    let request_hash = hash(request);
    let owned_key = key.to_string();
    let hash_in = request_hash.clone();
    let attempt = w
        .write_with(move |txn| {
            async move {
                use crate::data::group_commit::Outcome::{Discard, Keep};
                // A replay or a conflict wrote nothing; they are kept so that they are only
                // reported once what they saw is committed.
                match lookup::<_, Resp>(txn, scope, &owned_key, &hash_in).await {
                    Ok(Some(Stored::Replay(r))) => return Keep(Ok(Attempt::Done(r))),
                    Ok(Some(Stored::Conflict)) => return Keep(Err(conflict(&owned_key))),
                    Ok(None) => {}
                    Err(e) => return Discard(Err(e)),
                }
                let response = match action(txn).await {
                    Ok(r) => r,
                    Err(e) => return Discard(Err(e)),
                };
                let row = entity::ActiveModel {
                    scope: sea_orm::Set(scope.to_string()),
                    key: sea_orm::Set(owned_key),
                    request_hash: sea_orm::Set(hash_in),
                    response: sea_orm::Set(response.encode_to_vec()),
                    created_at: sea_orm::Set(crate::types::time::now()),
                };
                match entity::Entity::insert(row).exec(txn).await {
                    Ok(_) => Keep(Ok(Attempt::Done(response))),
                    Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                        Discard(Ok(Attempt::Raced))
                    }
                    Err(e) => Discard(Err(db_status(e))),
                }
            }
            .boxed()
        })
        .await
        .map_err(db_status)??;
    match attempt {
        Attempt::Done(r) => Ok(r),
        // Ours rolled back; the caller gets the winner's result.
        Attempt::Raced => match lookup::<_, Resp>(w.db(), scope, key, &request_hash).await? {
            Some(Stored::Replay(r)) => Ok(r),
            _ => Err(conflict(key)),
        },
    }
}
