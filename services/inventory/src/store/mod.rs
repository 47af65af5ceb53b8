//! Inventory persistence: sea-orm entities, migrations and the queries the API runs.
//! Stock changes are single conditional UPDATEs, so the database itself keeps
//! 0 <= reserved <= on_hand under concurrent writers (a CHECK constraint backs it up).

pub mod item;
pub mod migration;
pub mod reservation;
pub mod reservation_line;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use crate::domain::{
    InventoryError, Line, NewItem, ReservationStatus, Sku, Stock, Transition, MAX_STOCK,
};

pub use migration::Migrator;

use ordermesh::proto::common::v1::SkuQuantity;
use ordermesh::proto::events::v1 as events;
use ordermesh::proto::events::v1::event_envelope::Payload;

/// Records an inventory event in the outbox, in the caller's transaction.
async fn publish<C: ConnectionTrait>(
    c: &C,
    aggregate_type: &str,
    id: &str,
    payload: Payload,
) -> Result<()> {
    ordermesh::events::outbox::record(c, "inventory", aggregate_type, id, payload).await?;
    Ok(())
}

/// Records `LowStock` for each item whose available stock is at or under its threshold.
async fn check_low_stock<C: ConnectionTrait>(c: &C, rows: &[item::Model]) -> Result<()> {
    for row in rows {
        let available = row.on_hand - row.reserved;
        if available <= row.low_stock_threshold {
            publish(
                c,
                "item",
                &row.sku,
                Payload::LowStock(events::LowStock {
                    sku: row.sku.clone(),
                    available,
                    threshold: row.low_stock_threshold,
                }),
            )
            .await?;
        }
    }
    Ok(())
}

async fn stock_adjusted<C: ConnectionTrait>(c: &C, row: &item::Model, delta: i64) -> Result<()> {
    publish(
        c,
        "item",
        &row.sku,
        Payload::StockAdjusted(events::StockAdjusted {
            sku: row.sku.clone(),
            delta,
            on_hand: row.on_hand,
            reason: String::new(),
        }),
    )
    .await?;
    check_low_stock(c, std::slice::from_ref(row)).await
}

pub type StoreError = ordermesh::data::StoreError<InventoryError>;

pub type Result<T> = std::result::Result<T, StoreError>;

/// A reservation with its lines.
#[derive(Clone, Debug)]
pub struct ReservationView {
    pub row: reservation::Model,
    pub lines: Vec<reservation_line::Model>,
}

impl ReservationView {
    pub fn status(&self) -> ReservationStatus {
        ReservationStatus::parse(&self.row.status).unwrap_or(ReservationStatus::Released)
    }
}

