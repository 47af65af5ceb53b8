//! What every service keeps in its own database: connections and migrations (`db`), stored
//! results by idempotency key, and tombstones that a compensation closes ahead of its action.

pub mod db;
pub mod idempotency;
pub mod tombstone;
