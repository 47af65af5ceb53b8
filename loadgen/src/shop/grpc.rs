//! The shop over gRPC: the generated clients on the mesh client stack, mTLS as a mesh
//! identity, each service at its own address.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use ordermesh::proto::common::v1::{Address as PbAddress, Money, SkuQuantity};
use ordermesh::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh::proto::inventory::v1::{CreateItemRequest, GetItemRequest, ListItemsRequest};
use ordermesh::proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh::proto::order::v1::{
    CancelOrderRequest, PlaceOrderLine, PlaceOrderRequest, WatchOrderRequest,
};
use ordermesh::proto::shipping::v1::shipping_service_client::ShippingServiceClient;
use ordermesh::proto::shipping::v1::GetQuoteRequest;
use ordermesh::transport::client::{MeshChannel, Upstream};
use ordermesh::transport::tls::{CertPaths, MeshIdentity};
use reqwest::Url;
use tokio::time::Instant;

use super::{Address, Draft, Failure, OrderEnd, Placed};
use crate::scenario::Item;

#[derive(Clone)]
pub struct GrpcShop {
    order: OrderServiceClient<MeshChannel>,
    inventory: InventoryServiceClient<MeshChannel>,
    shipping: ShippingServiceClient<MeshChannel>,
}

fn status(s: tonic::Status) -> Failure {
    Failure::Grpc(s.code())
}

fn pb_address(a: &Address) -> PbAddress {
    PbAddress {
        recipient: a.recipient.into(),
        street: a.street.into(),
        city: a.city.into(),
        postal_code: a.postal_code.into(),
        country_code: a.country_code.into(),
    }
}

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        amount_minor,
    })
}

impl GrpcShop {
    /// `[order, inventory, shipping]` addresses; calls are made as `identity` from `certs`.
    /// The order upstream's default deadline covers the longest watch.
    pub fn new(
        [order, inventory, shipping]: [&Url; 3],
        certs: &Path,
        identity: &str,
        longest_call: Duration,
    ) -> anyhow::Result<Self> {
        let id = MeshIdentity::load(CertPaths::in_dir(certs, identity))
            .with_context(|| format!("--certs {}: identity {identity}", certs.display()))?;
        let stack = |url: &Url, service: &str, timeout: Duration| {
            let uri = format!(
                "http://{}:{}",
                url.host_str().unwrap_or_default(),
                url.port_or_known_default().unwrap_or(80)
            );
            Upstream::new(uri)
                .mesh(id.clone(), service)
                .default_timeout(timeout)
                .stack()
                .map_err(|e| anyhow::anyhow!("{service} client: {e}"))
        };
        let unary = Duration::from_secs(10);
        Ok(Self {
            order: OrderServiceClient::new(stack(order, "order", longest_call.max(unary))?),
            inventory: InventoryServiceClient::new(stack(inventory, "inventory", unary)?),
            shipping: ShippingServiceClient::new(stack(shipping, "shipping", unary)?),
        })
    }

    pub async fn list_items(&self, page_size: i32) -> Result<(), Failure> {
        let req = ListItemsRequest {
            page_size,
            ..Default::default()
        };
        self.inventory
            .clone()
            .list_items(req)
            .await
            .map_err(status)?;
        Ok(())
    }

    pub async fn get_item(&self, sku: &str) -> Result<(), Failure> {
        let req = GetItemRequest { sku: sku.into() };
        self.inventory.clone().get_item(req).await.map_err(status)?;
        Ok(())
    }

    pub async fn quote(&self, address: &Address, items: &[(String, i32)]) -> Result<(), Failure> {
        let req = GetQuoteRequest {
            address: Some(pb_address(address)),
            items: items
                .iter()
                .map(|(sku, quantity)| SkuQuantity {
                    sku: sku.clone(),
                    quantity: *quantity,
                })
                .collect(),
            currency_code: "EUR".into(),
        };
        self.shipping.clone().get_quote(req).await.map_err(status)?;
        Ok(())
    }

    pub async fn place_order(&self, d: &Draft) -> Result<Placed, Failure> {
        let req = PlaceOrderRequest {
            customer_id: d.customer_id.clone(),
            lines: d
                .lines
                .iter()
                .map(|(sku, quantity, price)| PlaceOrderLine {
                    sku: sku.clone(),
                    quantity: *quantity,
                    unit_price: eur(*price),
                })
                .collect(),
            shipping_address: Some(pb_address(&d.address)),
            card_token: d.card_token.into(),
            idempotency_key: d.idempotency_key.clone(),
        };
        let order = self
            .order
            .clone()
            .place_order(req)
            .await
            .map_err(status)?
            .into_inner()
            .order
            .ok_or_else(|| Failure::Protocol("PlaceOrder answered no order".into()))?;
        Ok(Placed {
            end: OrderEnd::from_status(order.status),
            order_id: order.order_id,
        })
    }

    pub async fn cancel_order(&self, order_id: &str) -> Result<(), Failure> {
        let req = CancelOrderRequest {
            order_id: order_id.into(),
            reason: "loadgen: changed my mind".into(),
        };
        self.order.clone().cancel_order(req).await.map_err(status)?;
        Ok(())
    }

    pub async fn watch_order(
        &self,
        order_id: &str,
        deadline: Instant,
    ) -> Result<OrderEnd, Failure> {
        let req = WatchOrderRequest {
            order_id: order_id.into(),
        };
        let watch = async {
            let mut stream = self
                .order
                .clone()
                .watch_order(req)
                .await
                .map_err(status)?
                .into_inner();
            while let Some(m) = stream.message().await.map_err(status)? {
                if let Some(end) = m.order.and_then(|o| OrderEnd::from_status(o.status)) {
                    return Ok(end);
                }
            }
            Err(Failure::Protocol(
                "the watch ended before a final status".into(),
            ))
        };
        tokio::time::timeout_at(deadline, watch)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    pub async fn create_item(&self, item: &Item, stock: i64) -> Result<(), Failure> {
        let req = CreateItemRequest {
            sku: item.sku.clone(),
            name: item.name.clone(),
            price: eur(item.price_minor),
            initial_stock: stock,
            low_stock_threshold: 0,
        };
        match self.inventory.clone().create_item(req).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(s) => Err(status(s)),
        }
    }
}
