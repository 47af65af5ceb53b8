//! Payment persistence: sea-orm entities, migrations and the queries the API runs.
//! Every change of a payment is one conditional UPDATE on the status it expects (and, for
//! refunds, on the amount still refundable), so concurrent captures, voids and refunds cannot
//! move money twice; a CHECK constraint backs the amounts up.

pub mod migration;
pub mod payment;
pub mod refund;

use chrono::{DateTime, Utc};
use ordermesh::types::ids::{OrderId, PaymentId};
use ordermesh::types::money::{Currency, Money};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use crate::domain::{status_after_refund, DeclineReason, PaymentError, PaymentStatus};

pub use migration::Migrator;

use ordermesh::proto::events::v1 as events;
use ordermesh::proto::events::v1::event_envelope::Payload;

/// Records a payment event in the outbox, in the caller's transaction.
async fn publish<C: ConnectionTrait>(c: &C, row: &payment::Model, payload: Payload) -> Result<()> {
    ordermesh::events::outbox::record(c, "payment", "payment", &row.payment_id, payload).await?;
    Ok(())
}

pub type StoreError = ordermesh::data::StoreError<PaymentError>;

pub type Result<T> = std::result::Result<T, StoreError>;

impl payment::Model {
    pub fn status(&self) -> PaymentStatus {
        // Rows are only written with known statuses; an unknown one is treated as final.
        PaymentStatus::parse(&self.status).unwrap_or(PaymentStatus::Declined)
    }

    fn money(&self, minor: i64) -> Result<Money> {
        let currency = Currency::parse(&self.currency)
            .map_err(|e| sea_orm::DbErr::Custom(format!("stored currency: {e}")))?;
        Ok(Money::new(currency, minor))
    }
}

/// A new payment as the processor answered it.
pub struct NewPayment<'a> {
    pub order_id: &'a OrderId,
    pub amount: Money,
    pub decline: Option<DeclineReason>,
    pub card_last4: String,
}

/// The gate a void by order closes (see `ordermesh::data::tombstone`).
const ORDER_GATE: &str = "payment.order";

