//! Whole runs against the in-process mesh: the binary's report must parse, count every
//! operation it ran, see orders to a final status, keep percentiles in order, and write the
//! plots and the page that inlines them.

use std::path::Path;

use serde_json::Value;

use crate::helpers::{loadgen, shop};

/// Reads the report folder and checks what every run's report must hold.
fn check_report(dir: &Path, ops: &[&str]) -> Value {
    let summary: Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    for op in ops {
        let o = summary["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["op"] == *op)
            .unwrap_or_else(|| panic!("{op} missing: {summary:#}"));
        assert!(o["count"].as_u64().unwrap() > 0, "{op}: {o}");
        let l = &o["latency_ms"];
        let p = |k: &str| l[k].as_f64().unwrap();
        assert!(
            0.0 < p("p50")
                && p("p50") <= p("p90")
                && p("p90") <= p("p99")
                && p("p99") <= p("p999")
                && p("p999") <= p("max"),
            "{op}: {l}"
        );
    }
    let orders = &summary["orders"];
    assert!(orders["placed"].as_u64().unwrap() > 0, "{orders}");
    assert!(orders["final_count"].as_u64().unwrap() > 0, "{orders}");
    let c = &orders["completion_ms"];
    assert!(
        c["p50"].as_f64().unwrap() <= c["p99"].as_f64().unwrap(),
        "{c}"
    );
    assert!(
        c["p99"].as_f64().unwrap() <= c["max"].as_f64().unwrap(),
        "{c}"
    );
    let outcomes: u64 = orders["outcomes"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        outcomes,
        orders["placed"].as_u64().unwrap(),
        "every placed order has an outcome: {orders}"
    );
    assert!(summary["timeline"].as_array().unwrap().len() >= 3);

    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for svg in ["latency-over-time.svg", "percentiles.svg", "throughput.svg"] {
        let body = std::fs::read_to_string(dir.join(svg)).unwrap();
        assert!(
            body.starts_with("<svg") && body.contains("<polyline"),
            "{svg}"
        );
        let open = &body[..body.find('>').unwrap()];
        assert!(html.contains(open), "report.html inlines {svg}");
    }
    assert!(!html.contains("<script"), "a static page");
    assert!(html.contains("<h2>Operations</h2>") && html.contains("place_order"));
    summary
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_closed_loop_orders_confirm_and_the_report_is_written() {
    let shop = shop().await;
    let out = tempfile::tempdir().unwrap();
    let run = loadgen(args(&[
        "--transport",
        "grpc",
        "--target-grpc",
        &shop.grpc,
        "--certs",
        shop.certs().to_str().unwrap(),
        "--mode",
        "closed",
        "--shoppers",
        "4",
        "--duration",
        "5s",
        "--scenario",
        "orders",
        "--skus",
        "20",
        "--seed",
        "7",
        "--out",
        out.path().to_str().unwrap(),
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("orders placed"), "{stdout}");
    let s = check_report(out.path(), &["get_item", "place_order", "watch_order"]);
    let orders = &s["orders"];
    assert_eq!(
        orders["outcomes"]["confirmed"], orders["placed"],
        "good cards only: {orders}"
    );
    assert_eq!(s["totals"]["errors"], 0, "{s:#}");
    assert_eq!(s["run"]["seed"], 7);
    assert_eq!(s["run"]["transport"], "grpc");
    assert!(s["open_loop"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_open_loop_black_friday_through_the_gateway() {
    let shop = shop().await;
    let out = tempfile::tempdir().unwrap();
    let run = loadgen(args(&[
        "--target-rest",
        &shop.rest,
        "--mode",
        "open",
        "--rate",
        "8",
        "--duration",
        "5s",
        "--skus",
        "40",
        "--seed",
        "11",
        // A card whose processor is down holds its order for the saga's 30s budget; the
        // test does not wait for it: it counts as timed out.
        "--order-timeout",
        "10s",
        "--out",
        out.path().to_str().unwrap(),
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let s = check_report(
        out.path(),
        &["list_items", "get_item", "place_order", "watch_order"],
    );
    assert_eq!(s["run"]["transport"], "rest");
    assert_eq!(s["run"]["scenario"], "black-friday");
    assert_eq!(s["open_loop"]["arrivals"], 40, "8/s for 5s: {s:#}");
}
