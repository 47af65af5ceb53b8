//! The shipping service: quotes, shipments per order and their tracking.

pub mod api;
pub mod domain;
pub mod store;

use std::future::Future;

use ordermesh::config::ServiceConfig;
use ordermesh::proto::events::v1::event_log_service_server::EventLogServiceServer;
use ordermesh::proto::shipping::v1::shipping_service_server::ShippingServiceServer;
use ordermesh::transport::server::MeshServer;
use ordermesh::transport::shutdown::Drain;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use api::{ShippingApi, TrackingFeed};

pub const SERVICE: &str = "shipping";
pub const DEFAULT_PORT: u16 = 50054;
pub const GRPC_SERVICE: &str = "ordermesh.shipping.v1.ShippingService";
pub const EVENT_LOG_SERVICE: &str = "ordermesh.events.v1.EventLogService";

/// A built shipping service: connected, migrated, ready to serve.
pub struct App {
    pub config: ServiceConfig,
    pub db: DatabaseConnection,
    pub api: ShippingApi,
    pub feed: TrackingFeed,
    /// Shipment events, published from the outbox and served as `EventLogService`.
    pub outbox: ordermesh::events::outbox::Outbox,
    drain: Drain,
}

impl App {
    pub async fn build(config: &ServiceConfig) -> anyhow::Result<Self> {
        let db = ordermesh::data::db::connect_and_migrate::<store::Migrator>(&config.database_url)
            .await?;
        let feed = TrackingFeed::default();
        let drain = Drain::new();
        let api = ShippingApi::new(db.clone(), feed.clone(), drain.clone());
        Ok(Self {
            config: config.clone(),
            outbox: ordermesh::events::outbox::Outbox::for_service(db.clone(), config),
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
        let relay = tokio::spawn(self.outbox.clone().run_relay(self.drain.clone()));
        let log = EventLogServiceServer::new(self.outbox.log_service(self.drain.clone()));
        let routes = Routes::new(ShippingServiceServer::new(self.api.clone())).add_service(log);
        let result = MeshServer::new(&self.config, routes, &[GRPC_SERVICE, EVENT_LOG_SERVICE])
            .database(self.db.clone())
            .drain(self.drain.clone())
            .serve(listener, shutdown)
            .await;
        relay.abort();
        result
    }
}
