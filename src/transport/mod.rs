//! How services reach each other: the one client stack (`client`), the one server stack
//! (`server`), mutual TLS with SPIFFE identities (`tls`, `authz`), DNS discovery (`dns`),
//! deadlines, load shedding, faults on demand (`faults`), settings files re-read while
//! running (`reload`), stream bookkeeping and the drain on shutdown.

pub mod authz;
pub mod client;
pub mod deadline;
pub mod dns;
pub mod faults;
pub mod headers;
pub mod reload;
pub mod server;
pub mod shed;
pub mod shutdown;
pub mod streams;
pub mod tls;
pub mod watch;
