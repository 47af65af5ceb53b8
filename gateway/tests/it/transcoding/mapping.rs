//! REST to gRPC mapping: paths, query, bodies, well-known types, errors, headers, deadlines.

use super::*;

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
