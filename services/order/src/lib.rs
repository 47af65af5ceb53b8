//! The order service: customer orders with lines and totals, their status machine, listing
//! with pagination and filters, and a live status stream per order.

pub mod aggregate;
pub mod api;
pub mod cli;
pub mod domain;
pub mod events;
pub mod orders;
pub mod projections;
pub mod saga;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ordermesh::config::{Discovery, EnvReads, ServiceConfig};
use ordermesh::host::ServiceHost;
use ordermesh::proto::order::v1::order_service_server::OrderServiceServer;
use ordermesh::transport::tls::Transport;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use api::OrderApi;
pub use orders::{OrderFeed, Orders};
pub use saga::{OrderSaga, Participants, DEFAULT_STEP_BUDGET};

pub const SERVICE: &str = "order";
pub const DEFAULT_PORT: u16 = 50051;
pub const GRPC_SERVICE: &str = "ordermesh.order.v1.OrderService";

/// The services the placement saga calls, in the order `Participants` takes them.
pub const PARTICIPANTS: [&str; 3] = ["inventory", "payment", "shipping"];

/// A built order service: connected, migrated, ready to serve.
pub struct App {
    pub host: ServiceHost,
    pub api: OrderApi,
    pub feed: OrderFeed,
    pub saga: Option<Arc<OrderSaga>>,
    participants: Option<Participants>,
}

impl App {
    pub async fn build(config: &ServiceConfig) -> anyhow::Result<Self> {
        Self::build_with(config, writer_from(&EnvReads::default())?).await
    }

    /// `build`, writing orders with `writer` (its snapshot interval).
    pub async fn build_with(config: &ServiceConfig, writer: store::Writer) -> anyhow::Result<Self> {
        let mut host = ServiceHost::start::<store::Migrator>(config).await?;
        // The order service's outbox is its event store.
        host.outbox = host
            .outbox
            .clone()
            .with_event_store(Arc::new(store::public::PublicOrderEvents::default()));
        let feed = OrderFeed::default();
        let api = OrderApi::new(host.writes.clone(), feed.clone(), host.drain(), writer);
        api.orders()
            .projector()
            .create_tables()
            .await
            .map_err(|e| anyhow::anyhow!("read model tables: {e}"))?;
        Ok(Self {
            host,
            api,
            feed,
            saga: None,
            participants: None,
        })
    }

    /// Places orders through the saga, calling these participants. Without this, orders are
    /// recorded and stay PENDING.
    pub fn with_participants(mut self, parts: Participants) -> Self {
        self.participants = Some(parts.clone());
        let saga = OrderSaga::new(parts, self.api.orders().clone(), self.host.db.clone());
        self.api = self.api.with_saga(saga.clone());
        self.saga = Some(saga);
        self
    }

    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let projector = self.api.orders().projector().clone();
        // Each read model's health: NOT_SERVING while it is stopped at an event it cannot
        // apply (the service itself keeps serving; reads that need the model say why).
        for name in projector.names() {
            let p = projector.clone();
            self.host.health_detail(
                format!("projection:{name}"),
                Arc::new(move || {
                    let ok = p.failure(name).is_none();
                    Box::pin(async move { ok })
                }),
            );
        }
        self.host.spawn(projector.run(self.host.drain()));
        if let Some(saga) = &self.saga {
            let resumed = saga.resume_all().await?;
            if resumed > 0 {
                tracing::info!(resumed, "resuming unfinished order sagas");
            }
            // A saga stopped by a database error is picked up again without a restart.
            let saga = saga.clone();
            self.host
                .every("resuming sagas", Duration::from_secs(30), move || {
                    let saga = saga.clone();
                    async move { saga.resume_all().await }
                });
        }
        // Shipping's events: from RabbitMQ when BROKER_URL is set, else from shipping's own
        // event log stream (which needs the participants' channel to shipping).
        let handler = Arc::new(events::ShippingEvents {
            orders: self.api.orders().clone(),
        });
        let shipping_log = self.participants.as_ref().map(|p| p.shipping.clone());
        self.host
            .consume("shipping", &events::SHIPPING_EVENTS, handler, shipping_log);
        let routes = Routes::new(OrderServiceServer::new(self.api));
        self.host
            .serve(routes, &[GRPC_SERVICE], listener, shutdown)
            .await
    }
}

