//! Requests the shipping event tests share.

use ordermesh::proto::common::v1::{Address, SkuQuantity};
use ordermesh::proto::shipping::v1 as pb;

/// A shipment of one tea to Berlin for `order`, keyed by the order.
pub fn create_req(order: &str) -> pb::CreateShipmentRequest {
    pb::CreateShipmentRequest {
        order_id: order.into(),
        address: Some(Address {
            recipient: "Ada".into(),
            street: "1 Main St".into(),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country_code: "DE".into(),
        }),
        items: vec![SkuQuantity {
            sku: "TEA-1".into(),
            quantity: 1,
        }],
        currency_code: "EUR".into(),
        idempotency_key: format!("create-{order}"),
    }
}
