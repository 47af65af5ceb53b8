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
    shoppers(
        &order,
        "warm",
        2 * args.concurrency,
        args.concurrency,
        args.skus,
    )
    .await?;
    let cost = Cost::new(&dbs).await?;
    let before = cost.snapshot().await?;
    let sampler = cost.lock_waits();
    let spread = shoppers(&order, "spread", args.orders, args.concurrency, args.skus).await?;
    let spread_locks = sampler.stop().await;
    let after = cost.snapshot().await?;
    let sampler = cost.lock_waits();
    let hot = shoppers(&order, "hot", args.orders, args.concurrency, 1).await?;
    let hot_locks = sampler.stop().await;
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
        "{name} spread, per order: {}",
        after.per_order(&before, spread.latencies.len())
    );
    if let (Some(s), Some(h)) = (spread_locks, hot_locks) {
        println!(
            "{name} lock waits: a backend waited on a lock in {:.1}% of 20ms samples spread, {:.1}% hot",
            s * 100.0,
            h * 100.0
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

/// Where an order's cost goes: statements by kind (all services, from this process's
/// `db_client_operation_duration_seconds`), the commits of each service's database, counted
/// (`pg_stat_database.xact_commit` on PostgreSQL, `db_commits_total` from SQLite's commit hook),
/// and on PostgreSQL how often a backend waits on a lock.
struct Cost {
    system: &'static str,
    /// (service, database name on PostgreSQL or file on SQLite).
    databases: Vec<(&'static str, String)>,
    admin: Option<sea_orm::DatabaseConnection>,
}

#[derive(Default)]
struct Snapshot {
    statements: Vec<(&'static str, u64)>,
    commits: Vec<(&'static str, i64)>,
    /// PostgreSQL: the next transaction id of the cluster. Only transactions that write take
    /// one, so the difference counts write transactions (all databases, rolled back ones too),
    /// where `xact_commit` also counts every read-only statement. A savepoint that writes
    /// takes one too (a batch of `GroupCommit` takes one per write in it, plus its own).
    next_xid: Option<i64>,
    /// PostgreSQL: `pg_stat_wal.wal_sync`, the times the cluster synced its WAL to disk: the
    /// durable writes the commits cost (concurrent commits share one).
    wal_syncs: Option<i64>,
}

const STATEMENTS: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "DELETE"];

impl Snapshot {
    fn per_order(&self, before: &Snapshot, orders: usize) -> String {
        let n = orders.max(1) as f64;
        let mut parts: Vec<String> = self
            .statements
            .iter()
            .zip(&before.statements)
            .map(|((op, a), (_, b))| format!("{op} {:.1}", (a - b) as f64 / n))
            .collect();
        let total: u64 = self
            .statements
            .iter()
            .zip(&before.statements)
            .map(|((_, a), (_, b))| a - b)
            .sum();
        parts.push(format!("= {:.1} statements", total as f64 / n));
        let mut all = 0;
        for ((svc, a), (_, b)) in self.commits.iter().zip(&before.commits) {
            parts.push(format!("{svc} {:.1} commits", (a - b) as f64 / n));
            all += a - b;
        }
        parts.push(format!("= {:.1} commits per placed order", all as f64 / n));
        if let (Some(a), Some(b)) = (self.next_xid, before.next_xid) {
            parts.push(format!(
                "{:.1} transaction ids taken per placed order (write transactions and their writing savepoints, all databases)",
                (a - b) as f64 / n
            ));
        }
        if let (Some(a), Some(b)) = (self.wal_syncs, before.wal_syncs) {
            parts.push(format!(
                "{:.2} WAL syncs per placed order (pg_stat_wal, the cluster)",
                (a - b) as f64 / n
            ));
        }
        parts.join(", ")
    }
}

/// Samples lock waits until stopped; the share of samples that saw one.
struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Option<f64>>,
}

impl Sampler {
    async fn stop(self) -> Option<f64> {
        let _ = self.stop.send(());
        self.task.await.ok().flatten()
    }
}

impl Cost {
    async fn new(dbs: &[TestDatabase]) -> anyhow::Result<Self> {
        let pg = dbs.first().is_some_and(|d| d.backend == Backend::Postgres);
        let services = ["inventory", "payment", "shipping", "order"];
        if !pg {
            let databases = services
                .iter()
                .zip(dbs)
                .map(|(svc, d)| {
                    let path = ordermesh::data::db::sqlite_path(&d.url).unwrap_or_default();
                    (*svc, path)
                })
                .collect();
            return Ok(Self {
                system: "sqlite",
                databases,
                admin: None,
            });
        }
        let databases = services
            .iter()
            .zip(dbs)
            .map(|(svc, d)| (*svc, d.url.rsplit('/').next().unwrap_or("").to_string()))
            .collect();
        let admin = ordermesh::data::db::connect(&ordermesh::testing::postgres_admin_url()).await?;
        Ok(Self {
            system: "postgresql",
            databases,
            admin: Some(admin),
        })
    }

    async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        use ordermesh::telemetry::metrics::DB_DURATION;
        let statements = STATEMENTS
            .iter()
            .map(|op| {
                let n = DB_DURATION
                    .with_label_values(&[self.system, op, "ok"])
                    .get_sample_count();
                (*op, n)
            })
            .collect();
        let mut commits = Vec::new();
        if self.admin.is_none() {
            for (svc, path) in &self.databases {
                let n = ordermesh::telemetry::metrics::DB_COMMITS
                    .with_label_values(&[path.as_str()])
                    .get();
                commits.push((*svc, n as i64));
            }
        }
        if let Some(admin) = &self.admin {
            // Backends report their counts when idle, at most once a second.
            tokio::time::sleep(Duration::from_millis(1200)).await;
            for (svc, db) in &self.databases {
                let row = admin
                    .query_one(sea_orm::Statement::from_sql_and_values(
                        sea_orm::DatabaseBackend::Postgres,
                        "SELECT xact_commit FROM pg_stat_database WHERE datname = $1",
                        [db.clone().into()],
                    ))
                    .await?;
                let n: i64 = row
                    .and_then(|r| r.try_get("", "xact_commit").ok())
                    .unwrap_or(0);
                commits.push((*svc, n));
            }
        }
        let next_xid = self
            .cluster_number("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS n")
            .await?;
        let wal_syncs = self
            .cluster_number("SELECT wal_sync AS n FROM pg_stat_wal")
            .await?;
        Ok(Snapshot {
            statements,
            commits,
            next_xid,
            wal_syncs,
        })
    }

    /// PostgreSQL: the number `sql` selects as `n` (none on SQLite).
    async fn cluster_number(&self, sql: &str) -> anyhow::Result<Option<i64>> {
        let Some(admin) = &self.admin else {
            return Ok(None);
        };
        Ok(admin
            .query_one(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                sql,
            ))
            .await?
            .and_then(|r| r.try_get::<i64>("", "n").ok()))
    }

    fn lock_waits(&self) -> Sampler {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let admin = self.admin.clone();
        let names: Vec<String> = self.databases.iter().map(|(_, d)| d.clone()).collect();
        let task = tokio::spawn(async move {
            let admin = admin?;
            let (mut samples, mut waiting) = (0u64, 0u64);
            loop {
                if stopped.try_recv().is_ok() {
                    break;
                }
                let row = admin
                    .query_one(sea_orm::Statement::from_sql_and_values(
                        sea_orm::DatabaseBackend::Postgres,
                        "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = ANY($1)",
                        [names.clone().into()],
                    ))
                    .await
                    .ok()
                    .flatten();
                let n: i64 = row.and_then(|r| r.try_get("", "n").ok()).unwrap_or(0);
                samples += 1;
                waiting += u64::from(n > 0);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(waiting as f64 / samples.max(1) as f64)
        });
        Sampler { stop, task }
    }
}
