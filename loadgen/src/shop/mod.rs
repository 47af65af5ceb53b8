//! The shop as a shopper sees it: the calls a session makes, over REST through the gateway or
//! over mTLS gRPC to the services, with one error shape for the report.

mod grpc;
mod rest;

use std::time::Duration;

use crate::args::Target;
use crate::scenario::Item;

/// The operations the report counts, in the order it lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    ListItems,
    GetItem,
    Quote,
    PlaceOrder,
    CancelOrder,
    WatchOrder,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::ListItems,
        Op::GetItem,
        Op::Quote,
        Op::PlaceOrder,
        Op::CancelOrder,
        Op::WatchOrder,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            Op::ListItems => "list_items",
            Op::GetItem => "get_item",
            Op::Quote => "quote",
            Op::PlaceOrder => "place_order",
            Op::CancelOrder => "cancel_order",
            Op::WatchOrder => "watch_order",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a call failed, as the report groups it: the gRPC code, the HTTP status, or no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Grpc(tonic::Code),
    Http(u16),
    /// No answer: connection refused or reset, a body cut short.
    Transport(String),
    /// The order did not reach a final status within --order-timeout.
    Timeout,
    /// The answer could not be read (unexpected JSON, a stream that ended early).
    Protocol(String),
}

impl Failure {
    /// The report's key: `grpc UNAVAILABLE`, `http 429`, `transport`, `timeout`, `protocol`.
    pub fn label(&self) -> String {
        match self {
            Failure::Grpc(c) => format!("grpc {}", code_name(*c)),
            Failure::Http(s) => format!("http {s}"),
            Failure::Transport(_) => "transport".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Protocol(_) => "protocol".into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(why) | Failure::Protocol(why) => {
                write!(f, "{}: {why}", self.label())
            }
            _ => f.write_str(&self.label()),
        }
    }
}

/// The canonical upper-case name of a gRPC code.
pub fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Where an order ended, as far as a shopper cares: CONFIRMED (or later: SHIPPED,
/// DELIVERED), REJECTED or CANCELLED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrderEnd {
    Confirmed,
    Rejected,
    Cancelled,
}

impl OrderEnd {
    pub const ALL: [OrderEnd; 3] = [OrderEnd::Confirmed, OrderEnd::Rejected, OrderEnd::Cancelled];

    pub fn name(self) -> &'static str {
        match self {
            OrderEnd::Confirmed => "confirmed",
            OrderEnd::Rejected => "rejected",
            OrderEnd::Cancelled => "cancelled",
        }
    }

    /// From the proto enum's name (`ORDER_STATUS_CONFIRMED`); `None` while still PENDING.
    pub fn from_status_name(s: &str) -> Option<Self> {
        match s.strip_prefix("ORDER_STATUS_").unwrap_or(s) {
            "CONFIRMED" | "SHIPPED" | "DELIVERED" => Some(OrderEnd::Confirmed),
            "REJECTED" => Some(OrderEnd::Rejected),
            "CANCELLED" => Some(OrderEnd::Cancelled),
            _ => None,
        }
    }

    /// From the proto enum's number.
    pub fn from_status(v: i32) -> Option<Self> {
        ordermesh::proto::order::v1::OrderStatus::try_from(v)
            .ok()
            .and_then(|s| Self::from_status_name(s.as_str_name()))
    }
}

/// An order as a shopper submits it.
#[derive(Clone, Debug)]
pub struct Draft {
    pub customer_id: String,
    /// SKU, quantity, unit price in EUR cents.
    pub lines: Vec<(String, i32, i64)>,
    pub card_token: &'static str,
    pub idempotency_key: String,
    pub address: Address,
}

/// A shipping address (a few fixed ones; quotes differ by country).
#[derive(Clone, Copy, Debug)]
pub struct Address {
    pub recipient: &'static str,
    pub street: &'static str,
    pub city: &'static str,
    pub postal_code: &'static str,
    pub country_code: &'static str,
}

