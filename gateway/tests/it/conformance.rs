//! REST edge cases where the gateway must answer as the Go grpc-gateway does (found by a
//! differential run): field names in service errors, query parameters on streams, early
//! errors on a kept-alive connection, duplicate keys, integer strings, `Host`, percent-encoded
//! paths, compressed bodies. Each answer is a 4xx with the gateway's JSON error body.

use crate::helpers;

use std::time::Duration;

use crate::helpers::mesh::Mesh;
use crate::helpers::{client, echo_gateway};
use ordermesh::proto::order::v1 as order_pb;
use ordermesh_gateway::Settings;
use serde_json::{json, Value};
use tonic_types::StatusExt;

fn address() -> Value {
    json!({"recipient": "Ada Lovelace", "street": "1 Main St", "city": "Berlin", "postalCode": "10115", "countryCode": "DE"})
}

/// The field the first BadRequest violation names, and the message.
fn violation(v: &Value) -> (&str, &str) {
    assert_eq!(
        v["details"][0]["@type"], "type.googleapis.com/google.rpc.BadRequest",
        "{v}"
    );
    (
        v["details"][0]["fieldViolations"][0]["field"]
            .as_str()
            .unwrap(),
        v["message"].as_str().unwrap(),
    )
}

async fn post(m: &Mesh, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(m.gateway.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn service_errors_name_fields_by_json_name_over_rest_and_proto_name_over_grpc() {
    let m = helpers::mesh::mesh().await;
    // The order service finds customer_id empty: REST callers read the JSON name.
    let (s, v) = post(&m, "/v1/orders", json!({})).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["status"], "INVALID_ARGUMENT");
    assert_eq!(
        violation(&v),
        ("customerId", "customerId: must not be empty")
    );
    // The gateway's own check of a wrong type says the same name.
    let (s, v) = post(&m, "/v1/orders", json!({"customerId": 5})).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(violation(&v).0, "customerId");
    // Nested paths are renamed segment by segment.
    let mut address = address();
    address["postalCode"] = json!(" ");
    let (s, v) = post(
        &m,
        "/v1/orders",
        json!({
            "customerId": "cust-1",
            "lines": [{"sku": "TEA-1", "quantity": 1, "unitPrice": {"currencyCode": "EUR", "amountMinor": "450"}}],
            "shippingAddress": address,
            "cardToken": "tok_visa",
            "idempotencyKey": "k1",
        }),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (field, message) = violation(&v);
    assert_eq!(field, "shippingAddress.postalCode");
    assert!(
        message.starts_with("shippingAddress.postalCode: "),
        "{message}"
    );
    // gRPC callers through the same gateway keep the proto names.
    let mut grpc = order_pb::order_service_client::OrderServiceClient::connect(m.gateway.url(""))
        .await
        .unwrap();
    let err = grpc
        .place_order(order_pb::PlaceOrderRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "customer_id: must not be empty");
    let br = err.get_details_bad_request().expect("a BadRequest detail");
    assert_eq!(br.field_violations[0].field, "customer_id");
}

async fn on_hand(m: &Mesh, sku: &str) -> Value {
    let r = client()
        .get(m.gateway.url(&format!("/v1/inventory/items/{sku}")))
        .send()
        .await
        .unwrap();
    r.json::<Value>().await.unwrap()["item"]["onHand"].clone()
}

#[tokio::test]
async fn query_parameters_on_client_and_bidi_streams_are_refused_not_ignored() {
    let m = helpers::mesh::mesh().await;
    m.create_item("TEA-1").await;
    let delta = json!([{"sku": "TEA-1", "delta": "5", "reason": "count"}]);
    let (s, v) = post(&m, "/v1/inventory/stock:import?dry_run=true", delta.clone()).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["status"], "INVALID_ARGUMENT");
    assert_eq!(violation(&v).0, "dry_run");
    assert_eq!(
        on_hand(&m, "TEA-1").await,
        "20",
        "the import was not applied"
    );
    let (s, v) = post(
        &m,
        "/v1/inventory/stock:sync?dryRun=1",
        json!([{"sku": "TEA-1", "counted": "3"}]),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(violation(&v).0, "dryRun");
    assert_eq!(on_hand(&m, "TEA-1").await, "20", "the sync was not applied");
    // Without the parameter the same import applies.
    let (s, v) = post(&m, "/v1/inventory/stock:import", delta).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(on_hand(&m, "TEA-1").await, "25");
}

/// One HTTP/1.1 answer read off a raw connection: status, lower-case headers, body (framed by
/// Content-Length, as every gateway error is).
async fn read_answer(conn: &mut tokio::net::TcpStream) -> (u16, Vec<(String, String)>, Value) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.expect("an answer");
        assert!(n > 0, "connection closed before an answer: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    let json = serde_json::from_slice(&body[..len]).unwrap_or(Value::Null);
    (status, headers, json)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Whether the peer has closed the connection (end of stream or reset) within two seconds.
async fn closed_by_peer(conn: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut rest = [0u8; 1024];
    match tokio::time::timeout(Duration::from_secs(2), conn.read(&mut rest)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test]
async fn an_early_413_closes_the_connection_and_says_so() {
    use tokio::io::AsyncWriteExt;
    let (echo, gw) = echo_gateway(Settings {
        max_body: 1024,
        ..Settings::default()
    })
    .await;
    // Declared larger than the limit: refused before the body is read.
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(
        b"POST /v1/echo HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
          Content-Length: 100000\r\n\r\n{\"name\": \"",
    )
    .await
    .unwrap();
    conn.write_all(&[b'x'; 2048]).await.unwrap();
    let (status, headers, v) = read_answer(&mut conn).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["status"], "INVALID_ARGUMENT");
    assert!(v["message"].as_str().unwrap().contains("1024 bytes"), "{v}");
    assert_eq!(header(&headers, "connection"), Some("close"), "{headers:?}");
    // The gateway closes its side: a second request on this connection is not left hanging
    // or answered out of the rest of the first body.
    let _ = conn
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await;
    assert!(
        closed_by_peer(&mut conn).await,
        "the connection stayed open"
    );
    assert_eq!(echo.calls(), 0);
    // A body that is read to its end keeps the connection for the next request.
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let body = br#"{"name": "kept"}"#;
    for _ in 0..2 {
        conn.write_all(
            format!(
                "POST /v1/echo HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        conn.write_all(body).await.unwrap();
        let (status, headers, v) = read_answer(&mut conn).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["name"], "kept");
        assert_ne!(header(&headers, "connection"), Some("close"));
    }
}

async fn post_echo(gw: &helpers::Running, path: &str, body: &str) -> (u16, Value) {
    let r = client()
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_field_given_twice_is_refused_naming_it() {
    let (echo, gw) = echo_gateway(Settings::default()).await;
    for (body, field) in [
        // One name twice.
        (r#"{"name": "a", "name": "b"}"#, "name"),
        (r#"{"inner": {"id": "a", "id": "b"}}"#, "inner.id"),
        // The JSON name and the proto name of one field.
        (
            r#"{"metadataSeen": ["a"], "metadata_seen": ["b"]}"#,
            "metadataSeen",
        ),
        (r#"{"any_value": 1, "anyValue": 2}"#, "anyValue"),
        // Twice under its proto name: still named by its JSON name.
        (
            r#"{"metadata_seen": [], "metadata_seen": []}"#,
            "metadataSeen",
        ),
    ] {
        let (s, v) = post_echo(&gw, "/v1/echo", body).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["status"], "INVALID_ARGUMENT");
        let (f, message) = violation(&v);
        assert_eq!(f, field, "{body}");
        assert!(message.contains("twice"), "{message}");
    }
    // In a streamed body, the message's position leads the path.
    let (s, v) = post_echo(
        &gw,
        "/v1/echo:sum",
        r#"[{"value": 1}, {"value": 1, "value": 2}]"#,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(violation(&v).0, "[1].value");
    let (s, v) = post_echo(
        &gw,
        "/v1/echo:sum",
        "{\"value\": 1}\n{\"value\": 2, \"value\": 3}\n",
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(violation(&v).0, "[1].value");
    assert_eq!(echo.calls(), 0);
}

#[tokio::test]
async fn integer_strings_are_json_numbers() {
    let (echo, gw) = echo_gateway(Settings::default()).await;
    // Quoted exponents and fractions with an integral value are read as that value.
    let (s, v) = post_echo(
        &gw,
        "/v1/echo",
        r#"{"count": "1e0", "ucount": "2.5E1", "inner": {"big": "-12e2"}, "numbers": ["1e1", "7"], "maybe": "3.0"}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["count"], "1");
    assert_eq!(v["ucount"], "25");
    assert_eq!(v["inner"]["big"], "-1200");
    assert_eq!(v["numbers"], json!([10, 7]));
    assert_eq!(v["maybe"], 3);
    // A '+' sign, leading zeros and fractions are not integers.
    for (body, field) in [
        (r#"{"count": "+12"}"#, "count"),
        (r#"{"count": "012"}"#, "count"),
        (r#"{"inner": {"big": "1.5"}}"#, "inner.big"),
        (r#"{"numbers": [1, "08"]}"#, "numbers[1]"),
        (r#"{"ucount": "1e400"}"#, "ucount"),
    ] {
        let (s, v) = post_echo(&gw, "/v1/echo", body).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["status"], "INVALID_ARGUMENT");
        assert_eq!(violation(&v).0, field, "{body}");
    }
    let (s, v) = post_echo(
        &gw,
        "/v1/echo:sum",
        r#"[{"value": "1e2"}, {"value": "+1"}]"#,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(violation(&v).0, "[1].value");
    assert_eq!(echo.calls(), 1);
}

/// Sends `request` on a fresh connection and reads the answer.
async fn raw(gw: &helpers::Running, request: &str) -> (u16, Vec<(String, String)>, Value) {
    use tokio::io::AsyncWriteExt;
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    read_answer(&mut conn).await
}

#[tokio::test]
async fn an_http11_request_without_one_host_is_a_400() {
    let (echo, gw) = echo_gateway(Settings::default()).await;
    let (s, _, v) = raw(&gw, "GET /v1/echo/x HTTP/1.1\r\n\r\n").await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["status"], "INVALID_ARGUMENT");
    assert_eq!(violation(&v).0, "host");
    let (s, _, v) = raw(&gw, "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(violation(&v).0, "host");
    assert_eq!(echo.calls(), 0);
    // With one Host it is served; HTTP/1.0 has no Host rule.
    let (s, _, v) = raw(&gw, "GET /v1/echo/x HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["inner"]["id"], "x");
    let (s, _, v) = raw(&gw, "GET /v1/echo/y HTTP/1.0\r\n\r\n").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["inner"]["id"], "y");
}

#[tokio::test]
async fn literal_segments_match_percent_encoded_and_bad_escapes_are_a_400() {
    let (_echo, gw) = echo_gateway(Settings::default()).await;
    let get = |path: &str| {
        let url = gw.url(path);
        async move {
            let r = client().get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (s, body) = get("/v1/%65cho/%7Ex").await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["inner"]["id"], "~x");
    // The verb too.
    let (s, body) = get("/v1/%65%63ho:c%6Funt?to=2").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body.lines().count(), 2, "{body}");
    // Reserved characters stay escaped: %2F is data, not a separator.
    let (s, body) = get("/v1/files/a%2Fb").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["path"], "a/b");
    let (s, _) = get("/v1%2Fecho/x").await;
    assert_eq!(s, 404);
    // A malformed escape is a bad request, wherever it is.
    for path in [
        "/v1/%zzcho/x",
        "/v1/echo/x%zz",
        "/v1/echo/%4",
        "/v1/nothing/%ff",
    ] {
        let (s, body) = get(path).await;
        assert_eq!(s, 400, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "INVALID_ARGUMENT");
        assert_eq!(violation(&v).0, "path", "{path}");
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn gzip_bodies_are_decoded_within_the_limit_and_other_encodings_are_a_415() {
    let (echo, gw) = echo_gateway(Settings {
        max_body: 64 * 1024,
        ..Settings::default()
    })
    .await;
    let send = |path: &str, encoding: &str, body: Vec<u8>| {
        let req = client()
            .post(gw.url(path))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let accept = r.headers().get("accept-encoding").cloned();
            (status, accept, r.json::<Value>().await.unwrap())
        }
    };
    let (s, _, v) = send("/v1/echo", "gzip", gzip(br#"{"name": "zipped"}"#)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "zipped");
    let (s, _, v) = send(
        "/v1/echo:sum",
        "gzip",
        gzip(br#"[{"value": 2}, {"value": 3}]"#),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total"], "5");
    assert_eq!(echo.calls(), 2);
    // Small on the wire, a megabyte once inflated: refused by the limit, not held in memory.
    let mut big = br#"{"name": ""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 1 << 20));
    big.extend_from_slice(br#""}"#);
    let bomb = gzip(&big);
    assert!(bomb.len() < 8 * 1024, "{}", bomb.len());
    let (s, _, v) = send("/v1/echo", "gzip", bomb).await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["status"], "INVALID_ARGUMENT");
    assert!(
        v["message"].as_str().unwrap().contains("once decompressed"),
        "{v}"
    );
    // Not gzip after all: a 400 about the body, not malformed JSON.
    let (s, _, v) = send("/v1/echo", "gzip", br#"{"name": "plain"}"#.to_vec()).await;
    assert_eq!(s, 400, "{v}");
    let (field, message) = violation(&v);
    assert_eq!(field, "body");
    assert!(message.contains("gzip"), "{message}");
    // Encodings the gateway does not decode.
    for encoding in ["br", "deflate", "gzip, br"] {
        let (s, accept, v) = send("/v1/echo", encoding, br#"{"name": "x"}"#.to_vec()).await;
        assert_eq!(s, 415, "{encoding}: {v}");
        assert_eq!(v["status"], "INVALID_ARGUMENT");
        assert!(
            v["message"].as_str().unwrap().contains("content-encoding"),
            "{v}"
        );
        assert_eq!(accept.unwrap(), "gzip");
    }
    assert_eq!(echo.calls(), 2);
}
