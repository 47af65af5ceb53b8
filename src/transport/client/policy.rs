//! Traffic policy: how an upstream's calls are steered, from a TOML file (`TRAFFIC_POLICY`)
//! that is re-read while the process runs.
//!
//! ```toml
//! [upstream.payment]
//! backends = { payment = 90, payment-canary = 10 }  # weighted split, each backend its own DNS name
//! zones = ["zone-a", "zone-b"]          # endpoints found per zone: _grpc._tcp.<backend>-<zone>.<MESH_ZONE>
//! zone_rule = "priority"                # or "weighted"
//! zone_min_healthy_percent = 50         # priority: stay local while this share of local endpoints is healthy
//! hash_header = "x-customer-id"         # consistent-hash affinity on this request header
//! slow_start = "30s"                    # ramp a new or re-admitted endpoint's share over this window
//! slow_start_min_percent = 10
//! ```
//!
//! A reload may change weights, the zone rule, the hash header and slow start; the backends
//! and zones decide which DNS names are followed, so changing them needs a restart. A bad
//! file (at start-up or on reload) is refused with the field named; a refused reload keeps
//! the policy in force (`transport::reload`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

/// The header that pins a call to one backend of a split (for testing a canary directly).
pub const PIN_HEADER: &str = "x-ordermesh-backend";

/// How calls choose between the caller's zone and the others.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum ZoneRule {
    /// All calls stay in the caller's zone while at least `min_healthy_percent` of its
    /// endpoints are healthy (and one is); otherwise all go to the other zones (Istio's
    /// failover priority).
    Priority { min_healthy_percent: u32 },
    /// The caller's zone takes `min(1, 1.4 x healthy share)` of the calls and the rest spill
    /// over, so a zone losing endpoints sheds load gradually (Envoy's locality weighting with
    /// its default overprovisioning factor).
    Weighted,
}

/// Ramp for new or re-admitted endpoints.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct SlowStart {
    #[serde(rename = "window_ms", serialize_with = "millis")]
    pub window: Duration,
    /// The weight an endpoint starts with, in percent of a full one.
    pub min_percent: u32,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

fn weights<S: serde::Serializer>(backends: &[(String, u32)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(backends.len()))?;
    for (name, weight) in backends {
        map.serialize_entry(name, weight)?;
    }
    map.end()
}

impl SlowStart {
    /// An endpoint's weight (0..=1) `age` after it was admitted: linear from the minimum.
    pub fn weight(&self, age: Duration) -> f64 {
        let min = f64::from(self.min_percent) / 100.0;
        if self.window.is_zero() {
            return 1.0;
        }
        let f = (age.as_secs_f64() / self.window.as_secs_f64()).min(1.0);
        min.max(f)
    }
}

/// The policy of one upstream.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RoutePolicy {
    /// Backends and their weights, in name order; empty: the upstream is its one backend.
    #[serde(serialize_with = "weights")]
    pub backends: Vec<(String, u32)>,
    /// Zones whose endpoints are followed separately; empty: no zone awareness.
    pub zones: Vec<String>,
    pub zone_rule: ZoneRule,
    /// The request header whose value picks the endpoint on a hash ring.
    pub hash_header: Option<String>,
    pub slow_start: Option<SlowStart>,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        Self {
            backends: Vec::new(),
            zones: Vec::new(),
            zone_rule: ZoneRule::Priority {
                min_healthy_percent: 50,
            },
            hash_header: None,
            slow_start: None,
        }
    }
}

impl RoutePolicy {
    /// The backend names calls are split over (`upstream` itself when none are listed).
    pub fn backend_names(&self, upstream: &str) -> Vec<String> {
        if self.backends.is_empty() {
            vec![upstream.to_string()]
        } else {
            self.backends.iter().map(|(n, _)| n.clone()).collect()
        }
    }
}

