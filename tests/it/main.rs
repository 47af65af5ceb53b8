//! The runtime crate's integration tests, one binary (one link) for all of them; each module
//! is one concern.

/// Declares each named `async fn name(postgres: bool)` scenario as two tests, `sqlite::name` and
/// `postgres::name` (the modules below that test on both databases use it).
macro_rules! both {
    ($($name:ident),*) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(false).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(true).await })*
        }
    };
}

mod dns_records;
mod event_store;
mod faults;
mod group_commit;
mod health_port;
mod listeners;
mod mesh_transport;
mod migrations;
mod mtls;
mod reflection;
mod sampling;
mod traffic;
