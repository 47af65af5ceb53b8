//! The inventory service: catalog items, stock levels and per-order reservations.

pub mod api;
pub mod domain;
pub mod store;

use std::future::Future;
use std::time::Duration;

use ordermesh::config::ServiceConfig;
use ordermesh::proto::events::v1::event_log_service_server::EventLogServiceServer;
use ordermesh::proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use ordermesh::transport::server::MeshServer;
use ordermesh::transport::shutdown::Drain;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use api::{InventoryApi, StockFeed};

pub const SERVICE: &str = "inventory";
pub const DEFAULT_PORT: u16 = 50053;
pub const GRPC_SERVICE: &str = "ordermesh.inventory.v1.InventoryService";
pub const EVENT_LOG_SERVICE: &str = "ordermesh.events.v1.EventLogService";

/// A built inventory service: connected, migrated, ready to serve.
pub struct App {
    pub config: ServiceConfig,
    pub db: DatabaseConnection,
    /// This service's events, published from the outbox and served as `EventLogService`.
    pub outbox: ordermesh::events::outbox::Outbox,
    pub api: InventoryApi,
    pub feed: StockFeed,
    drain: Drain,
    /// How often due reservations are expired.
    pub expiry_interval: Duration,
}

impl App {
    pub async fn build(config: &ServiceConfig) -> anyhow::Result<Self> {
        let db = ordermesh::data::db::connect_and_migrate::<store::Migrator>(&config.database_url)
            .await?;
        let feed = StockFeed::default();
        let drain = Drain::new();
        let api = InventoryApi::new(db.clone(), feed.clone(), drain.clone());
        Ok(Self {
            config: config.clone(),
            outbox: ordermesh::events::outbox::Outbox::for_service(db.clone(), config),
            db,
            api,
            feed,
            drain,
            expiry_interval: Duration::from_secs(5),
        })
    }

    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let sweeper = {
            let api = self.api.clone();
            let drain = self.drain.clone();
            let every = self.expiry_interval;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = drain.draining() => return,
                    }
                    if let Err(e) = api.expire_due().await {
                        tracing::warn!(error = %e, "expiring reservations failed");
                    }
                }
            })
        };
        let relay = tokio::spawn(self.outbox.clone().run_relay(self.drain.clone()));
        let log = EventLogServiceServer::new(self.outbox.log_service(self.drain.clone()));
        let routes = Routes::new(InventoryServiceServer::new(self.api.clone())).add_service(log);
        let result = MeshServer::new(&self.config, routes, &[GRPC_SERVICE, EVENT_LOG_SERVICE])
            .database(self.db.clone())
            .drain(self.drain.clone())
            .serve(listener, shutdown)
            .await;
        sweeper.abort();
        relay.abort();
        result
    }
}
