//! The order service: customer orders with lines and totals, their status machine, listing
//! with pagination and filters, and a live status stream per order.

pub mod api;
pub mod domain;
pub mod store;

use std::future::Future;

use ordermesh::config::ServiceConfig;
use ordermesh::proto::order::v1::order_service_server::OrderServiceServer;
use ordermesh::server::MeshServer;
use ordermesh::shutdown::Drain;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use api::{OrderApi, OrderFeed};

pub const SERVICE: &str = "order";
pub const DEFAULT_PORT: u16 = 50051;
pub const GRPC_SERVICE: &str = "ordermesh.order.v1.OrderService";

/// A built order service: connected, migrated, ready to serve.
pub struct App {
    pub config: ServiceConfig,
    pub db: DatabaseConnection,
    pub api: OrderApi,
    pub feed: OrderFeed,
    drain: Drain,
}

impl App {
    pub async fn build(config: &ServiceConfig) -> anyhow::Result<Self> {
        let db =
            ordermesh::db::connect_and_migrate::<store::Migrator>(&config.database_url).await?;
        let feed = OrderFeed::default();
        let drain = Drain::new();
        let api = OrderApi::new(db.clone(), feed.clone(), drain.clone());
        Ok(Self {
            config: config.clone(),
            db,
            api,
            feed,
            drain,
        })
    }

    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let routes = Routes::new(OrderServiceServer::new(self.api.clone()));
        MeshServer::new(&self.config, routes, &[GRPC_SERVICE])
            .database(self.db.clone())
            .drain(self.drain.clone())
            .serve(listener, shutdown)
            .await
    }
}
