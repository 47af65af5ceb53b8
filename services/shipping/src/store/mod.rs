//! Shipping persistence: sea-orm entities, migrations and the queries the API runs.
//! Status changes are conditional UPDATEs (`... WHERE status = <expected>`), so concurrent
//! writers cannot both move a shipment, and each change appends its tracking event in the
//! same transaction. A unique index on `live_order_id` keeps one live shipment per order.

pub mod migration;
pub mod shipment;
pub mod shipment_item;
pub mod tracking_event;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, SqlErr,
};

use crate::domain::{
    new_shipment_id, tracking_number, NewShipment, ShipmentStatus, ShippingError, Transition,
};

pub use migration::Migrator;

use ordermesh::proto::events::v1 as events;
use ordermesh::proto::events::v1::event_envelope::Payload;

/// Records a shipment event in the outbox, in the caller's transaction.
async fn publish<C: ConnectionTrait>(c: &C, shipment_id: &str, payload: Payload) -> Result<()> {
    ordermesh::events::outbox::record(c, "shipping", "shipment", shipment_id, payload).await?;
    Ok(())
}

/// Note of the event every shipment starts with.
pub const CREATED_NOTE: &str = "shipment created";

pub type StoreError = ordermesh::data::StoreError<ShippingError>;

pub type Result<T> = std::result::Result<T, StoreError>;

/// A shipment with its items, in request order.
#[derive(Clone, Debug)]
pub struct ShipmentView {
    pub row: shipment::Model,
    pub items: Vec<shipment_item::Model>,
}

impl ShipmentView {
    pub fn status(&self) -> ShipmentStatus {
        ShipmentStatus::parse(&self.row.status).unwrap_or(ShipmentStatus::Cancelled)
    }
}

fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Creates a PENDING shipment with its items and first tracking event. Refused with
/// `ShipmentExists` while the order has a shipment that is not cancelled; the unique index on
/// `live_order_id` settles concurrent creates for one order.
/// The gate a cancel by order closes (see `ordermesh::data::tombstone`).
const ORDER_GATE: &str = "shipping.order";

pub async fn create_shipment<C: ConnectionTrait>(
    c: &C,
    new: &NewShipment,
    now: DateTime<Utc>,
) -> Result<ShipmentView> {
    // A cancel by order may have come first: then this shipment must not be created.
    if ordermesh::data::tombstone::open(c, ORDER_GATE, new.order_id.as_str()).await? {
        return Err(ShippingError::OrderClosed(new.order_id.to_string()).into());
    }
    let live = shipment::Entity::find()
        .filter(shipment::Column::LiveOrderId.eq(new.order_id.as_str()))
        .one(c)
        .await?;
    if live.is_some() {
        return Err(ShippingError::ShipmentExists(new.order_id.clone()).into());
    }
    let id = new_shipment_id();
    let row = shipment::ActiveModel {
        shipment_id: Set(id.clone()),
        order_id: Set(new.order_id.clone()),
        live_order_id: Set(Some(new.order_id.clone())),
        status: Set(ShipmentStatus::Pending.as_str().to_string()),
        tracking_number: Set(tracking_number(&id)),
        recipient: Set(new.address.recipient.clone()),
        street: Set(new.address.street.clone()),
        city: Set(new.address.city.clone()),
        postal_code: Set(new.address.postal_code.clone()),
        country_code: Set(new.address.country_code.clone()),
        cost_currency: Set(new.quote.cost.currency().code().to_string()),
        cost_minor: Set(new.quote.cost.amount_minor()),
        estimated_days: Set(new.quote.estimated_days),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let row = match row.insert(c).await {
        Ok(m) => m,
        Err(e) if is_unique_violation(&e) => {
            return Err(ShippingError::ShipmentExists(new.order_id.clone()).into())
        }
        Err(e) => return Err(e.into()),
    };
    let mut items = Vec::with_capacity(new.items.len());
    for (position, line) in (0i32..).zip(new.items.iter()) {
        items.push(
            shipment_item::ActiveModel {
                shipment_id: Set(id.clone()),
                position: Set(position),
                sku: Set(line.sku.as_str().to_string()),
                quantity: Set(line.quantity.get()),
            }
            .insert(c)
            .await?,
        );
    }
    append_event(c, &id, ShipmentStatus::Pending, "", CREATED_NOTE, now).await?;
    publish(
        c,
        &id,
        Payload::ShipmentCreated(events::ShipmentCreated {
            shipment_id: id.clone(),
            order_id: new.order_id.clone(),
        }),
    )
    .await?;
    Ok(ShipmentView { row, items })
}

async fn items_of<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> Result<HashMap<String, Vec<shipment_item::Model>>> {
    let mut out: HashMap<String, Vec<shipment_item::Model>> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows = shipment_item::Entity::find()
        .filter(shipment_item::Column::ShipmentId.is_in(ids.iter().cloned()))
        .order_by_asc(shipment_item::Column::ShipmentId)
        .order_by_asc(shipment_item::Column::Position)
        .all(c)
        .await?;
    for r in rows {
        out.entry(r.shipment_id.clone()).or_default().push(r);
    }
    Ok(out)
}

pub async fn get_shipment<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<ShipmentView>> {
    let Some(row) = shipment::Entity::find_by_id(id).one(c).await? else {
        return Ok(None);
    };
    let items = items_of(c, std::slice::from_ref(&row.shipment_id))
        .await?
        .remove(&row.shipment_id)
        .unwrap_or_default();
    Ok(Some(ShipmentView { row, items }))
}

async fn require_shipment<C: ConnectionTrait>(c: &C, id: &str) -> Result<ShipmentView> {
    get_shipment(c, id)
        .await?
        .ok_or_else(|| ShippingError::ShipmentNotFound(id.to_string()).into())
}

/// Shipments by create time then id, optionally of one order.
pub async fn list_shipments<C: ConnectionTrait>(
    c: &C,
    order_id: Option<&str>,
    offset: u64,
    limit: u64,
) -> Result<Vec<ShipmentView>> {
    let mut q = shipment::Entity::find()
        .order_by_asc(shipment::Column::CreatedAt)
        .order_by_asc(shipment::Column::ShipmentId);
    if let Some(order_id) = order_id {
        q = q.filter(shipment::Column::OrderId.eq(order_id));
    }
    let rows = q.offset(offset).limit(limit).all(c).await?;
    let ids: Vec<String> = rows.iter().map(|r| r.shipment_id.clone()).collect();
    let mut items = items_of(c, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let items = items.remove(&row.shipment_id).unwrap_or_default();
            ShipmentView { row, items }
        })
        .collect())
}

