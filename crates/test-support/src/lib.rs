//! The in-process mesh for integration tests and benchmarks: the real services, each with a
//! database of its own, on ephemeral ports; plaintext or over mTLS with a fresh dev CA, with
//! or without a Prometheus listener each, publishing to RabbitMQ when asked.
//!
//! The one place tests spawn more than one service. Dev-only: the services' and the gateway's
//! dev-dependencies and examples use it, no release build does (it depends on the four service
//! crates, which the runtime crate cannot). The primitives it builds on (a database per test,
//! a server on port 0, `eventually`) are `ordermesh::testing`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ordermesh::config::ServiceConfig;
use ordermesh::events::amqp::BrokerUrl;
use ordermesh::testing::{eventually, spawn, Backend, Spawned, TestDatabase};
use ordermesh::transport::authz::Policy;
use ordermesh::transport::client::Upstream;
use ordermesh::transport::tls::{ensure_dev_certs, CertPaths, MeshIdentity};
use ordermesh::transport::tls::{TlsSettings, Transport};

/// The saga's participants, in the order a [`Mesh`] holds them.
pub const PARTICIPANTS: [&str; 3] = ["inventory", "payment", "shipping"];

/// The trust domain and namespace of the test CA's identities.
pub const TRUST_DOMAIN: &str = "ordermesh.local";
pub const NAMESPACE: &str = "default";

/// How the services of a mesh are configured beyond a database of their own.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub backend: Backend,
    /// Every service's `BROKER_URL`, when given.
    pub broker: Option<BrokerUrl>,
    /// mTLS between the services (a dev CA and a leaf per service, plus one for `gateway`, in a
    /// temporary directory; the authz policy of `deploy/local`), plaintext when false.
    pub mtls: bool,
    /// Each service with a Prometheus listener of its own.
    pub metrics: bool,
    /// Every service's fault injection (`FAULTS`, `FAULTS_FILE`); off by default.
    pub faults: ordermesh::transport::faults::FaultSettings,
}

impl MeshConfig {
    /// Plaintext, no broker, no metrics listeners.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            broker: None,
            mtls: false,
            metrics: false,
            faults: Default::default(),
        }
    }
}

/// Services running in this process; dropped, they stop and their databases go.
pub struct Mesh {
    /// inventory, payment, shipping, then order once [`Mesh::with_order`] ran.
    pub servers: Vec<Spawned>,
    /// The service name of each server, index for index.
    pub names: Vec<&'static str>,
    /// Each server's `/metrics` address when the config asked for them.
    pub metrics: Vec<Option<SocketAddr>>,
    pub dbs: Vec<TestDatabase>,
    config: MeshConfig,
    certs: Option<tempfile::TempDir>,
}

/// A free loopback address for a listener a service (or a process a test starts) binds itself.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

