//! The one error shape of a service's store: its domain said no, or the database failed. How
//! each looks to a caller is decided here once: the domain error's own mapping, or
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
            StoreError::Db(db) => crate::types::status::db_error(db),
        }
    }
}

#[cfg(test)]
mod tests {
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
