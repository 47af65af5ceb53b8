//! Order persistence: every order is an event stream in the service's event store
//! (`ordermesh::data::event_store`), named by its id, read back through snapshots and folded
//! into `aggregate::Order`; a change appends at the version it read (optimistic
//! concurrency), so two writers can never both move the same order. The read models
//! (`summaries`, `stats`) are projections of the same events; `legacy` is the table layout of
//! earlier versions, moved into streams once at start-up (`import`).

pub mod import;
pub mod legacy;
pub mod migration;
pub mod public;

use ordermesh::data::event_store::{
    self, snapshot, Appended, EventStoreError, Expected, Metadata, NewEvent, StoredEvent,
    StreamBounds,
};
use ordermesh::types::ids::OrderId;
use sea_orm::{ConnectionTrait, FromQueryResult, Statement};

use crate::aggregate::{self, Order, OrderEvent};
use crate::domain::{OrderError, OrderStatus};

pub use migration::Migrator;

pub type StoreError = ordermesh::data::StoreError<OrderError>;

pub type Result<T> = std::result::Result<T, StoreError>;

/// How many times a status change re-reads and decides again after losing a version race.
const MAX_ATTEMPTS: usize = 8;

/// A snapshot of an order is written every this many events of its stream unless
/// `ORDER_SNAPSHOT_EVERY` says otherwise.
pub const DEFAULT_SNAPSHOT_EVERY: i64 = 32;

fn store_err(e: EventStoreError) -> StoreError {
    match e {
        EventStoreError::Db(db) => StoreError::Db(db),
        EventStoreError::Conflict { stream, .. } => OrderError::Contended(stream).into(),
        other => StoreError::Db(sea_orm::DbErr::Custom(other.to_string())),
    }
}

fn fold_err(e: aggregate::FoldError) -> StoreError {
    StoreError::Db(sea_orm::DbErr::Custom(e.to_string()))
}

/// How orders are written: where snapshots go, and the metadata of the change.
#[derive(Clone, Copy, Debug)]
pub struct Writer {
    pub snapshot_every: i64,
}

impl Default for Writer {
    fn default() -> Self {
        Self {
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        }
    }
}

/// The events of an order's stream within `bounds`, in version order (upcast to the current
/// shapes).
pub async fn events<C: ConnectionTrait>(
    c: &C,
    order_id: &str,
    bounds: StreamBounds,
) -> Result<Vec<StoredEvent>> {
    event_store::read_stream(c, order_id, bounds, &aggregate::upcasters())
        .await
        .map_err(store_err)
}

/// The order as of now: its snapshot (when there is one of this state's schema) and the
/// events after it.
pub async fn find<C: ConnectionTrait>(c: &C, order_id: &str) -> Result<Option<Order>> {
    let snap: Option<(i64, Order)> = snapshot::load(c, order_id, aggregate::STATE_SCHEMA).await?;
    let (after, from) = match snap {
        Some((v, o)) => (v, Some(o)),
        None => (0, None),
    };
    let tail = events(
        c,
        order_id,
        StreamBounds {
            after_version: after,
            ..StreamBounds::default()
        },
    )
    .await?;
    Order::fold(from, &tail).map_err(fold_err)
}

/// The order as it was at the end of `bounds` (a version, a time), folded from its first
/// event.
pub async fn find_as_of<C: ConnectionTrait>(
    c: &C,
    order_id: &str,
    bounds: StreamBounds,
) -> Result<Option<Order>> {
    let evs = events(c, order_id, bounds).await?;
    Order::fold(None, &evs).map_err(fold_err)
}

pub async fn get<C: ConnectionTrait>(c: &C, order_id: &OrderId) -> Result<Order> {
    find(c, order_id.as_str())
        .await?
        .ok_or_else(|| OrderError::NotFound(order_id.to_string()).into())
}

/// Appends `new` to the stream of `order` (at its version; a new stream when `None`) and
/// returns the order after them, snapshotting it when its stream crossed a multiple of the
/// writer's interval.
pub async fn append(
    c: &sea_orm::DatabaseTransaction,
    w: Writer,
    order_id: &str,
    order: Option<&Order>,
    new: &[NewEvent],
    meta: &Metadata,
) -> Result<(Order, Appended)> {
    let expected = match order {
        Some(o) => Expected::Exact(o.stream_version),
        None => Expected::NoStream,
    };
    let done = event_store::append(c, order_id, expected, new, meta)
        .await
        .map_err(store_err)?;
    let before = order.map(|o| o.stream_version).unwrap_or(0);
    let mut state = order.cloned();
    for (i, e) in new.iter().enumerate() {
        let stored = StoredEvent {
            position: done.position,
            event_id: String::new(),
            stream_id: order_id.to_string(),
            version: before + 1 + i as i64,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            payload: e.payload.clone(),
            metadata: meta.clone(),
            recorded_at: done.recorded_at,
            log_seq: None,
        };
        state = Order::apply(state, &stored).map_err(fold_err)?;
    }
    let state = state.ok_or_else(|| OrderError::NotFound(order_id.to_string()))?;
    let every = w.snapshot_every.max(1);
    if before / every != done.version / every {
        snapshot::save(c, order_id, done.version, aggregate::STATE_SCHEMA, &state).await?;
    }
    Ok((state, done))
}

