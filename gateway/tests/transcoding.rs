//! The gateway over real HTTP in front of the echo service: one test per transcoding feature.

mod common;

use std::time::Duration;

use common::{client, echo_gateway};
use ordermesh_gateway::Settings;
use serde_json::{json, Value};

async fn get(url: &str) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn nested_path_field_and_query_parameters() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let (status, v) = get(&gw.url(
        "/v1/echo/abc%20d?name=n&inner.tags=a&inner.tags=b&inner.big=9007199254740993\
         &colors=COLOR_RED&colors=2&flag=true&ratio=0.25&count=-5&ucount=18446744073709551615\
         &at=2026-01-02T03:04:05Z&wait=1.5s&mask=inner.id,name&maybe=7&label=hello&data=aGk%3D",
    ))
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["inner"]["id"], "abc d");
    assert_eq!(v["inner"]["tags"], json!(["a", "b"]));
    // 64-bit integers are strings, both ways.
    assert_eq!(v["inner"]["big"], "9007199254740993");
    assert_eq!(v["count"], "-5");
    assert_eq!(v["ucount"], "18446744073709551615");
    assert_eq!(v["colors"], json!(["COLOR_RED", "COLOR_GREEN"]));
    assert_eq!(v["flag"], true);
    assert_eq!(v["ratio"], 0.25);
    assert_eq!(v["at"], "2026-01-02T03:04:05Z");
    assert!(
        ["1.5s", "1.500s"].contains(&v["wait"].as_str().unwrap()),
        "{}",
        v["wait"]
    );
    assert_eq!(v["mask"], "inner.id,name");
    assert_eq!(v["maybe"], 7);
    assert_eq!(v["label"], "hello");
    assert_eq!(v["data"], "aGk=");
    assert_eq!(v["name"], "n");
    // lowerCamel names, defaults included.
    assert_eq!(v["color"], "COLOR_UNSPECIFIED");
    assert!(v.get("metadataSeen").is_some());
}

#[tokio::test]
async fn wildcards_and_multi_segment_variables() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let (s, v) = get(&gw.url("/v1/files/a/b/c.txt")).await;
    assert_eq!(s, 200);
    assert_eq!(v["path"], "a/b/c.txt");
    let (s, v) = get(&gw.url("/v1/shelves/s1/books/b2")).await;
    assert_eq!(s, 200);
    assert_eq!(v["name"], "shelves/s1/books/b2");
    // The pattern must match: shelves/*/books/* needs four segments.
    let (s, v) = get(&gw.url("/v1/shelves/s1/books")).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["status"], "NOT_FOUND");
}

#[tokio::test]
async fn custom_verb_with_body_and_path_override() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let r = client()
        .patch(gw.url("/v1/echo/from-path:touch"))
        .json(&json!({"inner": {"id": "from-body", "tags": ["t"]}, "name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["inner"]["id"], "from-path");
    assert_eq!(v["inner"]["tags"], json!(["t"]));
    assert_eq!(v["name"], "x");
    // The verb route and the plain route are told apart.
    let (s, v) = get(&gw.url("/v1/echo/plain")).await;
    assert_eq!(s, 200);
    assert_eq!(v["inner"]["id"], "plain");
}

#[tokio::test]
async fn body_star_with_well_known_types_and_proto_names() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let sent = json!({
        "inner": {"id": "i", "big": "-9223372036854775808"},
        "metadata_seen": [],
        "color": "COLOR_GREEN",
        "at": "2026-11-25T10:00:00.250Z",
        "wait": "-3s",
        "mask": "a.b,c",
        "maybe": null,
        "label": "",
        "extra": {"k": [1, "two", {"three": true}], "n": null},
        "any_value": [1, 2],
        "nothing": {},
        "labels": {"a": "1"},
        "numbers": [1, -2, 3],
    });
    let r = client()
        .post(gw.url("/v1/echo"))
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["inner"]["big"], "-9223372036854775808");
    assert_eq!(v["color"], "COLOR_GREEN");
    assert_eq!(v["at"], "2026-11-25T10:00:00.250Z");
    assert_eq!(v["wait"], "-3s");
    assert_eq!(v["mask"], "a.b,c");
    assert!(v.get("maybe").is_none_or(Value::is_null), "{v}");
    assert_eq!(v["label"], "");
    assert_eq!(
        v["extra"],
        json!({"k": [1.0, "two", {"three": true}], "n": null})
    );
    assert_eq!(v["anyValue"], json!([1.0, 2.0]));
    assert_eq!(v["nothing"], json!({}));
    assert_eq!(v["labels"], json!({"a": "1"}));
    assert_eq!(v["numbers"], json!([1, -2, 3]));
}

