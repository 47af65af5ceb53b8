//! Shipping's events over RabbitMQ (`BROKER_URL` set), against the real broker on
//! 127.0.0.1:5672 with a vhost of each test's own: the relay publishes with confirms, a
//! consumer group applies each event once and in order per shipment, a cut connection loses
//! nothing, a poison event ends in the dead-letter queue after `MAX_ATTEMPTS` deliveries, and
//! an event that is only not ready yet is redelivered until it applies.

mod common;

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

use common::create_req;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_go_through_rabbitmq_in_order_per_shipment() {
    let vhost = TestVhost::new().await;
    let all = Group::start(&vhost, "audit", &[], Effects::default()).await;
    let delivered_only = Group::start(
        &vhost,
        "billing",
        &["ShipmentDelivered"],
        Effects::default(),
    )
    .await;
    let mut producer = Producer::start(&vhost).await;

    for i in 0..4 {
        ship(&mut producer.client, &format!("ord-{i}"), JOURNEY.len()).await;
    }
    let rows = producer.all_published().await;
    assert_eq!(rows.len(), 4 * EVENTS_PER_JOURNEY, "events recorded");
    let seqs: Vec<i64> = rows.iter().filter_map(|r| r.sequence).collect();
    assert_eq!(
        seqs,
        (1..=rows.len() as i64).collect::<Vec<_>>(),
        "sequences follow the record order"
    );

    assert!(
        eventually(PATIENCE, || async {
            all.effects.applied().len() >= rows.len()
        })
        .await,
        "audit applied {} of {} events",
        all.effects.applied().len(),
        rows.len()
    );
    let applied = all.effects.applied();
    // Exactly the recorded events, with the sequences the relay gave them, once each.
    let by_id: HashMap<&str, i64> = rows
        .iter()
        .map(|r| (r.event_id.as_str(), r.sequence.unwrap_or(0)))
        .collect();
    assert_eq!(applied.len(), rows.len());
    for e in &applied {
        assert_eq!(
            by_id.get(e.event_id.as_str()).copied(),
            Some(e.sequence as i64),
            "{}",
            e.event_id
        );
        assert_eq!(e.producer, "shipping");
    }
    assert_eq!(
        applied
            .iter()
            .map(|e| &e.event_id)
            .collect::<HashSet<_>>()
            .len(),
        rows.len()
    );
    assert_in_order_per_shipment(&applied);
    // This group shares the producer's single queue order: all of the log in sequence order.
    let seq_order: Vec<u64> = applied.iter().map(|e| e.sequence).collect();
    let mut sorted = seq_order.clone();
    sorted.sort();
    assert_eq!(seq_order, sorted);

    // The billing group's binding lets only ShipmentDelivered through: one per shipment.
    assert!(
        eventually(PATIENCE, || async {
            delivered_only.effects.applied().len() >= 4
        })
        .await
    );
    let delivered = delivered_only.effects.applied();
    assert_eq!(delivered.len(), 4);
    assert!(delivered.iter().all(|e| matches!(
        e.payload,
        Some(ev::event_envelope::Payload::ShipmentDelivered(_))
    )));

    // The gRPC log still serves the same events with the same sequences.
    let log = ordermesh::testing::read_event_log(&producer.server.uri(), 0, &[], rows.len()).await;
    assert_eq!(
        log.iter()
            .map(|e| (e.event_id.clone(), e.sequence))
            .collect::<Vec<_>>(),
        rows.iter()
            .map(|r| (r.event_id.clone(), r.sequence.unwrap_or(0) as u64))
            .collect::<Vec<_>>()
    );
    // The inbox and checkpoint say the same.
    assert_eq!(
        ordermesh::events::inbox::checkpoint_of(&all.db, "audit", "shipping")
            .await
            .expect("checkpoint"),
        rows.len() as i64
    );
    assert!(vhost
        .take_all(&all.sub.dead_letter_queue())
        .await
        .is_empty());
    all.stop().await;
    delivered_only.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_connection_loses_no_event_and_applies_none_twice() {
    const SHIPMENTS: usize = 36;
    let vhost = TestVhost::new().await;
    let group = Group::start(&vhost, "audit", &[], Effects::default()).await;
    let producer = Producer::start(&vhost).await;
    let started = Instant::now();

    // Shipping keeps recording events, and the consumer applying them, while the test cuts
    // every connection to the vhost twice; production stops only after both sides came back
    // from the second cut (and at least SHIPMENTS shipments).
    let mut client = producer.client.clone();
    let keep_going = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let production = tokio::spawn({
        let keep_going = keep_going.clone();
        async move {
            let mut n = 0;
            while n < SHIPMENTS || keep_going.load(std::sync::atomic::Ordering::Relaxed) {
                ship(&mut client, &format!("ord-{n}"), JOURNEY.len()).await;
                n += 1;
            }
            n
        }
    });
    let mut cuts = Vec::new();
    for cut in 1..=2u64 {
        // Wait until events flow end to end, then cut.
        let want = group.effects.applied().len() + 10;
        assert!(
            eventually(PATIENCE, || async { group.effects.applied().len() >= want }).await,
            "events stopped flowing before cut {cut}"
        );
        let (connects, sessions) = (producer.connects(), group.sub.sessions());
        vhost.close_connections().await;
        cuts.push((group.effects.applied().len(), producer.rows().await.len()));
        // Both sides come back by themselves.
        assert!(
            eventually(PATIENCE, || async {
                producer.connects() > connects && group.sub.sessions() > sessions
            })
            .await,
            "after cut {cut}: relay connects {} (was {connects}), consumer sessions {} (was {sessions})",
            producer.connects(),
            group.sub.sessions()
        );
    }
    keep_going.store(false, std::sync::atomic::Ordering::Relaxed);
    let shipments = production.await.expect("production");
    let rows = producer.all_published().await;
    assert_eq!(
        rows.len(),
        shipments * EVENTS_PER_JOURNEY,
        "events recorded"
    );
    // The consumer's database is the ground truth: wait until it holds every effect.
    let all_written = eventually(PATIENCE, || async {
        group.effect_counts().await.len() >= rows.len()
    })
    .await;
    if !all_written {
        let counts = group.effect_counts().await;
        let missing: Vec<(i64, Option<i64>, &str)> = rows
            .iter()
            .filter(|r| !counts.contains_key(&r.event_id))
            .map(|r| (r.id, r.sequence, r.event_type.as_str()))
            .collect();
        panic!(
            "effects of {} of {} events written; missing (row, sequence, type) {missing:?}; dead letters {}; queue {:?}",
            counts.len(),
            rows.len(),
            vhost.take_all(&group.sub.dead_letter_queue()).await.len(),
            vhost.queue_depth(&group.sub.queue()).await
        );
    }
    // Stopped, the group applies nothing more: count what it did.
    let (effects, db, sub) = (group.effects.clone(), group.db.clone(), group.sub.clone());
    let counts_before_stop = group.effect_counts().await.len();
    group.stop().await;
    let applied = effects.applied();
    let counts = effect_counts(&db).await;
    assert_eq!(counts_before_stop, rows.len());
    assert_eq!(counts.len(), rows.len(), "every event has its effect");
    for r in &rows {
        assert_eq!(
            counts.get(&r.event_id),
            Some(&1),
            "effect of {} written once",
            r.event_id
        );
    }
    assert_eq!(applied.len(), rows.len());
    assert_in_order_per_shipment(&applied);
    let inbox = ordermesh::events::inbox::entry::Entity::find()
        .all(&db)
        .await
        .expect("inbox");
    assert_eq!(inbox.len(), rows.len());
    println!(
        "{} events, {} shipments; cuts at (applied, recorded) {:?}; relay connected {} times, consumer {} times; {:?}",
        rows.len(),
        shipments,
        cuts,
        producer.connects(),
        sub.sessions(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_is_dead_lettered_after_max_attempts_and_later_events_flow() {
    let vhost = TestVhost::new().await;
    let effects = Effects {
        poison_order: Some("ord-poison".into()),
        ..Default::default()
    };
    let group = Group::start(&vhost, "audit", &[], effects).await;
    let mut producer = Producer::start(&vhost).await;

    ship(&mut producer.client, "ord-1", 1).await;
    ship(&mut producer.client, "ord-poison", 0).await;
    ship(&mut producer.client, "ord-2", 2).await;
    let rows = producer.all_published().await;
    let poison = rows
        .iter()
        .find(|r| {
            r.event_type == "ShipmentCreated"
                && prost::Message::decode(r.payload.as_slice())
                    .map(|e: ev::EventEnvelope| order_of(&e) == "ord-poison")
                    .unwrap_or(false)
        })
        .expect("the poison event")
        .event_id
        .clone();

    let queue = group.sub.dead_letter_queue();
    let deadline = Instant::now() + PATIENCE;
    let mut dead = Vec::new();
    while dead.is_empty() && Instant::now() < deadline {
        dead.extend(vhost.take_all(&queue).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_id, poison);
    assert_eq!(
        group.effects.calls(&poison),
        MAX_ATTEMPTS,
        "tries before the dead-letter queue"
    );

    // Every other event is applied, after as well as before the poison one.
    let others = rows.len() - 1;
    assert!(
        eventually(PATIENCE, || async {
            group.effects.applied().len() >= others
        })
        .await
    );
    // And the poison event stayed the only dead letter.
    let later = vhost.take_all(&queue).await;
    assert!(later.is_empty(), "more dead letters: {later:?}");
    let applied: HashSet<String> = group
        .effects
        .applied()
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    let expected: HashSet<String> = rows
        .iter()
        .map(|r| r.event_id.clone())
        .filter(|id| *id != poison)
        .collect();
    assert_eq!(applied, expected);
    // It is not delivered again.
    ship(&mut producer.client, "ord-3", 0).await;
    let n = producer.all_published().await.len();
    assert!(
        eventually(PATIENCE, || async {
            group.effects.applied().len() >= n - 1
        })
        .await
    );
    assert_eq!(group.effects.calls(&poison), MAX_ATTEMPTS);
    group.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_not_ready_yet_is_redelivered_past_the_delivery_limit_and_applied_once() {
    // More Retry answers than the delivery limit allows returns: still never dead-lettered.
    let tries = MAX_ATTEMPTS + 2;
    let vhost = TestVhost::new().await;
    let effects = Effects {
        not_ready: Some(("ord-slow".into(), tries)),
        ..Default::default()
    };
    let group = Group::start(&vhost, "audit", &[], effects).await;
    let mut producer = Producer::start(&vhost).await;

    ship(&mut producer.client, "ord-slow", 1).await;
    ship(&mut producer.client, "ord-next", 1).await;
    let rows = producer.all_published().await;
    assert!(
        eventually(PATIENCE, || async {
            group.effects.applied().len() >= rows.len()
        })
        .await,
        "applied {} of {}",
        group.effects.applied().len(),
        rows.len()
    );
    let slow = group
        .effects
        .applied()
        .into_iter()
        .find(|e| is_created(e) && order_of(e) == "ord-slow")
        .expect("the slow event applied");
    assert_eq!(
        group.effects.calls(&slow.event_id),
        tries + 1,
        "redelivered until it applied"
    );
    let counts = group.effect_counts().await;
    assert_eq!(counts.len(), rows.len());
    assert!(counts.values().all(|n| *n == 1));
    assert!(vhost
        .take_all(&group.sub.dead_letter_queue())
        .await
        .is_empty());
    group.stop().await;
}
