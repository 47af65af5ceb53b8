//! Reading the environment: which variables a process reads (for `--check-config`), and
//! lookups that remember what they were asked for.

use super::args::ServiceArgs;

/// Every environment variable a service binary reads through `ServiceArgs`, taken from the
/// parser itself, plus `RUST_LOG` (the log filter).
pub fn env_vars() -> Vec<String> {
    let cmd = <ServiceArgs as clap::CommandFactory>::command();
    let mut vars: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    vars.push("RUST_LOG".into());
    vars
}

/// Environment lookups that remember which variables were asked for, so `--check-config` can
/// report the settings a service's own code reads beyond `ServiceArgs`. Empty values count as
/// unset, as everywhere in the configuration.
#[derive(Default)]
pub struct EnvReads {
    names: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// What the settings resolved to, where a list of names says too little (e.g. the
    /// traffic policy in force), for the same report.
    resolved: std::sync::Mutex<std::collections::BTreeMap<String, serde_json::Value>>,
}

impl EnvReads {
    pub fn get(&self, var: &str) -> Option<String> {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(var.to_string());
        std::env::var(var).ok().filter(|v| !v.trim().is_empty())
    }

    /// Records what a setting resolved to, under `key` in the `--check-config` report.
    pub fn resolved(&self, key: &str, value: serde_json::Value) {
        self.resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), value);
    }

    /// Everything recorded with `resolved`.
    pub fn resolutions(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn names(&self) -> Vec<String> {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
