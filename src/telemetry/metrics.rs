//! The process's Prometheus metrics and the one way they are served: `/metrics` in the text
//! format with its standard content type, by a hyper HTTP/1.1 listener (`METRICS_ADDR`) in
//! every service and the gateway, and by the gateway's API port through the same [`scrape`].
//! Series are recorded by the layers that see the events (the server and client stacks, the
//! breaker, the retry layer, the saga), never by handlers.
//!
//! Names follow the Prometheus conventions: base units (`_seconds`), `_total` on counters,
//! labels for dimensions. RPC labels follow the OpenTelemetry RPC conventions
//! (`rpc_service`, `rpc_method`, `grpc_code` as the code's name).

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE as CONTENT_TYPE_HEADER;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use prometheus::{
    register_gauge_vec, register_histogram_vec, register_int_counter_vec, register_int_gauge_vec,
    Encoder, GaugeVec, HistogramVec, IntCounterVec, IntGaugeVec, TextEncoder,
};
use tokio::net::TcpListener;

/// Latency buckets for calls, in seconds (1ms .. 10s).
const RPC_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Buckets for whole sagas, in seconds (10ms .. 5min).
const SAGA_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

macro_rules! metric {
    ($name:ident: $ty:ty = $make:expr) => {
        pub static $name: LazyLock<$ty> =
            LazyLock::new(|| $make.expect(concat!("metric ", stringify!($name))));
    };
}

metric!(RPC_SERVER_REQUESTS: IntCounterVec = register_int_counter_vec!(
    "rpc_server_requests_total",
    "gRPC calls handled by this process, by service, method and status code.",
    &["rpc_service", "rpc_method", "grpc_code"]
));
metric!(RPC_SERVER_DURATION: HistogramVec = register_histogram_vec!(
    "rpc_server_duration_seconds",
    "Time from a call's arrival to the end of its answer (the whole stream for streaming calls).",
    &["rpc_service", "rpc_method"],
    RPC_BUCKETS.to_vec()
));
metric!(RPC_CLIENT_REQUESTS: IntCounterVec = register_int_counter_vec!(
    "rpc_client_requests_total",
    "gRPC calls made by this process, by upstream, service, method and status code.",
    &["upstream", "rpc_service", "rpc_method", "grpc_code"]
));
metric!(RPC_CLIENT_DURATION: HistogramVec = register_histogram_vec!(
    "rpc_client_duration_seconds",
    "Time from making a call to the end of its answer, retries included.",
    &["upstream", "rpc_service", "rpc_method"],
    RPC_BUCKETS.to_vec()
));
metric!(BREAKER_STATE: IntGaugeVec = register_int_gauge_vec!(
    "circuit_breaker_state",
    "1 for the state each upstream's circuit breaker is in (closed, open, half_open), 0 for the others.",
    &["upstream", "state"]
));
metric!(BREAKER_TRANSITIONS: IntCounterVec = register_int_counter_vec!(
    "circuit_breaker_transitions_total",
    "Circuit breaker state changes, by upstream and the state entered.",
    &["upstream", "to"]
));
metric!(BREAKER_REJECTED: IntCounterVec = register_int_counter_vec!(
    "circuit_breaker_rejected_total",
    "Calls failed fast because the upstream's circuit breaker was open.",
    &["upstream"]
));
metric!(RETRIES: IntCounterVec = register_int_counter_vec!(
    "retry_attempts_total",
    "Retries sent (attempts after the first), paid from the upstream's retry budget.",
    &["upstream"]
));
metric!(RETRY_BUDGET_EXHAUSTED: IntCounterVec = register_int_counter_vec!(
    "retry_budget_exhausted_total",
    "Retries not sent because the upstream's retry budget was spent.",
    &["upstream"]
));
metric!(BALANCER_ENDPOINTS: IntGaugeVec = register_int_gauge_vec!(
    "balancer_endpoints",
    "Endpoints the upstream's balancer currently knows (from discovery).",
    &["upstream"]
));
metric!(SPLIT_CALLS: IntCounterVec = register_int_counter_vec!(
    "split_calls_total",
    "Calls a weighted split sent to each backend of an upstream (attempts, pinned ones included).",
    &["upstream", "backend"]
));
metric!(ROUTED_CALLS: IntCounterVec = register_int_counter_vec!(
    "routed_calls_total",
    "Calls a traffic-policy router sent, by upstream, backend, the endpoint's zone and whether that is the caller's zone (local, remote; empty without zones).",
    &["upstream", "backend", "zone", "locality"]
));
metric!(FAULTS_INJECTED: IntCounterVec = register_int_counter_vec!(
    "faults_injected_total",
    "Faults injected on purpose (FAULTS=on), by kind (delay, abort) and method.",
    &["kind", "method"]
));
metric!(SETTINGS_RELOADS: IntCounterVec = register_int_counter_vec!(
    "settings_reloads_total",
    "Changes of a settings file seen while running (the traffic policy, the fault rules), by file and outcome (applied, refused).",
    &["settings", "outcome"]
));
metric!(SAGAS: IntCounterVec = register_int_counter_vec!(
    "saga_finished_total",
    "Sagas run to their end in this process, by saga and outcome (completed, compensated).",
    &["saga", "outcome"]
));
metric!(SAGA_DURATION: HistogramVec = register_histogram_vec!(
    "saga_duration_seconds",
    "Time from a saga's start (or resumption in this process) to its end, by saga and outcome.",
    &["saga", "outcome"],
    SAGA_BUCKETS.to_vec()
));
metric!(SAGA_STEPS: IntCounterVec = register_int_counter_vec!(
    "saga_step_attempts_total",
    "Saga step attempts, by saga, step, direction (action, compensation) and outcome (ok, transient, rejected).",
    &["saga", "step", "direction", "outcome"]
));
metric!(DB_DURATION: HistogramVec = register_histogram_vec!(
    "db_client_operation_duration_seconds",
    "Database statements run by this process, by system, operation and outcome (ok, error).",
    &["db_system", "db_operation", "outcome"],
    RPC_BUCKETS.to_vec()
));
metric!(DB_POOL: GaugeVec = register_gauge_vec!(
    "db_pool_connections",
    "Database pool connections by state (idle, in_use), and the pool's maximum (max).",
    &["state"]
));
metric!(DB_BATCH_SIZE: HistogramVec = register_histogram_vec!(
    "db_group_commit_batch_size",
    "Writes that shared one commit (`data::group_commit`), by database.",
    &["database"],
    vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
));
metric!(DB_COMMITS: IntCounterVec = register_int_counter_vec!(
    "db_commits_total",
    "Transactions committed on a SQLite database file, by file.",
    &["database"]
));
metric!(OUTBOX_BACKLOG: IntGaugeVec = register_int_gauge_vec!(
    "outbox_backlog_events",
    "Events written to the outbox that the relay has not delivered yet.",
    &["producer"]
));
metric!(OUTBOX_LAG: GaugeVec = register_gauge_vec!(
    "outbox_delivery_lag_seconds",
    "Age of the oldest undelivered outbox event (0 when nothing waits).",
    &["producer"]
));