/// Every upstream's policy, keyed by the upstream's name (`payment`, `inventory`...).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct TrafficPolicy {
    pub upstream: BTreeMap<String, RoutePolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTop {
    #[serde(default)]
    upstream: BTreeMap<String, FileRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    #[serde(default)]
    backends: BTreeMap<String, i64>,
    #[serde(default)]
    zones: Vec<String>,
    zone_rule: Option<String>,
    zone_min_healthy_percent: Option<i64>,
    hash_header: Option<String>,
    slow_start: Option<String>,
    slow_start_min_percent: Option<i64>,
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn percent(field: &str, v: i64) -> Result<u32, String> {
    u32::try_from(v)
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| format!("{field}: {v} is not a percentage from 0 to 100"))
}

impl TrafficPolicy {
    /// Parses and validates a policy file's text; the error names the field
    /// (`upstream.payment.backends: ...`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let top: FileTop = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut upstream = BTreeMap::new();
        for (name, f) in top.upstream {
            let field = |k: &str| format!("upstream.{name}.{k}");
            let mut p = RoutePolicy::default();
            let mut sum = 0u64;
            for (backend, w) in &f.backends {
                if !dns_label(backend) {
                    return Err(format!(
                        "{}: '{backend}' is not a DNS label (a-z, 0-9, '-')",
                        field("backends")
                    ));
                }
                let w = u32::try_from(*w)
                    .ok()
                    .filter(|w| *w <= 10_000)
                    .ok_or_else(|| {
                        format!(
                            "{}: {backend} = {w} is not a weight from 0 to 10000",
                            field("backends")
                        )
                    })?;
                sum += u64::from(w);
                p.backends.push((backend.clone(), w));
            }
            if !f.backends.is_empty() && sum == 0 {
                return Err(format!(
                    "{}: the weights sum to 0, so no call could be sent",
                    field("backends")
                ));
            }
            for z in &f.zones {
                if !dns_label(z) {
                    return Err(format!(
                        "{}: '{z}' is not a DNS label (a-z, 0-9, '-')",
                        field("zones")
                    ));
                }
                if p.zones.contains(z) {
                    return Err(format!("{}: '{z}' is listed twice", field("zones")));
                }
                p.zones.push(z.clone());
            }
            let min_healthy = match f.zone_min_healthy_percent {
                Some(v) => percent(&field("zone_min_healthy_percent"), v)?,
                None => 50,
            };
            p.zone_rule = match f.zone_rule.as_deref() {
                None | Some("priority") => ZoneRule::Priority {
                    min_healthy_percent: min_healthy,
                },
                Some("weighted") => ZoneRule::Weighted,
                Some(other) => {
                    return Err(format!(
                        "{}: unknown rule '{other}' (use priority or weighted)",
                        field("zone_rule")
                    ))
                }
            };
            if f.zone_rule.is_some() && p.zones.is_empty() {
                return Err(format!(
                    "{}: set without zones to route between",
                    field("zone_rule")
                ));
            }
            if let Some(h) = &f.hash_header {
                let h = h.trim();
                if h.is_empty() {
                    return Err(format!(
                        "{}: empty (name the request header whose value is hashed)",
                        field("hash_header")
                    ));
                }
                let name = http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("{}: '{h}' is not a header name", field("hash_header")))?;
                p.hash_header = Some(name.as_str().to_string());
            }
            let min_percent = match f.slow_start_min_percent {
                Some(v) => percent(&field("slow_start_min_percent"), v)?,
                None => 10,
            };
            if let Some(w) = &f.slow_start {
                let window = crate::types::time::parse_duration(w)
                    .map_err(|e| format!("{}: '{w}' {e}", field("slow_start")))?;
                p.slow_start = Some(SlowStart {
                    window,
                    min_percent,
                });
            } else if f.slow_start_min_percent.is_some() {
                return Err(format!(
                    "{}: set without a slow_start window",
                    field("slow_start_min_percent")
                ));
            }
            upstream.insert(name, p);
        }
        Ok(Self { upstream })
    }

    /// Reads and parses a policy file; the error names the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        crate::transport::reload::load(path)
    }

    /// Whether `next` may replace `self` while running: the same upstreams with the same
    /// backends and zones (those decide which DNS names are followed).
    pub fn reloadable_as(&self, next: &Self) -> Result<(), String> {
        let names = |p: &Self| p.upstream.keys().cloned().collect::<Vec<_>>();
        if names(self) != names(next) {
            return Err(format!(
                "the upstreams changed ({:?} -> {:?}); restart to apply",
                names(self),
                names(next)
            ));
        }
        for (name, old) in &self.upstream {
            let new = &next.upstream[name];
            let backends = |p: &RoutePolicy| p.backend_names(name);
            if backends(old) != backends(new) {
                return Err(format!(
                    "upstream.{name}.backends: the backends changed ({:?} -> {:?}); only weights change without a restart",
                    backends(old),
                    backends(new)
                ));
            }
            if old.zones != new.zones {
                return Err(format!(
                    "upstream.{name}.zones: the zones changed ({:?} -> {:?}); restart to apply",
                    old.zones, new.zones
                ));
            }
        }
        Ok(())
    }
}

