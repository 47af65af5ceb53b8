//! The payment service: card authorizations, captures, voids and refunds against a built-in,
//! deterministic card processor simulator (see `domain::simulate`).

pub mod api;
pub mod domain;
pub mod store;

use std::future::Future;

use ordermesh::config::ServiceConfig;
use ordermesh::host::ServiceHost;
use ordermesh::proto::payment::v1::payment_service_server::PaymentServiceServer;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use api::PaymentApi;

pub const SERVICE: &str = "payment";
pub const DEFAULT_PORT: u16 = 50052;
pub const GRPC_SERVICE: &str = "ordermesh.payment.v1.PaymentService";

/// A built payment service: connected, migrated, ready to serve.
pub struct App {
    pub host: ServiceHost,
    pub api: PaymentApi,
}

impl App {
    pub async fn build(config: &ServiceConfig) -> anyhow::Result<Self> {
        let host = ServiceHost::start::<store::Migrator>(config).await?;
        let api = PaymentApi::new(host.writes.clone());
        Ok(Self { host, api })
    }

    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let routes = Routes::new(PaymentServiceServer::new(self.api));
        self.host
            .serve(routes, &[GRPC_SERVICE], listener, shutdown)
            .await
    }
}
