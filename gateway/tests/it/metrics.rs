//! Every process's Prometheus `/metrics` while an order flows through the mesh: RED series per
//! RPC on each service and per route on the gateway, client calls per upstream, breaker state,
//! balancer endpoints, saga outcomes, durations and steps, database pool use; then a dead
//! upstream moves the retry and breaker series. Each scrape passes `promtool check metrics`
//! when promtool is installed (`make test-deps` installs it; CI fails without it).
//!
//! The services run in this one process, so their listeners serve the same registry; series
//! are told apart by their labels (`rpc_service`, `upstream`), as they are in production by
//! the scrape's own `instance` label.

use crate::helpers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

type Scrape = Vec<(String, BTreeMap<String, String>, f64)>;

async fn scrape_url(url: &str) -> String {
    let r = helpers::client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    r.text().await.unwrap()
}

fn parse(text: &str) -> Scrape {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.push((name.to_string(), labels, value.parse().unwrap()));
    }
    out
}

/// The sum of the series named `name` whose labels include `labels`.
fn sum(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

fn promtool() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|f| f.is_file())
    })
}

/// `promtool check metrics` on a scrape: no parse error and no lint problem.
fn check_with_promtool(what: &str, text: &str) {
    let Some(tool) = promtool() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed (scripts/test-deps.sh installs it)"
        );
        eprintln!("promtool not found: skipping the format check of {what}");
        return;
    };
    use std::io::Write;
    let mut child = std::process::Command::new(tool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Scrapes {
    services: Vec<(&'static str, SocketAddr)>,
    gateway: String,
}

impl Scrapes {
    /// Scrapes every process, checks each with promtool, returns them by process name.
    async fn take(&self) -> BTreeMap<&'static str, Scrape> {
        let mut all = BTreeMap::new();
        for (name, addr) in &self.services {
            let text = scrape_url(&format!("http://{addr}/metrics")).await;
            check_with_promtool(name, &text);
            all.insert(*name, parse(&text));
        }
        let text = scrape_url(&self.gateway).await;
        check_with_promtool("gateway", &text);
        all.insert("gateway", parse(&text));
        all
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_metrics_that_move_with_an_order() {
    let m = helpers::mesh::mesh().await;
    let scrapes = Scrapes {
        services: ["order", "inventory", "payment", "shipping"]
            .into_iter()
            .map(|s| (s, m.metrics[s]))
            .collect(),
        gateway: m.gateway.url("/metrics"),
    };
    m.create_item("TEA-1").await;
    let before = scrapes.take().await;
    let id = m.place("TEA-1", "metrics/1", &[]).await;
    assert!(m.confirmed(&id).await);
    // The saga is counted when it ends, a moment after the order reads CONFIRMED; the pool
    // gauges are set by the health loop, once a second.
    let mut after = scrapes.take().await;
    for _ in 0..50 {
        let done = sum(
            &after["order"],
            "saga_finished_total",
            &[("saga", "place_order"), ("outcome", "completed")],
        ) > sum(
            &before["order"],
            "saga_finished_total",
            &[("saga", "place_order"), ("outcome", "completed")],
        );
        if done && sum(&after["order"], "db_pool_connections", &[("state", "max")]) > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = scrapes.take().await;
    }
    let moved = |process: &str, name: &str, labels: &[(&str, &str)]| -> f64 {
        sum(&after[process], name, labels) - sum(&before[process], name, labels)
    };

    // RED per RPC on each participant's own listener, and on the order service.
    for (process, service, method) in [
        ("order", "ordermesh.order.v1.OrderService", "PlaceOrder"),
        (
            "inventory",
            "ordermesh.inventory.v1.InventoryService",
            "ReserveStock",
        ),
        (
            "inventory",
            "ordermesh.inventory.v1.InventoryService",
            "CommitReservation",
        ),
        (
            "payment",
            "ordermesh.payment.v1.PaymentService",
            "AuthorizePayment",
        ),
        (
            "payment",
            "ordermesh.payment.v1.PaymentService",
            "CapturePayment",
        ),
        (
            "shipping",
            "ordermesh.shipping.v1.ShippingService",
            "CreateShipment",
        ),
    ] {
        let labels = [("rpc_service", service), ("rpc_method", method)];
        let mut ok = labels.to_vec();
        ok.push(("grpc_code", "OK"));
        assert_eq!(
            moved(process, "rpc_server_requests_total", &ok),
            1.0,
            "{process}: {method}"
        );
        assert_eq!(
            moved(process, "rpc_server_duration_seconds_count", &labels),
            1.0,
            "{method}"
        );
        assert!(
            moved(process, "rpc_server_duration_seconds_sum", &labels) > 0.0,
            "{method}"
        );
        let le = [
            ("rpc_service", service),
            ("rpc_method", method),
            ("le", "+Inf"),
        ];
        assert_eq!(
            moved(process, "rpc_server_duration_seconds_bucket", &le),
            1.0,
            "{method}"
        );
    }
    // The order service's calls, per upstream.
    for (upstream, method) in [
        ("inventory", "ReserveStock"),
        ("payment", "AuthorizePayment"),
        ("shipping", "CreateShipment"),
        ("payment", "CapturePayment"),
    ] {
        let l = [
            ("upstream", upstream),
            ("rpc_method", method),
            ("grpc_code", "OK"),
        ];
        assert_eq!(
            moved("order", "rpc_client_requests_total", &l),
            1.0,
            "{upstream} {method}"
        );
        let l = [("upstream", upstream), ("rpc_method", method)];
        assert_eq!(moved("order", "rpc_client_duration_seconds_count", &l), 1.0);
    }
    // The gateway: per route, and its call to the order service.
    let route = [
        ("method", "POST"),
        ("route", "POST /v1/orders"),
        ("status", "200"),
    ];
    assert_eq!(moved("gateway", "gateway_http_requests_total", &route), 1.0);
    let route = [("route", "POST /v1/orders")];
    assert_eq!(
        moved(
            "gateway",
            "gateway_http_request_duration_seconds_count",
            &route
        ),
        1.0
    );
    let l = [
        ("upstream", "order"),
        ("rpc_method", "PlaceOrder"),
        ("grpc_code", "OK"),
    ];
    assert_eq!(moved("gateway", "rpc_client_requests_total", &l), 1.0);
    // Breakers closed, one endpoint each, the saga counted with its steps, the pool seen.
    for upstream in ["inventory", "payment", "shipping"] {
        let closed = [("upstream", upstream), ("state", "closed")];
        assert_eq!(sum(&after["order"], "circuit_breaker_state", &closed), 1.0);
        let open = [("upstream", upstream), ("state", "open")];
        assert_eq!(sum(&after["order"], "circuit_breaker_state", &open), 0.0);
        assert_eq!(
            sum(
                &after["order"],
                "balancer_endpoints",
                &[("upstream", upstream)]
            ),
            1.0
        );
    }
    let completed = [("saga", "place_order"), ("outcome", "completed")];
    assert_eq!(moved("order", "saga_finished_total", &completed), 1.0);
    assert_eq!(
        moved("order", "saga_duration_seconds_count", &completed),
        1.0
    );
    for step in [
        "reserve_stock",
        "authorize_payment",
        "create_shipment",
        "capture_payment",
        "commit_stock",
        "confirm_order",
    ] {
        let l = [
            ("saga", "place_order"),
            ("step", step),
            ("direction", "action"),
            ("outcome", "ok"),
        ];
        assert_eq!(
            moved("order", "saga_step_attempts_total", &l),
            1.0,
            "{step}"
        );
    }
    assert!(sum(&after["order"], "db_pool_connections", &[("state", "max")]) >= 1.0);
    // Database statements, by operation: the order's rows, its saga's log, the reservation,
    // the payment and the shipment are all written (and nothing failed).
    let statements = |op: &str, outcome: &str| {
        moved(
            "order",
            "db_client_operation_duration_seconds_count",
            &[
                ("db_system", "sqlite"),
                ("db_operation", op),
                ("outcome", outcome),
            ],
        )
    };
    assert!(
        statements("INSERT", "ok") >= 5.0,
        "{}",
        statements("INSERT", "ok")
    );
    assert!(
        statements("SELECT", "ok") >= 5.0,
        "{}",
        statements("SELECT", "ok")
    );
    assert_eq!(statements("INSERT", "error"), 0.0);
    // Every producer's relay reports its backlog on its own process's /metrics, and reports it
    // empty once the order's events are out (a relay round that finds nothing to publish).
    for (producer, addr) in &scrapes.services {
        let producer = *producer;
        let drained = ordermesh::testing::eventually(Duration::from_secs(10), || async {
            let s = parse(&scrape_url(&format!("http://{addr}/metrics")).await);
            s.iter().any(|(n, l, _)| {
                n == "outbox_backlog_events"
                    && l.get("producer").map(String::as_str) == Some(producer)
            }) && sum(&s, "outbox_backlog_events", &[("producer", producer)]) == 0.0
                && sum(&s, "outbox_delivery_lag_seconds", &[("producer", producer)]) == 0.0
        })
        .await;
        assert!(
            drained,
            "{producer}: no outbox backlog series, or it did not drain"
        );
    }

    // A dead upstream: reads are retried from the budget, then the breaker opens and calls
    // fail fast.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = ordermesh::transport::client::Upstream::new(format!("http://{dead_port}"))
        .breaker(Some(ordermesh::transport::client::BreakerPolicy {
            min_calls: 4,
            ..Default::default()
        }))
        .stack()
        .unwrap();
    let mut client =
        ordermesh::proto::order::v1::order_service_client::OrderServiceClient::new(dead);
    for _ in 0..8 {
        let e = client
            .get_order(ordermesh::proto::order::v1::GetOrderRequest {
                order_id: "ord_x".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
    }
    let text = scrape_url(&scrapes.gateway).await;
    check_with_promtool("gateway after failures", &text);
    let s = parse(&text);
    let up = dead_port.to_string();
    let up = format!("http://{up}");
    let l = [("upstream", up.as_str())];
    assert!(
        sum(&s, "retry_attempts_total", &l) >= 1.0,
        "no retry counted"
    );
    assert_eq!(
        sum(
            &s,
            "circuit_breaker_transitions_total",
            &[("upstream", up.as_str()), ("to", "open")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &s,
            "circuit_breaker_state",
            &[("upstream", up.as_str()), ("state", "open")]
        ),
        1.0
    );
    assert!(sum(&s, "circuit_breaker_rejected_total", &l) >= 1.0);
    let unavailable = [("upstream", up.as_str()), ("grpc_code", "UNAVAILABLE")];
    assert_eq!(sum(&s, "rpc_client_requests_total", &unavailable), 8.0);
    println!(
        "retries {} rejected {}",
        sum(&s, "retry_attempts_total", &l),
        sum(&s, "circuit_breaker_rejected_total", &l)
    );
}
