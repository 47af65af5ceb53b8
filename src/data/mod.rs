//! What every service keeps in its own database: connections and migrations (`db`), stored
//! results by idempotency key, tombstones that a compensation closes ahead of its action, and
//! the column helpers migrations share (`schema`), one commit for the writes that arrive together
//! (`group_commit`), and the append-only event store of an
//! event-sourced service with the projections kept from it (`event_store`, `projection`).

pub mod db;
pub mod event_store;
pub mod group_commit;
pub mod idempotency;
pub mod projection;
pub mod schema;
pub mod store_error;
pub mod tombstone;

pub use store_error::{db_status, DomainError, StoreError};
