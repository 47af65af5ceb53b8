//! The gateway's configuration: flags and environment, validated once; a bad value stops
//! start-up naming the variable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ordermesh::config::{ConfigError, Discovery, EnvReads, TlsArgs};
use ordermesh::telemetry::LogFormat;
use ordermesh::transport::client::Upstream;
use ordermesh::types::time::parse_duration;

use crate::auth::Authenticator;
use crate::ratelimit::Limit;

/// The upstreams the shipped contracts need.
pub const SERVICES: [&str; 4] = ["order", "payment", "inventory", "shipping"];

#[derive(Clone, Debug, clap::Parser)]
#[command(
    version,
    about = "ordermesh edge gateway: REST/JSON and gRPC in, mesh gRPC out"
)]
pub struct GatewayArgs {
    /// HTTP listen address (HTTP/1.1 and h2c).
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Extra descriptor sets (comma-separated files, `protoc --include_imports
    /// --descriptor_set_out`): their annotated RPCs are served too.
    #[arg(long, env = "GATEWAY_DESCRIPTORS", value_delimiter = ',')]
    pub descriptors: Vec<PathBuf>,
    /// Nameserver (address:port, or `system` for /etc/resolv.conf) of the mesh zone; upstreams
    /// are found as SRV `_grpc._tcp.<svc>.<zone>`. `<SERVICE>_URL` overrides it per service.
    #[arg(long, env = "MESH_DNS")]
    pub mesh_dns: Option<String>,
    /// The mesh DNS zone.
    #[arg(long, env = "MESH_ZONE", default_value = "mesh.local.")]
    pub mesh_zone: String,
    /// The services to serve; each needs `<SERVICE>_URL` or `MESH_DNS`.
    #[arg(
        long,
        env = "GATEWAY_SERVICES",
        value_delimiter = ',',
        default_value = "order,payment,inventory,shipping"
    )]
    pub services: Vec<String>,
    /// Talk plaintext gRPC to the upstreams (development and benchmarks only).
    #[arg(long, env = "GATEWAY_PLAINTEXT_UPSTREAMS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub plaintext_upstreams: bool,
    /// Folder for the default certificate folder (<data-dir>/certs).
    #[arg(long, env = "DATA_DIR", default_value = "var")]
    pub data_dir: PathBuf,
    /// The gateway's mesh certificate (`gateway.pem`); its identity must be
    /// spiffe://<TRUST_DOMAIN>/ns/<MESH_NAMESPACE>/sa/gateway.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, env = "GATEWAY_MAX_BODY", default_value = "1048576")]
    pub max_body: String,
    /// Deadline of a unary call when the request carries no `grpc-timeout` header.
    #[arg(long, env = "GATEWAY_TIMEOUT", default_value = "10s")]
    pub timeout: String,
    /// Request headers passed to services as gRPC metadata (besides `grpc-metadata-*`).
    #[arg(
        long,
        env = "GATEWAY_FORWARD_HEADERS",
        value_delimiter = ',',
        default_value = "x-request-id,idempotency-key,traceparent,tracestate,baggage"
    )]
    pub forward_headers: Vec<String>,
    /// HS256 secret for bearer tokens (at least 32 bytes). With no secret and no JWKS, no
    /// token is asked for.
    #[arg(long, env = "GATEWAY_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// JWKS file with the RS256/ES256 keys tokens may be signed with.
    #[arg(long, env = "GATEWAY_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    #[arg(long, env = "GATEWAY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    #[arg(long, env = "GATEWAY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Routes open without a token: `package.Service/Method`, `package.Service/*`, or
    /// `METHOD /template` exactly as annotated.
    #[arg(
        long,
        env = "GATEWAY_PUBLIC_ROUTES",
        value_delimiter = ',',
        default_value = "ordermesh.inventory.v1.InventoryService/GetItem,ordermesh.inventory.v1.InventoryService/ListItems,ordermesh.shipping.v1.ShippingService/GetQuote"
    )]
    pub public_routes: Vec<String>,
    /// Requests per client, e.g. `100/s`, `600/m`; `off` for none.
    #[arg(long, env = "GATEWAY_RATE_LIMIT", default_value = "200/s")]
    pub rate_limit: String,
    /// Requests a client may send at once (default: one second's worth).
    #[arg(long, env = "GATEWAY_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// API keys (header `x-api-key`) that identify a client for rate limits.
    #[arg(
        long,
        env = "GATEWAY_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// GET responses cached per client: `package.Service/Method=ttl`, comma-separated.
    #[arg(
        long,
        env = "GATEWAY_CACHE",
        value_delimiter = ',',
        default_value = "ordermesh.inventory.v1.InventoryService/GetItem=1s,ordermesh.inventory.v1.InventoryService/ListItems=1s"
    )]
    pub cache: Vec<String>,
    /// Origins allowed by CORS (`*` for any); none by default.
    #[arg(long, env = "GATEWAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// How long the customer overview waits for its parts.
    #[arg(long, env = "GATEWAY_OVERVIEW_TIMEOUT", default_value = "2s")]
    pub overview_timeout: String,
    /// Fault injection (`on` or `off`): when on, callers whose token carries the
    /// `ordermesh:operator` scope may pass `x-ordermesh-fault-*` headers on to the services
    /// (which apply them only if their own FAULTS is on); everyone else's are stripped.
    #[arg(long = "faults", env = "FAULTS", default_value = "off")]
    pub faults: String,
    /// Fault rules (TOML, re-read while running); its `route` rules apply here.
    #[arg(long = "faults-file", env = "FAULTS_FILE")]
    pub faults_file: Option<PathBuf>,
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    #[arg(long = "shutdown-grace", env = "SHUTDOWN_GRACE", default_value = "10s")]
    pub shutdown_grace: String,
    /// Also serve `/metrics` on this address (e.g. 0.0.0.0:9464, for scrapers that should not
    /// reach the API port); it is always served on the API port too.
    #[arg(long = "metrics-listen", env = "METRICS_ADDR")]
    pub metrics_listen: Option<String>,
    /// Validate the configuration, print what the process would do as one JSON line, and exit.
    #[arg(long = "check-config")]
    pub check_config: bool,
}

