//! Typed service configuration from flags and environment, validated once at start-up.
//!
//! Every setting has a flag and an environment variable; a bad value stops the process with
//! an error that names the variable and the rule.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::telemetry::LogFormat;

/// Settings shared by every service binary.
#[derive(Clone, Debug, clap::Parser)]
#[command(version, about)]
pub struct ServiceArgs {
    /// gRPC listen address (defaults to the service's port on 127.0.0.1).
    #[arg(long = "listen", env = "LISTEN_ADDR")]
    pub listen: Option<String>,
    /// Extra plaintext listener that serves only grpc.health.v1, for probes that cannot present
    /// a mesh certificate (the kubelet's). Off unless set, e.g. 0.0.0.0:50050.
    #[arg(long = "health-listen", env = "HEALTH_LISTEN_ADDR")]
    pub health_listen: Option<String>,
    /// Plaintext HTTP listener for Prometheus scrapes of `/metrics`. Off unless set, e.g.
    /// 0.0.0.0:9464.
    #[arg(long = "metrics-listen", env = "METRICS_ADDR")]
    pub metrics_listen: Option<String>,
    /// Database URL: sqlite://path?mode=rwc or postgres://user@host/db.
    /// Default: a SQLite file under --data-dir.
    #[arg(long = "database-url", env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Folder for the default SQLite database.
    #[arg(long = "data-dir", env = "DATA_DIR", default_value = "var")]
    pub data_dir: PathBuf,
    /// Log output: json or pretty.
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    /// How long SIGTERM waits for in-flight calls, e.g. 10s, 500ms.
    #[arg(long = "shutdown-grace", env = "SHUTDOWN_GRACE", default_value = "10s")]
    pub shutdown_grace: String,
    /// Folder with ca.pem, <service>.pem and <service>-key.pem (default: <data-dir>/certs).
    #[arg(long = "tls-dir", env = "TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Certificate file (PEM), overriding <tls-dir>/<service>.pem (e.g. a mounted tls.crt).
    #[arg(long = "tls-cert", env = "TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key file (PEM), overriding <tls-dir>/<service>-key.pem.
    #[arg(long = "tls-key", env = "TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Mesh CA file (PEM), overriding <tls-dir>/ca.pem.
    #[arg(long = "tls-ca", env = "TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// How often certificate files are checked for rotation.
    #[arg(long = "tls-reload", env = "TLS_RELOAD", default_value = "5s")]
    pub tls_reload: String,
    /// SPIFFE trust domain of the mesh.
    #[arg(
        long = "trust-domain",
        env = "TRUST_DOMAIN",
        default_value = "ordermesh.local"
    )]
    pub trust_domain: String,
    /// Namespace part of SPIFFE ids (the Kubernetes namespace).
    #[arg(
        long = "mesh-namespace",
        env = "MESH_NAMESPACE",
        default_value = "default"
    )]
    pub mesh_namespace: String,
    /// Authorization policy file (TOML); default: the shipped deploy/local/authz.toml.
    #[arg(long = "authz-policy", env = "AUTHZ_POLICY")]
    pub authz_policy: Option<PathBuf>,
    /// Most calls served at once; more are refused with RESOURCE_EXHAUSTED (load shedding).
    #[arg(long = "max-in-flight", env = "MAX_IN_FLIGHT", default_value = "1024")]
    pub max_in_flight: String,
    /// RabbitMQ URL (amqp://user:password@host:5672/vhost). When set, outbox relays also
    /// publish to RabbitMQ and event consumers read from it; unset, events travel only over
    /// the producers' gRPC `EventLogService` streams.
    #[arg(long = "broker-url", env = "BROKER_URL")]
    pub broker_url: Option<String>,
    /// Serve plaintext gRPC without client authentication. Development only.
    #[arg(long = "plaintext", env = "PLAINTEXT", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub plaintext: bool,
    /// Parse and validate the configuration, print what was read as one JSON line, and exit
    /// without connecting to anything (non-zero, naming the variable, on a bad value).
    #[arg(long = "check-config")]
    pub check_config: bool,
}

/// How a service talks to the mesh.
#[derive(Clone, Debug)]
pub enum Transport {
    /// No TLS and no caller identity: tests and explicit development use only.
    Plaintext,
    /// Mutual TLS with a mesh identity, and an authorization policy on every call.
    MutualTls(TlsSettings),
}

#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub paths: crate::transport::tls::CertPaths,
    pub trust_domain: String,
    pub namespace: String,
    pub policy: crate::transport::authz::Policy,
    pub reload_every: Duration,
}

