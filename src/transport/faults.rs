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

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::sync::watch;
use tonic::body::Body;
use tower::{Layer, Service};

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

const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);

/// A delay: `fixed` plus a uniform `0..jitter`, on `percent` of the matching calls.
#[derive(Clone, Debug, PartialEq)]
pub struct Delay {
    pub fixed: Duration,
    pub jitter: Duration,
    pub percent: f64,
}

/// An abort with a gRPC code (and, at the gateway, possibly an HTTP status of its own), on
/// `percent` of the matching calls.
#[derive(Clone, Debug, PartialEq)]
pub struct Abort {
    pub code: tonic::Code,
    pub http_status: Option<u16>,
    pub percent: f64,
}

/// One rule of the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub service: Option<String>,
    /// `package.Service/Method`, or `package.Service/*` for every method of a service.
    pub method: Option<String>,
    /// A REST route (`POST /v1/orders`): the rule applies at the gateway, not at a server.
    pub route: Option<String>,
    pub headers: Vec<(HeaderName, String)>,
    pub delay: Option<Delay>,
    pub abort: Option<Abort>,
}

impl Rule {
    fn matches_headers(&self, headers: &HeaderMap) -> bool {
        self.headers
            .iter()
            .all(|(k, v)| headers.get(k).is_some_and(|h| h.as_bytes() == v.as_bytes()))
    }

    fn matches(&self, service: &str, method: &str, headers: &HeaderMap) -> bool {
        self.route.is_none()
            && self.service.as_deref().is_none_or(|s| s == service)
            && self
                .method
                .as_deref()
                .is_none_or(|m| match m.strip_suffix("/*") {
                    Some(svc) => method.split_once('/').is_some_and(|(s, _)| s == svc),
                    None => m == method,
                })
            && self.matches_headers(headers)
    }
}

/// The rules of a fault file.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRules {
    /// The longest delay a request header may ask for.
    pub max_delay: Duration,
    pub rules: Vec<Rule>,
}

