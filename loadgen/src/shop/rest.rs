//! The shop over REST/JSON through the gateway: the routes of the contracts' google.api.http
//! rules, proto3 JSON (lowerCamel names, int64 as strings); the order watch is NDJSON.

use reqwest::{Client, Method, Response, Url};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{Address, Draft, Failure, OrderEnd, Placed};
use crate::scenario::Item;

#[derive(Clone)]
pub struct RestShop {
    client: Client,
    base: Url,
}

fn transport(e: reqwest::Error) -> Failure {
    let why = if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    Failure::Transport(format!("{why}: {e}"))
}

fn address(a: &Address) -> Value {
    json!({
        "recipient": a.recipient,
        "street": a.street,
        "city": a.city,
        "postalCode": a.postal_code,
        "countryCode": a.country_code,
    })
}

fn eur(amount_minor: i64) -> Value {
    json!({"currencyCode": "EUR", "amountMinor": amount_minor.to_string()})
}

impl RestShop {
    pub fn new(base: Url) -> anyhow::Result<Self> {
        let client = Client::builder()
            .pool_max_idle_per_host(4096)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { client, base })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    /// Sends a request and answers the body of a 2xx; any other status is its failure (the
    /// body is read either way, so the connection goes back to the pool).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Vec<u8>, Failure> {
        let mut req = self.client.request(method, self.url(path));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(transport)?;
        let code = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if code.is_success() {
            Ok(bytes.to_vec())
        } else {
            Err(Failure::Http(code.as_u16()))
        }
    }

    pub async fn list_items(&self, page_size: i32) -> Result<(), Failure> {
        self.call(
            Method::GET,
            &format!("/v1/inventory/items?pageSize={page_size}"),
            None,
        )
        .await
        .map(drop)
    }

    pub async fn get_item(&self, sku: &str) -> Result<(), Failure> {
        self.call(Method::GET, &format!("/v1/inventory/items/{sku}"), None)
            .await
            .map(drop)
    }

    pub async fn quote(&self, a: &Address, items: &[(String, i32)]) -> Result<(), Failure> {
        let items: Vec<Value> = items
            .iter()
            .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
            .collect();
        let body = json!({"address": address(a), "items": items, "currencyCode": "EUR"});
        self.call(Method::POST, "/v1/shipping/quotes", Some(body))
            .await
            .map(drop)
    }

    pub async fn place_order(&self, d: &Draft) -> Result<Placed, Failure> {
        let lines: Vec<Value> = d
            .lines
            .iter()
            .map(|(sku, q, price)| json!({"sku": sku, "quantity": q, "unitPrice": eur(*price)}))
            .collect();
        let body = json!({
            "customerId": d.customer_id,
            "lines": lines,
            "shippingAddress": address(&d.address),
            "cardToken": d.card_token,
            "idempotencyKey": d.idempotency_key,
        });
        let bytes = self.call(Method::POST, "/v1/orders", Some(body)).await?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Failure::Protocol(format!("PlaceOrder: {e}")))?;
        let order = &v["order"];
        let order_id = order["orderId"]
            .as_str()
            .ok_or_else(|| Failure::Protocol("PlaceOrder answered no orderId".into()))?;
        Ok(Placed {
            order_id: order_id.to_string(),
            end: order["status"]
                .as_str()
                .and_then(OrderEnd::from_status_name),
        })
    }

    pub async fn cancel_order(&self, order_id: &str) -> Result<(), Failure> {
        let body = json!({"reason": "loadgen: changed my mind"});
        self.call(
            Method::POST,
            &format!("/v1/orders/{order_id}:cancel"),
            Some(body),
        )
        .await
        .map(drop)
    }

    pub async fn watch_order(
        &self,
        order_id: &str,
        deadline: Instant,
    ) -> Result<OrderEnd, Failure> {
        let watch = async {
            let resp = self
                .client
                .get(self.url(&format!("/v1/orders/{order_id}:watch")))
                .send()
                .await
                .map_err(transport)?;
            if !resp.status().is_success() {
                return Err(Failure::Http(resp.status().as_u16()));
            }
            follow_ndjson(resp).await
        };
        tokio::time::timeout_at(deadline, watch)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    pub async fn create_item(&self, item: &Item, stock: i64) -> Result<(), Failure> {
        let body = json!({
            "sku": item.sku,
            "name": item.name,
            "price": eur(item.price_minor),
            "initialStock": stock.to_string(),
        });
        match self
            .call(Method::POST, "/v1/inventory/items", Some(body))
            .await
        {
            // ALREADY_EXISTS: an earlier run created it.
            Ok(_) | Err(Failure::Http(409)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Reads `{"result": {"order": ...}}` lines until one carries a final status; an
/// `{"error": status}` line is that status's failure.
async fn follow_ndjson(mut resp: Response) -> Result<OrderEnd, Failure> {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if let Some(end) = watch_line(&line)? {
                return Ok(end);
            }
        }
    }
    match watch_line(&buf)? {
        Some(end) => Ok(end),
        None => Err(Failure::Protocol(
            "the watch ended before a final status".into(),
        )),
    }
}

/// One NDJSON line of the order watch: the final status it shows, if any.
fn watch_line(line: &[u8]) -> Result<Option<OrderEnd>, Failure> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value =
        serde_json::from_slice(line).map_err(|e| Failure::Protocol(format!("watch line: {e}")))?;
    if let Some(err) = v.get("error") {
        let code = err["code"].as_i64().unwrap_or(2) as i32;
        return Err(Failure::Grpc(tonic::Code::from_i32(code)));
    }
    Ok(v["result"]["order"]["status"]
        .as_str()
        .and_then(OrderEnd::from_status_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines() {
        let pending = br#"{"result":{"order":{"orderId":"o1","status":"ORDER_STATUS_PENDING"}}}"#;
        assert_eq!(watch_line(pending), Ok(None));
        let done = br#"{"result":{"order":{"orderId":"o1","status":"ORDER_STATUS_CONFIRMED"}}}"#;
        assert_eq!(watch_line(done), Ok(Some(OrderEnd::Confirmed)));
        let err = br#"{"error":{"code":14,"status":"UNAVAILABLE","message":"x"}}"#;
        assert_eq!(
            watch_line(err),
            Err(Failure::Grpc(tonic::Code::Unavailable))
        );
        assert_eq!(watch_line(b"  \n"), Ok(None));
        assert!(matches!(watch_line(b"{nope"), Err(Failure::Protocol(_))));
    }
}
