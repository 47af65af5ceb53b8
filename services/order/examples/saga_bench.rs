//! Placed orders per second end to end (`make bench`): the four services in one process, each
//! with its own database (SQLite files, or PostgreSQL databases with `--postgres`), orders
//! placed by concurrent callers and timed until every saga has confirmed its order. Next to it,
//! in the same run, the raw commit rate of the same kind of database (one-row insert
//! transactions, same concurrency), and the ratio of the two.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ordermesh::proto::common::v1::{Address, Money};
use ordermesh::proto::inventory::v1 as inv;
use ordermesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh::proto::order::v1 as pb;
use ordermesh::proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh::testing::{spawn, Backend, TestDatabase};
use sea_orm::{ConnectionTrait, TransactionTrait};

#[derive(Parser, Debug)]
struct Args {
    /// Use PostgreSQL (127.0.0.1:5432) instead of SQLite files.
    #[arg(long)]
    postgres: bool,
    #[arg(long, default_value_t = 200)]
    orders: usize,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

fn eur(minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor: minor,
    })
}

async fn raw_commit_rate(backend: Backend, n: usize, concurrency: usize) -> f64 {
    let db = TestDatabase::new(backend).await;
    let conn = ordermesh::data::db::connect(&db.url)
        .await
        .expect("connect");
    conn.execute_unprepared(
        "CREATE TABLE bench_commits (id BIGINT PRIMARY KEY, payload TEXT NOT NULL)",
    )
    .await
    .expect("create table");
    let per = n / concurrency;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let id = (t * per + i) as i64;
                let txn = conn.begin().await.expect("begin");
                txn.execute_unprepared(&format!(
                    "INSERT INTO bench_commits (id, payload) VALUES ({id}, 'x')"
                ))
                .await
                .expect("insert");
                txn.commit().await.expect("commit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    (per * concurrency) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let backend = if args.postgres {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    let mesh = test_support::Mesh::participants(test_support::MeshConfig::new(backend)).await;
    let (app, d, _) = mesh.order_app().await;
    let (mut servers, mut dbs) = mesh.into_parts();
    let order_db = app.host.db.clone();
    servers.push(spawn(|l, s| app.serve(l, s)).await);
    dbs.push(d);

    let mut inventory = InventoryServiceClient::connect(servers[0].uri()).await?;
    inventory
        .create_item(inv::CreateItemRequest {
            sku: "BENCH-1".into(),
            name: "Bench tea".into(),
            price: eur(450),
            initial_stock: 1_000_000,
            low_stock_threshold: 0,
        })
        .await?;
    let order = OrderServiceClient::connect(servers[3].uri()).await?;

    let per = args.orders / args.concurrency;
    let total = per * args.concurrency;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..args.concurrency {
        let mut c = order.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let req = pb::PlaceOrderRequest {
                    customer_id: format!("bench-{t}"),
                    lines: vec![pb::PlaceOrderLine {
                        sku: "BENCH-1".into(),
                        quantity: 1,
                        unit_price: eur(450),
                    }],
                    shipping_address: Some(Address {
                        recipient: "Ada".into(),
                        street: "1 Main St".into(),
                        city: "Berlin".into(),
                        postal_code: "10115".into(),
                        country_code: "DE".into(),
                    }),
                    card_token: "tok_visa".into(),
                    idempotency_key: format!("bench-{t}-{i}"),
                };
                c.place_order(req).await.expect("place order");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let placed = started.elapsed();
    // Wait until every saga has confirmed its order.
    let counted = Arc::new(order_db);
    loop {
        let row = counted
            .query_one(sea_orm::Statement::from_string(
                counted.get_database_backend(),
                "SELECT COUNT(*) AS n FROM order_orders WHERE status <> 'PENDING'",
            ))
            .await?;
        let done: i64 = row.and_then(|r| r.try_get("", "n").ok()).unwrap_or(0);
        if done as usize >= total {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "sagas did not finish: {done}/{total}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let confirmed = counted
        .query_one(sea_orm::Statement::from_string(
            counted.get_database_backend(),
            "SELECT COUNT(*) AS n FROM order_orders WHERE status = 'CONFIRMED'",
        ))
        .await?
        .and_then(|r| r.try_get::<i64>("", "n").ok())
        .unwrap_or(0);
    // Why any order did not go through (there should be none).
    let reasons = counted
        .query_all(sea_orm::Statement::from_string(
            counted.get_database_backend(),
            "SELECT status_reason, COUNT(*) AS n FROM order_orders WHERE status <> 'CONFIRMED' GROUP BY status_reason",
        ))
        .await?;
    for r in reasons {
        let reason: String = r.try_get("", "status_reason").unwrap_or_default();
        let n: i64 = r.try_get("", "n").unwrap_or(0);
        println!("  not confirmed ({n}): {reason}");
    }
    let orders_per_sec = total as f64 / elapsed.as_secs_f64();
    let commits_per_sec = raw_commit_rate(backend, 2_000, args.concurrency).await;
    let name = if args.postgres {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "{name}: {total} orders by {} callers, all placed in {placed:.2?}, all sagas done in {elapsed:.2?} ({confirmed} confirmed)",
        args.concurrency
    );
    println!("{name}: {orders_per_sec:.1} orders/s end to end; raw commits {commits_per_sec:.0}/s; orders/commits {:.4}", orders_per_sec / commits_per_sec);
    drop(servers);
    drop(dbs);
    Ok(())
}
