//! The inventory service: catalog items, stock levels and per-order reservations.

pub mod api;
pub mod domain;
pub mod store;

use std::future::Future;
use std::time::Duration;

use ordermesh::config::ServiceConfig;
use ordermesh::host::ServiceHost;
use ordermesh::proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use api::{InventoryApi, StockFeed};

pub const SERVICE: &str = "inventory";
pub const DEFAULT_PORT: u16 = 50053;
pub const GRPC_SERVICE: &str = "ordermesh.inventory.v1.InventoryService";

/// A built inventory service: connected, migrated, ready to serve.
pub struct App {
    pub host: ServiceHost,
    pub api: InventoryApi,
    pub feed: StockFeed,
    /// How often due reservations are expired.
    pub expiry_interval: Duration,
}

impl App {
    pub async fn build(config: &ServiceConfig) -> anyhow::Result<Self> {
        let host = ServiceHost::start::<store::Migrator>(config).await?;
        let feed = StockFeed::default();
        let api = InventoryApi::new(host.writes.clone(), feed.clone(), host.drain());
        Ok(Self {
            host,
            api,
            feed,
            expiry_interval: Duration::from_secs(5),
        })
    }

    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let api = self.api.clone();
        self.host
            .every("expiring reservations", self.expiry_interval, move || {
                let api = api.clone();
                async move { api.expire_due().await }
            });
        let routes = Routes::new(InventoryServiceServer::new(self.api));
        self.host
            .serve(routes, &[GRPC_SERVICE], listener, shutdown)
            .await
    }
}