pub const ADDRESSES: [Address; 3] = [
    Address {
        recipient: "Ada Lovelace",
        street: "1 Main St",
        city: "Berlin",
        postal_code: "10115",
        country_code: "DE",
    },
    Address {
        recipient: "Grace Hopper",
        street: "2 Side St",
        city: "Paris",
        postal_code: "75001",
        country_code: "FR",
    },
    Address {
        recipient: "Margaret Hamilton",
        street: "3 Launch Rd",
        city: "Boston",
        postal_code: "02110",
        country_code: "US",
    },
];

/// A placed order: its id, and its status when it was already final.
#[derive(Clone, Debug)]
pub struct Placed {
    pub order_id: String,
    pub end: Option<OrderEnd>,
}

/// A connected shop over one transport.
#[derive(Clone)]
pub enum Shop {
    Grpc(Box<grpc::GrpcShop>),
    Rest(rest::RestShop),
}

/// Dispatches one call to the transport's client.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Shop::Grpc($s) => $call,
            Shop::Rest($s) => $call,
        }
    };
}

impl Shop {
    /// Clients for `target`; gRPC streams (the order watch) may last `longest_call`.
    pub fn connect(target: &Target, longest_call: Duration) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Rest { base } => Shop::Rest(rest::RestShop::new(base.clone())?),
            Target::Grpc(g) => Shop::Grpc(Box::new(grpc::GrpcShop::new(
                [&g.order, &g.inventory, &g.shipping],
                &g.certs,
                &g.identity,
                longest_call,
            )?)),
        })
    }

    pub async fn list_items(&self, page_size: i32) -> Result<(), Failure> {
        each!(self, s => s.list_items(page_size).await)
    }

    pub async fn get_item(&self, sku: &str) -> Result<(), Failure> {
        each!(self, s => s.get_item(sku).await)
    }

    pub async fn quote(&self, address: &Address, items: &[(String, i32)]) -> Result<(), Failure> {
        each!(self, s => s.quote(address, items).await)
    }

    pub async fn place_order(&self, draft: &Draft) -> Result<Placed, Failure> {
        each!(self, s => s.place_order(draft).await)
    }

    pub async fn cancel_order(&self, order_id: &str) -> Result<(), Failure> {
        each!(self, s => s.cancel_order(order_id).await)
    }

    /// Follows the order until it is final, for at most `timeout`.
    pub async fn watch_order(
        &self,
        order_id: &str,
        timeout: Duration,
    ) -> Result<OrderEnd, Failure> {
        let deadline = tokio::time::Instant::now() + timeout;
        each!(self, s => s.watch_order(order_id, deadline).await)
    }

    /// Creates a catalog item; one that exists already is fine.
    pub async fn create_item(&self, item: &Item, stock: i64) -> Result<(), Failure> {
        each!(self, s => s.create_item(item, stock).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_group_by_code_and_status() {
        assert_eq!(
            Failure::Grpc(tonic::Code::Unavailable).label(),
            "grpc UNAVAILABLE"
        );
        assert_eq!(Failure::Http(429).label(), "http 429");
        assert_eq!(
            Failure::Transport("refused".into()).to_string(),
            "transport: refused"
        );
    }

    #[test]
    fn final_statuses() {
        use ordermesh::proto::order::v1::OrderStatus as S;
        assert_eq!(OrderEnd::from_status(S::Pending as i32), None);
        assert_eq!(
            OrderEnd::from_status(S::Confirmed as i32),
            Some(OrderEnd::Confirmed)
        );
        assert_eq!(
            OrderEnd::from_status(S::Delivered as i32),
            Some(OrderEnd::Confirmed)
        );
        assert_eq!(
            OrderEnd::from_status_name("ORDER_STATUS_REJECTED"),
            Some(OrderEnd::Rejected)
        );
        assert_eq!(
            OrderEnd::from_status_name("ORDER_STATUS_CANCELLED"),
            Some(OrderEnd::Cancelled)
        );
    }
}
