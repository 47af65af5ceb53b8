//! The whole mesh in this process over mTLS (`test_support` spawns inventory, payment,
//! shipping and the order service with its saga, each with its own Prometheus listener) with
//! the gateway in front, for the aggregation and telemetry tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ordermesh::testing::{Backend, Spawned};
use ordermesh::transport::client::Upstream;
use ordermesh_gateway::Settings;
use serde_json::{json, Value};
use test_support::MeshConfig;

pub struct Mesh {
    pub gateway: super::Running,
    pub servers: HashMap<&'static str, Spawned>,
    /// Each service's `/metrics` address.
    pub metrics: HashMap<&'static str, SocketAddr>,
    /// The services' databases and certificates, kept until the test ends.
    _services: test_support::Mesh,
}

pub async fn mesh() -> Mesh {
    mesh_with(Settings::default()).await
}

/// Like `mesh`, with the gateway configured by `settings`.
pub async fn mesh_with(settings: Settings) -> Mesh {
    mesh_configured(settings, |_| {}).await
}

/// Like `mesh_with`, the services' configuration changed by `tune` first.
pub async fn mesh_configured(settings: Settings, tune: impl FnOnce(&mut MeshConfig)) -> Mesh {
    let mut config = MeshConfig {
        mtls: true,
        metrics: true,
        ..MeshConfig::new(Backend::Sqlite)
    };
    tune(&mut config);
    let mut services = test_support::Mesh::participants(config)
        .await
        .with_order()
        .await;
    let names = services.names.clone();
    let metrics = names
        .iter()
        .zip(&services.metrics)
        .map(|(n, m)| (*n, m.expect("a metrics listener")))
        .collect();
    let servers: HashMap<&'static str, Spawned> = names
        .into_iter()
        .zip(std::mem::take(&mut services.servers))
        .collect();
    let as_gateway = services.identity("gateway");
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
        _services: services,
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
