//! The one error shape of a service's store: its domain said no, or the database failed. How
//! each looks to a caller is decided here once: the domain error's own mapping, ABORTED for a
//! write that lost a lock or serialization conflict on a hot row (`types::status::contended`:
//! the request may be retried, the service is fine, so no breaker counts it), or
//! `types::status::db_error` (UNAVAILABLE, the cause logged and not sent).

use sea_orm::DbErr;
use tonic::Status;

/// A service's domain error, as its store returns it. Implementing this marker is what lets
/// `?` lift the domain error into a `StoreError` (a blanket `From<E>` for every `E` would
/// overlap with `From<DbErr>`).
pub trait DomainError: std::error::Error {}

#[derive(Debug, thiserror::Error)]
pub enum StoreError<E: DomainError> {
    #[error(transparent)]
    Domain(E),
    #[error("database: {0}")]
    Db(#[from] DbErr),
}

impl<E: DomainError> From<E> for StoreError<E> {
    fn from(e: E) -> Self {
        Self::Domain(e)
    }
}

impl<E: DomainError + Into<Status>> From<StoreError<E>> for Status {
    fn from(e: StoreError<E>) -> Self {
        match e {
            StoreError::Domain(d) => d.into(),
            StoreError::Db(db) => db_status(db),
        }
    }
}

/// How a database failure looks to a caller: ABORTED for a conflict with a concurrent write,
/// UNAVAILABLE for everything else.
pub fn db_status(e: DbErr) -> Status {
    if is_contention(&e) {
        crate::types::status::contended(e)
    } else {
        crate::types::status::db_error(e)
    }
}

/// A lock or serialization conflict with a concurrent transaction: PostgreSQL's
/// serialization_failure, deadlock_detected and lock_not_available; SQLite's BUSY and LOCKED
/// (with their extended codes).
pub fn is_contention(e: &DbErr) -> bool {
    use sea_orm::sqlx;
    let (DbErr::Exec(r) | DbErr::Query(r) | DbErr::Conn(r)) = e else {
        return false;
    };
    let sea_orm::RuntimeErr::SqlxError(sqlx::Error::Database(d)) = r else {
        return false;
    };
    matches!(
        d.code().as_deref(),
        Some("40001" | "40P01" | "55P03" | "5" | "6" | "261" | "262" | "517")
    )
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_locked_sqlite_database_is_contention_not_an_outage() {
        use sea_orm::{ConnectionTrait, Database, TransactionTrait};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
        let a = Database::connect(&url).await.unwrap();
        let mut one = sea_orm::ConnectOptions::new(url.clone());
        one.max_connections(1);
        let b = Database::connect(one).await.unwrap();
        b.execute_unprepared("PRAGMA busy_timeout = 0")
            .await
            .unwrap();
        a.execute_unprepared("CREATE TABLE t (x INTEGER)")
            .await
            .unwrap();
        let txn = a.begin().await.unwrap();
        txn.execute_unprepared("INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        let err = b
            .execute_unprepared("INSERT INTO t VALUES (2)")
            .await
            .unwrap_err();
        assert!(is_contention(&err), "{err:?}");
        assert_eq!(db_status(err).code(), Code::Aborted);
        assert_eq!(
            db_status(DbErr::Custom("disk on fire".into())).code(),
            Code::Unavailable
        );
        txn.rollback().await.unwrap();
    }

    use super::*;
    use tonic::Code;

    #[derive(Debug, thiserror::Error)]
    #[error("widget '{0}' not found")]
    struct NoWidget(String);

    impl DomainError for NoWidget {}

    impl From<NoWidget> for Status {
        fn from(e: NoWidget) -> Self {
            Status::not_found(e.to_string())
        }
    }

    fn find(id: &str) -> Result<(), StoreError<NoWidget>> {
        Err(NoWidget(id.to_string()))?
    }

    fn read() -> Result<(), StoreError<NoWidget>> {
        Err(DbErr::Custom("disk on fire".into()))?
    }

    #[test]
    fn domain_errors_keep_their_status_and_db_errors_become_unavailable() {
        let domain = Status::from(find("w-1").unwrap_err());
        assert_eq!(domain.code(), Code::NotFound);
        assert_eq!(domain.message(), "widget 'w-1' not found");

        let db = read().unwrap_err();
        assert_eq!(db.to_string(), "database: Custom Error: disk on fire");
        let db = Status::from(db);
        assert_eq!(db.code(), Code::Unavailable);
        assert!(!db.message().contains("disk on fire"), "{}", db.message());
    }
}
