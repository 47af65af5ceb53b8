//! Test support: a database of its own per test (SQLite file or a fresh PostgreSQL database)
//! and servers spawned on an ephemeral port.

use std::future::Future;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use sea_orm::{ConnectionTrait, Database};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A database engine the integration tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Declares each named `async fn name(backend: Backend)` scenario as two tests,
/// `sqlite::name` and `postgres::name`, so every scenario runs against both databases.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::testing::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::testing::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Polls `check` every 20ms until it is true or `within` passes; returns the last answer.
pub async fn eventually<F, Fut>(within: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Admin URL of the PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("ORDERMESH_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test and is removed afterwards.
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                Self {
                    url,
                    backend,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let name = format!("om_test_{}", uuid::Uuid::new_v4().simple());
                let admin_url = postgres_admin_url();
                let admin = Database::connect(&admin_url).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin_url} is needed for this test: {e}")
                });
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                let _ = admin.close().await;
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .unwrap_or(&admin_url);
                Self {
                    url: format!("{base}/{name}"),
                    backend,
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside async; a thread with its own runtime removes the database.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = Database::connect(&postgres_admin_url()).await.ok()?;
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
                let _ = admin.close().await;
                Some(())
            })
        })
        .join();
    }
}

/// A server running on an ephemeral port until `stop` (or drop).
pub struct Spawned {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Spawned {
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server where it stands (drained and returned); its address is free again.
    pub async fn shut_down(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await?,
            None => Ok(()),
        }
    }

    /// Sends the shutdown signal and waits for the server to drain and return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(h) => h.await?,
            None => Ok(()),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds 127.0.0.1:0 and runs `serve(listener, shutdown)` in a task.
pub async fn spawn<F, Fut>(serve: F) -> Spawned
where
    F: FnOnce(TcpListener, BoxFuture<'static, ()>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    spawn_on(listener, serve).await
}

/// Like `spawn`, on a listener the caller bound (e.g. the address of a server it stopped).
pub async fn spawn_on<F, Fut>(listener: TcpListener, serve: F) -> Spawned
where
    F: FnOnce(TcpListener, BoxFuture<'static, ()>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown: BoxFuture<'static, ()> = Box::pin(async move {
        let _ = rx.await;
    });
    let handle = tokio::spawn(serve(listener, shutdown));
    Spawned {
        addr,
        stop: Some(tx),
        handle: Some(handle),
    }
}

/// Asks a server's grpc.health.v1 service for the status of `service` ("" for the server).
pub async fn health_status(uri: &str, service: &str) -> Result<i32, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(uri.to_string())
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await?;
    Ok(reply.into_inner().status)
}

/// The numeric SERVING status, for comparing with `health_status`.
pub const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
/// The numeric NOT_SERVING status.
pub const NOT_SERVING: i32 =
    tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

/// The field a `google.rpc.BadRequest` detail of an INVALID_ARGUMENT names ("" when none).
pub fn bad_request_field(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

/// The first `want` events of the log a server at `uri` serves from `from` (of the given
/// types, all when empty); panics when the log does not have them within 10s.
pub async fn read_event_log(
    uri: &str,
    from: u64,
    types: &[&str],
    want: usize,
) -> Vec<crate::proto::events::v1::EventEnvelope> {
    use crate::proto::events::v1 as ev;
    use futures::StreamExt;
    let mut client = ev::event_log_service_client::EventLogServiceClient::connect(uri.to_string())
        .await
        .expect("connect to the event log");
    let mut stream = client
        .subscribe(ev::SubscribeRequest {
            from_sequence: from,
            types: types.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut out = Vec::new();
    while out.len() < want {
        match tokio::time::timeout(std::time::Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(msg))) => out.extend(msg.event),
            other => panic!("log of {uri} ended after {} events: {other:?}", out.len()),
        }
    }
    out
}

/// The RabbitMQ tests connect to (`ORDERMESH_TEST_AMQP`, default the local broker as guest).
pub fn amqp_base_url() -> String {
    std::env::var("ORDERMESH_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Runs `rabbitmqctl` (`ORDERMESH_RABBITMQCTL` names another) with `args`; the error carries
/// its output.
fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let ctl = std::env::var("ORDERMESH_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    let out = std::process::Command::new(&ctl)
        .args(args)
        .output()
        .map_err(|e| format!("{ctl} could not run: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{ctl} {}: {text}", args.join(" ")))
    }
}

/// A RabbitMQ vhost that exists for one test (created with `rabbitmqctl`, guest allowed
/// everything in it) and is deleted afterwards, queues and all.
pub struct TestVhost {
    pub name: String,
    pub url: crate::events::amqp::BrokerUrl,
}

impl TestVhost {
    pub async fn new() -> Self {
        let name = format!("om_test_{}", uuid::Uuid::new_v4().simple());
        let base = crate::events::amqp::BrokerUrl::parse(&amqp_base_url())
            .unwrap_or_else(|e| panic!("ORDERMESH_TEST_AMQP: {e}"));
        let url = base.with_vhost(&name).expect("vhost url");
        let n = name.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&["add_vhost", &n])?;
            rabbitmqctl(&["set_permissions", "-p", &n, "guest", ".*", ".*", ".*"])
        })
        .await
        .expect("rabbitmqctl task")
        .unwrap_or_else(|e| panic!("RabbitMQ with rabbitmqctl is needed for this test: {e}"));
        Self { name, url }
    }

    /// Closes every client connection to this vhost, as a broker restart would, and leaves
    /// other vhosts alone.
    pub async fn close_connections(&self) {
        let n = self.name.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&[
                "close_all_connections",
                "--vhost",
                &n,
                "--limit",
                "1000",
                "ordermesh test: connection cut",
            ])
        })
        .await
        .expect("rabbitmqctl task")
        .unwrap_or_else(|e| panic!("closing connections: {e}"));
    }

    /// How many ready messages `queue` holds; `None` while it does not exist.
    pub async fn queue_depth(&self, queue: &str) -> Option<u32> {
        let conn = lapin::Connection::connect(self.url.as_str(), Default::default())
            .await
            .ok()?;
        let channel = conn.create_channel().await.ok()?;
        let q = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .ok();
        let _ = conn.close(200, "done".into()).await;
        q.map(|q| q.message_count())
    }

    /// Takes (and acks) every message in `queue`, decoded as event envelopes.
    pub async fn take_all(&self, queue: &str) -> Vec<crate::proto::events::v1::EventEnvelope> {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        use prost::Message;
        let conn = lapin::Connection::connect(self.url.as_str(), Default::default())
            .await
            .expect("connect to the test vhost");
        let channel = conn.create_channel().await.expect("channel");
        let mut out = Vec::new();
        while let Some(msg) = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            let d = msg.delivery;
            out.push(
                crate::proto::events::v1::EventEnvelope::decode(d.data.as_slice())
                    .expect("an event envelope"),
            );
            d.acker.ack(BasicAckOptions::default()).await.expect("ack");
        }
        let _ = conn.close(200, "done".into()).await;
        out
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("leaving vhost {} behind: {e}", self.name);
        }
    }
}
