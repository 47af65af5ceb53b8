//! Order persistence: sea-orm entities, migrations and the queries the API runs.
//! Every status change is an UPDATE conditional on the version it read (optimistic
//! concurrency), so two writers can never both move the same order.

pub mod migration;
pub mod order;
pub mod order_line;

use chrono::{DateTime, Utc};
use ordermesh::proto::common::v1::{Address, SkuQuantity};
use ordermesh::proto::events::v1 as events;
use ordermesh::proto::events::v1::event_envelope::Payload;
use ordermesh::types::ids::{CustomerId, OrderId};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use crate::domain::{Lines, OrderError, OrderStatus};

pub use migration::Migrator;

pub type StoreError = ordermesh::data::StoreError<OrderError>;

pub type Result<T> = std::result::Result<T, StoreError>;

/// How many times a status change re-reads and retries after losing a version race.
const MAX_ATTEMPTS: usize = 5;

/// An order with its lines.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderView {
    pub row: order::Model,
    pub lines: Vec<order_line::Model>,
}

impl OrderView {
    pub fn status(&self) -> OrderStatus {
        // Rows are only written with known statuses; an unknown one is treated as final.
        OrderStatus::parse(&self.row.status).unwrap_or(OrderStatus::Rejected)
    }
}

/// A validated order to store.
pub struct NewOrder<'a> {
    pub customer_id: &'a CustomerId,
    pub lines: &'a Lines,
    pub address: &'a Address,
    pub card_token: &'a str,
}

pub async fn insert<C: ConnectionTrait>(
    c: &C,
    o: NewOrder<'_>,
    now: DateTime<Utc>,
) -> Result<OrderView> {
    let order_id = OrderId::generate().into_string();
    let row = order::ActiveModel {
        order_id: Set(order_id.clone()),
        customer_id: Set(o.customer_id.as_str().to_string()),
        status: Set(OrderStatus::Pending.as_str().to_string()),
        status_reason: Set(String::new()),
        currency: Set(o.lines.total.currency().code().to_string()),
        total_minor: Set(o.lines.total.amount_minor()),
        recipient: Set(o.address.recipient.clone()),
        street: Set(o.address.street.clone()),
        city: Set(o.address.city.clone()),
        postal_code: Set(o.address.postal_code.clone()),
        country_code: Set(o.address.country_code.clone()),
        card_token: Set(o.card_token.to_string()),
        version: Set(1),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(c)
    .await?;
    let mut lines = Vec::with_capacity(o.lines.lines.len());
    for (i, l) in o.lines.lines.iter().enumerate() {
        lines.push(
            order_line::ActiveModel {
                order_id: Set(order_id.clone()),
                line_no: Set(i as i32),
                sku: Set(l.sku.clone()),
                quantity: Set(l.quantity),
                unit_price_minor: Set(l.unit_price.amount_minor()),
                line_total_minor: Set(l.line_total.amount_minor()),
            }
            .insert(c)
            .await?,
        );
    }
    ordermesh::events::outbox::record(
        c,
        "order",
        "order",
        &order_id,
        Payload::OrderPlaced(events::OrderPlaced {
            order_id: order_id.clone(),
            customer_id: o.customer_id.as_str().to_string(),
            total: Some(o.lines.total.to_proto()),
            lines: o
                .lines
                .lines
                .iter()
                .map(|l| SkuQuantity {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                })
                .collect(),
        }),
    )
    .await?;
    Ok(OrderView { row, lines })
}

async fn lines_of<C: ConnectionTrait>(c: &C, ids: &[String]) -> Result<Vec<order_line::Model>> {
    Ok(order_line::Entity::find()
        .filter(order_line::Column::OrderId.is_in(ids.iter().cloned()))
        .order_by_asc(order_line::Column::OrderId)
        .order_by_asc(order_line::Column::LineNo)
        .all(c)
        .await?)
}

pub async fn find<C: ConnectionTrait>(c: &C, order_id: &OrderId) -> Result<Option<OrderView>> {
    let Some(row) = order::Entity::find_by_id(order_id.as_str()).one(c).await? else {
        return Ok(None);
    };
    let lines = lines_of(c, &[order_id.to_string()]).await?;
    Ok(Some(OrderView { row, lines }))
}

pub async fn get<C: ConnectionTrait>(c: &C, order_id: &OrderId) -> Result<OrderView> {
    find(c, order_id)
        .await?
        .ok_or_else(|| OrderError::NotFound(order_id.to_string()).into())
}

/// An order's status alone (one indexed read, for the saga's check before each step).
pub async fn status<C: ConnectionTrait>(c: &C, order_id: &OrderId) -> Result<OrderStatus> {
    let status: Option<String> = order::Entity::find_by_id(order_id.as_str())
        .select_only()
        .column(order::Column::Status)
        .into_tuple()
        .one(c)
        .await?;
    let status = status.ok_or_else(|| OrderError::NotFound(order_id.to_string()))?;
    OrderStatus::parse(&status)
        .ok_or_else(|| sea_orm::DbErr::Custom(format!("unknown order status '{status}'")).into())
}

/// Ids of orders still PENDING, oldest first (start-up resumes their sagas).
pub async fn pending_order_ids<C: ConnectionTrait>(c: &C) -> Result<Vec<String>> {
    Ok(order::Entity::find()
        .filter(order::Column::Status.eq(OrderStatus::Pending.as_str()))
        .order_by_asc(order::Column::CreatedAt)
        .all(c)
        .await?
        .into_iter()
        .map(|o| o.order_id)
        .collect())
}

/// Orders newest first, optionally of one customer and in some statuses.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    customer_id: Option<&CustomerId>,
    statuses: &[OrderStatus],
    offset: u64,
    limit: u64,
) -> Result<Vec<OrderView>> {
    let mut q = order::Entity::find()
        .order_by_desc(order::Column::CreatedAt)
        .order_by_desc(order::Column::OrderId);
    if let Some(customer) = customer_id {
        q = q.filter(order::Column::CustomerId.eq(customer.as_str()));
    }
    if !statuses.is_empty() {
        q = q.filter(order::Column::Status.is_in(statuses.iter().map(|s| s.as_str())));
    }
    let rows = q.offset(offset).limit(limit).all(c).await?;
    let ids: Vec<String> = rows.iter().map(|r| r.order_id.clone()).collect();
    let mut lines = lines_of(c, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (mine, rest): (Vec<_>, Vec<_>) =
                lines.drain(..).partition(|l| l.order_id == row.order_id);
            lines = rest;
            OrderView { row, lines: mine }
        })
        .collect())
}

