//! The runtime crate's integration tests, one binary (one link) for all of them; each module
//! is one concern.

mod event_store;
mod group_commit;
mod health_port;
mod listeners;
mod mesh_transport;
mod migrations;
mod mtls;
mod reflection;
mod sampling;
