//! The order service: customer orders with lines and totals, their status machine, listing
//! with pagination and filters, and a live status stream per order.

pub mod api;
pub mod domain;
pub mod events;
pub mod saga;
pub mod store;

use std::future::Future;

use ordermesh::config::ServiceConfig;
use ordermesh::proto::events::v1::event_log_service_server::EventLogServiceServer;
use ordermesh::proto::order::v1::order_service_server::OrderServiceServer;
use ordermesh::transport::server::MeshServer;
use ordermesh::transport::shutdown::Drain;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use api::{OrderApi, OrderFeed};
pub use saga::{OrderSaga, Participants};

pub const SERVICE: &str = "order";
pub const DEFAULT_PORT: u16 = 50051;
pub const GRPC_SERVICE: &str = "ordermesh.order.v1.OrderService";
pub const EVENT_LOG_SERVICE: &str = "ordermesh.events.v1.EventLogService";

/// A built order service: connected, migrated, ready to serve.
pub struct App {
    pub config: ServiceConfig,
    pub db: DatabaseConnection,
    pub api: OrderApi,
    pub feed: OrderFeed,
    pub saga: Option<std::sync::Arc<OrderSaga>>,
    /// Order events, published from the outbox and served as `EventLogService`.
    pub outbox: ordermesh::events::outbox::Outbox,
    participants: Option<Participants>,
    drain: Drain,
}

impl App {
    pub async fn build(config: &ServiceConfig) -> anyhow::Result<Self> {
        let db = ordermesh::data::db::connect_and_migrate::<store::Migrator>(&config.database_url)
            .await?;
        let feed = OrderFeed::default();
        let drain = Drain::new();
        let api = OrderApi::new(db.clone(), feed.clone(), drain.clone());
        Ok(Self {
            config: config.clone(),
            outbox: ordermesh::events::outbox::Outbox::for_service(db.clone(), config),
            db,
            api,
            feed,
            saga: None,
            participants: None,
            drain,
        })
    }

    /// Places orders through the saga, calling these participants. Without this, orders are
    /// recorded and stay PENDING.
    pub fn with_participants(mut self, parts: Participants) -> Self {
        self.participants = Some(parts.clone());
        let saga = OrderSaga::new(parts, self.api.clone(), self.db.clone());
        self.api = self.api.with_saga(saga.clone());
        self.saga = Some(saga);
        self
    }

    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        if let Some(saga) = &self.saga {
            let resumed = saga.resume_all().await?;
            if resumed > 0 {
                tracing::info!(resumed, "resuming unfinished order sagas");
            }
        }
        let mut tasks = vec![tokio::spawn(
            self.outbox.clone().run_relay(self.drain.clone()),
        )];
        if let Some(saga) = &self.saga {
            // A saga stopped by a database error is picked up again without a restart.
            let saga = saga.clone();
            let drain = self.drain.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
                        _ = drain.draining() => return,
                    }
                    if let Err(e) = saga.resume_all().await {
                        tracing::warn!(error = %e, "resuming sagas failed");
                    }
                }
            }));
        }
        // Shipping's events: from RabbitMQ when BROKER_URL is set, else from shipping's own
        // event log stream (which needs the participants' channel to shipping).
        let handler = std::sync::Arc::new(events::ShippingEvents {
            api: self.api.clone(),
        });
        let types: Vec<String> = events::SHIPPING_EVENTS
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(url) = &self.config.broker_url {
            let sub =
                ordermesh::events::amqp::Subscription::new(url.clone(), SERVICE, "shipping", types);
            tasks.push(tokio::spawn(ordermesh::events::amqp::run(
                self.db.clone(),
                sub,
                handler,
                self.drain.clone(),
            )));
        } else if let Some(parts) = &self.participants {
            let sub = ordermesh::events::inbox::Subscription {
                consumer: SERVICE.to_string(),
                producer: "shipping".to_string(),
                types,
                channel: parts.shipping.clone(),
            };
            tasks.push(tokio::spawn(ordermesh::events::inbox::run(
                self.db.clone(),
                sub,
                handler,
                self.drain.clone(),
            )));
        }
        let log = EventLogServiceServer::new(self.outbox.log_service(self.drain.clone()));
        let routes = Routes::new(OrderServiceServer::new(self.api.clone())).add_service(log);
        let result = MeshServer::new(&self.config, routes, &[GRPC_SERVICE, EVENT_LOG_SERVICE])
            .database(self.db.clone())
            .drain(self.drain.clone())
            .serve(listener, shutdown)
            .await;
        for t in tasks {
            t.abort();
        }
        result
    }
}