impl Default for FaultRules {
    fn default() -> Self {
        Self {
            max_delay: DEFAULT_MAX_DELAY,
            rules: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTop {
    max_delay: Option<String>,
    #[serde(default)]
    rule: Vec<FileRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    name: Option<String>,
    service: Option<String>,
    method: Option<String>,
    route: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    delay: Option<String>,
    delay_jitter: Option<String>,
    delay_percent: Option<f64>,
    abort: Option<String>,
    abort_status: Option<u16>,
    abort_percent: Option<f64>,
}

/// A gRPC code by its name (`UNAVAILABLE`, `unavailable`) or number; OK is not a fault.
pub fn parse_code(s: &str) -> Result<tonic::Code, String> {
    let s = s.trim();
    let code = match s.parse::<i32>() {
        Ok(n) if (0..=16).contains(&n) => tonic::Code::from(n),
        Ok(_) => return Err(format!("'{s}' is not a gRPC code (0-16)")),
        Err(_) => {
            let upper = s.to_ascii_uppercase();
            (1..=16)
                .map(tonic::Code::from)
                .chain([tonic::Code::Ok])
                .find(|c| code_name(*c) == upper)
                .ok_or_else(|| format!("'{s}' is not a gRPC code name (e.g. UNAVAILABLE)"))?
        }
    };
    if code == tonic::Code::Ok {
        return Err("OK is not an abort".into());
    }
    Ok(code)
}

/// The canonical name of a code, `UNAVAILABLE`.
pub fn code_name(code: tonic::Code) -> String {
    let debug = format!("{code:?}");
    // `DeadlineExceeded` -> `DEADLINE_EXCEEDED`
    let mut out = String::new();
    for (i, ch) in debug.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

/// The gRPC code an HTTP error status stands for (the gateway's mapping read backwards).
fn code_for_status(status: u16) -> tonic::Code {
    match status {
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        409 => tonic::Code::Aborted,
        429 => tonic::Code::ResourceExhausted,
        499 => tonic::Code::Cancelled,
        501 => tonic::Code::Unimplemented,
        503 => tonic::Code::Unavailable,
        504 => tonic::Code::DeadlineExceeded,
        402..=498 => tonic::Code::FailedPrecondition,
        _ => tonic::Code::Internal,
    }
}

fn percent(field: &str, v: Option<f64>) -> Result<f64, String> {
    let p = v.unwrap_or(100.0);
    if !(0.0..=100.0).contains(&p) {
        return Err(format!("{field}: {p} is not a percentage from 0 to 100"));
    }
    Ok(p)
}

fn duration(field: &str, v: &str) -> Result<Duration, String> {
    crate::types::time::parse_duration(v).map_err(|e| format!("{field}: '{v}' {e}"))
}

impl FaultRules {
    /// Parses and validates a rules file; the error names the rule and field
    /// (`rule 2 (slow-authorize).abort: ...`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let top: FileTop = toml::from_str(text).map_err(|e| e.to_string())?;
        let max_delay = match &top.max_delay {
            Some(v) => duration("max_delay", v)?,
            None => DEFAULT_MAX_DELAY,
        };
        let mut rules = Vec::new();
        for (i, f) in top.rule.into_iter().enumerate() {
            let name = f.name.clone().unwrap_or_else(|| format!("rule-{}", i + 1));
            let field = |k: &str| format!("rule {} ({name}).{k}", i + 1);
            if let Some(m) = &f.method {
                let ok = m.split_once('/').is_some_and(|(s, meth)| {
                    !s.is_empty() && !meth.is_empty() && !meth.contains('/')
                });
                if !ok {
                    return Err(format!(
                        "{}: '{m}' is not package.Service/Method or package.Service/*",
                        field("method")
                    ));
                }
            }
            let route = match &f.route {
                None => None,
                Some(r) => {
                    let (verb, path) = r.trim().split_once(' ').ok_or_else(|| {
                        format!("{}: '{r}' is not '<METHOD> /path'", field("route"))
                    })?;
                    let verb = verb.to_ascii_uppercase();
                    if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&verb.as_str())
                        || !path.trim().starts_with('/')
                    {
                        return Err(format!(
                            "{}: '{r}' is not '<METHOD> /path' (e.g. POST /v1/orders)",
                            field("route")
                        ));
                    }
                    if f.service.is_some() || f.method.is_some() {
                        return Err(format!(
                            "{}: a route rule applies at the gateway; it takes no service or method",
                            field("route")
                        ));
                    }
                    Some(format!("{verb} {}", path.trim()))
                }
            };
            if f.abort_status.is_some() && route.is_none() {
                return Err(format!(
                    "{}: an HTTP status is for route rules (use abort with a gRPC code)",
                    field("abort_status")
                ));
            }
            let mut headers = Vec::new();
            for (k, v) in &f.headers {
                let h = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("{}: '{k}' is not a header name", field("headers")))?;
                if !h.as_str().starts_with(HEADER_PREFIX) || REQUEST_HEADERS.contains(&h.as_str()) {
                    return Err(format!(
                        "{}: '{k}' is not a selector of its own under {HEADER_PREFIX}* (e.g. {HEADER_PREFIX}tag): only those are kept from callers allowed to ask for faults",
                        field("headers")
                    ));
                }
                headers.push((h, v.clone()));
            }
            let delay = match &f.delay {
                Some(d) => Some(Delay {
                    fixed: duration(&field("delay"), d)?,
                    jitter: match &f.delay_jitter {
                        Some(j) => duration(&field("delay_jitter"), j)?,
                        None => Duration::ZERO,
                    },
                    percent: percent(&field("delay_percent"), f.delay_percent)?,
                }),
                None if f.delay_jitter.is_some() || f.delay_percent.is_some() => {
                    return Err(format!(
                        "{}: missing (jitter or percent given)",
                        field("delay")
                    ))
                }
                None => None,
            };
            let http_status = match f.abort_status {
                Some(st) if (400..=599).contains(&st) => Some(st),
                Some(st) => {
                    return Err(format!(
                        "{}: {st} is not an error status (400-599)",
                        field("abort_status")
                    ))
                }
                None => None,
            };
            let abort = match (&f.abort, http_status) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "{}: give a gRPC code or abort_status, not both",
                        field("abort")
                    ))
                }
                (Some(a), None) => Some(Abort {
                    code: parse_code(a).map_err(|e| format!("{}: {e}", field("abort")))?,
                    http_status: None,
                    percent: percent(&field("abort_percent"), f.abort_percent)?,
                }),
                (None, Some(st)) => Some(Abort {
                    code: code_for_status(st),
                    http_status: Some(st),
                    percent: percent(&field("abort_percent"), f.abort_percent)?,
                }),
                (None, None) if f.abort_percent.is_some() => {
                    return Err(format!("{}: missing (abort_percent given)", field("abort")))
                }
                (None, None) => None,
            };
            if delay.is_none() && abort.is_none() {
                return Err(format!(
                    "{}: a rule needs a delay or an abort",
                    field("delay")
                ));
            }
            rules.push(Rule {
                name,
                service: f.service,
                method: f.method,
                route,
                headers,
                delay,
                abort,
            });
        }
        Ok(Self { max_delay, rules })
    }
}