/// Moves an order to `to`, recording `reason`. Returns the order and whether it changed: a
/// move to the status the order already has is a no-op. Losing a race with another writer
/// re-reads and tries again, so the machine is checked against the order as it really is.
pub async fn transition<C: ConnectionTrait>(
    c: &C,
    order_id: &OrderId,
    to: OrderStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(OrderView, bool)> {
    transition_from(c, order_id, to, reason, now, None).await
}

/// Like `transition`, but only from the statuses in `only_from` (when given): the check and
/// the conditional update see the same version, so a concurrent change cannot slip between.
pub async fn transition_from<C: ConnectionTrait>(
    c: &C,
    order_id: &OrderId,
    to: OrderStatus,
    reason: &str,
    now: DateTime<Utc>,
    only_from: Option<&[OrderStatus]>,
) -> Result<(OrderView, bool)> {
    for _ in 0..MAX_ATTEMPTS {
        let view = get(c, order_id).await?;
        if view.status().move_to(order_id.as_str(), to)?.is_none() {
            return Ok((view, false));
        }
        if let Some(allowed) = only_from {
            if !allowed.contains(&view.status()) {
                return Err(OrderError::IllegalTransition {
                    id: order_id.to_string(),
                    from: view.status().as_str(),
                    to: to.as_str(),
                }
                .into());
            }
        }
        let res = order::Entity::update_many()
            .col_expr(order::Column::Status, Expr::value(to.as_str()))
            .col_expr(order::Column::StatusReason, Expr::value(reason))
            .col_expr(order::Column::Version, Expr::value(view.row.version + 1))
            .col_expr(order::Column::UpdatedAt, Expr::value(now))
            .filter(order::Column::OrderId.eq(order_id.as_str()))
            .filter(order::Column::Version.eq(view.row.version))
            .exec(c)
            .await?;
        if res.rows_affected == 1 {
            return Ok((get(c, order_id).await?, true));
        }
    }
    Err(OrderError::Contended(order_id.to_string()).into())
}
