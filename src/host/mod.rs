//! The service host: what every service repeats around its own routes. It connects to the
//! database and migrates it, keeps the outbox (with a RabbitMQ publisher when `BROKER_URL` is
//! set) and its relay, serves the event log next to the service's routes through the one
//! server stack, consumes other services' events over the configured transport, and runs the
//! service's periodic tasks until the drain starts.
//!
//! A service's `lib.rs` builds a host, hands it its routes and tasks, and calls `serve`:
//!
//! ```ignore
//! let mut host = ServiceHost::start::<store::Migrator>(&config).await?;
//! let expiring = api.clone();
//! host.every("expiring reservations", Duration::from_secs(5), move || {
//!     let api = expiring.clone();
//!     async move { api.expire_due().await }
//! });
//! host.serve(Routes::new(InventoryServiceServer::new(api)), &[GRPC_SERVICE], listener, shutdown).await
//! ```

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::config::ServiceConfig;
use crate::events::inbox::Handler;
use crate::events::outbox::{EventLog, Outbox};
use crate::events::{amqp, grpc_log};
use crate::proto::events::v1::event_log_service_server::EventLogServiceServer;
use crate::transport::client::MeshChannel;
use crate::transport::server::MeshServer;
use crate::transport::shutdown::Drain;

/// The gRPC name of the event log every service serves.
pub const EVENT_LOG_SERVICE: &str = <EventLogServiceServer<EventLog> as NamedService>::NAME;

/// One service process's shared parts, built before its routes and served with them.
pub struct ServiceHost {
    pub config: ServiceConfig,
    pub db: DatabaseConnection,
    /// The service's writer for `db`: keyed writes and the order's changes share commits
    /// through it (`data::group_commit`).
    pub writes: crate::data::group_commit::GroupCommit,
    /// This service's events, published by the relay and served as `EventLogService`.
    pub outbox: Outbox,
    drain: Drain,
    tasks: Vec<BoxFuture<'static, ()>>,
    details: Vec<(String, crate::transport::server::Readiness)>,
}

impl ServiceHost {
    /// Connects to the configured database and applies the migrations of `M`.
    pub async fn start<M: MigratorTrait>(config: &ServiceConfig) -> anyhow::Result<Self> {
        let db = crate::data::db::connect_and_migrate::<M>(&config.database_url).await?;
        let mut outbox = Outbox::new(db.clone(), config.service);
        if let Some(url) = &config.broker_url {
            outbox = outbox.with_publisher(amqp::Publisher::new(url.clone(), config.service));
        }
        Ok(Self {
            config: config.clone(),
            writes: crate::data::group_commit::GroupCommit::new(db.clone(), config.service),
            db,
            outbox,
            drain: Drain::new(),
            tasks: Vec::new(),
            details: Vec::new(),
        })
    }

    /// The drain that starts when the server shuts down: streams and tasks watch it.
    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }

    /// Reports `check` under the health name `name` next to the service's own status
    /// (`transport::server::MeshServer::health_detail`).
    pub fn health_detail(
        &mut self,
        name: impl Into<String>,
        check: crate::transport::server::Readiness,
    ) {
        self.details.push((name.into(), check));
    }

    /// Runs `task` while the service serves; it is stopped when serving ends.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(Box::pin(task));
    }

    /// Runs `work` every `period` while the service serves, until the drain starts. A failed
    /// round is logged with `what` and the next one comes on time.
    pub fn every<F, Fut, T, E>(&mut self, what: &'static str, period: Duration, work: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send,
        E: Display,
    {
        let drain = self.drain.clone();
        self.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = drain.draining() => return,
                }
                if let Err(e) = work().await {
                    tracing::warn!(error = %e, "{what} failed");
                }
            }
        });
    }

    /// Applies `producer`'s events of `types` (all when empty) with `handler`, exactly once each:
    /// from RabbitMQ when `BROKER_URL` is set, otherwise from the producer's own event log over
    /// `log_channel`. Returns false when neither transport is available (no broker and no
    /// channel to the producer), in which case nothing is consumed.
    pub fn consume(
        &mut self,
        producer: &str,
        types: &[&str],
        handler: Arc<dyn Handler>,
        log_channel: Option<MeshChannel>,
    ) -> bool {
        let consumer = self.config.service;
        let types: Vec<String> = types.iter().map(|s| s.to_string()).collect();
        let (db, drain) = (self.db.clone(), self.drain.clone());
        if let Some(url) = &self.config.broker_url {
            let sub = amqp::Subscription::new(url.clone(), consumer, producer, types);
            self.spawn(amqp::run(db, sub, handler, drain));
        } else if let Some(channel) = log_channel {
            let sub = grpc_log::Subscription {
                consumer: consumer.to_string(),
                producer: producer.to_string(),
                types,
                channel,
            };
            self.spawn(grpc_log::run(db, sub, handler, drain));
        } else {
            return false;
        }
        true
    }

    /// Serves `routes` (whose gRPC service names are `grpc_names`, for health) and the event
    /// log on `listener` through the server stack, with the outbox relay and every task
    /// running, until `shutdown` resolves and the drain ends.
    pub async fn serve(
        mut self,
        routes: Routes,
        grpc_names: &[&'static str],
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let relay = self.outbox.clone().run_relay(self.drain.clone());
        self.spawn(relay);
        let tasks: Vec<_> = self.tasks.drain(..).map(tokio::spawn).collect();
        let log = EventLogServiceServer::new(self.outbox.log_service(self.drain.clone()));
        let mut names = grpc_names.to_vec();
        names.push(EVENT_LOG_SERVICE);
        let mut server = MeshServer::new(self.config.server(), routes.add_service(log), &names)
            .readiness(crate::data::db::readiness(self.db.clone()));
        for (name, check) in std::mem::take(&mut self.details) {
            server = server.health_detail(name, check);
        }
        let result = server
            .drain(self.drain.clone())
            .serve(listener, shutdown)
            .await;
        for t in tasks {
            t.abort();
        }
        result
    }
}
