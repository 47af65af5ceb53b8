//! Faults on demand through the whole mesh: an operator's REST call asks for a fault aimed at
//! payment; the gateway passes it on, the order service carries it into the saga it starts,
//! and payment applies it, so that one order is rejected while the others go through. The same
//! headers from a customer are dropped at the edge.

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ordermesh::transport::faults::FaultSettings;
use ordermesh_gateway::auth::Authenticator;
use ordermesh_gateway::Settings;
use serde_json::{json, Value};

use crate::helpers::{self, mesh::Mesh};

const SECRET: &[u8] = b"an-hs256-secret-of-32-bytes-or-more!";

fn bearer(sub: &str, scope: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now + 600, "scope": scope}),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    format!("Bearer {t}")
}

/// The order's status once it is final.
async fn final_status(m: &Mesh, auth: &str, id: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = helpers::client()
            .get(m.gateway.url(&format!("/v1/orders/{id}")))
            .header("authorization", auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = v["order"]["status"].as_str().unwrap_or("").to_string();
        if status.ends_with("CONFIRMED") || status.ends_with("REJECTED") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "order {id} is still {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_fault_aimed_at_payment_rejects_that_order_alone() {
    let settings = Settings {
        auth: Some(Authenticator::new(Some(SECRET), None, None, None).unwrap()),
        faults: ordermesh::transport::faults::Faults::on(Default::default()),
        ..Settings::default()
    };
    let m = helpers::mesh::mesh_configured(settings, |c| {
        c.faults = FaultSettings {
            on: true,
            file: None,
        }
    })
    .await;
    let operator = bearer("ops", "ordermesh:operator");
    let customer = bearer("cust-faults", "");
    let r = helpers::client()
        .post(m.gateway.url("/v1/inventory/items"))
        .header("authorization", &operator)
        .json(&json!({"sku": "TEA-1", "name": "Green tea", "price": {"currencyCode": "EUR", "amountMinor": "450"}, "initialStock": "20"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A refusal the saga does not retry: payment answers FAILED_PRECONDITION to this order's
    // authorization, and the saga compensates.
    let aimed = [
        ("x-ordermesh-fault-abort", "FAILED_PRECONDITION"),
        ("x-ordermesh-fault-target", "payment"),
    ];
    let with = |auth: &str, faults: &[(&'static str, &'static str)]| {
        let mut h = vec![("authorization", auth.to_string())];
        h.extend(faults.iter().map(|(k, v)| (*k, v.to_string())));
        h
    };
    let place = |headers: Vec<(&'static str, String)>, key: &'static str| {
        let m = &m;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            m.place("TEA-1", key, &h).await
        }
    };
    let faulted = place(with(&operator, &aimed), "faults-1").await;
    let plain = place(with(&operator, &[]), "faults-2").await;
    let stripped = place(with(&customer, &aimed), "faults-3").await;
    assert_eq!(
        final_status(&m, &operator, &faulted).await,
        "ORDER_STATUS_REJECTED"
    );
    assert_eq!(
        final_status(&m, &operator, &plain).await,
        "ORDER_STATUS_CONFIRMED"
    );
    assert_eq!(
        final_status(&m, &customer, &stripped).await,
        "ORDER_STATUS_CONFIRMED",
        "a customer's fault headers never reach the mesh"
    );
}
