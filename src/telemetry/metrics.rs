//! The process's Prometheus metrics and the small HTTP listener that serves them on
//! `/metrics` (`METRICS_ADDR`). Series are recorded by the layers that see the events (the
//! server and client stacks, the breaker, the retry layer, the saga), never by handlers.
//!
//! Names follow the Prometheus conventions: base units (`_seconds`), `_total` on counters,
//! labels for dimensions. RPC labels follow the OpenTelemetry RPC conventions
//! (`rpc_service`, `rpc_method`, `grpc_code` as the code's name).

use std::net::SocketAddr;
use std::sync::LazyLock;

use prometheus::{
    register_gauge_vec, register_histogram_vec, register_int_counter_vec, register_int_gauge_vec,
    Encoder, GaugeVec, HistogramVec, IntCounterVec, IntGaugeVec, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Binds `addr` and serves `/metrics` (and `/` with the same) until the task is dropped.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("METRICS_ADDR: cannot bind {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving Prometheus metrics on /metrics");
    Ok(tokio::spawn(serve(listener)))
}

/// Serves `/metrics` on `listener`: a minimal HTTP/1.1 responder, one request per connection,
/// which is all a Prometheus scrape needs.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                match tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut chunk))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            let line = String::from_utf8_lossy(&buf);
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let path = path.split('?').next().unwrap_or("");
            let (status, ctype, body) = match (method, path) {
                ("GET" | "HEAD", "/metrics" | "/") => ("200 OK", CONTENT_TYPE, render()),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "not found: try /metrics\n".to_string(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            if method != "HEAD" {
                let _ = conn.write_all(body.as_bytes()).await;
            }
            let _ = conn.shutdown().await;
        });
    }
}
