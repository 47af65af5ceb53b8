//! The payment service: card authorizations, captures, voids and refunds against a built-in,
//! deterministic card processor simulator (see `domain::simulate`).

pub mod api;
pub mod domain;
pub mod store;

use std::future::Future;

use ordermesh::config::ServiceConfig;
use ordermesh::proto::events::v1::event_log_service_server::EventLogServiceServer;
use ordermesh::proto::payment::v1::payment_service_server::PaymentServiceServer;
use ordermesh::transport::server::MeshServer;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use api::PaymentApi;

pub const SERVICE: &str = "payment";
pub const DEFAULT_PORT: u16 = 50052;
pub const GRPC_SERVICE: &str = "ordermesh.payment.v1.PaymentService";
pub const EVENT_LOG_SERVICE: &str = "ordermesh.events.v1.EventLogService";

/// A built payment service: connected, migrated, ready to serve.
pub struct App {
    pub config: ServiceConfig,
    pub db: DatabaseConnection,
    /// This service's events, published from the outbox and served as `EventLogService`.
    pub outbox: ordermesh::events::outbox::Outbox,
    pub api: PaymentApi,
}

impl App {
    pub async fn build(config: &ServiceConfig) -> anyhow::Result<Self> {
        let db = ordermesh::data::db::connect_and_migrate::<store::Migrator>(&config.database_url)
            .await?;
        let api = PaymentApi::new(db.clone());
        Ok(Self {
            config: config.clone(),
            outbox: ordermesh::events::outbox::Outbox::for_service(db.clone(), config),
            db,
            api,
        })
    }

    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let drain = ordermesh::transport::shutdown::Drain::new();
        let relay = tokio::spawn(self.outbox.clone().run_relay(drain.clone()));
        let log = EventLogServiceServer::new(self.outbox.log_service(drain.clone()));
        let routes = Routes::new(PaymentServiceServer::new(self.api.clone())).add_service(log);
        let result = MeshServer::new(&self.config, routes, &[GRPC_SERVICE, EVENT_LOG_SERVICE])
            .database(self.db.clone())
            .drain(drain)
            .serve(listener, shutdown)
            .await;
        relay.abort();
        result
    }
}