/// Validated configuration of one service process.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Short service name: order, payment, inventory or shipping.
    pub service: &'static str,
    pub listen: SocketAddr,
    /// Plaintext health-only listener, when configured.
    pub health_listen: Option<SocketAddr>,
    /// Where `/metrics` is served (`METRICS_ADDR`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    pub database_url: String,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    pub transport: Transport,
    /// Most calls served at once before new ones are shed.
    pub max_in_flight: usize,
    /// `--check-config`: validate, report, exit; serve nothing.
    pub check_only: bool,
    /// RabbitMQ, when events go through it (`BROKER_URL`).
    pub broker_url: Option<crate::events::amqp::BrokerUrl>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var}: {message}")]
    Invalid { var: &'static str, message: String },
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

fn invalid(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        message: message.into(),
    }
}

impl ServiceConfig {
    /// Parses the process's flags and environment; prints the error and exits on bad input.
    pub fn load(service: &'static str, default_port: u16) -> anyhow::Result<Self> {
        let args = <ServiceArgs as clap::Parser>::parse();
        Ok(Self::from_args(service, default_port, args)?)
    }

    pub fn from_args(
        service: &'static str,
        default_port: u16,
        args: ServiceArgs,
    ) -> Result<Self, ConfigError> {
        let listen = match args.listen.as_deref() {
            None => SocketAddr::from(([127, 0, 0, 1], default_port)),
            Some(s) => s.parse().map_err(|_| {
                invalid(
                    "LISTEN_ADDR",
                    format!("'{s}' is not an address:port such as 127.0.0.1:{default_port}"),
                )
            })?,
        };
        let health_listen = optional_addr(args.health_listen.as_deref(), "0.0.0.0:50050")
            .map_err(|m| invalid("HEALTH_LISTEN_ADDR", m))?;
        if health_listen.is_some_and(|h| h.port() != 0 && h.port() == listen.port()) {
            return Err(invalid(
                "HEALTH_LISTEN_ADDR",
                "must use another port than LISTEN_ADDR",
            ));
        }
        let metrics_listen = optional_addr(args.metrics_listen.as_deref(), "0.0.0.0:9464")
            .map_err(|m| invalid("METRICS_ADDR", m))?;
        if metrics_listen.is_some_and(|m| {
            m.port() != 0
                && (m.port() == listen.port()
                    || health_listen.is_some_and(|h| h.port() == m.port()))
        }) {
            return Err(invalid(
                "METRICS_ADDR",
                "must use another port than LISTEN_ADDR and HEALTH_LISTEN_ADDR",
            ));
        }
        let database_url = match args.database_url {
            Some(url) => validate_database_url(&url)?,
            None => {
                let path = args.data_dir.join(format!("{service}.db"));
                format!("sqlite://{}?mode=rwc", path.display())
            }
        };
        let shutdown_grace = parse_duration(&args.shutdown_grace)
            .map_err(|m| invalid("SHUTDOWN_GRACE", format!("'{}' {m}", args.shutdown_grace)))?;
        let max_in_flight = args
            .max_in_flight
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| {
                invalid(
                    "MAX_IN_FLIGHT",
                    format!(
                        "'{}' is not a number of calls between 1 and 1000000",
                        args.max_in_flight
                    ),
                )
            })?;
        let broker_url = match args.broker_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(
                crate::events::amqp::BrokerUrl::parse(url).map_err(|m| invalid("BROKER_URL", m))?,
            ),
        };
        let transport = if args.plaintext {
            Transport::Plaintext
        } else {
            let dir = args
                .tls_dir
                .clone()
                .unwrap_or_else(|| args.data_dir.join("certs"));
            let mut paths = crate::transport::tls::CertPaths::in_dir(&dir, service);
            if let Some(p) = args.tls_cert {
                paths.cert = p;
            }
            if let Some(p) = args.tls_key {
                paths.key = p;
            }
            if let Some(p) = args.tls_ca {
                paths.ca = p;
            }
            for (var, path) in [
                ("TLS_CERT", &paths.cert),
                ("TLS_KEY", &paths.key),
                ("TLS_CA", &paths.ca),
            ] {
                if !path.exists() {
                    return Err(invalid(
                        var,
                        format!(
                            "{} not found (run `make certs`, point TLS_DIR at the mesh certificates, \
                             or set PLAINTEXT=true for an unauthenticated development server)",
                            path.display()
                        ),
                    ));
                }
            }
            let trust_domain = args.trust_domain.trim().to_string();
            if trust_domain.is_empty() || trust_domain.contains('/') {
                return Err(invalid(
                    "TRUST_DOMAIN",
                    "must be a domain such as ordermesh.local",
                ));
            }
            let namespace = args.mesh_namespace.trim().to_string();
            if namespace.is_empty() || namespace.contains('/') {
                return Err(invalid(
                    "MESH_NAMESPACE",
                    "must be a namespace name such as default",
                ));
            }
            let policy = match &args.authz_policy {
                Some(p) => crate::transport::authz::Policy::load(p, &trust_domain, &namespace)
                    .map_err(|e| invalid("AUTHZ_POLICY", e))?,
                None => crate::transport::authz::Policy::mesh_default(&trust_domain, &namespace),
            };
            let reload_every = parse_duration(&args.tls_reload)
                .map_err(|m| invalid("TLS_RELOAD", format!("'{}' {m}", args.tls_reload)))?;
            Transport::MutualTls(TlsSettings {
                paths,
                trust_domain,
                namespace,
                policy,
                reload_every,
            })
        };
        Ok(Self {
            service,
            listen,
            health_listen,
            metrics_listen,
            database_url,
            log_format: args.log_format,
            shutdown_grace,
            transport,
            max_in_flight,
            check_only: args.check_config,
            broker_url,
        })
    }

    /// A configuration for tests: ephemeral port, given database, quick drain.
    pub fn for_test(service: &'static str, database_url: &str) -> Self {
        Self {
            service,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            health_listen: None,
            metrics_listen: None,
            database_url: database_url.to_string(),
            log_format: LogFormat::Pretty,
            shutdown_grace: Duration::from_secs(2),
            transport: Transport::Plaintext,
            max_in_flight: 1024,
            check_only: false,
            broker_url: None,
        }
    }

    /// What `--check-config` prints: one JSON line with the addresses the process would
    /// listen on, its drain grace, and every environment variable it reads (the settings
    /// above, `RUST_LOG`, and `service_reads`: the ones this service's own code looked up).
    /// The deployment checks compare manifests with it.
    pub fn check_report(&self, service_reads: &EnvReads) -> String {
        let mut reads: std::collections::BTreeSet<String> = env_vars().into_iter().collect();
        reads.extend(service_reads.names());
        serde_json::json!({
            "service": self.service,
            "listen": self.listen.to_string(),
            "health_listen": self.health_listen.map(|a| a.to_string()),
            "metrics_listen": self.metrics_listen.map(|a| a.to_string()),
            "shutdown_grace_ms": self.shutdown_grace.as_millis() as u64,
            "mtls": matches!(self.transport, Transport::MutualTls(_)),
            "reads": reads,
        })
        .to_string()
    }
}

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
}