impl crate::transport::reload::Reloadable for FaultRules {
    const WHAT: &'static str = "fault rules";

    fn parse(text: &str) -> Result<Self, String> {
        FaultRules::parse(text)
    }
}

/// The faults to apply to one call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub delay: Option<Duration>,
    pub abort: Option<tonic::Code>,
    /// At the gateway: the HTTP status of the abort, when the rule names one.
    pub http_status: Option<u16>,
    /// The rule's name, or `header` for a per-request override.
    pub source: String,
}

impl Decision {
    /// The `x-ordermesh-fault` value: `delay=300ms;abort=UNAVAILABLE;rule=slow-authorize`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = self.delay {
            parts.push(format!("delay={}ms", d.as_millis()));
        }
        match (self.abort, self.http_status) {
            (_, Some(st)) => parts.push(format!("abort={st}")),
            (Some(c), None) => parts.push(format!("abort={}", code_name(c))),
            (None, None) => {}
        }
        parts.push(format!("rule={}", self.source));
        parts.join(";")
    }
}

fn roll(percent: f64) -> bool {
    percent >= 100.0 || rand::random::<f64>() * 100.0 < percent
}

/// What a request asks for by header (`None`: nothing, or a bad value, which is ignored with a
/// warning: a fault request must not fail the call it rides on).
fn header_override(headers: &HeaderMap, max_delay: Duration) -> Option<Decision> {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::trim);
    let delay = get(DELAY_HEADER).and_then(|v| match crate::types::time::parse_duration(v) {
        Ok(d) => Some(d.min(max_delay)),
        Err(e) => {
            tracing::warn!(header = DELAY_HEADER, value = v, error = %e, "fault header ignored");
            None
        }
    });
    let abort = get(ABORT_HEADER).and_then(|v| match parse_code(v) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(header = ABORT_HEADER, value = v, error = %e, "fault header ignored");
            None
        }
    });
    if delay.is_none() && abort.is_none() {
        return None;
    }
    let percent = get(PERCENT_HEADER)
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(100.0, |p| p.clamp(0.0, 100.0));
    roll(percent).then(|| Decision {
        delay,
        abort,
        http_status: None,
        source: "header".into(),
    })
}

/// Whether a request's fault headers are for this server (`service`, serving `method`).
fn targets_here(headers: &HeaderMap, service: &str, method: &str) -> bool {
    match headers.get(TARGET_HEADER).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(t) => {
            let t = t.trim();
            t == service || t == method
        }
    }
}

impl FaultRules {
    /// The faults for a call to `method` (`package.Service/Method`) served by `service`.
    pub fn decide(&self, service: &str, method: &str, headers: &HeaderMap) -> Option<Decision> {
        let asked = headers.contains_key(DELAY_HEADER) || headers.contains_key(ABORT_HEADER);
        if asked && targets_here(headers, service, method) {
            return header_override(headers, self.max_delay);
        }
        let rule = self
            .rules
            .iter()
            .find(|r| r.matches(service, method, headers))?;
        rule.roll()
    }

    /// The faults for a REST call to `route` (`POST /v1/orders`) at the gateway: route rules
    /// only (header overrides are for the services, which the gateway passes them on to).
    pub fn decide_route(&self, route: &str, headers: &HeaderMap) -> Option<Decision> {
        let rule = self.rules.iter().find(|r| {
            r.route
                .as_deref()
                .is_some_and(|want| want.eq_ignore_ascii_case(route))
                && r.matches_headers(headers)
        })?;
        rule.roll()
    }
}

