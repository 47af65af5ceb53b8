//! The gateway's integration tests, one binary (one link) for all of them; `helpers` spawns
//! the echo service, a gateway in front of it, and the whole mesh (through `test_support`).

mod conformance;
mod edge;
mod faults;
mod fuzz;
mod helpers;
mod history;
mod mesh;
mod metrics;
mod otel;
mod transcoding;
