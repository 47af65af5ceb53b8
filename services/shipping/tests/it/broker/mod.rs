//! Shipping's events over RabbitMQ (`BROKER_URL` set), against the real broker on
//! 127.0.0.1:5672 with a vhost of each test's own: the relay publishes with confirms, a
//! consumer group applies each event once and in order per shipment, a cut connection loses
//! nothing, a poison event ends in the dead-letter queue after `MAX_ATTEMPTS` deliveries, and
//! an event that is only not ready yet is redelivered until it applies.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordermesh::config::ServiceConfig;
use ordermesh::events::amqp::Subscription;
use ordermesh::events::inbox::{Handler, HandlerError, MAX_ATTEMPTS};
use ordermesh::proto::events::v1 as ev;
use ordermesh::proto::shipping::v1 as pb;
use ordermesh::proto::shipping::v1::shipping_service_client::ShippingServiceClient;
use ordermesh::testing::{eventually, spawn, Backend, Spawned, TestDatabase, TestVhost};
use ordermesh::transport::shutdown::Drain;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait, Statement,
};
use shipping_service::{App, SERVICE};
use tonic::transport::Channel;

const PATIENCE: Duration = Duration::from_secs(60);

use crate::helpers::create_req;

mod delivery;
mod redelivery;

const JOURNEY: [pb::ShipmentStatus; 5] = [
    pb::ShipmentStatus::LabelCreated,
    pb::ShipmentStatus::PickedUp,
    pb::ShipmentStatus::InTransit,
    pb::ShipmentStatus::OutForDelivery,
    pb::ShipmentStatus::Delivered,
];

/// ShipmentCreated, a ShipmentStatusChanged per step, and ShipmentDelivered.
const EVENTS_PER_JOURNEY: usize = JOURNEY.len() + 2;

/// Creates a shipment for `order` and moves it through the first `steps` of `JOURNEY`.
async fn ship(client: &mut ShippingServiceClient<Channel>, order: &str, steps: usize) {
    let s = client
        .create_shipment(create_req(order))
        .await
        .expect("create shipment")
        .into_inner()
        .shipment
        .expect("shipment");
    for to in JOURNEY.iter().take(steps) {
        client
            .record_tracking_event(pb::RecordTrackingEventRequest {
                shipment_id: s.shipment_id.clone(),
                status: *to as i32,
                location: "Berlin".into(),
                note: String::new(),
            })
            .await
            .expect("tracking event");
    }
}

fn order_of(e: &ev::EventEnvelope) -> String {
    use ev::event_envelope::Payload;
    match &e.payload {
        Some(Payload::ShipmentCreated(c)) => c.order_id.clone(),
        Some(Payload::ShipmentStatusChanged(c)) => c.order_id.clone(),
        Some(Payload::ShipmentDelivered(c)) => c.order_id.clone(),
        Some(Payload::ShipmentCancelled(c)) => c.order_id.clone(),
        _ => String::new(),
    }
}

fn is_created(e: &ev::EventEnvelope) -> bool {
    matches!(
        e.payload,
        Some(ev::event_envelope::Payload::ShipmentCreated(_))
    )
}

/// A consumer's handler: its effect is a row in `effects`, written in the inbox transaction;
/// it can be told to fail the `ShipmentCreated` of one order as poison, or as not ready for
/// its first few tries.
#[derive(Clone, Default)]
struct Effects {
    /// Every call, by event id.
    calls: Arc<Mutex<HashMap<String, u32>>>,
    /// Committed events in the order they committed.
    applied: Arc<Mutex<Vec<ev::EventEnvelope>>>,
    poison_order: Option<String>,
    /// (order, how many tries say Retry)
    not_ready: Option<(String, u32)>,
}

impl Effects {
    fn applied(&self) -> Vec<ev::EventEnvelope> {
        self.applied.lock().expect("lock").clone()
    }

    fn calls(&self, event_id: &str) -> u32 {
        self.calls
            .lock()
            .expect("lock")
            .get(event_id)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl Handler for Effects {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        e: &ev::EventEnvelope,
    ) -> Result<(), HandlerError> {
        let call = {
            let mut calls = self.calls.lock().expect("lock");
            let n = calls.entry(e.event_id.clone()).or_default();
            *n += 1;
            *n
        };
        if is_created(e) && self.poison_order.as_deref() == Some(order_of(e).as_str()) {
            return Err(HandlerError::Poison("this shipment can never apply".into()));
        }
        if let Some((order, tries)) = &self.not_ready {
            if is_created(e) && *order == order_of(e) && call <= *tries {
                return Err(HandlerError::Retry(format!("not ready (try {call})")));
            }
        }
        txn.execute(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO effects (event_id) VALUES (?)",
            [e.event_id.clone().into()],
        ))
        .await
        .map_err(|err| HandlerError::Retry(err.to_string()))?;
        Ok(())
    }