metric!(PROJECTION_LAG_EVENTS: IntGaugeVec = register_int_gauge_vec!(
    "projection_lag_events",
    "Events in the event store a read model has not applied yet, by projection.",
    &["projection"]
));
metric!(PROJECTION_LAG_SECONDS: GaugeVec = register_gauge_vec!(
    "projection_lag_seconds",
    "Age of the oldest event a read model has not applied yet, by projection (0 when caught up).",
    &["projection"]
));
metric!(PROJECTION_FAILED: IntGaugeVec = register_int_gauge_vec!(
    "projection_failed",
    "1 while a projection is stopped at an event it cannot apply.",
    &["projection"]
));
metric!(PROJECTION_REBUILD: GaugeVec = register_gauge_vec!(
    "projection_rebuild_progress",
    "How far a running rebuild of a projection has got, from 0 to 1.",
    &["projection"]
));

/// Sets a projection's lag gauges.
pub fn projection_lag(projection: &str, events: i64, secs: f64) {
    PROJECTION_LAG_EVENTS
        .with_label_values(&[projection])
        .set(events.max(0));
    PROJECTION_LAG_SECONDS
        .with_label_values(&[projection])
        .set(secs);
}

/// Marks a projection stopped (or running again).
pub fn projection_failed(projection: &str, failed: bool) {
    PROJECTION_FAILED
        .with_label_values(&[projection])
        .set(i64::from(failed));
}

/// Sets a rebuild's progress.
pub fn projection_rebuild(projection: &str, done: f64) {
    PROJECTION_REBUILD
        .with_label_values(&[projection])
        .set(done);
}

