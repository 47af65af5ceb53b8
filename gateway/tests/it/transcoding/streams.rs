//! Streams over REST: server streams as NDJSON and SSE, client and bidirectional streams from a body.

use super::*;

#[tokio::test]
async fn server_stream_as_ndjson() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let r = client()
        .get(gw.url("/v1/echo:count?to=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{text}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["result"]["n"], i as i64 + 1);
    }
    // A stream that fails before its first message is an ordinary error response.
    let (s, v) = get(&gw.url("/v1/echo:count?to=-1")).await;
    assert_eq!(s, 400);
    assert_eq!(v["status"], "INVALID_ARGUMENT");
}

#[tokio::test]
async fn server_stream_as_server_sent_events() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let r = client()
        .get(gw.url("/v1/echo:count?to=3"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let events: Vec<Value> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("data line")).unwrap())
        .collect();
    assert_eq!(
        events,
        vec![json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]
    );
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_stream() {
    use futures::StreamExt;
    let (echo, gw) = echo_gateway(Settings::default()).await;
    let r = client()
        .get(gw.url("/v1/echo:count?to=100000&interval_ms=20"))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"n\":1"));
    assert_eq!(
        echo.streams_open.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(gw.gateway.metrics.open_streams(), 1);
    drop(body);
    let cancelled = ordermesh::testing::eventually(Duration::from_secs(5), || async {
        echo.streams_cancelled
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
            && echo.streams_open.load(std::sync::atomic::Ordering::SeqCst) == 0
    })
    .await;
    assert!(cancelled, "the upstream stream was not cancelled");
    assert!(
        ordermesh::testing::eventually(Duration::from_secs(2), || async {
            gw.gateway.metrics.open_streams() == 0
        })
        .await
    );
}

#[tokio::test]
async fn client_stream_from_a_json_array_or_ndjson() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let r = client()
        .post(gw.url("/v1/echo:sum"))
        .json(&json!([{"value": 1}, {"value": "2"}, {"value": 39}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"total": "42", "count": 3}));
    let r = client()
        .post(gw.url("/v1/echo:sum"))
        .header("content-type", "application/x-ndjson")
        .body("{\"value\": 5}\n{\"value\": 6}\n")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"total": "11", "count": 2}));
    let r = client()
        .post(gw.url("/v1/echo:sum"))
        .json(&json!([{"value": 1}, {"value": "x"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["details"][0]["fieldViolations"][0]["field"], "[1].value");
}

#[tokio::test]
async fn bidirectional_stream_from_a_body_answers_as_ndjson() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let r = client()
        .post(gw.url("/v1/echo:runningSum"))
        .json(&json!([{"value": 1}, {"value": 2}, {"value": 3}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let totals: Vec<&str> = lines
        .iter()
        .map(|l| l["result"]["total"].as_str().unwrap())
        .collect();
    assert_eq!(totals, vec!["1", "3", "6"]);
    // No messages in, none out: an empty stream, not an error.
    let r = client()
        .post(gw.url("/v1/echo:runningSum"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "");
}