#[tokio::test]
async fn body_field_and_response_body() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let r = client()
        .put(gw.url("/v1/echo/the-name/inner?color=COLOR_RED"))
        .json(&json!({"id": "inner-id", "tags": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "the-name");
    assert_eq!(
        v["inner"],
        json!({"id": "inner-id", "big": "0", "tags": ["x"]})
    );
    assert_eq!(v["color"], "COLOR_RED");
    // response_body: only the inner message comes back.
    let r = client()
        .post(gw.url("/v1/echo/n:inner"))
        .json(&json!({"inner": {"id": "only-me"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"id": "only-me", "big": "0", "tags": []}));
}

#[tokio::test]
async fn bad_requests_name_the_problem_and_never_reach_the_service() {
    let (echo, gw) = echo_gateway(Settings {
        max_body: 1024,
        ..Settings::default()
    })
    .await;
    let c = client();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(gw.url("/v1/echo"))
                .header("content-type", "application/json")
                .body("{\"name\": "),
            400,
            "body",
        ),
        (
            c.post(gw.url("/v1/echo")).json(&json!({"nmae": "typo"})),
            400,
            "nmae",
        ),
        (
            c.post(gw.url("/v1/echo")).json(&json!({"count": "twelve"})),
            400,
            "count",
        ),
        (
            c.post(gw.url("/v1/echo"))
                .json(&json!({"inner": {"big": true}})),
            400,
            "inner.big",
        ),
        (
            c.post(gw.url("/v1/echo"))
                .json(&json!({"color": "COLOR_PURPLE"})),
            400,
            "color",
        ),
        (c.post(gw.url("/v1/echo")).json(&json!([1, 2])), 400, "body"),
        (
            c.get(gw.url("/v1/echo/x?colors=COLOR_PURPLE")),
            400,
            "colors",
        ),
        (c.get(gw.url("/v1/echo/x?nosuch=1")), 400, "nosuch"),
        (c.get(gw.url("/v1/echo/x?flag=maybe")), 400, "flag"),
        (c.get(gw.url("/v1/echo/x?inner.id=y")), 400, "inner.id"),
        (
            c.post(gw.url("/v1/echo?name=q")).json(&json!({})),
            400,
            "name",
        ),
        (
            c.post(gw.url("/v1/echo"))
                .json(&json!({"name": "x".repeat(2000)})),
            413,
            "",
        ),
        (
            c.post(gw.url("/v1/echo"))
                .header("content-type", "text/plain")
                .body("hi"),
            415,
            "",
        ),
        (c.get(gw.url("/v1/nothing/here")), 404, ""),
        (c.delete(gw.url("/v1/echo/x")), 405, ""),
    ];
    for (req, want, field) in cases {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let allow = r.headers().get("allow").cloned();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, want, "{v}");
        assert!(
            v["code"].is_i64() && v["status"].is_string() && v["message"].is_string(),
            "{v}"
        );
        if !field.is_empty() {
            assert_eq!(v["status"], "INVALID_ARGUMENT");
            assert_eq!(v["details"][0]["fieldViolations"][0]["field"], field, "{v}");
        }
        if want == 405 {
            assert_eq!(allow.unwrap(), "GET");
        }
    }
    assert_eq!(echo.calls(), 0, "no bad request reached the service");
}

#[tokio::test]
async fn grpc_status_becomes_http_status_with_json_body() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    for (code, http, name) in [
        (3, 400, "INVALID_ARGUMENT"),
        (9, 400, "FAILED_PRECONDITION"),
        (16, 401, "UNAUTHENTICATED"),
        (7, 403, "PERMISSION_DENIED"),
        (5, 404, "NOT_FOUND"),
        (6, 409, "ALREADY_EXISTS"),
        (10, 409, "ABORTED"),
        (8, 429, "RESOURCE_EXHAUSTED"),
        (14, 503, "UNAVAILABLE"),
        (4, 504, "DEADLINE_EXCEEDED"),
        (13, 500, "INTERNAL"),
        (12, 501, "UNIMPLEMENTED"),
    ] {
        let r = client()
            .post(gw.url("/v1/echo:fail"))
            .json(&json!({"code": code, "message": format!("failed with {name}"), "field": if code == 3 { "lines[0].sku" } else { "" }}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), http, "{name}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], code);
        assert_eq!(v["status"], name);
        assert_eq!(v["message"], format!("failed with {name}"));
        if code == 3 {
            assert_eq!(
                v["details"][0]["@type"],
                "type.googleapis.com/google.rpc.BadRequest"
            );
            assert_eq!(
                v["details"][0]["fieldViolations"][0]["field"],
                "lines[0].sku"
            );
        } else {
            assert_eq!(v["details"], json!([]));
        }
    }
}