pub async fn insert<C: ConnectionTrait>(
    c: &C,
    p: NewPayment<'_>,
    now: DateTime<Utc>,
) -> Result<payment::Model> {
    // A void by order may have come first: then this authorization must not be taken.
    if ordermesh::data::tombstone::open(c, ORDER_GATE, p.order_id.as_str()).await? {
        return Err(PaymentError::OrderClosed(p.order_id.to_string()).into());
    }
    let status = match p.decline {
        None => PaymentStatus::Authorized,
        Some(_) => PaymentStatus::Declined,
    };
    let row = payment::ActiveModel {
        payment_id: Set(PaymentId::generate().into_string()),
        order_id: Set(p.order_id.as_str().to_string()),
        status: Set(status.as_str().to_string()),
        currency: Set(p.amount.currency().code().to_string()),
        authorized_minor: Set(if p.decline.is_some() {
            0
        } else {
            p.amount.amount_minor()
        }),
        captured_minor: Set(0),
        refunded_minor: Set(0),
        decline_reason: Set(p.decline.map(|d| d.as_str()).unwrap_or("").to_string()),
        card_last4: Set(p.card_last4),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(c)
    .await?;
    let payload = match p.decline {
        None => Payload::PaymentAuthorized(events::PaymentAuthorized {
            payment_id: row.payment_id.clone(),
            order_id: row.order_id.clone(),
            amount: Some(p.amount.to_proto()),
        }),
        Some(reason) => Payload::PaymentDeclined(events::PaymentDeclined {
            payment_id: row.payment_id.clone(),
            order_id: row.order_id.clone(),
            reason: reason.as_str().to_string(),
        }),
    };
    publish(c, &row, payload).await?;
    Ok(row)
}

pub async fn get<C: ConnectionTrait>(c: &C, payment_id: &PaymentId) -> Result<payment::Model> {
    payment::Entity::find_by_id(payment_id.as_str())
        .one(c)
        .await?
        .ok_or_else(|| PaymentError::NotFound(payment_id.to_string()).into())
}

pub async fn list<C: ConnectionTrait>(
    c: &C,
    order_id: Option<&OrderId>,
    offset: u64,
    limit: u64,
) -> Result<Vec<payment::Model>> {
    let mut q = payment::Entity::find()
        .order_by_asc(payment::Column::CreatedAt)
        .order_by_asc(payment::Column::PaymentId);
    if let Some(order_id) = order_id {
        q = q.filter(payment::Column::OrderId.eq(order_id.as_str()));
    }
    Ok(q.offset(offset).limit(limit).all(c).await?)
}

/// Checks that `amount` is in the payment's currency and at most `limit` minor units.
fn within(row: &payment::Model, amount: Money, limit: i64, what: &'static str) -> Result<()> {
    let limit = row.money(limit)?;
    if amount.currency() != limit.currency() {
        return Err(PaymentError::invalid(
            "amount.currency_code",
            format!("must be {}, the currency of the payment", limit.currency()),
        )
        .into());
    }
    if amount.amount_minor() > limit.amount_minor() {
        return Err(PaymentError::Exceeds {
            requested: amount,
            limit,
            what,
        }
        .into());
    }
    Ok(())
}

/// Captures `amount` (all of the authorization when `None`).
pub async fn capture<C: ConnectionTrait>(
    c: &C,
    payment_id: &PaymentId,
    amount: Option<Money>,
    now: DateTime<Utc>,
) -> Result<payment::Model> {
    let row = get(c, payment_id).await?;
    row.status().check_capture(&row.payment_id)?;
    let amount = match amount {
        Some(a) => a,
        None => row.money(row.authorized_minor)?,
    };
    within(&row, amount, row.authorized_minor, "captured")?;
    let res = payment::Entity::update_many()
        .col_expr(
            payment::Column::Status,
            Expr::value(PaymentStatus::Captured.as_str()),
        )
        .col_expr(
            payment::Column::CapturedMinor,
            Expr::value(amount.amount_minor()),
        )
        .col_expr(payment::Column::UpdatedAt, Expr::value(now))
        .filter(payment::Column::PaymentId.eq(payment_id.as_str()))
        .filter(payment::Column::Status.eq(PaymentStatus::Authorized.as_str()))
        .exec(c)
        .await?;
    let after = get(c, payment_id).await?;
    if res.rows_affected == 0 {
        // A concurrent change won: report the state it left.
        after.status().check_capture(&after.payment_id)?;
    }
    publish(
        c,
        &after,
        Payload::PaymentCaptured(events::PaymentCaptured {
            payment_id: after.payment_id.clone(),
            order_id: after.order_id.clone(),
            amount: Some(amount.to_proto()),
        }),
    )
    .await?;
    Ok(after)
}

/// Voids an open authorization; voiding a voided payment returns it unchanged.
pub async fn void<C: ConnectionTrait>(
    c: &C,
    payment_id: &PaymentId,
    now: DateTime<Utc>,
) -> Result<payment::Model> {
    let row = get(c, payment_id).await?;
    let Some(to) = row.status().void(&row.payment_id)? else {
        return Ok(row);
    };
    let res = payment::Entity::update_many()
        .col_expr(payment::Column::Status, Expr::value(to.as_str()))
        .col_expr(payment::Column::UpdatedAt, Expr::value(now))
        .filter(payment::Column::PaymentId.eq(payment_id.as_str()))
        .filter(payment::Column::Status.eq(PaymentStatus::Authorized.as_str()))
        .exec(c)
        .await?;
    let after = get(c, payment_id).await?;
    // Voided by us or by a concurrent void is fine; captured meanwhile is not.
    after.status().void(&after.payment_id)?;
    if res.rows_affected == 1 {
        publish(
            c,
            &after,
            Payload::PaymentVoided(events::PaymentVoided {
                payment_id: after.payment_id.clone(),
                order_id: after.order_id.clone(),
            }),
        )
        .await?;
    }
    Ok(after)
}

/// Voids every open authorization of the order, and every one that arrives later (they are
/// refused). Returns the order's payments as they are afterwards.
pub async fn void_order<C: ConnectionTrait>(
    c: &C,
    order_id: &OrderId,
    now: DateTime<Utc>,
) -> Result<Vec<payment::Model>> {
    // Close first: an authorization in flight either committed before (and is found below)
    // or waits on the gate's row and then sees it closed.
    ordermesh::data::tombstone::close(c, ORDER_GATE, order_id.as_str()).await?;
    let rows = payment::Entity::find()
        .filter(payment::Column::OrderId.eq(order_id.as_str()))
        .order_by_asc(payment::Column::CreatedAt)
        .all(c)
        .await?;
    let mut after = Vec::with_capacity(rows.len());
    for row in rows {
        if row.status() == PaymentStatus::Authorized {
            let id = PaymentId::parse(&row.payment_id)
                .map_err(|e| PaymentError::invalid("payment_id", e.message()))?;
            after.push(void(c, &id, now).await?);
        } else {
            after.push(row);
        }
    }
    Ok(after)
}

/// Refunds `amount` (everything still refundable when `None`) and records the refund.
pub async fn refund<C: ConnectionTrait>(
    c: &C,
    payment_id: &PaymentId,
    amount: Option<Money>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<payment::Model> {
    let row = get(c, payment_id).await?;
    row.status().check_refund(&row.payment_id)?;
    let remaining = row.captured_minor - row.refunded_minor;
    let amount = match amount {
        Some(a) => a,
        None => row.money(remaining)?,
    };
    within(&row, amount, remaining, "refunded")?;
    let x = amount.amount_minor();
    let status = Expr::cust(format!(
        "CASE WHEN refunded_minor + {x} >= captured_minor THEN '{}' ELSE '{}' END",
        PaymentStatus::Refunded.as_str(),
        PaymentStatus::PartiallyRefunded.as_str()
    ));
    let res = payment::Entity::update_many()
        .col_expr(
            payment::Column::RefundedMinor,
            Expr::col(payment::Column::RefundedMinor).add(x),
        )
        .col_expr(payment::Column::Status, status)
        .col_expr(payment::Column::UpdatedAt, Expr::value(now))
        .filter(payment::Column::PaymentId.eq(payment_id.as_str()))
        .filter(payment::Column::Status.is_in([
            PaymentStatus::Captured.as_str(),
            PaymentStatus::PartiallyRefunded.as_str(),
        ]))
        .filter(
            Expr::col(payment::Column::RefundedMinor)
                .add(x)
                .lte(Expr::col(payment::Column::CapturedMinor)),
        )
        .exec(c)
        .await?;
    if res.rows_affected == 0 {
        // A concurrent refund took some of the money: say how much is left now.
        let now_row = get(c, payment_id).await?;
        now_row.status().check_refund(&now_row.payment_id)?;
        within(
            &now_row,
            amount,
            now_row.captured_minor - now_row.refunded_minor,
            "refunded",
        )?;
        return Err(
            PaymentError::invalid("amount", "conflicts with a concurrent refund; retry").into(),
        );
    }
    refund::ActiveModel {
        refund_id: Set(format!("rfd_{}", uuid::Uuid::now_v7().simple())),
        payment_id: Set(payment_id.as_str().to_string()),
        amount_minor: Set(x),
        reason: Set(reason.to_string()),
        created_at: Set(now),
    }
    .insert(c)
    .await?;
    let after = get(c, payment_id).await?;
    publish(
        c,
        &after,
        Payload::PaymentRefunded(events::PaymentRefunded {
            payment_id: after.payment_id.clone(),
            order_id: after.order_id.clone(),
            amount: Some(amount.to_proto()),
        }),
    )
    .await?;
    debug_assert_eq!(
        after.status(),
        status_after_refund(after.captured_minor, after.refunded_minor)
    );
    Ok(after)
}
