//! The gateway in front of the real services over mTLS (its own mesh identity, the shipped
//! authorization policy): an order placed, read, listed and watched over REST, errors from the
//! services, and the customer overview, whole and partial.

use crate::helpers;

use std::time::Duration;

use crate::helpers::mesh::Mesh;
use futures::StreamExt;
use ordermesh::testing::eventually;
use ordermesh_gateway::Settings;
use serde_json::{json, Value};

async fn mesh() -> Mesh {
    helpers::mesh::mesh_with(Settings {
        overview_timeout: Duration::from_millis(1500),
        ..Settings::default()
    })
    .await
}

fn address() -> Value {
    json!({"recipient": "Ada Lovelace", "street": "1 Main St", "city": "Berlin", "postalCode": "10115", "countryCode": "DE"})
}

async fn place(m: &Mesh, customer: &str, key: &str) -> Value {
    let r = helpers::client()
        .post(m.gateway.url("/v1/orders"))
        .json(&json!({
            "customerId": customer,
            "lines": [{"sku": "TEA-1", "quantity": 2, "unitPrice": {"currencyCode": "EUR", "amountMinor": "450"}}],
            "shippingAddress": address(),
            "cardToken": "tok_visa",
            "idempotencyKey": key,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["order"].clone()
}

async fn get(m: &Mesh, path: &str) -> (u16, Value) {
    let r = helpers::client()
        .get(m.gateway.url(path))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn create_item(m: &Mesh) {
    let r = helpers::client()
        .post(m.gateway.url("/v1/inventory/items"))
        .json(&json!({"sku": "TEA-1", "name": "Green tea", "price": {"currencyCode": "EUR", "amountMinor": "450"}, "initialStock": "20"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

#[tokio::test]
async fn an_order_placed_over_rest_is_confirmed_listed_and_watched() {
    let m = mesh().await;
    create_item(&m).await;
    let order = place(&m, "cust-rest", "rest/1").await;
    let id = order["orderId"].as_str().unwrap().to_string();
    assert_eq!(order["total"]["amountMinor"], "900");
    let confirmed = eventually(Duration::from_secs(20), || async {
        get(&m, &format!("/v1/orders/{id}")).await.1["order"]["status"] == "ORDER_STATUS_CONFIRMED"
    })
    .await;
    assert!(confirmed);
    let (_, v) = get(&m, &format!("/v1/orders/{id}")).await;
    let steps: Vec<&str> = v["order"]["sagaSteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps.first(), Some(&"reserve_stock"));
    assert!(
        v["order"]["sagaSteps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "SUCCEEDED"),
        "{v}"
    );
    // The same key again returns the first order.
    assert_eq!(
        place(&m, "cust-rest", "rest/1").await["orderId"],
        id.as_str()
    );
    // Filters from the query string, enums by name.
    let (s, v) = get(
        &m,
        "/v1/orders?customerId=cust-rest&statuses=ORDER_STATUS_CONFIRMED&pageSize=5",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["orders"].as_array().unwrap().len(), 1);
    let (_, v) = get(
        &m,
        "/v1/orders?customerId=cust-rest&statuses=ORDER_STATUS_REJECTED",
    )
    .await;
    assert_eq!(v["orders"], json!([]));
    // Stock moved: 20 - 2.
    let (_, item) = get(&m, "/v1/inventory/items/TEA-1").await;
    assert_eq!(item["item"]["onHand"], "18", "{item}");
    // WatchOrder as NDJSON: the current state first.
    let r = helpers::client()
        .get(m.gateway.url(&format!("/v1/orders/{id}:watch")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let line: Value = serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["result"]["order"]["orderId"], id.as_str());
    assert_eq!(line["result"]["order"]["status"], "ORDER_STATUS_CONFIRMED");
}

#[tokio::test]
async fn service_errors_and_policy_refusals_keep_their_meaning() {
    let m = mesh().await;
    let (s, v) = get(&m, "/v1/orders/ord_00000000000000000000000000").await;
    assert!(s == 404 || s == 400, "{s} {v}");
    assert_eq!(
        v["status"],
        if s == 404 {
            "NOT_FOUND"
        } else {
            "INVALID_ARGUMENT"
        }
    );
    let r = helpers::client()
        .post(m.gateway.url("/v1/orders"))
        .json(&json!({
            "customerId": "cust-bad",
            "lines": [{"sku": "TEA-1", "quantity": 0, "unitPrice": {"currencyCode": "EUR", "amountMinor": "450"}}],
            "shippingAddress": address(),
            "cardToken": "tok_visa",
            "idempotencyKey": "bad/1",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["details"][0]["fieldViolations"][0]["field"], "lines[0].quantity",
        "{v}"
    );
    // Capture is the saga's: the gateway identity is refused by the service's policy.
    let r = helpers::client()
        .post(m.gateway.url("/v1/payments/pay_x:capture"))
        .json(&json!({"idempotencyKey": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("sa/gateway"), "{v}");
}

#[tokio::test]
async fn the_overview_composes_orders_and_shipments_and_degrades_to_partial() {
    let mut m = mesh().await;
    create_item(&m).await;
    let a = place(&m, "cust-ov", "ov/1").await["orderId"]
        .as_str()
        .unwrap()
        .to_string();
    let b = place(&m, "cust-ov", "ov/2").await["orderId"]
        .as_str()
        .unwrap()
        .to_string();
    let both = eventually(Duration::from_secs(20), || async {
        let (_, v) = get(&m, "/v1/customers/cust-ov/overview").await;
        v["orders"].as_array().is_some_and(|o| {
            o.len() == 2
                && o.iter()
                    .all(|e| e["shipments"].as_array().is_some_and(|s| s.len() == 1))
        })
    })
    .await;
    assert!(
        both,
        "{}",
        get(&m, "/v1/customers/cust-ov/overview").await.1
    );
    let (s, v) = get(&m, "/v1/customers/cust-ov/overview").await;
    assert_eq!(s, 200);
    assert_eq!(v["partial"], false);
    assert_eq!(v["missing"], json!([]));
    let ids: Vec<&str> = v["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order"]["orderId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&a.as_str()) && ids.contains(&b.as_str()));
    for o in v["orders"].as_array().unwrap() {
        assert_eq!(o["shipments"][0]["orderId"], o["order"]["orderId"]);
    }
    // Shipping goes away: still 200, orders present, shipments marked missing.
    m.servers
        .get_mut("shipping")
        .unwrap()
        .shut_down()
        .await
        .unwrap();
    let (s, v) = get(&m, "/v1/customers/cust-ov/overview").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["partial"], true);
    assert_eq!(v["orders"].as_array().unwrap().len(), 2);
    assert!(v["orders"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["shipments"].is_null()));
    let missing = v["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 2);
    assert!(
        missing
            .iter()
            .all(|x| x["part"] == "shipments" && x["status"] == "UNAVAILABLE"),
        "{v}"
    );
    // Bad input is refused before any call.
    let (s, v) = get(&m, "/v1/customers/cust-ov/overview?page_size=500").await;
    assert_eq!(s, 400);
    assert_eq!(v["details"][0]["fieldViolations"][0]["field"], "page_size");
}
