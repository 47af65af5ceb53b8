//! The inventory service's integration tests, one binary (one link) for all of them.

mod inventory;
mod peers;
mod process;