/// The latest tracking event of a shipment.
pub async fn latest_event<C: ConnectionTrait>(
    c: &C,
    shipment_id: &str,
) -> Result<Option<tracking_event::Model>> {
    Ok(tracking_event::Entity::find()
        .filter(tracking_event::Column::ShipmentId.eq(shipment_id))
        .order_by_desc(tracking_event::Column::Seq)
        .one(c)
        .await?)
}

/// A shipment's tracking events with `seq` above `after`, oldest first.
pub async fn events_after<C: ConnectionTrait>(
    c: &C,
    shipment_id: &str,
    after: i64,
) -> Result<Vec<tracking_event::Model>> {
    Ok(tracking_event::Entity::find()
        .filter(tracking_event::Column::ShipmentId.eq(shipment_id))
        .filter(tracking_event::Column::Seq.gt(after))
        .order_by_asc(tracking_event::Column::Seq)
        .all(c)
        .await?)
}

/// Appends the next event. Callers hold the shipment's row (they just updated it), so the
/// next `seq` is not taken concurrently.
async fn append_event<C: ConnectionTrait>(
    c: &C,
    shipment_id: &str,
    status: ShipmentStatus,
    location: &str,
    note: &str,
    now: DateTime<Utc>,
) -> Result<tracking_event::Model> {
    let seq = latest_event(c, shipment_id)
        .await?
        .map(|e| e.seq)
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| ShippingError::invalid("shipment_id", "has too many tracking events"))?;
    Ok(tracking_event::ActiveModel {
        shipment_id: Set(shipment_id.to_string()),
        seq: Set(seq),
        status: Set(status.as_str().to_string()),
        location: Set(location.to_string()),
        note: Set(note.to_string()),
        occurred_at: Set(now),
    }
    .insert(c)
    .await?)
}