impl Rule {
    /// Draws this rule's faults for one call.
    fn roll(&self) -> Option<Decision> {
        let delay = self.delay.as_ref().filter(|d| roll(d.percent)).map(|d| {
            let jitter = if d.jitter.is_zero() {
                Duration::ZERO
            } else {
                d.jitter.mul_f64(rand::random::<f64>())
            };
            d.fixed + jitter
        });
        let abort = self.abort.as_ref().filter(|a| roll(a.percent));
        (delay.is_some() || abort.is_some()).then(|| Decision {
            delay,
            abort: abort.map(|a| a.code),
            http_status: abort.and_then(|a| a.http_status),
            source: self.name.clone(),
        })
    }
}

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
    /// changes, or on with header overrides only. Inside a Tokio runtime.
    /// Outside a runtime (a configuration check) the file is read once.
    pub fn start(&self) -> Result<Faults, String> {
        match (self.on, &self.file) {
            (false, _) => Ok(Faults::off()),
            (true, Some(path)) if tokio::runtime::Handle::try_current().is_ok() => {
                Faults::watch_file(path.clone(), RELOAD_EVERY)
            }
            (true, Some(path)) => crate::transport::reload::load(path).map(Faults::on),
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

    /// On, with the rules of `path`, re-read every `every`. Inside a Tokio runtime.
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

    fn current(&self) -> Option<Arc<FaultRules>> {
        self.rules.as_ref().map(|r| r.borrow().clone())
    }
}

tokio::task_local! {
    /// Fault headers to pass on to the calls this task makes (a target not reached yet).
    static PASS_ON: Arc<Vec<(HeaderName, HeaderValue)>>;
}

/// `fut`, to be spawned by the task handling a call, with the fault headers that call passes
/// on (the saga an order's placement starts makes its calls in a task of its own).
pub fn carry<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
    // Read now, in the handling task; the returned future runs in another one.
    let headers = PASS_ON.try_with(Arc::clone).ok();
    async move {
        match headers {
            Some(h) => PASS_ON.scope(h, fut).await,
            None => fut.await,
        }
    }
}

/// The fault headers of `headers`, when they target a server further down.
fn passed_on(headers: &HeaderMap) -> Option<Arc<Vec<(HeaderName, HeaderValue)>>> {
    headers.get(TARGET_HEADER)?;
    // All of them, rule selectors (`x-ordermesh-fault-tag`) included, so a rule on a service
    // further down can select on them.
    let found: Vec<(HeaderName, HeaderValue)> = headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with(HEADER_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some(Arc::new(found))
}

/// Services whose calls are never faulted: probes and tooling must see the truth.
fn exempt(method: &str) -> bool {
    method.starts_with("grpc.health.") || method.starts_with("grpc.reflection.")
}

// === Server layer ===

/// Applies faults to the calls a server receives. Goes inside the deadline layer.
#[derive(Clone, Debug)]
pub struct ServerFaultLayer {
    service: &'static str,
    faults: Faults,
}

impl ServerFaultLayer {
    pub fn new(service: &'static str, faults: Faults) -> Self {
        Self { service, faults }
    }
}

impl<S> Layer<S> for ServerFaultLayer {
    type Service = ServerFaults<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerFaults {
            inner,
            service: self.service,
            faults: self.faults.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServerFaults<S> {
    inner: S,
    service: &'static str,
    faults: Faults,
}

impl<S, B> Service<http::Request<B>> for ServerFaults<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(rules) = self.faults.current() else {
            return Box::pin(self.inner.call(req));
        };
        let method = req.uri().path().trim_start_matches('/').to_string();
        if exempt(&method) {
            return Box::pin(self.inner.call(req));
        }
        let decision = rules.decide(self.service, &method, req.headers());
        let pass_on = (!targets_here(req.headers(), self.service, &method))
            .then(|| passed_on(req.headers()))
            .flatten();
        // The inner service was made ready for this call: take it, leave a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let Some(decision) = decision else {
                return match pass_on {
                    Some(h) => PASS_ON.scope(h, inner.call(req)).await,
                    None => inner.call(req).await,
                };
            };
            let label = |kind: &str| {
                crate::telemetry::metrics::FAULTS_INJECTED
                    .with_label_values(&[kind, &method])
                    .inc()
            };
            let applied = HeaderValue::from_str(&decision.describe()).ok();
            if let Some(d) = decision.delay {
                label("delay");
                tokio::time::sleep(d).await;
            }
            if let Some(code) = decision.abort {
                label("abort");
                let mut resp =
                    tonic::Status::new(code, format!("fault injected ({})", decision.describe()))
                        .into_http();
                if let Some(v) = applied {
                    resp.headers_mut().insert(APPLIED_HEADER, v);
                }
                return Ok(resp);
            }
            let mut resp = match pass_on {
                Some(h) => PASS_ON.scope(h, inner.call(req)).await?,
                None => inner.call(req).await?,
            };
            if let Some(v) = applied {
                resp.headers_mut().insert(APPLIED_HEADER, v);
            }
            Ok(resp)
        })
    }
}