#[tokio::test]
async fn headers_become_metadata_and_metadata_comes_back() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let r = client()
        .get(gw.url("/v1/echo/h"))
        .header("x-request-id", "req-1")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("grpc-metadata-tenant", "acme")
        .header("x-not-forwarded", "secret")
        .header("grpc-metadata-x-ordermesh-subject", "spoofed")
        .header("grpc-timeout", "3S")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["grpc-metadata-x-echo"], "yes");
    let v: Value = r.json().await.unwrap();
    let seen: Vec<&str> = v["metadataSeen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(seen.contains(&"x-request-id=req-1"), "{seen:?}");
    assert!(
        seen.contains(&"traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        "{seen:?}"
    );
    assert!(seen.contains(&"tenant=acme"), "{seen:?}");
    assert!(seen.contains(&"x-forwarded-for=127.0.0.1"), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|s| s.starts_with("x-not-forwarded") || s.starts_with("x-ordermesh-subject")),
        "{seen:?}"
    );
    let timeout = seen
        .iter()
        .find_map(|s| s.strip_prefix("grpc-timeout="))
        .expect("grpc-timeout sent");
    let t = ordermesh::transport::deadline::parse_grpc_timeout(
        &http::HeaderValue::from_str(timeout).unwrap(),
    )
    .unwrap();
    assert!(
        t <= Duration::from_secs(3) && t > Duration::from_secs(2),
        "{t:?}"
    );
}

#[tokio::test]
async fn a_short_grpc_timeout_header_ends_in_504() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let started = std::time::Instant::now();
    let r = client()
        .get(gw.url("/v1/echo:sleep?millis=2000"))
        .header("grpc-timeout", "200m")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "DEADLINE_EXCEEDED");
    // The route default applies without the header.
    let (_echo, gw) = echo_gateway(Settings {
        timeout: Duration::from_millis(300),
        ..Settings::default()
    })
    .await;
    let r = client()
        .get(gw.url("/v1/echo:sleep?millis=2000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
}

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

#[tokio::test]
async fn native_grpc_passes_through_the_gateway() {
    let (echo, gw) = echo_gateway(Settings::default()).await;
    let mut c = common::pb::echo_service_client::EchoServiceClient::connect(gw.url(""))
        .await
        .unwrap();
    let r = c
        .echo(common::pb::EchoMessage {
            name: "grpc".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.metadata().get("x-echo").unwrap(), "yes");
    assert_eq!(r.into_inner().name, "grpc");
    let mut s = c
        .count(common::pb::CountRequest {
            to: 3,
            interval_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        got.push(m.n);
    }
    assert_eq!(got, vec![1, 2, 3]);
    let err = c
        .fail(common::pb::FailRequest {
            code: 5,
            message: "gone".into(),
            field: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(echo.calls(), 3);
}

#[tokio::test]
async fn grpc_web_over_http1_passes_through_the_gateway() {
    use prost::Message;
    let (echo, gw) = echo_gateway(Settings::default()).await;
    let msg = common::pb::EchoMessage {
        name: "from a browser".into(),
        ..Default::default()
    };
    let mut frame = vec![0u8];
    frame.extend((msg.encoded_len() as u32).to_be_bytes());
    msg.encode(&mut frame).unwrap();
    let r = client()
        .post(gw.url("/ordermesh.echo.v1.EchoService/Echo"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/grpc-web"));
    let bytes = r.bytes().await.unwrap();
    assert_eq!(bytes[0], 0, "a data frame first");
    let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
    let back = common::pb::EchoMessage::decode(&bytes[5..5 + len]).unwrap();
    assert_eq!(back.name, "from a browser");
    assert_eq!(bytes[5 + len], 0x80, "then the trailers frame");
    let trailers = String::from_utf8_lossy(&bytes[5 + len + 5..]).to_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert_eq!(echo.calls(), 1);
}

#[tokio::test]
async fn openapi_describes_what_is_served() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let (s, doc) = get(&gw.url("/openapi.json")).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/echo/{inner.id}", "get"),
        ("/v1/echo", "post"),
        ("/v1/echo/{name}/inner", "put"),
        ("/v1/files/{path}", "get"),
        ("/v1/{name}", "get"),
        ("/v1/echo/{inner.id}:touch", "patch"),
        ("/v1/echo:count", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let op = &paths["/v1/echo/{inner.id}"]["get"];
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        params.contains(&"inner.id")
            && params.contains(&"inner.tags")
            && params.contains(&"colors")
    );
    assert!(
        !params.contains(&"extra"),
        "a Struct cannot come from the query"
    );
    let echo = &doc["components"]["schemas"]["ordermesh.echo.v1.EchoMessage"]["properties"];
    assert_eq!(echo["count"]["type"], "string");
    assert_eq!(echo["at"]["format"], "date-time");
    assert_eq!(echo["colors"]["items"]["enum"][1], "COLOR_RED");
    assert!(
        paths["/v1/echo:count"]["get"]["responses"]["200"]["content"]["application/x-ndjson"]
            .is_object()
    );
    // Every shipped contract route is there too.
    assert!(
        paths.get("/v1/orders/{order_id}:cancel").is_none(),
        "no order upstream in this gateway"
    );
}
