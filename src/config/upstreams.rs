//! How a process finds the services it calls, one rule for every caller (the order service's
//! saga participants and the gateway's upstreams alike):
//! - `<SERVICE>_URL` (`http://host:port`) when set, for that service alone;
//! - otherwise SRV `_grpc._tcp.<service>.<MESH_ZONE>` through the `MESH_DNS` nameserver
//!   (`address:port`, or `system` for the resolvers of `/etc/resolv.conf`);
//! - otherwise the service is not configured, and the error names its variable.
//!
//! Calls go over mTLS with the caller's identity unless it runs in plaintext, and each
//! upstream's client stack is tuned by `<SERVICE>_BALANCER`, `<SERVICE>_TIMEOUT`,
//! `<SERVICE>_RETRY_ATTEMPTS` and `<SERVICE>_BREAKER` (e.g. `PAYMENT_TIMEOUT=2s`).
//!
//! `TRAFFIC_POLICY` names a traffic policy file (weighted splits, zones, hash affinity, slow
//! start; see `transport::client::policy`), re-read every `TRAFFIC_POLICY_RELOAD` (default
//! 2s); `TOPOLOGY_ZONE` is the caller's own zone (on Kubernetes, from the Downward API).

use super::{ConfigError, EnvReads};
use crate::transport::client::{PolicyHandle, Routing, Upstream};
use crate::transport::dns::{Lookup, Resolver, Target};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::transport::tls::MeshIdentity;

/// The zone the mesh's services are named in when `MESH_ZONE` is not set.
pub const DEFAULT_ZONE: &str = "mesh.local.";

/// Where upstreams are looked up: `MESH_DNS` and `MESH_ZONE` as read.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub mesh_dns: Option<String>,
    pub zone: Option<String>,
}

impl Discovery {
    /// `MESH_DNS` and `MESH_ZONE` from `env` (blank counts as unset).
    pub fn from_env(env: &EnvReads) -> Self {
        Self {
            mesh_dns: env.get("MESH_DNS"),
            zone: env.get("MESH_ZONE"),
        }
    }
}

/// The nameserver `MESH_DNS` names: an `address:port`, or `None` for `system` (the resolvers
/// of `/etc/resolv.conf`).
pub fn mesh_dns_nameserver(value: &str) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    crate::transport::dns::parse_nameserver(value).map_err(|m| ConfigError::invalid("MESH_DNS", m))
}

/// One client stack setting per service in `services`, in that order, by the rule above.
pub fn upstreams(
    services: &[&str],
    discovery: &Discovery,
    identity: Option<&Arc<MeshIdentity>>,
    env: &EnvReads,
) -> Result<Vec<Upstream>, ConfigError> {
    let resolver = match discovery.mesh_dns.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(ns) => Some(
            Resolver::new(mesh_dns_nameserver(ns)?)
                .map_err(|e| ConfigError::invalid("MESH_DNS", e))?,
        ),
    };
    let zone = discovery.zone.as_deref().unwrap_or(DEFAULT_ZONE);
    let routing = traffic_policy(services, env)?;
    services
        .iter()
        .map(|svc| {
            let var = format!("{}_URL", svc.to_uppercase());
            let upstream = match (env.get(&var), &resolver) {
                (Some(url), _) => Upstream::new(url),
                (None, Some(resolver)) => Upstream::dns(
                    svc,
                    resolver.clone(),
                    Target {
                        name: format!("{svc}.{}", zone.trim_start_matches('.')),
                        lookup: Lookup::Srv,
                    },
                ),
                (None, None) => {
                    return Err(ConfigError::Invalid {
                        var: var.clone(),
                        message: "not set (set every <SERVICE>_URL, or MESH_DNS)".into(),
                    })
                }
            };
            let upstream = match identity {
                Some(id) => upstream.mesh(id.clone(), svc),
                None => upstream,
            };
            let upstream = match &routing {
                Some(r) if r.policy.route(svc).is_some() => {
                    if env.get(&var).is_some() {
                        return Err(ConfigError::invalid(
                            "TRAFFIC_POLICY",
                            format!("upstream.{svc}: {var} is set, so {svc} is not found through DNS and its traffic policy cannot apply (unset {var} or drop the policy)"),
                        ));
                    }
                    upstream.routing(Some(r.clone()))
                }
                _ => upstream,
            };
            upstream
                .configure(&svc.to_uppercase(), |k| env.get(k))
                .map_err(ConfigError::from)
        })
        .collect()
}

/// The traffic policy of `TRAFFIC_POLICY`, followed as it changes (inside a runtime), and the
/// caller's zone; recorded for `--check-config` as what applies to `services`.
fn traffic_policy(services: &[&str], env: &EnvReads) -> Result<Option<Routing>, ConfigError> {
    let local_zone = env.get("TOPOLOGY_ZONE").map(|z| z.trim().to_string());
    let every = match env.get("TRAFFIC_POLICY_RELOAD") {
        None => Duration::from_secs(2),
        Some(v) => crate::types::time::parse_duration(&v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                ConfigError::invalid(
                    "TRAFFIC_POLICY_RELOAD",
                    format!("'{v}' is not a positive duration (e.g. 2s)"),
                )
            })?,
    };
    let Some(path) = env.get("TRAFFIC_POLICY") else {
        return Ok(None);
    };
    let path = PathBuf::from(path.trim());
    let policy = PolicyHandle::watch_file(path.clone(), every)
        .map_err(|e| ConfigError::invalid("TRAFFIC_POLICY", e))?;
    let current = policy.current();
    let applies: std::collections::BTreeMap<&String, &crate::transport::client::RoutePolicy> =
        current
            .upstream
            .iter()
            .filter(|(name, _)| services.contains(&name.as_str()))
            .collect();
    env.resolved(
        "traffic_policy",
        serde_json::json!({
            "file": path.display().to_string(),
            "reload_every_ms": every.as_millis() as u64,
            "local_zone": local_zone,
            "upstream": applies,
        }),
    );
    Ok(Some(Routing { policy, local_zone }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_dns_is_an_address_or_the_system_resolvers() {
        assert_eq!(mesh_dns_nameserver("system").unwrap(), None);
        assert_eq!(
            mesh_dns_nameserver("127.0.0.1:5354").unwrap(),
            Some("127.0.0.1:5354".parse().unwrap())
        );
        let e = mesh_dns_nameserver("kube-dns").unwrap_err().to_string();
        assert!(e.starts_with("MESH_DNS:"), "{e}");
    }

    #[tokio::test]
    async fn a_url_wins_for_its_service_and_a_missing_one_is_named() {
        let env = EnvReads::default();
        let none = Discovery::default();
        // Nothing set at all: the first service's variable is named.
        let e = upstreams(&["zzz-unset"], &none, None, &env).err().unwrap();
        assert_eq!(
            e.to_string(),
            "ZZZ-UNSET_URL: not set (set every <SERVICE>_URL, or MESH_DNS)"
        );
        // With MESH_DNS every unset service is found through DNS.
        let dns = Discovery {
            mesh_dns: Some("127.0.0.1:5354".into()),
            zone: Some("test.zone.".into()),
        };
        let ups = upstreams(&["zzz-unset"], &dns, None, &env).unwrap();
        assert_eq!(ups[0].name, "zzz-unset");
        let bad = Discovery {
            mesh_dns: Some("kube-dns".into()),
            zone: None,
        };
        let e = upstreams(&["zzz-unset"], &bad, None, &env).err().unwrap();
        assert!(e.to_string().starts_with("MESH_DNS:"), "{e}");
    }
}