/// The policy in force, shared by every upstream of a process and replaced on reload.
#[derive(Clone, Debug)]
pub struct PolicyHandle {
    rx: watch::Receiver<Arc<TrafficPolicy>>,
}

impl PolicyHandle {
    /// A policy that never changes (tests, or no file).
    pub fn fixed(policy: TrafficPolicy) -> Self {
        Self {
            rx: crate::transport::reload::fixed(policy),
        }
    }

    /// The policy now.
    pub fn current(&self) -> Arc<TrafficPolicy> {
        self.rx.borrow().clone()
    }

    /// One upstream's policy now, if it has one.
    pub fn route(&self, upstream: &str) -> Option<RoutePolicy> {
        self.rx.borrow().upstream.get(upstream).cloned()
    }

    /// Loads `path` now (an error stops start-up) and re-reads it every `every`, applying it
    /// when its text changed (`transport::reload`; read once outside a Tokio runtime).
    pub fn watch_file(path: PathBuf, every: Duration) -> Result<Self, String> {
        Ok(Self {
            rx: crate::transport::reload::watch_file(path, every)?,
        })
    }
}

impl crate::transport::reload::Reloadable for TrafficPolicy {
    const WHAT: &'static str = "traffic policy";

    fn parse(text: &str) -> Result<Self, String> {
        TrafficPolicy::parse(text)
    }

