//! The whole mesh in this process over mTLS (inventory, payment, shipping, the order service
//! with its saga, the gateway), each service with its own Prometheus listener, for the
//! telemetry tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ordermesh::config::ServiceConfig;
use ordermesh::testing::{spawn, Backend, Spawned, TestDatabase};
use ordermesh::transport::authz::Policy;
use ordermesh::transport::client::Upstream;
use ordermesh::transport::tls::{ensure_dev_certs, CertPaths, MeshIdentity};
use ordermesh::transport::tls::{TlsSettings, Transport};
use ordermesh_gateway::Settings;
use serde_json::{json, Value};

const TD: &str = "ordermesh.local";
const NS: &str = "default";

pub struct Mesh {
    pub gateway: super::Running,
    pub servers: HashMap<&'static str, Spawned>,
    /// Each service's `/metrics` address.
    pub metrics: HashMap<&'static str, SocketAddr>,
    _dbs: Vec<TestDatabase>,
    _certs: tempfile::TempDir,
}

fn identity(dir: &Path, who: &str) -> Arc<MeshIdentity> {
    MeshIdentity::load(CertPaths::in_dir(dir, who)).unwrap()
}

/// A free loopback port for a listener the service binds itself.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn config(dir: &Path, svc: &'static str, db: &str, metrics: SocketAddr) -> ServiceConfig {
    let mut cfg = ServiceConfig::for_test(svc, db);
    let policy = Policy::parse(include_str!("../../../deploy/local/authz.toml"), TD, NS).unwrap();
    cfg.transport = Transport::MutualTls(TlsSettings {
        paths: CertPaths::in_dir(dir, svc),
        trust_domain: TD.into(),
        namespace: NS.into(),
        policy,
        reload_every: Duration::from_secs(5),
    });
    cfg.metrics_listen = Some(metrics);
    cfg
}

pub async fn mesh() -> Mesh {
    mesh_with(Settings::default()).await
}

/// Like `mesh`, with the gateway configured by `settings`.
pub async fn mesh_with(settings: Settings) -> Mesh {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    ensure_dev_certs(
        dir,
        TD,
        NS,
        &["order", "payment", "inventory", "shipping", "gateway"],
    )
    .unwrap();
    let mut servers = HashMap::new();
    let mut metrics = HashMap::new();
    let mut dbs = Vec::new();
    for svc in ["inventory", "payment", "shipping"] {
        let db = TestDatabase::new(Backend::Sqlite).await;
        let m = free_addr();
        let cfg = config(dir, svc, &db.url, m);
        let s = match svc {
            "inventory" => {
                let app = inventory_service::App::build(&cfg).await.unwrap();
                spawn(|l, s| app.serve(l, s)).await
            }
            "payment" => {
                let app = payment_service::App::build(&cfg).await.unwrap();
                spawn(|l, s| app.serve(l, s)).await
            }
            _ => {
                let app = shipping_service::App::build(&cfg).await.unwrap();
                spawn(|l, s| app.serve(l, s)).await
            }
        };
        servers.insert(svc, s);
        metrics.insert(svc, m);
        dbs.push(db);
    }
    let as_order = identity(dir, "order");
    let part = |svc: &str| {
        Upstream::new(servers[svc].uri())
            .mesh(as_order.clone(), svc)
            .stack()
            .unwrap()
    };
    let parts = order_service::Participants {
        inventory: part("inventory"),
        payment: part("payment"),
        shipping: part("shipping"),
    };
    let db = TestDatabase::new(Backend::Sqlite).await;
    let m = free_addr();
    let app = order_service::App::build(&config(dir, "order", &db.url, m))
        .await
        .unwrap()
        .with_participants(parts);
    servers.insert("order", spawn(|l, s| app.serve(l, s)).await);
    metrics.insert("order", m);
    dbs.push(db);
    let as_gateway = identity(dir, "gateway");
    let upstreams = servers
        .iter()
        .map(|(name, s)| {
            (
                name.to_string(),
                Upstream::new(s.uri()).mesh(as_gateway.clone(), name),
            )
        })
        .collect();
    let gateway = super::gateway(upstreams, settings).await;
    Mesh {
        gateway,
        servers,
        metrics,
        _dbs: dbs,
        _certs: certs,
    }
}

impl Mesh {
    pub async fn create_item(&self, sku: &str) {
        let r = super::client()
            .post(self.gateway.url("/v1/inventory/items"))
            .json(&json!({"sku": sku, "name": "Green tea", "price": {"currencyCode": "EUR", "amountMinor": "450"}, "initialStock": "20"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }

    /// Places an order over REST (with `headers`) and returns its id.
    pub async fn place(&self, sku: &str, key: &str, headers: &[(&str, &str)]) -> String {
        let mut req = super::client().post(self.gateway.url("/v1/orders"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req
            .json(&json!({
                "customerId": "cust-otel",
                "lines": [{"sku": sku, "quantity": 2, "unitPrice": {"currencyCode": "EUR", "amountMinor": "450"}}],
                "shippingAddress": {"recipient": "Ada Lovelace", "street": "1 Main St", "city": "Berlin", "postalCode": "10115", "countryCode": "DE"},
                "cardToken": "tok_visa",
                "idempotencyKey": key,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["order"]["orderId"].as_str().unwrap().to_string()
    }

    /// Waits until the order is CONFIRMED (the saga completed).
    pub async fn confirmed(&self, id: &str) -> bool {
        ordermesh::testing::eventually(Duration::from_secs(20), || async {
            let r = super::client()
                .get(self.gateway.url(&format!("/v1/orders/{id}")))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["order"]["status"] == "ORDER_STATUS_CONFIRMED"
        })
        .await
    }
}
