//! The flags and variables a process is started with: `ServiceArgs` for the four services,
//! and `TlsArgs`, the mesh certificate group every mesh process (services and gateway) shares.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use crate::telemetry::LogFormat;
use std::sync::Arc;

use crate::transport::tls::{CertPaths, MeshIdentity, SpiffeId};
use crate::types::time::parse_duration;

/// The mesh identity of a process: its certificate files, how often they are re-read, and
/// the SPIFFE trust domain and namespace its identity lives in.
#[derive(Clone, Debug, clap::Args)]
pub struct TlsArgs {
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
}

impl TlsArgs {
    /// The certificate files of `service`: `TLS_CERT`/`TLS_KEY`/`TLS_CA` where given, else
    /// `<TLS_DIR or data_dir/certs>/{<service>.pem, <service>-key.pem, ca.pem}`.
    pub fn paths(&self, data_dir: &Path, service: &str) -> CertPaths {
        let dir = self
            .tls_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("certs"));
        let mut paths = CertPaths::in_dir(&dir, service);
        if let Some(p) = &self.tls_cert {
            paths.cert = p.clone();
        }
        if let Some(p) = &self.tls_key {
            paths.key = p.clone();
        }
        if let Some(p) = &self.tls_ca {
            paths.ca = p.clone();
        }
        paths
    }

    /// `TRUST_DOMAIN`, checked.
    pub fn trust_domain(&self) -> Result<String, ConfigError> {
        let trust_domain = self.trust_domain.trim().to_string();
        if trust_domain.is_empty() || trust_domain.contains('/') {
            return Err(ConfigError::invalid(
                "TRUST_DOMAIN",
                "must be a domain such as ordermesh.local",
            ));
        }
        Ok(trust_domain)
    }

    /// `MESH_NAMESPACE`, checked.
    pub fn namespace(&self) -> Result<String, ConfigError> {
        let namespace = self.mesh_namespace.trim().to_string();
        if namespace.is_empty() || namespace.contains('/') {
            return Err(ConfigError::invalid(
                "MESH_NAMESPACE",
                "must be a namespace name such as default",
            ));
        }
        Ok(namespace)
    }

    /// `TLS_RELOAD`: how often the certificate files are checked for rotation.
    pub fn reload_every(&self) -> Result<Duration, ConfigError> {
        let d = parse_duration(&self.tls_reload).map_err(|m| {
            ConfigError::invalid("TLS_RELOAD", format!("'{}' {m}", self.tls_reload))
        })?;
        if d.is_zero() {
            return Err(ConfigError::invalid("TLS_RELOAD", "must be more than 0"));
        }
        Ok(d)
    }

    /// Loads `service`'s identity from its files and checks it is the SPIFFE id this group
    /// names (`spiffe://<TRUST_DOMAIN>/ns/<MESH_NAMESPACE>/sa/<service>`).
    pub fn identity(
        &self,
        data_dir: &Path,
        service: &str,
    ) -> Result<Arc<MeshIdentity>, ConfigError> {
        let id = MeshIdentity::load(self.paths(data_dir, service))
            .map_err(|e| ConfigError::invalid("TLS_DIR", format!("{service} certificate: {e}")))?;
        let want = SpiffeId::new(&self.trust_domain()?, &self.namespace()?, service);
        if id.id() != want {
            return Err(ConfigError::invalid(
                "TLS_CERT",
                format!("the certificate is {}, not {want}", id.id()),
            ));
        }
        Ok(id)
    }
}

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
    #[command(flatten)]
    pub tls: TlsArgs,
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
    /// Fault injection (`on` or `off`): delays and aborts by rule (`FAULTS_FILE`) or by
    /// request header. Off unless set.
    #[arg(long = "faults", env = "FAULTS", default_value = "off")]
    pub faults: String,
    /// Fault rules (TOML), re-read while running; only with FAULTS=on.
    #[arg(long = "faults-file", env = "FAULTS_FILE")]
    pub faults_file: Option<PathBuf>,
    /// Serve plaintext gRPC without client authentication. Development only.
    #[arg(long = "plaintext", env = "PLAINTEXT", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub plaintext: bool,
    /// Parse and validate the configuration, print what was read as one JSON line, and exit
    /// without connecting to anything (non-zero, naming the variable, on a bad value).
    #[arg(long = "check-config")]
    pub check_config: bool,
}
