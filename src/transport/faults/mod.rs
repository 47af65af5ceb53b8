//! Faults on demand: delays and aborts injected per method by rules from a file
//! (`FAULTS_FILE`, re-read while running) or per request by headers, only while `FAULTS=on`.
//!
//! ```toml
//! max_delay = "10s"                  # cap for header overrides (default 10s)
//!
//! [[rule]]
//! name = "slow-authorize"
//! service = "payment"                # the service that serves the call; omit for any
//! method = "ordermesh.payment.v1.PaymentService/AuthorizePayment"   # or "<package.Service>/*"
//! headers = { x-ordermesh-fault-tag = "chaos" }  # every listed header must have this value
//! delay = "300ms"
//! delay_jitter = "100ms"             # plus 0..jitter, uniformly
//! delay_percent = 50                 # of the matching calls (default 100)
//! abort = "UNAVAILABLE"              # a gRPC code name other than OK
//! abort_percent = 10
//! ```
//!
//! A rule with `route = "POST /v1/orders"` (a REST route as its `google.api.http` rule writes
//! it) applies at the gateway instead, before the call goes upstream; its abort may also be an
//! HTTP status (`abort_status = 503`).
//!
//! The first rule that matches a call decides its faults. Per request, the headers
//! `x-ordermesh-fault-delay` (a duration), `x-ordermesh-fault-abort` (a gRPC code name) and
//! `x-ordermesh-fault-percent` apply at the server that receives them, capped by `max_delay`;
//! with `x-ordermesh-fault-target` (a service name or `package.Service/Method`) they travel
//! with the request's downstream calls until a server they target applies them. An applied
//! fault is named in the `x-ordermesh-fault` response header and counted in
//! `faults_injected_total{kind,method}`. The server applies faults inside its deadline, so a
//! delay longer than the caller's deadline ends in DEADLINE_EXCEEDED. Health checks and
//! reflection are never faulted.
//!
//! `rules` reads the file, `decide` picks one call's faults, `layer` applies them (the server
//! layer, and the client layer that passes headers on); this file holds the headers and the
//! switch.

mod decide;
mod layer;
mod rules;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tokio::sync::watch;

pub use decide::Decision;
pub use layer::{carry, PassOn, PassOnLayer, ServerFaultLayer, ServerFaults};
pub use rules::{parse_code, Abort, Delay, FaultRules, Rule};

pub const DELAY_HEADER: &str = "x-ordermesh-fault-delay";
pub const ABORT_HEADER: &str = "x-ordermesh-fault-abort";
pub const PERCENT_HEADER: &str = "x-ordermesh-fault-percent";
pub const TARGET_HEADER: &str = "x-ordermesh-fault-target";
/// Every fault header starts so; the gateway drops them all for callers who may not ask for
/// faults, and rule header selectors must use it (`x-ordermesh-fault-tag`), so nobody else can
/// select a rule.
pub const HEADER_PREFIX: &str = "x-ordermesh-fault-";
/// The response header naming the fault that was applied.
pub const APPLIED_HEADER: &str = "x-ordermesh-fault";
/// The request headers a caller may set to ask for a fault.
pub const REQUEST_HEADERS: [&str; 4] = [DELAY_HEADER, ABORT_HEADER, PERCENT_HEADER, TARGET_HEADER];

pub(crate) const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);

/// How often the rules file is re-read.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// `FAULTS` and `FAULTS_FILE` as configured (checked at start-up, started by the server).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSettings {
    pub on: bool,
    pub file: Option<std::path::PathBuf>,
}

impl FaultSettings {
    /// `faults` is `on` or `off`; `file`, when given, must hold valid rules. The error names
    /// the variable: `FAULTS_FILE: <file>: rule 2 (x).abort: ...`.
    pub fn parse(
        faults: &str,
        file: Option<std::path::PathBuf>,
    ) -> Result<Self, crate::transport::client::SettingError> {
        let on = match faults.trim() {
            "on" | "true" => true,
            "off" | "false" | "" => false,
            other => {
                return Err(crate::transport::client::SettingError {
                    var: "FAULTS".into(),
                    message: format!("'{other}' is not on or off"),
                })
            }
        };
        if let Some(path) = &file {
            crate::transport::reload::load::<FaultRules>(path).map_err(|message| {
                crate::transport::client::SettingError {
                    var: "FAULTS_FILE".into(),
                    message,
                }
            })?;
        }
        Ok(Self { on, file })
    }

    /// The injector these settings describe: off, on with the file's rules followed as it
    /// changes (read once outside a runtime, as in a configuration check), or on with header
    /// overrides only.
    pub fn start(&self) -> Result<Faults, String> {
        match (self.on, &self.file) {
            (false, _) => Ok(Faults::off()),
            (true, Some(path)) => Faults::watch_file(path.clone(), RELOAD_EVERY),
            (true, None) => Ok(Faults::on(FaultRules::default())),
        }
    }
}

/// Fault injection as a process has it: off, or on with the rules in force.
#[derive(Clone, Debug)]
pub struct Faults {
    rules: Option<watch::Receiver<Arc<FaultRules>>>,
}

impl Faults {
    /// No fault is ever injected, whatever the headers say.
    pub fn off() -> Self {
        Self { rules: None }
    }

    /// On, with fixed rules (tests; or `FAULTS=on` without a file: headers only).
    pub fn on(rules: FaultRules) -> Self {
        Self {
            rules: Some(crate::transport::reload::fixed(rules)),
        }
    }

    /// On, with the rules of `path`, re-read every `every` (`transport::reload`).
    pub fn watch_file(path: std::path::PathBuf, every: Duration) -> Result<Self, String> {
        Ok(Self {
            rules: Some(crate::transport::reload::watch_file(path, every)?),
        })
    }

    pub fn enabled(&self) -> bool {
        self.rules.is_some()
    }

    /// The gateway's faults for a REST call to `route` (none while off).
    pub fn decide_route(&self, route: &str, headers: &HeaderMap) -> Option<Decision> {
        self.current()?.decide_route(route, headers)
    }

    pub(super) fn current(&self) -> Option<Arc<FaultRules>> {
        self.rules.as_ref().map(|r| r.borrow().clone())
    }
}
