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
}

/// Validated configuration of one service process.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Short service name: order, payment, inventory or shipping.
    pub service: &'static str,
    pub listen: SocketAddr,
    pub database_url: String,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var}: {message}")]
    Invalid { var: &'static str, message: String },
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
        let database_url = match args.database_url {
            Some(url) => validate_database_url(&url)?,
            None => {
                let path = args.data_dir.join(format!("{service}.db"));
                format!("sqlite://{}?mode=rwc", path.display())
            }
        };
        let shutdown_grace = parse_duration(&args.shutdown_grace)
            .map_err(|m| invalid("SHUTDOWN_GRACE", format!("'{}' {m}", args.shutdown_grace)))?;
        Ok(Self {
            service,
            listen,
            database_url,
            log_format: args.log_format,
            shutdown_grace,
        })
    }

    /// A configuration for tests: ephemeral port, given database, quick drain.
    pub fn for_test(service: &'static str, database_url: &str) -> Self {
        Self {
            service,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.to_string(),
            log_format: LogFormat::Pretty,
            shutdown_grace: Duration::from_secs(2),
        }
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
        let c = ServiceConfig::from_args("inventory", 50053, args(&[])).unwrap();
        assert_eq!(c.listen.port(), 50053);
        assert_eq!(c.database_url, "sqlite://var/inventory.db?mode=rwc");
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = ServiceConfig::from_args("order", 1, args(&["--listen", "nope"])).unwrap_err();
        assert!(e.to_string().starts_with("LISTEN_ADDR:"), "{e}");
        let e = ServiceConfig::from_args("order", 1, args(&["--database-url", "mysql://x"]))
            .unwrap_err();
        assert!(e.to_string().starts_with("DATABASE_URL:"), "{e}");
        let e = ServiceConfig::from_args("order", 1, args(&["--shutdown-grace", "3 weeks"]))
            .unwrap_err();
        assert!(e.to_string().starts_with("SHUTDOWN_GRACE:"), "{e}");
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