/// The saga's participants as the environment names them:
/// - `MESH_DNS=<host:port>` (and optionally `MESH_ZONE`, default `mesh.local.`): each
///   participant is found through SRV `_grpc._tcp.<service>.<zone>`, as `make run` serves;
///   `MESH_DNS=system` asks the resolvers of `/etc/resolv.conf` instead (a pod's cluster DNS,
///   whose address differs between clusters), e.g. with `MESH_ZONE=<namespace>.svc.cluster.local.`
///   and a headless Service per participant with a port named `grpc`;
/// - or `INVENTORY_URL`, `PAYMENT_URL` and `SHIPPING_URL` (`http://host:port`) all three.
///
/// Calls go over mTLS with this service's identity unless the service runs in plaintext. Each
/// participant's client stack can be tuned with `<SERVICE>_BALANCER`, `<SERVICE>_TIMEOUT`,
/// `<SERVICE>_RETRY_ATTEMPTS` and `<SERVICE>_BREAKER` (e.g. `PAYMENT_TIMEOUT=2s`).
/// `None` when neither is set: orders are then recorded and stay PENDING.
pub fn participants_from_env(config: &ServiceConfig) -> anyhow::Result<Option<Participants>> {
    participants_from(config, &ordermesh::config::EnvReads::default())
}

/// `participants_from_env`, reading the environment through `env` (which records the names
/// asked for, for `--check-config`).
pub fn participants_from(
    config: &ServiceConfig,
    env: &ordermesh::config::EnvReads,
) -> anyhow::Result<Option<Participants>> {
    use ordermesh::config::Transport;
    use ordermesh::transport::client::Upstream;
    use ordermesh::transport::dns::{Lookup, Resolver, Target};

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
    let secure = |u: Upstream, service: &str| -> anyhow::Result<Upstream> {
        let u = match &identity {
            Some(id) => u.mesh(id.clone(), service),
            None => u,
        };
        u.configure(&service.to_uppercase(), |k| env.get(k))
            .map_err(|e| anyhow::anyhow!(e))
    };
    let env = |k: &str| env.get(k);
    let upstreams: Vec<Upstream> = if let Some(ns) = env("MESH_DNS") {
        let nameserver = mesh_dns_nameserver(&ns)?;
        let zone = env("MESH_ZONE").unwrap_or_else(|| "mesh.local.".into());
        let resolver = Resolver::new(nameserver)?;
        ["inventory", "payment", "shipping"]
            .iter()
            .map(|svc| {
                let target = Target {
                    name: format!("{svc}.{}", zone.trim_start_matches('.')),
                    lookup: Lookup::Srv,
                };
                secure(Upstream::dns(svc, resolver.clone(), target), svc)
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        let urls: Vec<Option<String>> = ["INVENTORY_URL", "PAYMENT_URL", "SHIPPING_URL"]
            .iter()
            .map(|k| env(k))
            .collect();
        if urls.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for ((var, svc), url) in [
            ("INVENTORY_URL", "inventory"),
            ("PAYMENT_URL", "payment"),
            ("SHIPPING_URL", "shipping"),
        ]
        .iter()
        .zip(urls)
        {
            let url = url.ok_or_else(|| {
                anyhow::anyhow!("{var}: not set (set all of INVENTORY_URL, PAYMENT_URL and SHIPPING_URL, or MESH_DNS)")
            })?;
            out.push(secure(Upstream::new(url), svc)?);
        }
        out
    };
    let stack = |u: &Upstream| u.stack().map_err(|e| anyhow::anyhow!("{}: {e}", u.name));
    Ok(Some(Participants {
        inventory: stack(&upstreams[0])?,
        payment: stack(&upstreams[1])?,
        shipping: stack(&upstreams[2])?,
    }))
}

/// The nameserver `MESH_DNS` names: an `address:port`, or `None` for `system` (the resolvers
/// of `/etc/resolv.conf`).
pub fn mesh_dns_nameserver(value: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    ordermesh::transport::dns::parse_nameserver(value).map_err(|e| anyhow::anyhow!("MESH_DNS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_dns_is_an_address_or_the_system_resolvers() {
        assert_eq!(mesh_dns_nameserver("system").unwrap(), None);
        assert_eq!(
            mesh_dns_nameserver("127.0.0.1:5354").unwrap(),
            Some("127.0.0.1:5354".parse().unwrap())
        );
        let e = mesh_dns_nameserver("kube-dns").unwrap_err().to_string();
        assert!(e.starts_with("MESH_DNS:"), "{e}");
    }
}