/// How orders are written, from the environment: `ORDER_SNAPSHOT_EVERY` (a positive number of
/// events, default `store::DEFAULT_SNAPSHOT_EVERY`) is how often an order's state is
/// snapshotted.
pub fn writer_from(env: &EnvReads) -> anyhow::Result<store::Writer> {
    let snapshot_every = match env.get("ORDER_SNAPSHOT_EVERY") {
        None => store::DEFAULT_SNAPSHOT_EVERY,
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                anyhow::anyhow!("ORDER_SNAPSHOT_EVERY: '{v}' is not a positive number of events")
            })?,
    };
    Ok(store::Writer { snapshot_every })
}

/// The saga's participants as the environment names them (`ordermesh::config::upstreams`):
/// each of inventory, payment and shipping from `<SERVICE>_URL`, else through `MESH_DNS`
/// (SRV `_grpc._tcp.<service>.<MESH_ZONE>`; `MESH_DNS=system` asks the resolvers of
/// `/etc/resolv.conf`, e.g. a pod's cluster DNS with `MESH_ZONE=<namespace>.svc.cluster.local.`).
/// Calls go over mTLS with this service's identity unless the service runs in plaintext, and
/// each participant's stack is tuned by `<SERVICE>_BALANCER`, `_TIMEOUT`, `_RETRY_ATTEMPTS`
/// and `_BREAKER`; `SAGA_STEP_BUDGET` (e.g. `30s`) is how long the steps before the payment
/// is authorized wait for an unavailable participant. `None` when neither `MESH_DNS` nor any `<SERVICE>_URL` is set: orders are
/// then recorded and stay PENDING.
pub fn participants_from_env(config: &ServiceConfig) -> anyhow::Result<Option<Participants>> {
    participants_from(config, &EnvReads::default())
}

/// `participants_from_env`, reading the environment through `env` (which records the names
/// asked for, for `--check-config`).
pub fn participants_from(
    config: &ServiceConfig,
    env: &EnvReads,
) -> anyhow::Result<Option<Participants>> {
    let discovery = Discovery::from_env(env);
    let any_url = PARTICIPANTS
        .iter()
        .any(|svc| env.get(&format!("{}_URL", svc.to_uppercase())).is_some());
    if discovery.mesh_dns.is_none() && !any_url {
        return Ok(None);
    }
    let identity = match &config.transport {
        Transport::Plaintext => None,
        Transport::MutualTls(tls) => {
            let id = ordermesh::transport::tls::MeshIdentity::load(tls.paths.clone())
                .map_err(|e| anyhow::anyhow!("mesh certificate: {e}"))?;
            // Rotated certificates are picked up for outgoing calls too.
            if !config.check_only {
                drop(id.watch(tls.reload_every));
            }
            Some(id)
        }
    };
    let upstreams =
        ordermesh::config::upstreams(&PARTICIPANTS, &discovery, identity.as_ref(), env)?;
    let step_budget = match env.get("SAGA_STEP_BUDGET") {
        None => DEFAULT_STEP_BUDGET,
        Some(v) => ordermesh::types::time::parse_duration(&v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "SAGA_STEP_BUDGET: '{v}' is not a positive duration (e.g. 30s, 2m, 500ms)"
                )
            })?,
    };
    let stack = |u: &ordermesh::transport::client::Upstream| {
        u.stack().map_err(|e| anyhow::anyhow!("{}: {e}", u.name))
    };
    Ok(Some(Participants {
        inventory: stack(&upstreams[0])?,
        payment: stack(&upstreams[1])?,
        shipping: stack(&upstreams[2])?,
        step_budget,
    }))
}