impl EnvReads {
    pub fn get(&self, var: &str) -> Option<String> {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(var.to_string());
        std::env::var(var).ok().filter(|v| !v.trim().is_empty())
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

fn validate_database_url(url: &str) -> Result<String, ConfigError> {
    let ok = url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://");
    if !ok {
        return Err(invalid(
            "DATABASE_URL",
            "expected sqlite://<path>?mode=rwc or postgres://<user>@<host>/<db>",
        ));
    }
    Ok(url.to_string())
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| "is not a duration such as 500ms, 10s or 2m".to_string())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("has unknown unit '{unit}' (use ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> ServiceArgs {
        let mut v = vec!["svc"];
        v.extend_from_slice(extra);
        ServiceArgs::try_parse_from(v).unwrap()
    }

    #[test]
    fn defaults_give_sqlite_under_var_and_the_service_port() {
        let c = ServiceConfig::from_args("inventory", 50053, args(&["--plaintext"])).unwrap();
        assert!(matches!(c.transport, Transport::Plaintext));
        assert_eq!(c.listen.port(), 50053);
        assert_eq!(c.database_url, "sqlite://var/inventory.db?mode=rwc");
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = ServiceConfig::from_args("order", 1, args(&["--plaintext", "--listen", "nope"]))
            .unwrap_err();
        assert!(e.to_string().starts_with("LISTEN_ADDR:"), "{e}");
        let e = ServiceConfig::from_args(
            "order",
            1,
            args(&["--plaintext", "--database-url", "mysql://x"]),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("DATABASE_URL:"), "{e}");
        let e = ServiceConfig::from_args(
            "order",
            1,
            args(&["--plaintext", "--shutdown-grace", "3 weeks"]),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("SHUTDOWN_GRACE:"), "{e}");
    }

    #[test]
    fn mtls_is_the_default_and_missing_certificates_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let e = ServiceConfig::from_args("order", 1, args(&["--tls-dir", d])).unwrap_err();
        assert!(
            e.to_string().starts_with("TLS_CERT:") && e.to_string().contains("order.pem"),
            "{e}"
        );
        crate::transport::tls::ensure_dev_certs(
            dir.path(),
            "ordermesh.local",
            "default",
            &["order"],
        )
        .unwrap();
        let c = ServiceConfig::from_args("order", 1, args(&["--tls-dir", d])).unwrap();
        let Transport::MutualTls(tls) = c.transport else {
            panic!("expected mTLS")
        };
        assert_eq!(tls.paths.key, dir.path().join("order-key.pem"));
        let e =
            ServiceConfig::from_args("order", 1, args(&["--tls-dir", d, "--trust-domain", "a/b"]))
                .unwrap_err();
        assert!(e.to_string().starts_with("TRUST_DOMAIN:"), "{e}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[[rules]]\nmethods = [\"x\"]\nallow = []\n").unwrap();
        let e = ServiceConfig::from_args(
            "order",
            1,
            args(&["--tls-dir", d, "--authz-policy", bad.to_str().unwrap()]),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("AUTHZ_POLICY:"), "{e}");
    }

