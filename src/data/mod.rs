//! What every service keeps in its own database: connections and migrations (`db`), stored
//! results by idempotency key, tombstones that a compensation closes ahead of its action, and
//! the column helpers migrations share (`schema`).

pub mod db;
pub mod idempotency;
pub mod schema;
pub mod store_error;
pub mod tombstone;

pub use store_error::{db_status, DomainError, StoreError};
