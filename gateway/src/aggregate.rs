//! `GET /v1/customers/{customer_id}/overview`: a customer's latest orders, each with its
//! shipments, composed from the order and shipping services.
//!
//! Contract: the orders are the spine. If the order service fails, the overview fails with its
//! status. Shipments are looked up for all orders at once, concurrently; an order whose lookup
//! fails or runs out of time keeps `"shipments": null`, the answer is still HTTP 200 with
//! `"partial": true`, and `missing` says which part is missing and why. Everything shares one
//! deadline (`GATEWAY_OVERVIEW_TIMEOUT`, default 2s).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use prost_reflect::{DeserializeOptions, DynamicMessage};
use serde_json::{json, Map, Value};
use tonic::metadata::MetadataMap;
use tonic::Code;

use crate::error::GatewayError;
use crate::openapi::schema_ref;
use crate::routes::{Route, Router};
use crate::transcode::{to_value, upstream_error};
use crate::upstream::Upstreams;

pub const PATH: &str = "/v1/customers/{customer_id}/overview";
const LIST_ORDERS: &str = "ordermesh.order.v1.OrderService.ListOrders";
const LIST_SHIPMENTS: &str = "ordermesh.shipping.v1.ShippingService.ListShipments";
const DEFAULT_ORDERS: i32 = 10;
const MAX_ORDERS: i32 = 50;

/// What the overview needs: the two routes it calls (absent when their service is not
/// configured), the channels to call them on and the deadline of the whole answer.
pub struct CustomerOverview {
    list_orders: Option<Arc<Route>>,
    list_shipments: Option<Arc<Route>>,
    upstreams: Upstreams,
    timeout: Duration,
}

impl CustomerOverview {
    pub fn new(router: &Router, upstreams: Upstreams, timeout: Duration) -> Self {
        Self {
            list_orders: router.by_method_name(LIST_ORDERS).cloned(),
            list_shipments: router.by_method_name(LIST_SHIPMENTS).cloned(),
            upstreams,
            timeout,
        }
    }

    /// The overview of `customer`; `query` may set `page_size`.
    pub async fn answer(
        &self,
        customer: &str,
        query: Option<&str>,
        md: MetadataMap,
    ) -> Result<Value, GatewayError> {
        if customer.trim().is_empty() {
            return Err(GatewayError::bad_request(
                "customer_id",
                "must not be empty",
            ));
        }
        let page_size = page_size(query)?;
        let deadline = Instant::now() + self.timeout;
        let orders_route = self.list_orders.as_deref().ok_or_else(|| {
            GatewayError::new(Code::Unavailable, "the order service is not configured")
        })?;
        let request = message(
            &orders_route.method.input(),
            json!({"customerId": customer, "pageSize": page_size}),
        )?;
        let (_, orders) = self
            .upstreams
            .unary_call(orders_route, request, md.clone(), Some(deadline))
            .await
            .map_err(|s| upstream_error(&orders_route.method.input(), &s))?;
        let orders = to_value(&orders, None)?;
        let list: Vec<Value> = orders["orders"].as_array().cloned().unwrap_or_default();
        let shipments_route = self.list_shipments.as_deref();
        let lookups = list.iter().map(|order| {
            let order_id = order["orderId"].as_str().unwrap_or_default().to_string();
            let md = md.clone();
            async move {
                let route = shipments_route.ok_or_else(|| {
                    tonic::Status::unavailable("the shipping service is not configured")
                })?;
                let request = message(&route.method.input(), json!({"orderId": order_id}))
                    .map_err(|e| tonic::Status::internal(e.message))?;
                let (_, resp) = self
                    .upstreams
                    .unary_call(route, request, md, Some(deadline))
                    .await?;
                to_value(&resp, None).map_err(|e| tonic::Status::internal(e.message))
            }
        });
        let results = futures::future::join_all(lookups).await;
        let mut missing = Vec::new();
        let mut composed = Vec::with_capacity(list.len());
        for (order, result) in list.into_iter().zip(results) {
            let shipments = match result {
                Ok(v) => v["shipments"].clone(),
                Err(status) => {
                    let e = GatewayError::from_status(&status).to_json();
                    missing.push(json!({
                        "part": "shipments",
                        "orderId": order["orderId"],
                        "code": e["code"],
                        "status": e["status"],
                        "message": e["message"],
                    }));
                    Value::Null
                }
            };
            composed.push(json!({"order": order, "shipments": shipments}));
        }
        Ok(json!({
            "customerId": customer,
            "orders": composed,
            "nextPageToken": orders["nextPageToken"],
            "partial": !missing.is_empty(),
            "missing": missing,
        }))
    }
}

/// `page_size` (or `pageSize`) from the query string, the only parameter.
fn page_size(query: Option<&str>) -> Result<i32, GatewayError> {
    let mut page_size = DEFAULT_ORDERS;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("page_size" | "pageSize", v)) => {
                page_size = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_ORDERS).contains(n))
                    .ok_or_else(|| {
                        GatewayError::bad_request(
                            "page_size",
                            format!("must be a number from 1 to {MAX_ORDERS}"),
                        )
                    })?;
            }
            _ => {
                let key = pair.split('=').next().unwrap_or(pair);
                return Err(GatewayError::bad_request(
                    key,
                    "unknown query parameter (only page_size)",
                ));
            }
        }
    }
    Ok(page_size)
}

fn message(
    desc: &prost_reflect::MessageDescriptor,
    v: Value,
) -> Result<DynamicMessage, GatewayError> {
    DynamicMessage::deserialize_with_options(desc.clone(), v, &DeserializeOptions::new())
        .map_err(|e| GatewayError::internal(format!("{}: {e}", desc.full_name())))
}

/// The overview in the OpenAPI document.
pub fn openapi_paths(secured: bool) -> Map<String, Value> {
    let mut op = json!({
        "operationId": "Gateway_CustomerOverview",
        "tags": ["Gateway"],
        "summary": "A customer's latest orders with their shipments",
        "description": "Composed by the gateway from OrderService.ListOrders and ShippingService.ListShipments. \
                        When shipments cannot be fetched the answer is still 200 with partial=true and the \
                        missing parts listed; when orders cannot be fetched it is the order service's error.",
        "parameters": [
            {"name": "customer_id", "in": "path", "required": true, "schema": {"type": "string"}},
            {"name": "page_size", "in": "query", "required": false,
             "schema": {"type": "integer", "format": "int32", "minimum": 1, "maximum": MAX_ORDERS}},
        ],
        "responses": {
            "200": {"description": "OK (possibly partial)", "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {
                    "customerId": {"type": "string"},
                    "orders": {"type": "array", "items": {"type": "object", "properties": {
                        "order": schema_ref("ordermesh.order.v1.Order"),
                        "shipments": {"type": "array", "nullable": true, "items": schema_ref("ordermesh.shipping.v1.Shipment")},
                    }}},
                    "nextPageToken": {"type": "string"},
                    "partial": {"type": "boolean"},
                    "missing": {"type": "array", "items": {"type": "object", "properties": {
                        "part": {"type": "string"}, "orderId": {"type": "string"},
                        "code": {"type": "integer"}, "status": {"type": "string"}, "message": {"type": "string"},
                    }}},
                },
                "required": ["customerId", "orders", "partial", "missing"],
            }}}},
            "default": {"$ref": "#/components/responses/Error"},
        },
    });
    if secured {
        op["security"] = json!([{"bearerAuth": []}]);
    }
    let mut m = Map::new();
    m.insert(
        "/v1/customers/{customer_id}/overview".into(),
        json!({"get": op}),
    );
    m
}
