//! ordermesh: the generated contracts and the mesh runtime every service and the gateway use.
//!
//! Each module owns one concern and can be used alone: `config` (typed, validated settings),
//! `db` (connections and migrations), `server` (the one way to serve a service: health,
//! reflection, graceful drain), `client` (the one way to call another service),
//! `outbox`/`consumer` (events and the idempotent inbox), `broker` (the RabbitMQ event
//! transport), `idempotency` (stored results by key), `money`, `pagination`, `status` (how errors look to
//! callers) and `telemetry` (logs).

pub mod address;
pub mod authz;
pub mod backoff;
pub mod broker;
pub mod client;
pub mod config;
pub mod consumer;
pub mod crash;
pub mod db;
pub mod deadline;
pub mod dns;
pub mod headers;
pub mod idempotency;
pub mod ids;
pub mod money;
pub mod outbox;
pub mod pagination;
pub mod proto;
pub mod saga;
pub mod server;
pub mod shed;
pub mod shutdown;
pub mod status;
pub mod streams;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod tombstone;

#[cfg(feature = "testing")]
pub mod testing;