    async fn committed(&self, e: &ev::EventEnvelope) {
        self.applied.lock().expect("lock").push(e.clone());
    }
}

struct ConsumerMigrator;

#[async_trait::async_trait]
impl sea_orm_migration::MigratorTrait for ConsumerMigrator {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        vec![Box::new(ordermesh::events::inbox::Migration)]
    }
}

/// A consumer group running against the test vhost, with its own SQLite database.
struct Group {
    sub: Subscription,
    effects: Effects,
    db: DatabaseConnection,
    drain: Drain,
    task: tokio::task::JoinHandle<()>,
    _store: TestDatabase,
}

impl Group {
    /// Starts the group and waits until it consumes (its queue exists from then on).
    async fn start(vhost: &TestVhost, name: &str, types: &[&str], effects: Effects) -> Self {
        let store = TestDatabase::new(Backend::Sqlite).await;
        let db = ordermesh::data::db::connect_and_migrate::<ConsumerMigrator>(&store.url)
            .await
            .expect("consumer database");
        db.execute_unprepared(
            "CREATE TABLE effects (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL)",
        )
        .await
        .expect("effects table");
        let sub = Subscription::new(
            vhost.url.clone(),
            name,
            SERVICE,
            types.iter().map(|t| t.to_string()).collect(),
        );
        let drain = Drain::new();
        let task = tokio::spawn(ordermesh::events::amqp::run(
            db.clone(),
            sub.clone(),
            Arc::new(effects.clone()),
            drain.clone(),
        ));
        assert!(
            eventually(PATIENCE, || async { sub.sessions() >= 1 }).await,
            "consumer {name} never started consuming"
        );
        Self {
            sub,
            effects,
            db,
            drain,
            task,
            _store: store,
        }
    }

    async fn effect_counts(&self) -> HashMap<String, i64> {
        effect_counts(&self.db).await
    }

    async fn stop(self) {
        self.drain.start();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the consumer group stopped")
            .expect("the consumer group's task");
    }
}

/// How many times each event's effect was written.
async fn effect_counts(db: &DatabaseConnection) -> HashMap<String, i64> {
    let rows = db
        .query_all(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT event_id, COUNT(*) AS n FROM effects GROUP BY event_id",
        ))
        .await
        .expect("effects");
    rows.iter()
        .map(|r| {
            (
                r.try_get::<String>("", "event_id").expect("event_id"),
                r.try_get::<i64>("", "n").expect("n"),
            )
        })
        .collect()
}

/// Shipping with `BROKER_URL` pointing at the test vhost.
struct Producer {
    server: Spawned,
    client: ShippingServiceClient<Channel>,
    outbox: ordermesh::events::outbox::Outbox,
    db: DatabaseConnection,
    _store: TestDatabase,
}

impl Producer {
    async fn start(vhost: &TestVhost) -> Self {
        let store = TestDatabase::new(Backend::Sqlite).await;
        let mut config = ServiceConfig::for_test(SERVICE, &store.url);
        config.broker_url = Some(vhost.url.clone());
        let app = App::build(&config).await.expect("shipping");
        let outbox = app.host.outbox.clone();
        let db = app.host.db.clone();
        assert!(outbox.publisher().is_some(), "BROKER_URL gives a publisher");
        let server = spawn(|l, s| app.serve(l, s)).await;
        let client = ShippingServiceClient::connect(server.uri())
            .await
            .expect("connect");
        Self {
            server,
            client,
            outbox,
            db,
            _store: store,
        }
    }

    /// The outbox rows, oldest first.
    async fn rows(&self) -> Vec<ordermesh::events::outbox::entity::Model> {
        let mut rows = ordermesh::events::outbox::entity::Entity::find()
            .all(&self.db)
            .await
            .expect("outbox");
        rows.sort_by_key(|r| r.id);
        rows
    }

    /// Waits until every recorded row was confirmed by the broker (has its sequence).
    async fn all_published(&self) -> Vec<ordermesh::events::outbox::entity::Model> {
        assert!(
            eventually(PATIENCE, || async {
                self.rows().await.iter().all(|r| r.sequence.is_some())
            })
            .await,
            "rows left unpublished: {:?}",
            self.rows()
                .await
                .iter()
                .filter(|r| r.sequence.is_none())
                .map(|r| r.id)
                .collect::<Vec<_>>()
        );
        self.rows().await
    }

    fn connects(&self) -> u64 {
        self.outbox.publisher().map(|p| p.connects()).unwrap_or(0)
    }
}

/// Each shipment's events were applied in the order shipping recorded them.
fn assert_in_order_per_shipment(applied: &[ev::EventEnvelope]) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for e in applied {
        let prev = last
            .insert(e.aggregate_id.as_str(), e.sequence)
            .unwrap_or(0);
        assert!(
            e.sequence > prev,
            "shipment {} saw sequence {} after {prev}",
            e.aggregate_id,
            e.sequence
        );
    }
}
