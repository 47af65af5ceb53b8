//! REST edge cases where the gateway must answer as the Go grpc-gateway does (found by a
//! differential run): field names in service errors, query parameters on streams, early
//! errors on a kept-alive connection, duplicate keys, integer strings, `Host`, percent-encoded
//! paths, compressed bodies. Each answer is a 4xx with the gateway's JSON error body.

use crate::helpers;

use crate::helpers::client;
use crate::helpers::mesh::Mesh;
use ordermesh::proto::order::v1 as order_pb;
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
