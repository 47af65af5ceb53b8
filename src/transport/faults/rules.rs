//! Fault rules: the file's format and checks, and the decision for one call (by rule or by
//! request header).

use std::time::Duration;

use http::{HeaderMap, HeaderName};
use serde::Deserialize;

use super::{DEFAULT_MAX_DELAY, HEADER_PREFIX, REQUEST_HEADERS};
use crate::telemetry::rpc::code_name;

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
    pub(super) fn matches_headers(&self, headers: &HeaderMap) -> bool {
        self.headers
            .iter()
            .all(|(k, v)| headers.get(k).is_some_and(|h| h.as_bytes() == v.as_bytes()))
    }

    pub(super) fn matches(&self, service: &str, method: &str, headers: &HeaderMap) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn code_names_round_trip() {
        for n in 1..=16 {
            let c = tonic::Code::from(n);
            assert_eq!(parse_code(code_name(c)).unwrap(), c);
        }
        assert_eq!(
            code_name(tonic::Code::DeadlineExceeded),
            "DEADLINE_EXCEEDED"
        );
    }
}