/// What the request path needs, checked and typed.
#[derive(Clone)]
pub struct Settings {
    pub max_body: usize,
    pub timeout: Duration,
    pub forward_headers: Vec<http::HeaderName>,
    pub public_routes: Vec<String>,
    pub auth: Option<Authenticator>,
    pub rate_limit: Option<Limit>,
    pub api_keys: Vec<String>,
    /// `package.Service/Method` -> time to live.
    pub cache: HashMap<String, Duration>,
    pub cors_origins: Vec<String>,
    pub overview_timeout: Duration,
    /// Fault injection (`FAULTS`, `FAULTS_FILE`): route rules apply here, and while on,
    /// operators may pass fault headers on.
    pub faults: ordermesh::transport::faults::Faults,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_body: 1 << 20,
            timeout: Duration::from_secs(10),
            forward_headers: [
                "x-request-id",
                "idempotency-key",
                "traceparent",
                "tracestate",
                "baggage",
            ]
            .into_iter()
            .map(http::HeaderName::from_static)
            .collect(),
            public_routes: Vec::new(),
            auth: None,
            rate_limit: None,
            api_keys: Vec::new(),
            cache: HashMap::new(),
            cors_origins: Vec::new(),
            overview_timeout: Duration::from_secs(2),
            faults: ordermesh::transport::faults::Faults::off(),
        }
    }
}

pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// A second listener for `/metrics` only.
    pub metrics_listen: Option<SocketAddr>,
    /// `--check-config`: validate, report, exit.
    pub check_only: bool,
    /// Whether upstream calls use mTLS.
    pub mtls: bool,
    /// The variables read beyond the flags (per-upstream settings), for `--check-config`.
    pub reads: Vec<String>,
    /// What settings resolved to beyond their names (the traffic policy in force).
    pub resolved: std::collections::BTreeMap<String, serde_json::Value>,
    pub settings: Settings,
    pub descriptors: Vec<PathBuf>,
    pub upstreams: HashMap<String, Upstream>,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
}

fn bad(var: &str, msg: impl std::fmt::Display) -> anyhow::Error {
    ConfigError::invalid(var, msg).into()
}

