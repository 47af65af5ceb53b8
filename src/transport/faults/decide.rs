//! The faults for one call: by the first matching rule, or by the request's own headers.

use std::time::Duration;

use http::HeaderMap;

use super::rules::{parse_code, FaultRules, Rule};
use super::{ABORT_HEADER, DELAY_HEADER, PERCENT_HEADER, TARGET_HEADER};
use crate::telemetry::rpc::code_name;

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
pub(super) fn targets_here(headers: &HeaderMap, service: &str, method: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::super::layer::passed_on;
    use super::*;
    use http::HeaderName;

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
}
