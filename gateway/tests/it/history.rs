//! The order's event-sourced reads over REST: its history (`/v1/orders/{id}/events`), the
//! order as of a version, analytics (`/v1/orders:stats`), and their bad input as 400/404 with
//! the field named by its JSON name.

use serde_json::{json, Value};

use crate::helpers;
use crate::helpers::client;
use crate::helpers::mesh::Mesh;

async fn get(m: &Mesh, path: &str) -> (u16, Value) {
    let r = client().get(m.gateway.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn field(v: &Value) -> &str {
    v["details"][0]["fieldViolations"][0]["field"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn an_orders_history_and_stats_over_rest() {
    let m = helpers::mesh::mesh().await;
    m.create_item("TEA-1").await;
    let r = client()
        .post(m.gateway.url("/v1/orders"))
        .json(&json!({
            "customerId": "cust-rest",
            "lines": [{"sku": "TEA-1", "quantity": 1, "unitPrice": {"currencyCode": "EUR", "amountMinor": "450"}}],
            "shippingAddress": {"recipient": "Ada", "street": "1 Main St", "city": "Berlin", "postalCode": "10115", "countryCode": "DE"},
            "cardToken": "tok_visa",
            "idempotencyKey": "hist-1",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let placed: Value = r.json().await.unwrap();
    let id = placed["order"]["orderId"].as_str().unwrap().to_string();
    assert!(placed["position"].as_str().is_some(), "{placed}");

    let (s, v) = get(&m, &format!("/v1/orders/{id}/events")).await;
    assert_eq!(s, 200, "{v}");
    let first = &v["events"][0];
    assert_eq!(first["type"], "OrderPlaced");
    assert_eq!(first["version"], "1");
    assert_eq!(first["payload"]["lines"][0]["sku"], "TEA-1");
    assert_eq!(v["events"][1]["type"], "SagaStarted");

    let (s, v) = get(&m, &format!("/v1/orders/{id}?asOfVersion=1")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["order"]["status"], "ORDER_STATUS_PENDING");
    let (s, v) = get(&m, &format!("/v1/orders/{id}?asOfVersion=9999")).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(field(&v), "asOfVersion");
    let (s, v) = get(
        &m,
        &format!("/v1/orders/{id}?asOfTime=2001-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = get(&m, "/v1/orders/ord_00000000000000000000000000/events").await;
    assert!(s == 404 || s == 400, "{s} {v}");

    // Once the saga has confirmed the order, the stats count it and time its saga.
    let confirmed = ordermesh::testing::eventually(std::time::Duration::from_secs(20), || {
        let path = format!("/v1/orders/{id}");
        let m = &m;
        async move { get(m, &path).await.1["order"]["status"] == "ORDER_STATUS_CONFIRMED" }
    })
    .await;
    assert!(confirmed);
    let (s, v) = get(&m, "/v1/orders:stats?top=5").await;
    assert_eq!(s, 200, "{v}");
    assert!(v["days"].as_array().is_some_and(|d| !d.is_empty()), "{v}");
    assert_eq!(v["topSkus"][0]["sku"], "TEA-1", "{v}");
    let sagas: i64 = v["sagaDurations"]["count"]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap();
    assert!(sagas >= 1, "{v}");
    assert!(
        v["sagaDurations"]["p50"]
            .as_str()
            .is_some_and(|d| d.ends_with('s')),
        "{v}"
    );
    let (s, v) = get(
        &m,
        "/v1/orders:stats?from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(field(&v), "to");
    let (s, v) = get(&m, "/v1/orders?minPosition=99999999").await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(field(&v), "minPosition");
}