/// Moves a shipment to the next status `to` and records the scan as a tracking event.
pub async fn advance<C: ConnectionTrait>(
    c: &C,
    id: &str,
    to: ShipmentStatus,
    location: &str,
    note: &str,
    now: DateTime<Utc>,
) -> Result<(ShipmentView, tracking_event::Model)> {
    let before = require_shipment(c, id).await?;
    let from = before.status();
    from.advance_to(id, to)?;
    let res = shipment::Entity::update_many()
        .col_expr(shipment::Column::Status, Expr::value(to.as_str()))
        .col_expr(shipment::Column::UpdatedAt, Expr::value(now))
        .filter(shipment::Column::ShipmentId.eq(id))
        .filter(shipment::Column::Status.eq(from.as_str()))
        .exec(c)
        .await?;
    if res.rows_affected == 0 {
        // Someone else moved it first: report from the status it has now.
        let current = require_shipment(c, id).await?;
        return Err(ShippingError::IllegalTransition {
            id: id.to_string(),
            from: current.status().as_str(),
            action: format!("move to {}", to.as_str()),
        }
        .into());
    }
    let event = append_event(c, id, to, location, note, now).await?;
    let order_id = before.row.order_id.clone();
    publish(
        c,
        id,
        Payload::ShipmentStatusChanged(events::ShipmentStatusChanged {
            shipment_id: id.to_string(),
            order_id: order_id.clone(),
            status: to.as_str().to_string(),
        }),
    )
    .await?;
    if to == ShipmentStatus::Delivered {
        publish(
            c,
            id,
            Payload::ShipmentDelivered(events::ShipmentDelivered {
                shipment_id: id.to_string(),
                order_id,
            }),
        )
        .await?;
    }
    Ok((require_shipment(c, id).await?, event))
}

/// Cancels a shipment that has not been picked up, freeing its order for a new shipment.
/// Cancelling a cancelled shipment changes nothing and records no event.
/// Cancels every shipment of the order that is not cancelled yet, and refuses the ones that
/// arrive later. Returns the order's shipments as they are afterwards.
pub async fn cancel_order<C: ConnectionTrait>(
    c: &C,
    order_id: &str,
    note: &str,
    now: DateTime<Utc>,
) -> Result<Vec<ShipmentView>> {
    // Close first: a creation in flight either committed before (and is found below) or waits
    // on the gate's row and then sees it closed.
    ordermesh::data::tombstone::close(c, ORDER_GATE, order_id).await?;
    let mut after = Vec::new();
    // No limit (an order has few shipments); i64::MAX is the largest a database accepts.
    for view in list_shipments(c, Some(order_id), 0, i64::MAX as u64).await? {
        if view.status() == ShipmentStatus::Cancelled {
            after.push(view);
        } else {
            after.push(cancel(c, &view.row.shipment_id, note, now).await?.0);
        }
    }
    Ok(after)
}

pub async fn cancel<C: ConnectionTrait>(
    c: &C,
    id: &str,
    note: &str,
    now: DateTime<Utc>,
) -> Result<(ShipmentView, Option<tracking_event::Model>)> {
    let before = require_shipment(c, id).await?;
    if before.status().cancel(id)? == Transition::Unchanged {
        return Ok((before, None));
    }
    let cancellable = [
        ShipmentStatus::Pending.as_str(),
        ShipmentStatus::LabelCreated.as_str(),
    ];
    let res = shipment::Entity::update_many()
        .col_expr(
            shipment::Column::Status,
            Expr::value(ShipmentStatus::Cancelled.as_str()),
        )
        .col_expr(shipment::Column::LiveOrderId, Expr::value(None::<String>))
        .col_expr(shipment::Column::UpdatedAt, Expr::value(now))
        .filter(shipment::Column::ShipmentId.eq(id))
        .filter(shipment::Column::Status.is_in(cancellable))
        .exec(c)
        .await?;
    if res.rows_affected == 0 {
        // Moved on concurrently: cancelled already (no-op) or picked up (refused).
        let current = require_shipment(c, id).await?;
        return match current.status().cancel(id)? {
            Transition::Unchanged => Ok((current, None)),
            Transition::To(_) => Err(ShippingError::IllegalTransition {
                id: id.to_string(),
                from: current.status().as_str(),
                action: "cancel".to_string(),
            }
            .into()),
        };
    }
    let event = append_event(c, id, ShipmentStatus::Cancelled, "", note, now).await?;
    publish(
        c,
        id,
        Payload::ShipmentCancelled(events::ShipmentCancelled {
            shipment_id: id.to_string(),
            order_id: before.row.order_id.clone(),
        }),
    )
    .await?;
    Ok((require_shipment(c, id).await?, Some(event)))
}
