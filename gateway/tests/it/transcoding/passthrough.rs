//! What is not transcoded: native gRPC and gRPC-Web pass through; OpenAPI describes the rest.

use super::*;

#[tokio::test]
async fn native_grpc_passes_through_the_gateway() {
    let (echo, gw) = echo_gateway(Settings::default()).await;
    let mut c = helpers::pb::echo_service_client::EchoServiceClient::connect(gw.url(""))
        .await
        .unwrap();
    let r = c
        .echo(helpers::pb::EchoMessage {
            name: "grpc".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.metadata().get("x-echo").unwrap(), "yes");
    assert_eq!(r.into_inner().name, "grpc");
    let mut s = c
        .count(helpers::pb::CountRequest {
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
        .fail(helpers::pb::FailRequest {
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
    let msg = helpers::pb::EchoMessage {
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
    let back = helpers::pb::EchoMessage::decode(&bytes[5..5 + len]).unwrap();
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
