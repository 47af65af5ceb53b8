//! Order state changes, in one place for everyone who moves an order: the API (placing,
//! cancelling), the placement saga (confirming, rejecting) and the shipping event handler
//! (shipped, delivered). A change is one append to the order's stream; watchers hear about it
//! after the commit, and the read models are woken to apply it.

use futures::FutureExt;
use ordermesh::data::event_store::Metadata;
use ordermesh::data::group_commit::GroupCommit;
use ordermesh::data::projection::Projector;
use ordermesh::proto::common::v1::{Address, Money as PbMoney};
use ordermesh::proto::order::v1 as pb;
use ordermesh::transport::watch::WatchFeed;
use ordermesh::types::ids::OrderId;
use ordermesh::types::time::to_proto;
use sea_orm::DatabaseConnection;
use tonic::Status;

use crate::aggregate::{AddressData, LineData, Order};
use crate::domain::OrderStatus;
use crate::projections::summaries::Summary;
use crate::store::{self, Writer};

pub(crate) fn status_to_proto(s: OrderStatus) -> pb::OrderStatus {
    match s {
        OrderStatus::Pending => pb::OrderStatus::Pending,
        OrderStatus::Confirmed => pb::OrderStatus::Confirmed,
        OrderStatus::Rejected => pb::OrderStatus::Rejected,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
        OrderStatus::Shipped => pb::OrderStatus::Shipped,
        OrderStatus::Delivered => pb::OrderStatus::Delivered,
    }
}

/// The parts an `Order` message is made of, from the aggregate or the summaries model.
struct Parts<'a> {
    order_id: &'a str,
    customer_id: &'a str,
    currency: &'a str,
    total_minor: i64,
    lines: &'a [LineData],
    address: &'a AddressData,
    status: OrderStatus,
    status_reason: &'a str,
    version: i64,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

fn build(p: Parts<'_>) -> pb::Order {
    let money = |minor: i64| {
        Some(PbMoney {
            currency_code: p.currency.to_string(),
            amount_minor: minor,
        })
    };
    pb::Order {
        order_id: p.order_id.to_string(),
        customer_id: p.customer_id.to_string(),
        lines: p
            .lines
            .iter()
            .map(|l| pb::OrderLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: money(l.unit_price_minor),
                line_total: money(l.line_total_minor),
            })
            .collect(),
        total: money(p.total_minor),
        status: status_to_proto(p.status) as i32,
        status_reason: p.status_reason.to_string(),
        shipping_address: Some(Address {
            recipient: p.address.recipient.clone(),
            street: p.address.street.clone(),
            city: p.address.city.clone(),
            postal_code: p.address.postal_code.clone(),
            country_code: p.address.country_code.clone(),
        }),
        create_time: Some(to_proto(p.created_at)),
        update_time: Some(to_proto(p.updated_at)),
        version: p.version,
        saga_steps: vec![],
    }
}

/// An order as the API shows it, with its saga's steps.
pub fn order_to_proto(o: &Order) -> pb::Order {
    let mut out = build(Parts {
        order_id: &o.order_id,
        customer_id: &o.customer_id,
        currency: &o.currency,
        total_minor: o.total_minor,
        lines: &o.lines,
        address: &o.address,
        status: o.status,
        status_reason: &o.status_reason,
        version: o.version,
        created_at: o.created_at,
        updated_at: o.updated_at,
    });
    if let Some(saga) = &o.saga {
        out.saga_steps = saga
            .steps
            .iter()
            .map(|s| pb::SagaStep {
                name: s.name.clone(),
                status: s.status.as_str().to_string(),
                attempts: s.attempts,
                error: s.error.clone(),
                update_time: Some(to_proto(s.updated_at)),
            })
            .collect();
    }
    out
}

/// An order as a list shows it (from the summaries read model; no saga steps).
pub fn summary_to_proto(s: &Summary) -> pb::Order {
    let lines = s.lines();
    let address = s.address();
    build(Parts {
        order_id: &s.order_id,
        customer_id: &s.customer_id,
        currency: &s.currency,
        total_minor: s.total_minor,
        lines: &lines,
        address: &address,
        // Rows are only written with known statuses; an unknown one is shown as final.
        status: OrderStatus::parse(&s.status).unwrap_or(OrderStatus::Rejected),
        status_reason: &s.status_reason,
        version: s.version,
        created_at: s.created_at,
        updated_at: s.updated_at,
    })
}

pub(crate) fn is_final(o: &pb::Order) -> bool {
    matches!(
        pb::OrderStatus::try_from(o.status),
        Ok(pb::OrderStatus::Rejected | pb::OrderStatus::Cancelled | pb::OrderStatus::Delivered)
    )
}

/// Fan-out of order changes to WatchOrder streams in this process.
pub type OrderFeed = WatchFeed<pb::Order>;

/// Moves orders, tells watchers and wakes the read models.
#[derive(Clone)]
pub struct Orders {
    /// The order database; every change to an order (and the saga's transitions) goes
    /// through it, sharing commits.
    pub(crate) writes: GroupCommit,
    pub(crate) feed: OrderFeed,
    pub(crate) writer: Writer,
    pub(crate) projector: Projector,
}

impl Orders {
    pub fn new(writes: GroupCommit, feed: OrderFeed, writer: Writer) -> Self {
        let projector = crate::projections::projector(writes.db().clone());
        Self {
            writes,
            feed,
            writer,
            projector,
        }
    }

    /// The database orders are kept in.
    pub fn db(&self) -> &DatabaseConnection {
        self.writes.db()
    }

    /// The writer orders are changed through.
    pub fn writes(&self) -> &GroupCommit {
        &self.writes
    }

    /// The read models' projector.
    pub fn projector(&self) -> &Projector {
        &self.projector
    }

    /// Tells WatchOrder streams about an order changed elsewhere (an event handler), and
    /// the read models that there is something to apply.
    pub async fn announce(&self, order_id: &OrderId) {
        self.projector.poke();
        if let Ok(o) = store::get(self.db(), order_id).await {
            self.feed.publish(order_to_proto(&o));
        }
    }

    /// After a change committed: watchers hear about it, the read models apply it.
    pub(crate) fn changed(&self, o: &Order) -> pb::Order {
        let order = order_to_proto(o);
        self.feed.publish(order.clone());
        self.projector.poke();
        order
    }

    /// Moves an order along its status machine and tells watchers. This is how the placement
    /// saga and fulfilment report progress; a move to the current status is a no-op.
    pub async fn advance(
        &self,
        order_id: &OrderId,
        to: OrderStatus,
        reason: &str,
    ) -> Result<pb::Order, Status> {
        let meta = Metadata::current(order_id.as_str(), "", "");
        let (w, id, why) = (self.writer, order_id.clone(), reason.to_string());
        let (order, changed, _) = self
            .writes
            .write(move |txn| {
                async move { store::transition_from(txn, w, &id, to, &why, None, &meta).await }
                    .boxed()
            })
            .await?;
        if changed {
            tracing::info!(
                order_id = %order_id,
                status = to.as_str(),
                reason,
                "order status changed"
            );
            return Ok(self.changed(&order));
        }
        Ok(order_to_proto(&order))
    }
}
