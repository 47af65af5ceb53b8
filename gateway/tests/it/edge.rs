//! Edge concerns over real HTTP: bearer tokens, per-client rate limits, the response cache,
//! CORS, compression, health and metrics.

use crate::helpers;

use std::time::Duration;

use crate::helpers::{client, echo_gateway};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ordermesh_gateway::auth::Authenticator;
use ordermesh_gateway::ratelimit::Limit;
use ordermesh_gateway::Settings;
use serde_json::{json, Value};

const SECRET: &[u8] = b"an-hs256-secret-of-32-bytes-or-more!";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(sub: &str, exp_in: i64) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now() + exp_in, "iss": "https://id.example", "aud": "ordermesh"}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn secured() -> Settings {
    Settings {
        auth: Some(
            Authenticator::new(
                Some(SECRET),
                None,
                Some("https://id.example".into()),
                Some("ordermesh".into()),
            )
            .unwrap(),
        ),
        public_routes: vec![
            "GET /v1/files/{path=**}".into(),
            "ordermesh.echo.v1.EchoService/Sum".into(),
        ],
        ..Settings::default()
    }
}

#[tokio::test]
async fn bearer_tokens_are_checked_and_the_subject_reaches_the_service() {
    let (echo, gw) = echo_gateway(secured()).await;
    let c = client();
    let r = c.get(gw.url("/v1/echo/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"ordermesh\""
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "UNAUTHENTICATED");
    let r = c
        .get(gw.url("/v1/echo/x"))
        .bearer_auth(token("cust_1", -600))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    assert_eq!(echo.calls(), 0);
    let r = c
        .get(gw.url("/v1/echo/x"))
        .bearer_auth(token("cust_1", 600))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["metadataSeen"]
            .as_array()
            .unwrap()
            .contains(&json!("x-ordermesh-subject=cust_1")),
        "{v}"
    );
    assert!(
        !v["metadataSeen"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap().starts_with("authorization")),
        "the token itself is not passed on"
    );
    // Public routes need no token (an HTTP rule or a gRPC method name).
    let r = c.get(gw.url("/v1/files/readme")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(gw.url("/v1/echo:sum"))
        .json(&json!([{"value": 1}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Native gRPC through the gateway is checked the same way.
    let mut g = helpers::pb::echo_service_client::EchoServiceClient::connect(gw.url(""))
        .await
        .unwrap();
    let err = g
        .echo(helpers::pb::EchoMessage::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(helpers::pb::EchoMessage::default());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("cust_2", 60)).parse().unwrap(),
    );
    // A subject sent by the client is replaced by the token's.
    req.metadata_mut()
        .insert("x-ordermesh-subject", "someone-else".parse().unwrap());
    let seen = g.echo(req).await.unwrap().into_inner().metadata_seen;
    assert!(
        seen.contains(&"x-ordermesh-subject=cust_2".to_string()),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|m| m.contains("someone-else")), "{seen:?}");
    // A public method needs no token, but a bad one is refused.
    let ok = g
        .sum(tokio_stream::iter(vec![helpers::pb::SumRequest {
            value: 1,
        }]))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    let mut bad = tonic::Request::new(tokio_stream::iter(vec![helpers::pb::SumRequest {
        value: 1,
    }]));
    bad.metadata_mut()
        .insert("authorization", "Bearer not-a-token".parse().unwrap());
    assert_eq!(
        g.sum(bad).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    // OpenAPI says which operations need the token.
    let doc: Value = c
        .get(gw.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["paths"]["/v1/echo/{inner.id}"]["get"]["security"],
        json!([{"bearerAuth": []}])
    );
    assert!(doc["paths"]["/v1/files/{path}"]["get"]
        .get("security")
        .is_none());
}

#[tokio::test]
async fn rate_limits_are_per_client_with_retry_after() {
    let (_echo, gw) = echo_gateway(Settings {
        rate_limit: Some(Limit {
            per_second: 1.0,
            burst: 3,
        }),
        ..secured()
    })
    .await;
    let c = client();
    let alice = token("alice", 600);
    // Connected before the burst, so no refill fits between the burst and its gRPC call.
    let mut g = helpers::pb::echo_service_client::EchoServiceClient::connect(gw.url(""))
        .await
        .unwrap();
    for i in 0..3 {
        let r = c
            .get(gw.url("/v1/echo/x"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["ratelimit-limit"], "3");
        assert_eq!(
            r.headers()["ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
    }
    let r = c
        .get(gw.url("/v1/echo/x"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Native gRPC counts against the same bucket.
    let mut req = tonic::Request::new(helpers::pb::EchoMessage::default());
    req.metadata_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    assert_eq!(
        g.echo(req).await.unwrap_err().code(),
        tonic::Code::ResourceExhausted
    );
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "RESOURCE_EXHAUSTED");
    // Bob has a bucket of his own; anonymous callers are keyed by address.
    let r = c
        .get(gw.url("/v1/echo/x"))
        .bearer_auth(token("bob", 600))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(gw.url("/v1/files/a")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(gw
        .gateway
        .metrics
        .render()
        .contains("gateway_rate_limited_total 2"));
    // A second later Alice has one token again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c
        .get(gw.url("/v1/echo/x"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn declared_gets_are_cached_per_client_and_no_cache_bypasses() {
    let mut settings = Settings::default();
    settings.cache.insert(
        "ordermesh.echo.v1.EchoService/Echo".into(),
        Duration::from_secs(30),
    );
    let (echo, gw) = echo_gateway(settings).await;
    let c = client();
    let first = c.get(gw.url("/v1/echo/cached")).send().await.unwrap();
    assert_eq!(first.headers()["x-cache"], "miss");
    assert_eq!(first.headers()["cache-control"], "private, max-age=30");
    let first: Value = first.json().await.unwrap();
    let second = c.get(gw.url("/v1/echo/cached")).send().await.unwrap();
    assert_eq!(second.headers()["x-cache"], "hit");
    assert_eq!(second.headers()["grpc-metadata-x-echo"], "yes");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(echo.calls(), 1);
    // Another query is another entry; no-cache goes to the service.
    c.get(gw.url("/v1/echo/cached?name=other"))
        .send()
        .await
        .unwrap();
    assert_eq!(echo.calls(), 2);
    let r = c
        .get(gw.url("/v1/echo/cached"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "miss");
    assert_eq!(echo.calls(), 3);
    // POSTs are never cached.
    c.post(gw.url("/v1/echo"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    c.post(gw.url("/v1/echo"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(echo.calls(), 5);
}

#[tokio::test]
async fn cors_preflight_and_compression() {
    let (_echo, gw) = echo_gateway(Settings {
        cors_origins: vec!["https://shop.example".into()],
        ..Settings::default()
    })
    .await;
    let c = client();
    let r = c
        .request(reqwest::Method::OPTIONS, gw.url("/v1/echo"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let r = c
        .get(gw.url("/v1/echo/x"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // A large answer is gzipped for a client that accepts it.
    let big = "y".repeat(20_000);
    let raw = c
        .post(gw.url("/v1/echo"))
        .header("accept-encoding", "gzip")
        .json(&json!({"name": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-encoding"], "gzip");
    let compressed = raw.bytes().await.unwrap();
    assert!(compressed.len() < 2_000, "{} bytes", compressed.len());
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let c = client();
    assert_eq!(
        c.get(gw.url("/healthz")).send().await.unwrap().status(),
        200
    );
    // The echo server has no health service: not ready, and the reason is named.
    let r = c.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ready"], false);
    assert!(
        v["upstreams"]["echo"]
            .as_str()
            .unwrap()
            .contains("Unimplemented"),
        "{v}"
    );
    c.get(gw.url("/v1/echo/m")).send().await.unwrap();
    c.get(gw.url("/v1/nope")).send().await.unwrap();
    let text = c
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("gateway_http_requests_total{method=\"GET\",route=\"GET /v1/echo/{inner.id}\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains(
        "gateway_http_requests_total{method=\"GET\",route=\"GET unmatched\",status=\"404\"} 1"
    ));
    assert!(text.contains("gateway_http_request_duration_seconds_count{method=\"GET\",route=\"GET /v1/echo/{inner.id}\"} 1"));
    // The same series on a metrics-only listener (METRICS_ADDR), which serves nothing else.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ordermesh_gateway::server::serve_metrics(
        gw.gateway.clone(),
        listener,
    ));
    let side = c
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        side.contains("route=\"GET /v1/echo/{inner.id}\",status=\"200\"} 1"),
        "{side}"
    );
    let other = c
        .get(format!("http://{addr}/v1/echo/m"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

fn operator_token() -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ops", "exp": now() + 600, "iss": "https://id.example", "aud": "ordermesh", "scope": "read ordermesh:operator"}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// The fault headers the echo service saw for one REST call.
async fn faults_seen(gw: &helpers::Running, bearer: &str) -> Vec<String> {
    let r = client()
        .get(gw.url("/v1/echo/x"))
        .bearer_auth(bearer)
        .header("x-ordermesh-fault-abort", "UNAVAILABLE")
        .header("grpc-metadata-x-ordermesh-fault-delay", "1s")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["metadataSeen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .filter(|m| m.starts_with("x-ordermesh-fault"))
        .collect()
}

#[tokio::test]
async fn fault_headers_reach_the_services_only_from_operators_with_faults_on() {
    // FAULTS on: an operator's fault header goes on, a customer's is dropped (in every form).
    let on = Settings {
        faults: ordermesh::transport::faults::Faults::on(Default::default()),
        ..secured()
    };
    let (_echo, gw) = echo_gateway(on).await;
    assert_eq!(
        faults_seen(&gw, &operator_token()).await,
        vec!["x-ordermesh-fault-abort=UNAVAILABLE"]
    );
    assert!(faults_seen(&gw, &token("cust_1", 600)).await.is_empty());
    // Native gRPC through the gateway: the same rule.
    let mut g = helpers::pb::echo_service_client::EchoServiceClient::connect(gw.url(""))
        .await
        .unwrap();
    for (bearer, passes) in [(token("cust_1", 600), false), (operator_token(), true)] {
        let mut req = tonic::Request::new(helpers::pb::EchoMessage::default());
        req.metadata_mut()
            .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
        req.metadata_mut()
            .insert("x-ordermesh-fault-target", "payment".parse().unwrap());
        let seen = g.echo(req).await.unwrap().into_inner().metadata_seen;
        assert_eq!(
            seen.iter().any(|m| m == "x-ordermesh-fault-target=payment"),
            passes,
            "{seen:?}"
        );
    }
    // FAULTS off at the gateway: not even an operator's goes on.
    let (_echo, gw) = echo_gateway(secured()).await;
    assert!(faults_seen(&gw, &operator_token()).await.is_empty());
    // The split pin: an operator's goes on (whatever FAULTS says), a customer's does not.
    for (bearer, passes) in [(token("cust_1", 600), false), (operator_token(), true)] {
        let r = client()
            .get(gw.url("/v1/echo/x"))
            .bearer_auth(bearer)
            .header("x-ordermesh-backend", "payment-canary")
            .header("grpc-metadata-x-ordermesh-backend", "payment-canary")
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        let pins = v["metadataSeen"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m.as_str().unwrap().starts_with("x-ordermesh-backend"))
            .count();
        assert_eq!(pins, usize::from(passes), "{v}");
    }
}

#[tokio::test]
async fn a_route_rule_fails_or_delays_rest_calls_at_the_gateway() {
    use ordermesh::transport::faults::{FaultRules, Faults};
    let rules = FaultRules::parse(
        "[[rule]]\nname = \"echo-down\"\nroute = \"GET /v1/echo/{inner.id}\"\nheaders = { x-ordermesh-fault-tag = \"chaos\" }\nabort_status = 503\n\n[[rule]]\nname = \"echo-slow\"\nroute = \"GET /v1/echo/{inner.id}\"\ndelay = \"200ms\"\n",
    )
    .unwrap();
    let (echo, gw) = echo_gateway(Settings {
        faults: Faults::on(rules),
        ..secured()
    })
    .await;
    let c = client();
    // An operator selects the first rule: a 503 with the gateway's JSON error, and the
    // service never called.
    let r = c
        .get(gw.url("/v1/echo/x"))
        .bearer_auth(operator_token())
        .header("x-ordermesh-fault-tag", "chaos")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-ordermesh-fault"], "abort=503;rule=echo-down");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "UNAVAILABLE", "{v}");
    assert_eq!(echo.calls(), 0);
    // A customer's selector counts for nothing: the rule without one applies, slower and
    // answered.
    let t = std::time::Instant::now();
    let r = c
        .get(gw.url("/v1/echo/x"))
        .bearer_auth(token("cust_1", 600))
        .header("x-ordermesh-fault-tag", "chaos")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        r.headers()["x-ordermesh-fault"],
        "delay=200ms;rule=echo-slow"
    );
    assert_eq!(echo.calls(), 1);
}