    #[test]
    fn the_health_listener_is_optional_and_validated() {
        let c = ServiceConfig::from_args("order", 50051, args(&["--plaintext"])).unwrap();
        assert_eq!(c.health_listen, None);
        let c = ServiceConfig::from_args(
            "order",
            50051,
            args(&["--plaintext", "--health-listen", "0.0.0.0:50050"]),
        )
        .unwrap();
        assert_eq!(c.health_listen, Some("0.0.0.0:50050".parse().unwrap()));
        for bad in ["50050", "0.0.0.0:50051"] {
            let e = ServiceConfig::from_args(
                "order",
                50051,
                args(&["--plaintext", "--health-listen", bad]),
            )
            .unwrap_err();
            assert!(e.to_string().starts_with("HEALTH_LISTEN_ADDR:"), "{e}");
        }
    }

    #[test]
    fn the_metrics_listener_is_optional_and_validated() {
        let c = ServiceConfig::from_args("order", 50051, args(&["--plaintext"])).unwrap();
        assert_eq!(c.metrics_listen, None);
        let c = ServiceConfig::from_args(
            "order",
            50051,
            args(&["--plaintext", "--metrics-listen", "0.0.0.0:9464"]),
        )
        .unwrap();
        assert_eq!(c.metrics_listen, Some("0.0.0.0:9464".parse().unwrap()));
        for bad in [
            vec!["--metrics-listen", "9464"],
            vec!["--metrics-listen", "0.0.0.0:50051"],
            vec![
                "--metrics-listen",
                "0.0.0.0:9000",
                "--health-listen",
                "0.0.0.0:9000",
            ],
        ] {
            let mut a = vec!["--plaintext"];
            a.extend(bad);
            let e = ServiceConfig::from_args("order", 50051, args(&a)).unwrap_err();
            assert!(e.to_string().starts_with("METRICS_ADDR:"), "{e}");
        }
    }

    #[test]
    fn broker_url_is_optional_and_checked() {
        let c = ServiceConfig::from_args("order", 1, args(&["--plaintext"])).unwrap();
        assert!(c.broker_url.is_none());
        let c = ServiceConfig::from_args(
            "order",
            1,
            args(&[
                "--plaintext",
                "--broker-url",
                "amqp://guest:secret@127.0.0.1:5672/%2f",
            ]),
        )
        .unwrap();
        let url = c.broker_url.expect("broker url");
        assert_eq!(url.as_str(), "amqp://guest:secret@127.0.0.1:5672/%2f");
        assert!(!format!("{url:?}").contains("secret"), "{url:?}");
        for bad in [
            "http://127.0.0.1:5672",
            "amqp://",
            "amqp://127.0.0.1:notaport",
        ] {
            let e =
                ServiceConfig::from_args("order", 1, args(&["--plaintext", "--broker-url", bad]))
                    .unwrap_err();
            assert!(e.to_string().starts_with("BROKER_URL:"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_check_report_names_what_is_read() {
        let c = ServiceConfig::from_args(
            "payment",
            50052,
            args(&["--plaintext", "--check-config", "--listen", "0.0.0.0:50052"]),
        )
        .unwrap();
        assert!(c.check_only);
        let reads = EnvReads::default();
        let _ = reads.get("ORDERMESH_TEST_SURELY_UNSET");
        let report: serde_json::Value = serde_json::from_str(&c.check_report(&reads)).unwrap();
        assert_eq!(report["listen"], "0.0.0.0:50052");
        assert_eq!(report["health_listen"], serde_json::Value::Null);
        assert_eq!(report["shutdown_grace_ms"], 10_000);
        let names: Vec<&str> = report["reads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for var in [
            "LISTEN_ADDR",
            "HEALTH_LISTEN_ADDR",
            "METRICS_ADDR",
            "DATABASE_URL",
            "TLS_CERT",
            "PLAINTEXT",
            "RUST_LOG",
            "ORDERMESH_TEST_SURELY_UNSET",
        ] {
            assert!(names.contains(&var), "{var} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("CHECK")), "{names:?}");
    }

    #[test]
    fn unknown_log_format_is_refused_by_the_parser() {
        let e = ServiceArgs::try_parse_from(["svc", "--log-format", "xml"]).unwrap_err();
        assert!(e.to_string().contains("xml"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("").is_err());
    }
}