fn duration(var: &str, v: &str) -> anyhow::Result<Duration> {
    let d = parse_duration(v).map_err(|e| bad(var, format!("'{v}' {e}")))?;
    if d.is_zero() {
        return Err(bad(var, "must be more than 0"));
    }
    Ok(d)
}

impl Settings {
    pub fn from_args(a: &GatewayArgs) -> anyhow::Result<Self> {
        let max_body: usize = a
            .max_body
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                bad(
                    "GATEWAY_MAX_BODY",
                    format!("'{}' is not a positive byte count", a.max_body),
                )
            })?;
        let forward_headers = a
            .forward_headers
            .iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| {
                http::HeaderName::from_bytes(h.trim().to_ascii_lowercase().as_bytes()).map_err(
                    |_| {
                        bad(
                            "GATEWAY_FORWARD_HEADERS",
                            format!("'{h}' is not a header name"),
                        )
                    },
                )
            })
            .collect::<anyhow::Result<_>>()?;
        let auth = if a.jwt_secret.is_some() || a.jwks_file.is_some() {
            Some(
                Authenticator::new(
                    a.jwt_secret.as_deref().map(str::as_bytes),
                    a.jwks_file.as_deref(),
                    a.jwt_issuer.clone(),
                    a.jwt_audience.clone(),
                )
                .map_err(|e| {
                    bad(
                        if a.jwks_file.is_some() {
                            "GATEWAY_JWKS_FILE"
                        } else {
                            "GATEWAY_JWT_HS256_SECRET"
                        },
                        e,
                    )
                })?,
            )
        } else {
            None
        };
        let rate_limit = match a.rate_limit.trim() {
            "off" | "" => None,
            r => Some(Limit::parse(r, a.rate_burst).map_err(|e| bad("GATEWAY_RATE_LIMIT", e))?),
        };
        let mut cache = HashMap::new();
        for entry in a.cache.iter().filter(|e| !e.trim().is_empty()) {
            let (method, ttl) = entry.split_once('=').ok_or_else(|| {
                bad(
                    "GATEWAY_CACHE",
                    format!("'{entry}' is not package.Service/Method=ttl"),
                )
            })?;
            cache.insert(
                method.trim().to_string(),
                duration("GATEWAY_CACHE", ttl.trim())?,
            );
        }
        Ok(Self {
            max_body,
            timeout: duration("GATEWAY_TIMEOUT", &a.timeout)?,
            forward_headers,
            public_routes: a
                .public_routes
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            auth,
            rate_limit,
            api_keys: a
                .api_keys
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            cache,
            cors_origins: a
                .cors_origins
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            overview_timeout: duration("GATEWAY_OVERVIEW_TIMEOUT", &a.overview_timeout)?,
            faults: ordermesh::transport::faults::FaultSettings::parse(
                &a.faults,
                a.faults_file.clone(),
            )?
            .start()
            .map_err(|e| bad("FAULTS_FILE", e))?,
        })
    }
}

impl GatewayConfig {
    pub fn load() -> anyhow::Result<Self> {
        Self::from_args(<GatewayArgs as clap::Parser>::parse())
    }

    pub fn from_args(a: GatewayArgs) -> anyhow::Result<Self> {
        Self::from_args_reading(a, &EnvReads::default())
    }

