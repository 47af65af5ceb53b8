//! A service process's whole configuration: listeners, database, drain, transport, broker.

use std::net::SocketAddr;
use std::time::Duration;

use super::{env_vars, optional_addr, ConfigError, EnvReads, ServiceArgs};
use crate::telemetry::LogFormat;
use crate::transport::tls::{TlsSettings, Transport};
use crate::types::time::parse_duration;

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
    /// Fault injection (`FAULTS`, `FAULTS_FILE`).
    pub faults: crate::transport::faults::FaultSettings,
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
                ConfigError::invalid(
                    "LISTEN_ADDR",
                    format!("'{s}' is not an address:port such as 127.0.0.1:{default_port}"),
                )
            })?,
        };
        let health_listen = optional_addr(args.health_listen.as_deref(), "0.0.0.0:50050")
            .map_err(|m| ConfigError::invalid("HEALTH_LISTEN_ADDR", m))?;
        if health_listen.is_some_and(|h| h.port() != 0 && h.port() == listen.port()) {
            return Err(ConfigError::invalid(
                "HEALTH_LISTEN_ADDR",
                "must use another port than LISTEN_ADDR",
            ));
        }
        let metrics_listen = optional_addr(args.metrics_listen.as_deref(), "0.0.0.0:9464")
            .map_err(|m| ConfigError::invalid("METRICS_ADDR", m))?;
        if metrics_listen.is_some_and(|m| {
            m.port() != 0
                && (m.port() == listen.port()
                    || health_listen.is_some_and(|h| h.port() == m.port()))
        }) {
            return Err(ConfigError::invalid(
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
        let shutdown_grace = parse_duration(&args.shutdown_grace).map_err(|m| {
            ConfigError::invalid("SHUTDOWN_GRACE", format!("'{}' {m}", args.shutdown_grace))
        })?;
        let max_in_flight = args
            .max_in_flight
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| {
                ConfigError::invalid(
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
                crate::events::amqp::BrokerUrl::parse(url)
                    .map_err(|m| ConfigError::invalid("BROKER_URL", m))?,
            ),
        };
        let transport = if args.plaintext {
            Transport::Plaintext
        } else {
            let paths = args.tls.paths(&args.data_dir, service);
            for (var, path) in [
                ("TLS_CERT", &paths.cert),
                ("TLS_KEY", &paths.key),
                ("TLS_CA", &paths.ca),
            ] {
                if !path.exists() {
                    return Err(ConfigError::invalid(
                        var,
                        format!(
                            "{} not found (run `make certs`, point TLS_DIR at the mesh certificates, \
                             or set PLAINTEXT=true for an unauthenticated development server)",
                            path.display()
                        ),
                    ));
                }
            }
            let trust_domain = args.tls.trust_domain()?;
            let namespace = args.tls.namespace()?;
            let policy = match &args.authz_policy {
                Some(p) => crate::transport::authz::Policy::load(p, &trust_domain, &namespace)
                    .map_err(|e| ConfigError::invalid("AUTHZ_POLICY", e))?,
                None => crate::transport::authz::Policy::mesh_default(&trust_domain, &namespace),
            };
            let reload_every = args.tls.reload_every()?;
            Transport::MutualTls(TlsSettings {
                paths,
                trust_domain,
                namespace,
                policy,
                reload_every,
            })
        };
        let faults =
            crate::transport::faults::FaultSettings::parse(&args.faults, args.faults_file.clone())?;
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
            faults,
        })
    }

    /// What the server stack needs of this configuration.
    pub fn server(&self) -> crate::transport::server::ServerSettings {
        crate::transport::server::ServerSettings {
            service: self.service,
            transport: self.transport.clone(),
            grace: self.shutdown_grace,
            max_in_flight: self.max_in_flight,
            health_addr: self.health_listen,
            metrics_addr: self.metrics_listen,
            faults: self.faults.clone(),
        }
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
            faults: Default::default(),
        }
    }

    /// What `--check-config` prints: one JSON line with the addresses the process would
    /// listen on, its drain grace, and every environment variable it reads (the settings
    /// above, `RUST_LOG`, and `service_reads`: the ones this service's own code looked up).
    /// The deployment checks compare manifests with it.
    pub fn check_report(&self, service_reads: &EnvReads) -> String {
        let mut reads: std::collections::BTreeSet<String> = env_vars().into_iter().collect();
        reads.extend(service_reads.names());
        let mut report = serde_json::json!({
            "service": self.service,
            "listen": self.listen.to_string(),
            "health_listen": self.health_listen.map(|a| a.to_string()),
            "metrics_listen": self.metrics_listen.map(|a| a.to_string()),
            "shutdown_grace_ms": self.shutdown_grace.as_millis() as u64,
            "mtls": matches!(self.transport, Transport::MutualTls(_)),
            "faults": {
                "on": self.faults.on,
                "file": self.faults.file.as_ref().map(|p| p.display().to_string()),
            },
            "reads": reads,
        });
        for (k, v) in service_reads.resolutions() {
            report[k] = v;
        }
        report.to_string()
    }
}

fn validate_database_url(url: &str) -> Result<String, ConfigError> {
    let ok = url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://");
    if !ok {
        return Err(ConfigError::invalid(
            "DATABASE_URL",
            "expected sqlite://<path>?mode=rwc or postgres://<user>@<host>/<db>",
        ));
    }
    Ok(url.to_string())
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
}
