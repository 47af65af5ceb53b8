//! ordermesh: the generated contracts and the mesh runtime every service and the gateway use.
//!
//! One folder per concern (ARCHITECTURE.md has the map and the data flows):
//! - `proto`: the generated contracts and their descriptor set;
//! - `types`: money, ids, addresses, page tokens, time, and how errors look to callers;
//! - `telemetry`: logs, spans, sampling, propagation and Prometheus metrics;
//! - `transport`: the client and server stacks, mTLS identities, authorization, DNS discovery,
//!   deadlines, shedding and the drain;
//! - `data`: database connections and migrations, idempotency keys, tombstones, the event store
//!   and the projections kept from it;
//! - `events`: the outbox, the inbox, and the gRPC and RabbitMQ transports;
//! - `saga`: orchestration with compensation, kept as events;
//! - `faults`: crash points for the crash matrices;
//! - `config`: typed, validated settings from the environment;
//! - `host`: what every service repeats around its routes (database, outbox relay, event log,
//!   event consumers, periodic tasks, the server stack);
//! - `backoff`: the one jittered exponential back-off.

pub mod backoff;
pub mod config;
#[cfg(feature = "db")]
pub mod data;
pub mod events;
pub mod faults;
#[cfg(feature = "events")]
pub mod host;
pub mod proto;
#[cfg(feature = "db")]
pub mod saga;
pub mod telemetry;
pub mod transport;
pub mod types;

#[cfg(feature = "testing")]
pub mod testing;
