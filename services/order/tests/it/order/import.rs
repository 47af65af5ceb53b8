//! A database written the way orders were kept before they were event-sourced (order and
//! line rows, saga instance and step rows, outbox rows) is moved into streams at start-up:
//! the orders, their sagas and the order's event log read as they did.

use order_service::store::legacy::{order, order_line};
use ordermesh::proto::events::v1 as ev;
use ordermesh::saga::legacy::{instance, step_row, RowState, RowStatus};
use prost::Message;
use sea_orm::{ActiveModelTrait, Set};
use sea_orm_migration::prelude::*;

use super::*;

/// The migrations of the table-era order service.
struct TableEra;

#[async_trait::async_trait]
impl MigratorTrait for TableEra {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = order_service::store::Migrator::migrations();
        all.truncate(5);
        all
    }
}

const STEPS: [&str; 6] = [
    "reserve_stock",
    "authorize_payment",
    "create_shipment",
    "capture_payment",
    "commit_stock",
    "confirm_order",
];

async fn write_order(c: &sea_orm::DatabaseConnection, id: &str, status: &str, version: i64) {
    let now = ordermesh::types::time::now();
    order::ActiveModel {
        order_id: Set(id.into()),
        customer_id: Set("cust-old".into()),
        status: Set(status.into()),
        status_reason: Set(String::new()),
        currency: Set("USD".into()),
        total_minor: Set(3998),
        recipient: Set("Ada".into()),
        street: Set("1 Road".into()),
        city: Set("London".into()),
        postal_code: Set("N1".into()),
        country_code: Set("GB".into()),
        card_token: Set("tok_visa".into()),
        version: Set(version),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(c)
    .await
    .unwrap();
    order_line::ActiveModel {
        order_id: Set(id.into()),
        line_no: Set(0),
        sku: Set("SKU-1".into()),
        quantity: Set(2),
        unit_price_minor: Set(1999),
        line_total_minor: Set(3998),
    }
    .insert(c)
    .await
    .unwrap();
}

async fn write_saga(
    c: &sea_orm::DatabaseConnection,
    id: &str,
    state: RowState,
    step: i32,
    done: &[RowStatus],
) {
    let now = ordermesh::types::time::now();
    let saga_id = format!("saga-{id}");
    instance::ActiveModel {
        saga_id: Set(saga_id.clone()),
        kind: Set("place_order".into()),
        state: Set(state),
        step: Set(step),
        data: Set(format!(
            r#"{{"order_id":"{id}","currency":"USD","total_minor":3998,"lines":[["SKU-1",2]],"address":["Ada","1 Road","London","N1","GB"],"card_token":"tok_visa","payment_id":"pay_1","shipment_id":null}}"#
        )),
        error: Set(String::new()),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(c)
    .await
    .unwrap();
    for (i, status) in done.iter().enumerate() {
        step_row::ActiveModel {
            saga_id: Set(saga_id.clone()),
            step_no: Set(i as i32),
            name: Set(STEPS[i].into()),
            status: Set(*status),
            attempts: Set(1),
            error: Set(String::new()),
            updated_at: Set(now),
        }
        .insert(c)
        .await
        .unwrap();
    }
}

async fn write_outbox(
    c: &sea_orm::DatabaseConnection,
    id: &str,
    payload: ev::event_envelope::Payload,
    seq: Option<i64>,
) -> String {
    let env = ordermesh::events::envelope::new_envelope(
        "order",
        "order",
        id,
        payload,
        ordermesh::types::time::now(),
    );
    ordermesh::events::outbox::entity::ActiveModel {
        event_id: Set(env.event_id.clone()),
        event_type: Set(
            ordermesh::events::envelope::event_type(env.payload.as_ref().unwrap()).into(),
        ),
        aggregate_type: Set("order".into()),
        aggregate_id: Set(id.into()),
        payload: Set(env.encode_to_vec()),
        occurred_at: Set(ordermesh::types::time::now()),
        sequence: Set(seq),
        published_at: Set(None),
        ..Default::default()
    }
    .insert(c)
    .await
    .unwrap();
    env.event_id
}

async fn a_table_era_database_is_moved_into_streams(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let old = ordermesh::data::db::connect_and_migrate::<TableEra>(&db.url)
        .await
        .unwrap();
    let (a, b) = (
        OrderId::generate().into_string(),
        OrderId::generate().into_string(),
    );
    write_order(&old, &a, "CONFIRMED", 2).await;
    write_saga(&old, &a, RowState::Completed, 6, &[RowStatus::Succeeded; 6]).await;
    write_order(&old, &b, "PENDING", 1).await;
    write_saga(
        &old,
        &b,
        RowState::Running,
        2,
        &[
            RowStatus::Succeeded,
            RowStatus::Succeeded,
            RowStatus::Started,
        ],
    )
    .await;
    let placed = |id: &str| {
        ev::event_envelope::Payload::OrderPlaced(ev::OrderPlaced {
            order_id: id.into(),
            ..Default::default()
        })
    };
    let ids = [
        write_outbox(&old, &a, placed(&a), Some(1)).await,
        write_outbox(
            &old,
            &a,
            ev::event_envelope::Payload::OrderConfirmed(ev::OrderConfirmed {
                order_id: a.clone(),
            }),
            Some(2),
        )
        .await,
        write_outbox(&old, &b, placed(&b), None).await,
    ];
    old.close().await.unwrap();

    // The current service starts on it (without participants: B's saga stays where it was).
    let app = App::build(&ServiceConfig::for_test(SERVICE, &db.url))
        .await
        .expect("build");
    let server = spawn(|l, s| app.serve(l, s)).await;
    let mut c = OrderServiceClient::connect(server.uri()).await.unwrap();
    let get = |c: &mut OrderServiceClient<Channel>, id: String| {
        let mut c = c.clone();
        async move {
            c.get_order(pb::GetOrderRequest {
                order_id: id,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap()
        }
    };
    let oa = get(&mut c, a.clone()).await;
    assert_eq!(status(&oa), pb::OrderStatus::Confirmed);
    assert_eq!(oa.version, 2);
    assert_eq!(oa.total.as_ref().unwrap().amount_minor, 3998);
    assert_eq!(oa.saga_steps.len(), 6);
    assert!(
        oa.saga_steps.iter().all(|s| s.status == "SUCCEEDED"),
        "{:?}",
        oa.saga_steps
    );
    let ob = get(&mut c, b.clone()).await;
    assert_eq!(status(&ob), pb::OrderStatus::Pending);
    let steps: Vec<&str> = ob.saga_steps.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(steps, ["SUCCEEDED", "SUCCEEDED", "STARTED"]);
    // B's saga is unfinished and resumes from its third step.
    let listed = c
        .list_orders(pb::ListOrdersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(listed.len(), 2);
    // The order's log continues: same event ids, sequences 1, 2, then 3 for the row that
    // had not been published.
    let log = ordermesh::testing::read_event_log(&server.uri(), 1, &[], 3).await;
    let got: Vec<(&str, u64)> = log
        .iter()
        .map(|e| (e.event_id.as_str(), e.sequence))
        .collect();
    assert_eq!(
        got,
        [
            (ids[0].as_str(), 1),
            (ids[1].as_str(), 2),
            (ids[2].as_str(), 3)
        ]
    );
    server.stop().await.unwrap();
    // A second start imports nothing twice.
    let app = App::build(&ServiceConfig::for_test(SERVICE, &db.url))
        .await
        .expect("rebuild");
    let events = order_service::store::events(&app.host.db, &a, Default::default())
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "OrderPlaced")
            .count(),
        1
    );
}

ordermesh::backend_tests!(a_table_era_database_is_moved_into_streams);
