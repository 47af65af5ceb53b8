//! Shipping's domain events: recorded in the outbox with each change, published in order as
//! `EventLogService/Subscribe`, and consumed exactly once by an idempotent consumer that
//! resumes from its checkpoint and dead-letters a poison event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordermesh::config::ServiceConfig;
use ordermesh::events::grpc_log::Subscription;
use ordermesh::events::inbox::{Handler, HandlerError};
use ordermesh::proto::events::v1 as ev;
use ordermesh::proto::shipping::v1 as pb;
use ordermesh::proto::shipping::v1::shipping_service_client::ShippingServiceClient;
use ordermesh::testing::{eventually, spawn, Backend, TestDatabase};
use ordermesh::transport::client::Upstream;
use ordermesh::transport::shutdown::Drain;
use sea_orm::{DatabaseTransaction, EntityTrait};
use shipping_service::{App, SERVICE};

use crate::helpers::create_req;

fn kind(e: &ev::EventEnvelope) -> &'static str {
    e.payload
        .as_ref()
        .map(ordermesh::events::envelope::event_type)
        .unwrap_or("")
}

struct Recorder {
    applied: Arc<Mutex<Vec<String>>>,
    poison_order: String,
}

#[async_trait::async_trait]
impl Handler for Recorder {
    async fn handle(
        &self,
        _txn: &DatabaseTransaction,
        e: &ev::EventEnvelope,
    ) -> Result<(), HandlerError> {
        if let Some(ev::event_envelope::Payload::ShipmentCreated(c)) = &e.payload {
            if c.order_id == self.poison_order {
                return Err(HandlerError::Poison("cannot handle this order".into()));
            }
        }
        self.applied.lock().unwrap().push(e.event_id.clone());
        Ok(())
    }
}

struct ConsumerMigrator;

#[async_trait::async_trait]
impl sea_orm_migration::MigratorTrait for ConsumerMigrator {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        vec![Box::new(ordermesh::events::inbox::Migration)]
    }
}

async fn events_are_published_in_order_and_consumed_once(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let app = App::build(&ServiceConfig::for_test(SERVICE, &db.url))
        .await
        .unwrap();
    let server = spawn(|l, s| app.serve(l, s)).await;
    let mut shipping = ShippingServiceClient::connect(server.uri()).await.unwrap();

    let a = shipping
        .create_shipment(create_req("ord-a"))
        .await
        .unwrap()
        .into_inner()
        .shipment
        .unwrap();
    shipping.create_shipment(create_req("ord-b")).await.unwrap();
    for to in [
        pb::ShipmentStatus::LabelCreated,
        pb::ShipmentStatus::PickedUp,
    ] {
        shipping
            .record_tracking_event(pb::RecordTrackingEventRequest {
                shipment_id: a.shipment_id.clone(),
                status: to as i32,
                location: String::new(),
                note: String::new(),
            })
            .await
            .unwrap();
    }
    // A refused change records nothing.
    assert!(shipping
        .cancel_shipment(pb::CancelShipmentRequest {
            shipment_id: a.shipment_id.clone(),
            idempotency_key: "late-cancel".into(),
            reason: String::new(),
            ..Default::default()
        })
        .await
        .is_err());

    let log = ordermesh::testing::read_event_log(&server.uri(), 0, &[], 4).await;
    let seqs: Vec<u64> = log.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    let kinds: Vec<&str> = log.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "ShipmentCreated",
            "ShipmentCreated",
            "ShipmentStatusChanged",
            "ShipmentStatusChanged"
        ]
    );
    assert!(log
        .iter()
        .all(|e| e.producer == "shipping" && !e.event_id.is_empty()));
    assert_eq!(log[2].aggregate_id, a.shipment_id);
    // Resuming after sequence 2, and filtering by type.
    let tail = ordermesh::testing::read_event_log(&server.uri(), 3, &[], 2).await;
    assert_eq!(tail[0].event_id, log[2].event_id);
    let created =
        ordermesh::testing::read_event_log(&server.uri(), 0, &["ShipmentCreated"], 2).await;
    assert!(created.iter().all(|e| kind(e) == "ShipmentCreated"));

    // A consumer applies each event once; the poison one is dead-lettered.
    let consumer_db = TestDatabase::new(backend).await;
    let cdb = ordermesh::data::db::connect_and_migrate::<ConsumerMigrator>(&consumer_db.url)
        .await
        .unwrap();
    let applied = Arc::new(Mutex::new(Vec::new()));
    let run_consumer = |drain: Drain| {
        let sub = Subscription {
            consumer: "test".into(),
            producer: "shipping".into(),
            types: vec![],
            channel: Upstream::new(server.uri()).stack().unwrap(),
        };
        let handler = Arc::new(Recorder {
            applied: applied.clone(),
            poison_order: "ord-b".into(),
        });
        tokio::spawn(ordermesh::events::grpc_log::run(
            cdb.clone(),
            sub,
            handler,
            drain,
        ))
    };
    let drain = Drain::new();
    let task = run_consumer(drain.clone());
    let cdb2 = cdb.clone();
    assert!(
        eventually(Duration::from_secs(20), || {
            let cdb = cdb2.clone();
            async move {
                ordermesh::events::inbox::checkpoint_of(&cdb, "test", "shipping")
                    .await
                    .unwrap_or(0)
                    == 4
            }
        })
        .await
    );
    drain.start();
    let _ = task.await;
    let inbox = ordermesh::events::inbox::entry::Entity::find()
        .all(&cdb)
        .await
        .unwrap();
    assert_eq!(inbox.len(), 4);
    let dead: Vec<_> = inbox
        .iter()
        .filter(|r| !r.dead_letter_error.is_empty())
        .collect();
    assert_eq!(dead.len(), 1, "the poison event is parked");
    assert_eq!(dead[0].event_id, log[1].event_id);
    assert_eq!(applied.lock().unwrap().len(), 3);

    // More events while the consumer is down; a restart picks up after its checkpoint.
    shipping.create_shipment(create_req("ord-c")).await.unwrap();
    let drain = Drain::new();
    let task = run_consumer(drain.clone());
    assert!(
        eventually(Duration::from_secs(20), || {
            let cdb = cdb.clone();
            async move {
                ordermesh::events::inbox::checkpoint_of(&cdb, "test", "shipping")
                    .await
                    .unwrap_or(0)
                    == 5
            }
        })
        .await
    );
    drain.start();
    let _ = task.await;
    let applied = applied.lock().unwrap().clone();
    let mut unique = applied.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), applied.len(), "an event was applied twice");
    assert_eq!(applied.len(), 4);
}

ordermesh::backend_tests!(events_are_published_in_order_and_consumed_once);