/// The outbox relay's backlog: rows waiting and the age of the oldest, in seconds.
pub fn outbox_backlog(producer: &str, waiting: i64, oldest_age_secs: f64) {
    OUTBOX_BACKLOG.with_label_values(&[producer]).set(waiting);
    OUTBOX_LAG
        .with_label_values(&[producer])
        .set(oldest_age_secs);
}

/// Marks `state` as the breaker's current state (`closed`, `open`, `half_open`).
pub fn breaker_state(upstream: &str, state: &str) {
    for s in ["closed", "open", "half_open"] {
        BREAKER_STATE
            .with_label_values(&[upstream, s])
            .set(i64::from(s == state));
    }
}

/// Records a breaker transition into `to`.
pub fn breaker_transition(upstream: &str, to: &str) {
    BREAKER_TRANSITIONS.with_label_values(&[upstream, to]).inc();
    breaker_state(upstream, to);
}

/// Everything registered, in the Prometheus text format (0.0.4).
pub fn render() -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The content type of `render`'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A scrape's answer: `own` (series a process keeps outside the shared registry, e.g. the
/// gateway's per-route table; often empty) followed by everything registered.
pub fn scrape(own: &str) -> http::Response<Full<Bytes>> {
    let mut text = String::with_capacity(own.len() + 16 * 1024);
    text.push_str(own);
    text.push_str(&render());
    let mut resp = http::Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut()
        .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// How a metrics listener answers one request: `GET` or `HEAD` of `/metrics` is a scrape,
/// any other path (`/` included) is 404, so a mistyped scrape path fails loudly.
pub fn answer<B>(
    req: &http::Request<B>,
    own: impl FnOnce() -> String,
) -> http::Response<Full<Bytes>> {
    if req.uri().path() == "/metrics" && matches!(*req.method(), Method::GET | Method::HEAD) {
        return scrape(&own());
    }
    let mut resp = http::Response::new(Full::new(Bytes::from_static(b"not found: try /metrics\n")));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut().insert(
        CONTENT_TYPE_HEADER,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Serves the shared registry on `listener` (see [`answer`]) until the task is dropped.
pub async fn serve(listener: TcpListener) {
    serve_with(listener, String::new).await
}

/// Serves `/metrics` on `listener` over HTTP/1.1 (hyper), each scrape carrying `own()` before
/// the shared registry, until the task is dropped.
pub async fn serve_with<F>(listener: TcpListener, own: F)
where
    F: Fn() -> String + Clone + Send + Sync + 'static,
{
    loop {
        let (conn, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::debug!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let own = own.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<Incoming>| {
                let resp = answer(&req, &own);
                async move { Ok::<_, Infallible>(resp) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(conn), svc);
            if let Err(e) = served.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request on a fresh connection; the whole answer as text.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn metrics_listener_serves_the_text_format_with_its_content_type() {
        RETRIES.with_label_values(&["metrics-listener-test"]).inc();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve_with(listener, || {
            "# TYPE own_series gauge\nown_series 1\n".to_string()
        }));
        let got = request(addr, "GET", "/metrics").await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(
            got.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{got}"
        );
        let body = got.split("\r\n\r\n").nth(1).unwrap();
        assert!(
            body.starts_with("# TYPE own_series gauge\nown_series 1\n"),
            "{body}"
        );
        assert!(
            body.contains("retry_attempts_total{upstream=\"metrics-listener-test\"} 1"),
            "{body}"
        );
        let head = request(addr, "HEAD", "/metrics").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
        task.abort();
    }

    #[tokio::test]
    async fn metrics_listener_answers_404_on_every_other_path() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener));
        for path in [
            "/",
            "/v1/orders",
            "/metrics/",
            "/metricsx",
            "/healthz",
            "/favicon.ico",
        ] {
            let got = request(addr, "GET", path).await;
            assert!(
                got.starts_with("HTTP/1.1 404 Not Found\r\n"),
                "{path}: {got}"
            );
            assert!(got.ends_with("not found: try /metrics\n"), "{path}: {got}");
        }
        let query = request(addr, "GET", "/metrics?name[]=up").await;
        assert!(query.starts_with("HTTP/1.1 200 OK\r\n"), "{query}");
        let post = request(addr, "POST", "/metrics").await;
        assert!(post.starts_with("HTTP/1.1 404 Not Found\r\n"), "{post}");
        task.abort();
    }
}