    fn reloadable_as(&self, next: &Self) -> Result<(), String> {
        TrafficPolicy::reloadable_as(self, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_policy_parses() {
        let p = TrafficPolicy::parse(
            r#"
            [upstream.payment]
            backends = { payment = 90, payment-canary = 10 }
            zones = ["zone-a", "zone-b"]
            zone_rule = "weighted"
            hash_header = "X-Customer-Id"
            slow_start = "30s"
            slow_start_min_percent = 5
            [upstream.inventory]
            zones = ["a"]
            "#,
        )
        .unwrap();
        let pay = &p.upstream["payment"];
        assert_eq!(
            pay.backends,
            vec![("payment".into(), 90), ("payment-canary".into(), 10)]
        );
        assert_eq!(pay.zone_rule, ZoneRule::Weighted);
        assert_eq!(pay.hash_header.as_deref(), Some("x-customer-id"));
        assert_eq!(
            pay.slow_start,
            Some(SlowStart {
                window: Duration::from_secs(30),
                min_percent: 5
            })
        );
        assert_eq!(
            p.upstream["inventory"].zone_rule,
            ZoneRule::Priority {
                min_healthy_percent: 50
            }
        );
        assert_eq!(
            p.upstream["inventory"].backend_names("inventory"),
            vec!["inventory"]
        );
    }

    #[test]
    fn bad_policies_name_the_field() {
        for (text, field) in [
            (
                "[upstream.payment]\nbackends = { payment = 0, canary = 0 }",
                "upstream.payment.backends: the weights sum to 0",
            ),
            (
                "[upstream.payment]\nbackends = { payment = -1 }",
                "upstream.payment.backends:",
            ),
            (
                "[upstream.payment]\nbackends = { Pay_ment = 1 }",
                "upstream.payment.backends:",
            ),
            (
                "[upstream.payment]\nzones = [\"a\"]\nzone_rule = \"nearest\"",
                "upstream.payment.zone_rule: unknown rule 'nearest'",
            ),
            (
                "[upstream.payment]\nzone_rule = \"weighted\"",
                "upstream.payment.zone_rule:",
            ),
            (
                "[upstream.payment]\nzones = [\"a\", \"a\"]",
                "upstream.payment.zones:",
            ),
            (
                "[upstream.payment]\nzones = [\"a\"]\nzone_min_healthy_percent = 101",
                "upstream.payment.zone_min_healthy_percent:",
            ),
            (
                "[upstream.payment]\nhash_header = \" \"",
                "upstream.payment.hash_header: empty",
            ),
            (
                "[upstream.payment]\nhash_header = \"a b\"",
                "upstream.payment.hash_header:",
            ),
            (
                "[upstream.payment]\nslow_start = \"soon\"",
                "upstream.payment.slow_start: 'soon'",
            ),
            (
                "[upstream.payment]\nslow_start_min_percent = 5",
                "upstream.payment.slow_start_min_percent:",
            ),
        ] {
            let e = TrafficPolicy::parse(text).unwrap_err();
            assert!(e.starts_with(field), "{text:?}: {e}");
        }
        // Unknown keys are refused by name rather than ignored.
        let e = TrafficPolicy::parse("[upstream.payment]\nweights = {}").unwrap_err();
        assert!(e.contains("weights"), "{e}");
    }

    #[test]
    fn a_reload_may_change_weights_but_not_backends_or_zones() {
        let p = |t: &str| TrafficPolicy::parse(t).unwrap();
        let old =
            p("[upstream.payment]\nbackends = { payment = 90, canary = 10 }\nzones = [\"a\"]");
        let weights = p("[upstream.payment]\nbackends = { payment = 50, canary = 50 }\nzones = [\"a\"]\nslow_start = \"5s\"");
        assert!(old.reloadable_as(&weights).is_ok());
        let backends =
            p("[upstream.payment]\nbackends = { payment = 90, beta = 10 }\nzones = [\"a\"]");
        let e = old.reloadable_as(&backends).unwrap_err();
        assert!(e.starts_with("upstream.payment.backends:"), "{e}");
        let zones = p("[upstream.payment]\nbackends = { payment = 90, canary = 10 }");
        let e = old.reloadable_as(&zones).unwrap_err();
        assert!(e.starts_with("upstream.payment.zones:"), "{e}");
    }

    #[test]
    fn slow_start_ramps_linearly_from_its_minimum() {
        let s = SlowStart {
            window: Duration::from_secs(10),
            min_percent: 10,
        };
        assert_eq!(s.weight(Duration::ZERO), 0.1);
        assert!((s.weight(Duration::from_secs(5)) - 0.5).abs() < 1e-9);
        assert_eq!(s.weight(Duration::from_secs(60)), 1.0);
    }

    #[tokio::test]
    async fn the_file_is_reloaded_and_a_bad_reload_keeps_the_old_policy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("traffic.toml");
        std::fs::write(
            &path,
            "[upstream.payment]\nbackends = { payment = 90, canary = 10 }\n",
        )
        .unwrap();
        let h = PolicyHandle::watch_file(path.clone(), Duration::from_millis(20)).unwrap();
        let weights = |h: &PolicyHandle| h.route("payment").unwrap().backends;
        let payment = |h: &PolicyHandle| weights(h).iter().find(|(n, _)| n == "payment").unwrap().1;
        assert_eq!(payment(&h), 90);
        std::fs::write(
            &path,
            "[upstream.payment]\nbackends = { payment = 50, canary = 50 }\n",
        )
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while payment(&h) != 50 {
            assert!(
                std::time::Instant::now() < deadline,
                "the new weights were not applied"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A bad file, then one that changes the backends: each seen and refused (counted), and
        // 50/50 stays.
        let refused = || {
            crate::telemetry::metrics::SETTINGS_RELOADS
                .with_label_values(&["traffic policy", "refused"])
                .get()
        };
        for text in [
            "[upstream.payment]\nbackends = { payment = 0, canary = 0 }\n",
            "[upstream.payment]\nbackends = { payment = 1, beta = 1 }\n",
        ] {
            let before = refused();
            std::fs::write(&path, text).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while refused() == before {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{text:?} was not refused"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert_eq!(
            weights(&h),
            vec![("canary".into(), 50), ("payment".into(), 50)]
        );
    }
}
