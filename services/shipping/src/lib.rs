//! The shipping service: quotes, shipments per order and their tracking.

pub mod api;
pub mod domain;
pub mod store;

use std::future::Future;

use ordermesh::config::ServiceConfig;
use ordermesh::host::ServiceHost;
use ordermesh::proto::shipping::v1::shipping_service_server::ShippingServiceServer;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use api::{ShippingApi, TrackingFeed};

pub const SERVICE: &str = "shipping";
pub const DEFAULT_PORT: u16 = 50054;
pub const GRPC_SERVICE: &str = "ordermesh.shipping.v1.ShippingService";

/// A built shipping service: connected, migrated, ready to serve.
pub struct App {
    pub host: ServiceHost,
    pub api: ShippingApi,
    pub feed: TrackingFeed,
}

impl App {
    pub async fn build(config: &ServiceConfig) -> anyhow::Result<Self> {
        let host = ServiceHost::start::<store::Migrator>(config).await?;
        let feed = TrackingFeed::default();
        let api = ShippingApi::new(host.writes.clone(), feed.clone(), host.drain());
        Ok(Self { host, api, feed })
    }

    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let routes = Routes::new(ShippingServiceServer::new(self.api));
        self.host
            .serve(routes, &[GRPC_SERVICE], listener, shutdown)
            .await
    }
}