impl Mesh {
    /// Inventory, payment and shipping, each on a fresh database of `config.backend`.
    pub async fn participants(config: MeshConfig) -> Self {
        let certs = config.mtls.then(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut who = PARTICIPANTS.to_vec();
            who.extend(["order", "gateway"]);
            ensure_dev_certs(dir.path(), TRUST_DOMAIN, NAMESPACE, &who).expect("dev certs");
            dir
        });
        let mut mesh = Self {
            servers: Vec::new(),
            names: Vec::new(),
            metrics: Vec::new(),
            dbs: Vec::new(),
            config,
            certs,
        };
        for svc in PARTICIPANTS {
            let (cfg, db) = mesh.service_config(svc).await;
            let server = match svc {
                "inventory" => {
                    let app = inventory_service::App::build(&cfg)
                        .await
                        .expect("inventory");
                    spawn(|l, s| app.serve(l, s)).await
                }
                "payment" => {
                    let app = payment_service::App::build(&cfg).await.expect("payment");
                    spawn(|l, s| app.serve(l, s)).await
                }
                _ => {
                    let app = shipping_service::App::build(&cfg).await.expect("shipping");
                    spawn(|l, s| app.serve(l, s)).await
                }
            };
            mesh.push(svc, server, cfg.metrics_listen, db).await;
        }
        mesh
    }

    /// The order service built against this mesh's participants, not yet serving (a benchmark
    /// may want its database first), with the database it owns and its metrics address.
    pub async fn order_app(&self) -> (order_service::App, TestDatabase, Option<SocketAddr>) {
        let as_order = self.certs_dir().map(|dir| self.identity_in(dir, "order"));
        let part = |i: usize| {
            let mut up = Upstream::new(self.servers[i].uri());
            if let Some(id) = &as_order {
                up = up.mesh(id.clone(), PARTICIPANTS[i]);
            }
            up.stack().expect("participant stack")
        };
        let parts = order_service::Participants {
            inventory: part(0),
            payment: part(1),
            shipping: part(2),
            step_budget: order_service::DEFAULT_STEP_BUDGET,
        };
        let (cfg, db) = self.service_config("order").await;
        let app = order_service::App::build(&cfg)
            .await
            .expect("order")
            .with_participants(parts);
        (app, db, cfg.metrics_listen)
    }

    /// The mesh with the order service (and its saga) serving in front of the participants.
    pub async fn with_order(mut self) -> Self {
        let (app, db, metrics) = self.order_app().await;
        let server = spawn(|l, s| app.serve(l, s)).await;
        self.push("order", server, metrics, db).await;
        self
    }

    /// The directory of the dev CA and leaves when the mesh runs mTLS.
    pub fn certs_dir(&self) -> Option<&Path> {
        self.certs.as_ref().map(|d| d.path())
    }

    /// The identity `who` (a service or `gateway`) of this mesh's CA; panics on a plaintext mesh.
    pub fn identity(&self, who: &str) -> Arc<MeshIdentity> {
        let dir = self
            .certs_dir()
            .expect("a plaintext mesh has no identities");
        self.identity_in(dir, who)
    }

    fn identity_in(&self, dir: &Path, who: &str) -> Arc<MeshIdentity> {
        MeshIdentity::load(CertPaths::in_dir(dir, who)).expect("identity")
    }

    /// The servers and their databases, for tests that index them (inventory, payment,
    /// shipping[, order]).
    pub fn into_parts(self) -> (Vec<Spawned>, Vec<TestDatabase>) {
        (self.servers, self.dbs)
    }

    /// Adds a spawned server; with a metrics address, once that listener accepts (the server
    /// binds it when its task first runs, which can be after a test's first scrape).
    async fn push(
        &mut self,
        name: &'static str,
        server: Spawned,
        metrics: Option<SocketAddr>,
        db: TestDatabase,
    ) {
        if let Some(addr) = metrics {
            let up = eventually(Duration::from_secs(10), || async move {
                tokio::net::TcpStream::connect(addr).await.is_ok()
            })
            .await;
            assert!(
                up,
                "{name}'s metrics listener {addr} did not come up within 10 s"
            );
        }
        self.names.push(name);
        self.servers.push(server);
        self.metrics.push(metrics);
        self.dbs.push(db);
    }

    /// The config of `svc` on a fresh database, wired as this mesh says.
    async fn service_config(&self, svc: &'static str) -> (ServiceConfig, TestDatabase) {
        let db = TestDatabase::new(self.config.backend).await;
        let mut cfg = ServiceConfig::for_test(svc, &db.url);
        cfg.broker_url = self.config.broker.clone();
        cfg.faults = self.config.faults.clone();
        if let Some(dir) = self.certs_dir() {
            let policy = Policy::parse(
                include_str!("../../../deploy/local/authz.toml"),
                TRUST_DOMAIN,
                NAMESPACE,
            )
            .expect("deploy/local/authz.toml");
            cfg.transport = Transport::MutualTls(TlsSettings {
                paths: CertPaths::in_dir(dir, svc),
                trust_domain: TRUST_DOMAIN.into(),
                namespace: NAMESPACE.into(),
                policy,
                reload_every: Duration::from_secs(5),
            });
        }
        if self.config.metrics {
            cfg.metrics_listen = Some(free_addr());
        }
        (cfg, db)
    }
}

/// Inventory, payment and shipping servers (in that order) and their databases, plaintext.
pub async fn participants(backend: Backend) -> (Vec<Spawned>, Vec<TestDatabase>) {
    participants_with(backend, None).await
}

/// The same, publishing their events to RabbitMQ at `broker` when given (`BROKER_URL`).
pub async fn participants_with(
    backend: Backend,
    broker: Option<&BrokerUrl>,
) -> (Vec<Spawned>, Vec<TestDatabase>) {
    let config = MeshConfig {
        broker: broker.cloned(),
        ..MeshConfig::new(backend)
    };
    Mesh::participants(config).await.into_parts()
}