    /// Like `from_args`, recording every environment variable looked up in `env`.
    pub fn from_args_reading(a: GatewayArgs, env: &EnvReads) -> anyhow::Result<Self> {
        let settings = Settings::from_args(&a)?;
        let listen: SocketAddr = a.listen.parse().map_err(|_| {
            bad(
                "GATEWAY_LISTEN",
                format!("'{}' is not an address:port", a.listen),
            )
        })?;
        let identity = if a.plaintext_upstreams {
            None
        } else {
            let id = a.tls.identity(&a.data_dir, "gateway")?;
            Some((id, a.tls.reload_every()?))
        };
        let services: Vec<&str> = a
            .services
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(svc) = services.iter().find(|s| !SERVICES.contains(s)) {
            return Err(bad(
                "GATEWAY_SERVICES",
                format!("unknown service '{svc}' (known: {})", SERVICES.join(", ")),
            ));
        }
        let discovery = Discovery {
            mesh_dns: a.mesh_dns.clone(),
            zone: Some(a.mesh_zone.clone()),
        };
        let found = ordermesh::config::upstreams(
            &services,
            &discovery,
            identity.as_ref().map(|(id, _)| id),
            env,
        )?;
        let upstreams: HashMap<String, Upstream> =
            services.iter().map(|s| s.to_string()).zip(found).collect();
        if let (Some((id, every)), false) = (&identity, a.check_config) {
            drop(id.watch(*every));
        }
        let metrics_listen =
            ordermesh::config::optional_addr(a.metrics_listen.as_deref(), "0.0.0.0:9464")
                .map_err(|m| bad("METRICS_ADDR", m))?;
        if metrics_listen.is_some_and(|m| m.port() == listen.port()) {
            return Err(bad(
                "METRICS_ADDR",
                "must not be the API port (GATEWAY_LISTEN)",
            ));
        }
        Ok(Self {
            listen,
            metrics_listen,
            check_only: a.check_config,
            mtls: identity.is_some(),
            reads: env.names(),
            resolved: env.resolutions(),
            settings,
            descriptors: a.descriptors,
            upstreams,
            log_format: a.log_format,
            shutdown_grace: duration("SHUTDOWN_GRACE", &a.shutdown_grace)?,
        })
    }
}

impl GatewayConfig {
    /// What `--check-config` prints (the same shape as the services' report): the listen
    /// address, the drain grace, whether upstream calls use mTLS, and every variable read.
    pub fn check_report(&self) -> String {
        let cmd = <GatewayArgs as clap::CommandFactory>::command();
        let mut reads: std::collections::BTreeSet<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        reads.insert("RUST_LOG".into());
        reads.extend(self.reads.iter().cloned());
        let mut report = serde_json::json!({
            "service": "gateway",
            "listen": self.listen.to_string(),
            "health_listen": null,
            "http_health": {"liveness": "/healthz", "readiness": "/readyz"},
            "shutdown_grace_ms": self.shutdown_grace.as_millis() as u64,
            "mtls": self.mtls,
            "reads": reads,
        });
        for (k, v) in &self.resolved {
            report[k] = v.clone();
        }
        report.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn bad_values_name_their_variable() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["gateway", "--plaintext-upstreams", "true"];
            if !extra.contains(&"--mesh-dns") {
                args.extend_from_slice(&["--mesh-dns", "127.0.0.1:5354"]);
            }
            args.extend_from_slice(extra);
            GatewayConfig::from_args(GatewayArgs::try_parse_from(args).unwrap())
        };
        for (flags, var) in [
            (&["--listen", "nowhere"][..], "GATEWAY_LISTEN"),
            (&["--max-body", "0"][..], "GATEWAY_MAX_BODY"),
            (&["--timeout", "soon"][..], "GATEWAY_TIMEOUT"),
            (&["--rate-limit", "5/fortnight"][..], "GATEWAY_RATE_LIMIT"),
            (&["--cache", "x.Y/Z"][..], "GATEWAY_CACHE"),
            (&["--jwt-secret", "short"][..], "GATEWAY_JWT_HS256_SECRET"),
            (&["--mesh-dns", "not-an-address"][..], "MESH_DNS"),
        ] {
            let err = parse(flags)
                .err()
                .unwrap_or_else(|| panic!("{flags:?} accepted"))
                .to_string();
            assert!(err.starts_with(var), "{flags:?}: {err}");
        }
    }

    #[test]
    fn the_check_report_lists_what_is_read() {
        let args = GatewayArgs::try_parse_from([
            "gateway",
            "--plaintext-upstreams",
            "true",
            "--mesh-dns",
            "system",
            "--check-config",
        ])
        .unwrap();
        let c = GatewayConfig::from_args(args).unwrap();
        assert!(c.check_only && !c.mtls);
        let v: serde_json::Value = serde_json::from_str(&c.check_report()).unwrap();
        let reads: Vec<&str> = v["reads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        for k in [
            "GATEWAY_LISTEN",
            "MESH_DNS",
            "ORDER_URL",
            "PAYMENT_BALANCER",
            "SHIPPING_TIMEOUT",
            "RUST_LOG",
        ] {
            assert!(reads.contains(&k), "{k} missing from {reads:?}");
        }
        assert_eq!(v["listen"], "127.0.0.1:8080");
    }
}
