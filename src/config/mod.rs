//! Typed configuration from flags and environment, validated once at start-up.
//!
//! Every setting has a flag and an environment variable; a bad value stops the process with
//! a `ConfigError` that names the variable and the rule. `args` holds the flags (with the
//! TLS group services and gateway share), `env` the environment reads, `upstreams` the one
//! rule for finding the services a process calls, and `service` a service's whole settings.

mod args;
mod env;
mod service;
mod upstreams;

pub use args::{ServiceArgs, TlsArgs};
pub use env::{env_vars, EnvReads};
pub use service::ServiceConfig;
pub use upstreams::{mesh_dns_nameserver, upstreams, Discovery, DEFAULT_ZONE};

use std::net::SocketAddr;

impl From<crate::transport::client::SettingError> for ConfigError {
    fn from(e: crate::transport::client::SettingError) -> Self {
        Self::Invalid {
            var: e.var,
            message: e.message,
        }
    }
}

/// A setting that cannot be used: which variable, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var}: {message}")]
    Invalid { var: String, message: String },
}

impl ConfigError {
    pub fn invalid(var: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self::Invalid {
            var: var.into(),
            message: message.to_string(),
        }
    }
}

/// An optional listener address (`HEALTH_LISTEN_ADDR`, `METRICS_ADDR`): unset or blank is
/// `None`; otherwise an address:port, or a message that shows `example`.
pub fn optional_addr(value: Option<&str>, example: &str) -> Result<Option<SocketAddr>, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("'{s}' is not an address:port such as {example}")),
    }
}
