//! Placed-and-final orders per second end to end (`make bench`): the four services in one
//! process, each with its own database (SQLite files, or PostgreSQL databases with
//! `--postgres`), and concurrent shoppers that each place an order and follow it (WatchOrder) to
//! its end before placing the next: once over 100 SKUs, once all on one hot SKU. Next to it, in
//! the same run, the raw commit rate of the same kind of database (one-row insert transactions,
//! same concurrency), and the ratios.

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
    /// Orders per run (each run: spread over `--skus`, then all on one SKU).
    #[arg(long, default_value_t = 640)]
    orders: usize,
    /// Concurrent shoppers; each places an order and follows it (WatchOrder) to its end
    /// before placing the next.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// SKUs the spread run orders from.
    #[arg(long, default_value_t = 100)]
    skus: usize,
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
    servers.push(spawn(|l, s| app.serve(l, s)).await);
    dbs.push(d);

    let mut inventory = InventoryServiceClient::connect(servers[0].uri()).await?;
    for i in 0..args.skus.max(1) {
        inventory
            .create_item(inv::CreateItemRequest {
                sku: format!("BENCH-{i}"),
                name: "Bench tea".into(),
                price: eur(450),
                initial_stock: 1_000_000,
                low_stock_threshold: 0,
            })
            .await?;
    }
    let order = OrderServiceClient::connect(servers[3].uri()).await?;
    let name = if args.postgres {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    // A warm-up, so connection set-up and first statements are not timed.
    shoppers(&order, "warm", 2 * args.concurrency, args.concurrency, args.skus).await?;
    let spread = shoppers(&order, "spread", args.orders, args.concurrency, args.skus).await?;
    let hot = shoppers(&order, "hot", args.orders, args.concurrency, 1).await?;
    let commits_per_sec = raw_commit_rate(backend, 4_000, args.concurrency).await;
    for (run, r) in [("spread", &spread), ("hot", &hot)] {
        let skus = if run == "hot" { 1 } else { args.skus };
        println!(
            "{name} {run}: {} orders by {} shoppers over {skus} SKUs: {:.1} placed-and-final orders/s, completion p50 {:.1?} p99 {:.1?} max {:.1?}; {} confirmed{}",
            r.latencies.len(),
            args.concurrency,
            r.per_sec,
            r.percentile(0.50),
            r.percentile(0.99),
            r.percentile(1.0),
            r.confirmed,
            if r.not_confirmed.is_empty() {
                String::new()
            } else {
                format!(", not confirmed: {:?}", r.not_confirmed)
            }
        );
    }
    println!(
        "{name}: raw commits {commits_per_sec:.0}/s ({} callers); orders/commits {:.4} spread, {:.4} hot; hot/spread {:.2}",
        args.concurrency,
        spread.per_sec / commits_per_sec,
        hot.per_sec / commits_per_sec,
        hot.per_sec / spread.per_sec
    );
    drop(servers);
    drop(dbs);
    Ok(())
}

/// What one run of shoppers saw.
struct Run {
    per_sec: f64,
    latencies: Vec<Duration>,
    confirmed: usize,
    not_confirmed: Vec<String>,
}

impl Run {
    fn percentile(&self, q: f64) -> Duration {
        let rank = ((self.latencies.len() as f64 * q).ceil() as usize).max(1);
        self.latencies[rank.min(self.latencies.len()) - 1]
    }
}

/// `orders` orders from `concurrency` shoppers over `skus` SKUs; each shopper places an order,
/// follows it with WatchOrder until it is confirmed or turned back, then places the next.
async fn shoppers(
    order: &OrderServiceClient<tonic::transport::Channel>,
    run: &str,
    orders: usize,
    concurrency: usize,
    skus: usize,
) -> anyhow::Result<Run> {
    let per = orders / concurrency;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let mut c = order.clone();
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(per);
            for i in 0..per {
                let n = t * per + i;
                let req = pb::PlaceOrderRequest {
                    customer_id: format!("bench-{t}"),
                    lines: vec![pb::PlaceOrderLine {
                        sku: format!("BENCH-{}", n % skus.max(1)),
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
                    idempotency_key: format!("bench-{run}-{t}-{i}"),
                };
                let placed_at = Instant::now();
                let placed = c
                    .place_order(req)
                    .await?
                    .into_inner()
                    .order
                    .ok_or_else(|| anyhow::anyhow!("no order in the reply"))?;
                let mut watch = c
                    .watch_order(pb::WatchOrderRequest {
                        order_id: placed.order_id.clone(),
                    })
                    .await?
                    .into_inner();
                let end = loop {
                    let Some(msg) = watch.message().await? else {
                        anyhow::bail!("the watch of {} ended early", placed.order_id);
                    };
                    let o = msg.order.unwrap_or_default();
                    match pb::OrderStatus::try_from(o.status) {
                        Ok(pb::OrderStatus::Pending) | Err(_) => continue,
                        Ok(_) => break o,
                    }
                };
                seen.push((placed_at.elapsed(), end));
            }
            anyhow::Ok(seen)
        }));
    }
    let mut all = Vec::with_capacity(orders);
    for t in tasks {
        all.extend(t.await??);
    }
    let per_sec = all.len() as f64 / started.elapsed().as_secs_f64();
    let confirmed = all
        .iter()
        .filter(|(_, o)| o.status == pb::OrderStatus::Confirmed as i32)
        .count();
    let not_confirmed = all
        .iter()
        .filter(|(_, o)| o.status != pb::OrderStatus::Confirmed as i32)
        .map(|(_, o)| o.status_reason.clone())
        .take(5)
        .collect();
    let mut latencies: Vec<Duration> = all.into_iter().map(|(d, _)| d).collect();
    latencies.sort();
    Ok(Run {
        per_sec,
        latencies,
        confirmed,
        not_confirmed,
    })
}