pub async fn insert_item<C: ConnectionTrait>(
    c: &C,
    item: &NewItem,
    now: DateTime<Utc>,
) -> Result<item::Model> {
    if item::Entity::find_by_id(item.sku.as_str())
        .one(c)
        .await?
        .is_some()
    {
        return Err(InventoryError::ItemExists(item.sku.to_string()).into());
    }
    let row = item::ActiveModel {
        sku: Set(item.sku.as_str().to_string()),
        name: Set(item.name.clone()),
        price_currency: Set(item.price.currency().code().to_string()),
        price_minor: Set(item.price.amount_minor()),
        on_hand: Set(item.initial_stock),
        reserved: Set(0),
        low_stock_threshold: Set(item.low_stock_threshold),
        created_at: Set(now),
        updated_at: Set(now),
    };
    match row.insert(c).await {
        Ok(m) => Ok(m),
        Err(e)
            if matches!(
                e.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) =>
        {
            Err(InventoryError::ItemExists(item.sku.to_string()).into())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn get_item<C: ConnectionTrait>(c: &C, sku: &Sku) -> Result<item::Model> {
    item::Entity::find_by_id(sku.as_str())
        .one(c)
        .await?
        .ok_or_else(|| InventoryError::ItemNotFound(sku.to_string()).into())
}

pub async fn find_items<C: ConnectionTrait>(c: &C, skus: &[String]) -> Result<Vec<item::Model>> {
    Ok(item::Entity::find()
        .filter(item::Column::Sku.is_in(skus.iter().cloned()))
        .all(c)
        .await?)
}

pub async fn list_items<C: ConnectionTrait>(
    c: &C,
    low_stock_only: bool,
    offset: u64,
    limit: u64,
) -> Result<Vec<item::Model>> {
    let mut q = item::Entity::find().order_by_asc(item::Column::Sku);
    if low_stock_only {
        q = q.filter(Expr::cust("on_hand - reserved <= low_stock_threshold"));
    }
    Ok(q.offset(offset).limit(limit).all(c).await?)
}

/// Changes on-hand by `delta` unless that would drop it below what is reserved.
pub async fn adjust_stock<C: ConnectionTrait>(
    c: &C,
    sku: &Sku,
    delta: i64,
    now: DateTime<Utc>,
) -> Result<item::Model> {
    let res = item::Entity::update_many()
        .col_expr(
            item::Column::OnHand,
            Expr::col(item::Column::OnHand).add(delta),
        )
        .col_expr(item::Column::UpdatedAt, Expr::value(now))
        .filter(item::Column::Sku.eq(sku.as_str()))
        .filter(
            Expr::col(item::Column::OnHand)
                .add(delta)
                .gte(Expr::col(item::Column::Reserved)),
        )
        .filter(Expr::col(item::Column::OnHand).add(delta).lte(MAX_STOCK))
        .exec(c)
        .await?;
    if res.rows_affected == 0 {
        // Nothing changed: say why, from the row as it is now.
        let current = get_item(c, sku).await?;
        let stock = Stock {
            on_hand: current.on_hand,
            reserved: current.reserved,
        };
        stock.adjusted(delta)?;
        return Err(
            InventoryError::invalid("delta", "conflicts with a concurrent change; retry").into(),
        );
    }
    let row = get_item(c, sku).await?;
    stock_adjusted(c, &row, delta).await?;
    Ok(row)
}

/// Sets on-hand to a counted quantity unless it is below what is reserved.
pub async fn set_on_hand<C: ConnectionTrait>(
    c: &C,
    sku: &Sku,
    counted: i64,
    now: DateTime<Utc>,
) -> Result<(i64, item::Model)> {
    let before = get_item(c, sku).await?;
    let stock = Stock {
        on_hand: before.on_hand,
        reserved: before.reserved,
    };
    let delta = counted - before.on_hand;
    stock.adjusted(delta)?;
    let res = item::Entity::update_many()
        .col_expr(item::Column::OnHand, Expr::value(counted))
        .col_expr(item::Column::UpdatedAt, Expr::value(now))
        .filter(item::Column::Sku.eq(sku.as_str()))
        .filter(Expr::col(item::Column::Reserved).lte(counted))
        .exec(c)
        .await?;
    if res.rows_affected == 0 {
        let now_row = get_item(c, sku).await?;
        return Err(InventoryError::BelowReserved {
            on_hand: counted,
            reserved: now_row.reserved,
        }
        .into());
    }
    let row = get_item(c, sku).await?;
    if delta != 0 {
        stock_adjusted(c, &row, delta).await?;
    }
    Ok((delta, row))
}

pub async fn get_reservation<C: ConnectionTrait>(
    c: &C,
    order_id: &str,
) -> Result<Option<ReservationView>> {
    let Some(row) = reservation::Entity::find_by_id(order_id).one(c).await? else {
        return Ok(None);
    };
    let lines = reservation_line::Entity::find()
        .filter(reservation_line::Column::OrderId.eq(order_id))
        .order_by_asc(reservation_line::Column::Sku)
        .all(c)
        .await?;
    Ok(Some(ReservationView { row, lines }))
}

/// Reserves every line or none. Each line is one conditional UPDATE that only succeeds while
/// enough stock is available; the caller's transaction rolls back the earlier lines when a
/// later one fails.
pub async fn reserve<C: ConnectionTrait>(
    c: &C,
    order_id: &str,
    lines: &[Line],
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<ReservationView> {
    if let Some(existing) = get_reservation(c, order_id).await? {
        return Err(
            if existing.status() == ReservationStatus::Released && existing.lines.is_empty() {
                InventoryError::ReleasedBeforeReserved(order_id.to_string())
            } else {
                InventoryError::ReservationExists(order_id.to_string())
            }
            .into(),
        );
    }
    for line in lines {
        let q = line.quantity.get();
        let res = item::Entity::update_many()
            .col_expr(
                item::Column::Reserved,
                Expr::col(item::Column::Reserved).add(q),
            )
            .col_expr(item::Column::UpdatedAt, Expr::value(now))
            .filter(item::Column::Sku.eq(line.sku.as_str()))
            .filter(
                Expr::col(item::Column::OnHand)
                    .sub(Expr::col(item::Column::Reserved))
                    .gte(q),
            )
            .exec(c)
            .await?;
        if res.rows_affected == 0 {
            let current = get_item(c, &line.sku).await?;
            return Err(InventoryError::InsufficientStock {
                sku: line.sku.to_string(),
                requested: q,
                available: current.on_hand - current.reserved,
            }
            .into());
        }
    }
    let row = reservation::ActiveModel {
        order_id: Set(order_id.to_string()),
        status: Set(ReservationStatus::Reserved.as_str().to_string()),
        expires_at: Set(expires_at),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(c)
    .await?;
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        out.push(
            reservation_line::ActiveModel {
                order_id: Set(order_id.to_string()),
                sku: Set(line.sku.as_str().to_string()),
                quantity: Set(line.quantity.get()),
            }
            .insert(c)
            .await?,
        );
    }
    publish(
        c,
        "reservation",
        order_id,
        Payload::StockReserved(events::StockReserved {
            order_id: order_id.to_string(),
            lines: out
                .iter()
                .map(|l| SkuQuantity {
                    sku: l.sku.clone(),
                    quantity: l.quantity as i32,
                })
                .collect(),
        }),
    )
    .await?;
    let skus: Vec<String> = out.iter().map(|l| l.sku.clone()).collect();
    check_low_stock(c, &find_items(c, &skus).await?).await?;
    Ok(ReservationView { row, lines: out })
}

/// What to do to stock when a reservation leaves RESERVED.
enum StockEffect {
    /// Reserved units go back to available (release, expiry).
    Return,
    /// Reserved units leave the warehouse (commit).
    Ship,
}

async fn apply_effect<C: ConnectionTrait>(
    c: &C,
    view: &ReservationView,
    effect: StockEffect,
    now: DateTime<Utc>,
) -> Result<()> {
    for line in &view.lines {
        let mut upd = item::Entity::update_many()
            .col_expr(
                item::Column::Reserved,
                Expr::col(item::Column::Reserved).sub(line.quantity),
            )
            .col_expr(item::Column::UpdatedAt, Expr::value(now));
        if let StockEffect::Ship = effect {
            upd = upd.col_expr(
                item::Column::OnHand,
                Expr::col(item::Column::OnHand).sub(line.quantity),
            );
        }
        upd.filter(item::Column::Sku.eq(line.sku.as_str()))
            .filter(item::Column::Reserved.gte(line.quantity))
            .exec(c)
            .await?;
    }
    Ok(())
}

async fn set_status<C: ConnectionTrait>(
    c: &C,
    view: &mut ReservationView,
    to: ReservationStatus,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut active: reservation::ActiveModel = view.row.clone().into();
    active.status = Set(to.as_str().to_string());
    active.updated_at = Set(now);
    view.row = active.update(c).await?;
    Ok(())
}

async fn released<C: ConnectionTrait>(c: &C, order_id: &str) -> Result<()> {
    publish(
        c,
        "reservation",
        order_id,
        Payload::StockReleased(events::StockReleased {
            order_id: order_id.to_string(),
        }),
    )
    .await
}

/// Releases an order's reservation. With no reservation yet, records a released tombstone so
/// that a late reserve for the order is refused.
pub async fn release<C: ConnectionTrait>(
    c: &C,
    order_id: &str,
    now: DateTime<Utc>,
) -> Result<ReservationView> {
    let Some(mut view) = get_reservation(c, order_id).await? else {
        let row = reservation::ActiveModel {
            order_id: Set(order_id.to_string()),
            status: Set(ReservationStatus::Released.as_str().to_string()),
            expires_at: Set(now),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(c)
        .await?;
        return Ok(ReservationView { row, lines: vec![] });
    };
    if let Transition::To(to) = view.status().release(order_id)? {
        apply_effect(c, &view, StockEffect::Return, now).await?;
        set_status(c, &mut view, to, now).await?;
        released(c, order_id).await?;
    }
    Ok(view)
}

pub async fn commit<C: ConnectionTrait>(
    c: &C,
    order_id: &str,
    now: DateTime<Utc>,
) -> Result<ReservationView> {
    let mut view = get_reservation(c, order_id)
        .await?
        .ok_or_else(|| InventoryError::ReservationNotFound(order_id.to_string()))?;
    if let Transition::To(to) = view.status().commit(order_id)? {
        apply_effect(c, &view, StockEffect::Ship, now).await?;
        set_status(c, &mut view, to, now).await?;
        publish(
            c,
            "reservation",
            order_id,
            Payload::StockCommitted(events::StockCommitted {
                order_id: order_id.to_string(),
            }),
        )
        .await?;
    }
    Ok(view)
}

/// Order ids of reservations still RESERVED after their expiry.
pub async fn due_for_expiry<C: ConnectionTrait>(c: &C, now: DateTime<Utc>) -> Result<Vec<String>> {
    Ok(reservation::Entity::find()
        .filter(reservation::Column::Status.eq(ReservationStatus::Reserved.as_str()))
        .filter(reservation::Column::ExpiresAt.lte(now))
        .order_by_asc(reservation::Column::ExpiresAt)
        .limit(100)
        .all(c)
        .await?
        .into_iter()
        .map(|r| r.order_id)
        .collect())
}

/// Expires one reservation if it is still RESERVED and due; returns it when it did.
pub async fn expire<C: ConnectionTrait>(
    c: &C,
    order_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<ReservationView>> {
    let Some(mut view) = get_reservation(c, order_id).await? else {
        return Ok(None);
    };
    if view.status() != ReservationStatus::Reserved || view.row.expires_at > now {
        return Ok(None);
    }
    if let Transition::To(to) = view.status().expire(order_id)? {
        apply_effect(c, &view, StockEffect::Return, now).await?;
        set_status(c, &mut view, to, now).await?;
        released(c, order_id).await?;
    }
    Ok(Some(view))
}