/// Moves an order to `to` (only from the statuses in `only_from`, when given), recording
/// `reason`: `change` with the status machine's decision.
pub async fn transition_from(
    c: &sea_orm::DatabaseTransaction,
    w: Writer,
    order_id: &OrderId,
    to: OrderStatus,
    reason: &str,
    only_from: Option<&[OrderStatus]>,
    meta: &Metadata,
) -> Result<(Order, bool, i64)> {
    change(c, w, order_id, meta, |order| {
        Ok(order.decide_move(to, reason, only_from)?)
    })
    .await
}

/// Decides a change on the order as it is (`decide`: the event, none when there is nothing to
/// do, or a refusal) and appends it at the order's version. Returns the order, whether it
/// changed, and the position written (0 when nothing was). Losing a race with another writer
/// re-reads and decides again, so the rules are checked against the order as it really is.
pub async fn change<E, F>(
    c: &sea_orm::DatabaseTransaction,
    w: Writer,
    order_id: &OrderId,
    meta: &Metadata,
    decide: F,
) -> std::result::Result<(Order, bool, i64), E>
where
    E: From<StoreError>,
    F: Fn(&Order) -> std::result::Result<Option<OrderEvent>, E>,
{
    for _ in 0..MAX_ATTEMPTS {
        let order = get(c, order_id).await?;
        let Some(event) = decide(&order)? else {
            return Ok((order, false, 0));
        };
        let new = [event.to_new()];
        match append(c, w, order_id.as_str(), Some(&order), &new, meta).await {
            Ok((order, done)) => return Ok((order, true, done.position)),
            Err(StoreError::Domain(OrderError::Contended(_))) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::from(OrderError::Contended(order_id.to_string())).into())
}

/// An order's status alone: the type of the last order event of its stream (one indexed
/// read, for the saga's check before each step).
pub async fn status<C: ConnectionTrait>(c: &C, order_id: &OrderId) -> Result<OrderStatus> {
    use ordermesh::data::event_store::entity::{Column, Entity};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
    let last: Option<String> = Entity::find()
        .select_only()
        .column(Column::EventType)
        .filter(Column::StreamId.eq(order_id.as_str()))
        .filter(Column::EventType.starts_with("Order"))
        .order_by_desc(Column::Version)
        .limit(1)
        .into_tuple()
        .one(c)
        .await?;
    let last = last.ok_or_else(|| OrderError::NotFound(order_id.to_string()))?;
    let status = match last.as_str() {
        "OrderPlaced" => OrderStatus::Pending,
        "OrderConfirmed" => OrderStatus::Confirmed,
        "OrderRejected" => OrderStatus::Rejected,
        "OrderCancelled" => OrderStatus::Cancelled,
        "OrderShipped" => OrderStatus::Shipped,
        "OrderDelivered" => OrderStatus::Delivered,
        other => {
            return Err(sea_orm::DbErr::Custom(format!("unknown order event '{other}'")).into())
        }
    };
    Ok(status)
}

/// Ids of orders still PENDING, oldest first (start-up resumes their sagas).
pub async fn pending_order_ids<C: ConnectionTrait>(c: &C) -> Result<Vec<String>> {
    #[derive(FromQueryResult)]
    struct Row {
        stream_id: String,
    }
    let sql = "SELECT p.stream_id FROM es_events p WHERE p.event_type = 'OrderPlaced' \
               AND NOT EXISTS (SELECT 1 FROM es_events f WHERE f.stream_id = p.stream_id \
               AND f.event_type IN ('OrderConfirmed', 'OrderRejected', 'OrderCancelled')) \
               ORDER BY p.position";
    Ok(
        Row::find_by_statement(Statement::from_string(c.get_database_backend(), sql))
            .all(c)
            .await?
            .into_iter()
            .map(|r| r.stream_id)
            .collect(),
    )
}

/// The `OrderPlaced` event of a new order.
pub fn placed(
    customer_id: &str,
    lines: &crate::domain::Lines,
    address: &ordermesh::proto::common::v1::Address,
    card_token: &str,
) -> OrderEvent {
    OrderEvent::OrderPlaced {
        customer_id: customer_id.to_string(),
        currency: lines.total.currency().code().to_string(),
        total_minor: lines.total.amount_minor(),
        lines: lines
            .lines
            .iter()
            .map(|l| aggregate::LineData {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price_minor: l.unit_price.amount_minor(),
                line_total_minor: l.line_total.amount_minor(),
            })
            .collect(),
        address: aggregate::AddressData {
            recipient: address.recipient.clone(),
            street: address.street.clone(),
            city: address.city.clone(),
            postal_code: address.postal_code.clone(),
            country_code: address.country_code.clone(),
        },
        card_token: card_token.to_string(),
    }
}