// === Client layer ===

/// Adds the fault headers the call being handled passes on to each outgoing call.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassOnLayer;

impl<S> Layer<S> for PassOnLayer {
    type Service = PassOn<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PassOn { inner }
    }
}

#[derive(Clone, Debug)]
pub struct PassOn<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for PassOn<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let _ = PASS_ON.try_with(|headers| {
            for (k, v) in headers.iter() {
                req.headers_mut().insert(k.clone(), v.clone());
            }
        });
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const FILE: &str = r#"
        max_delay = "2s"
        [[rule]]
        name = "slow-authorize"
        service = "payment"
        method = "ordermesh.payment.v1.PaymentService/AuthorizePayment"
        delay = "300ms"
        delay_jitter = "100ms"
        [[rule]]
        name = "inventory-down-for-chaos"
        method = "ordermesh.inventory.v1.InventoryService/*"
        headers = { x-ordermesh-fault-tag = "chaos" }
        abort = "unavailable"
        abort_percent = 25
    "#;

    #[test]
    fn rules_match_by_service_method_and_headers() {
        let r = FaultRules::parse(FILE).unwrap();
        assert_eq!(r.max_delay, Duration::from_secs(2));
        let none = HeaderMap::new();
        let d = r
            .decide(
                "payment",
                "ordermesh.payment.v1.PaymentService/AuthorizePayment",
                &none,
            )
            .unwrap();
        let delay = d.delay.unwrap();
        assert!(delay >= Duration::from_millis(300) && delay < Duration::from_millis(400));
        assert_eq!(d.abort, None);
        assert!(
            d.describe().ends_with(";rule=slow-authorize"),
            "{}",
            d.describe()
        );
        // Another service serving the same method name, another method: no fault.
        assert!(r
            .decide(
                "order",
                "ordermesh.payment.v1.PaymentService/AuthorizePayment",
                &none
            )
            .is_none());
        assert!(r
            .decide(
                "payment",
                "ordermesh.payment.v1.PaymentService/CapturePayment",
                &none
            )
            .is_none());
        // The wildcard rule wants its header.
        let m = "ordermesh.inventory.v1.InventoryService/ReserveStock";
        assert!(r.decide("inventory", m, &none).is_none());
        let chaos = headers(&[("x-ordermesh-fault-tag", "chaos")]);
        let aborted = (0..4000)
            .filter(|_| r.decide("inventory", m, &chaos).is_some())
            .count();
        let share = aborted as f64 / 4000.0;
        assert!((0.22..0.28).contains(&share), "abort share {share}");
    }

    #[test]
    fn header_overrides_are_capped_and_targeted() {
        let r = FaultRules::parse(FILE).unwrap();
        let m = "ordermesh.order.v1.OrderService/GetOrder";
        let h = headers(&[(DELAY_HEADER, "1m"), (ABORT_HEADER, "RESOURCE_EXHAUSTED")]);
        let d = r.decide("order", m, &h).unwrap();
        assert_eq!(d.delay, Some(Duration::from_secs(2)), "capped at max_delay");
        assert_eq!(d.abort, Some(tonic::Code::ResourceExhausted));
        assert_eq!(d.source, "header");
        // Targeted elsewhere: nothing here, and the headers are passed on.
        let t = headers(&[(ABORT_HEADER, "UNAVAILABLE"), (TARGET_HEADER, "payment")]);
        assert!(r.decide("order", m, &t).is_none());
        assert_eq!(passed_on(&t).unwrap().len(), 2);
        assert!(r
            .decide("payment", "ordermesh.payment.v1.PaymentService/X", &t)
            .is_some());
        // A percentage: about that share of calls.
        let p = headers(&[(ABORT_HEADER, "UNAVAILABLE"), (PERCENT_HEADER, "10")]);
        let n = (0..5000)
            .filter(|_| r.decide("order", m, &p).is_some())
            .count();
        assert!((400..600).contains(&n), "{n} of 5000 at 10%");
        // OK and nonsense are not aborts.
        for bad in ["OK", "0", "SOMETIMES"] {
            let h = headers(&[(ABORT_HEADER, bad)]);
            assert!(r.decide("order", m, &h).is_none(), "{bad}");
        }
    }

    #[test]
    fn bad_rules_name_the_rule_and_field() {
        for (text, want) in [
            (
                "[[rule]]\nname = \"x\"\nabort = \"SOMETIMES\"",
                "rule 1 (x).abort: 'SOMETIMES'",
            ),
            (
                "[[rule]]\nabort = \"OK\"",
                "rule 1 (rule-1).abort: OK is not an abort",
            ),
            (
                "[[rule]]\nabort = \"UNAVAILABLE\"\nabort_percent = 150",
                "rule 1 (rule-1).abort_percent: 150",
            ),
            (
                "[[rule]]\ndelay = \"soon\"",
                "rule 1 (rule-1).delay: 'soon'",
            ),
            (
                "[[rule]]\nname = \"n\"",
                "rule 1 (n).delay: a rule needs a delay or an abort",
            ),
            (
                "[[rule]]\nmethod = \"Check\"\ndelay = \"1s\"",
                "rule 1 (rule-1).method: 'Check'",
            ),
            ("max_delay = \"forever\"", "max_delay: 'forever'"),
            (
                "[[rule]]\nheaders = { x-test-run = \"1\" }\ndelay = \"1s\"",
                "rule 1 (rule-1).headers: 'x-test-run' is not a selector",
            ),
        ] {
            let e = FaultRules::parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        let e = FaultRules::parse("[[rule]]\ndelay = \"1s\"\nprecent = 5").unwrap_err();
        assert!(e.contains("precent"), "{e}");
    }

    #[test]
    fn route_rules_apply_at_the_gateway_only() {
        let r = FaultRules::parse(
            "[[rule]]\nname = \"orders-503\"\nroute = \"post /v1/orders\"\nabort_status = 503\n",
        )
        .unwrap();
        let none = HeaderMap::new();
        let d = r.decide_route("POST /v1/orders", &none).unwrap();
        assert_eq!(
            (d.abort, d.http_status),
            (Some(tonic::Code::Unavailable), Some(503))
        );
        assert_eq!(d.describe(), "abort=503;rule=orders-503");
        assert!(r.decide_route("GET /v1/orders/{order_id}", &none).is_none());
        // A server never applies a route rule, whatever its method.
        assert!(r
            .decide("order", "ordermesh.order.v1.OrderService/PlaceOrder", &none)
            .is_none());
        for (text, want) in [
            (
                "[[rule]]\nroute = \"/v1/orders\"\nabort = \"UNAVAILABLE\"",
                "rule 1 (rule-1).route: '/v1/orders'",
            ),
            (
                "[[rule]]\nroute = \"POST /v1/orders\"\nservice = \"order\"\nabort = \"UNAVAILABLE\"",
                "rule 1 (rule-1).route: a route rule applies at the gateway",
            ),
            (
                "[[rule]]\nroute = \"POST /v1/orders\"\nabort_status = 200",
                "rule 1 (rule-1).abort_status: 200 is not an error status",
            ),
            (
                "[[rule]]\nmethod = \"a.B/C\"\nabort_status = 503",
                "rule 1 (rule-1).abort_status: an HTTP status is for route rules",
            ),
            (
                "[[rule]]\nroute = \"POST /v1/orders\"\nabort = \"UNAVAILABLE\"\nabort_status = 503",
                "rule 1 (rule-1).abort: give a gRPC code or abort_status, not both",
            ),
        ] {
            let e = FaultRules::parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn code_names_round_trip() {
        for n in 1..=16 {
            let c = tonic::Code::from(n);
            assert_eq!(parse_code(&code_name(c)).unwrap(), c);
        }
        assert_eq!(
            code_name(tonic::Code::DeadlineExceeded),
            "DEADLINE_EXCEEDED"
        );
    }
}
