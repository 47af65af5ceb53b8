//! The ordermesh edge gateway: REST/JSON to gRPC from the `google.api.http` rules in the
//! descriptor set, with tokens, rate limits, a response cache, an aggregate endpoint and
//! OpenAPI, in front of the mesh client stack.

pub mod aggregate;
pub mod app;
pub mod auth;
pub mod body;
pub mod cache;
pub mod caller;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod template;
pub mod transcode;
pub mod upstream;

pub use app::Gateway;
pub use config::{GatewayConfig, Settings};
