//! The order analytics read model behind `GetOrderStats`: one row per order (day placed,
//! status now, total, rejection reason, how long its saga took) and one per order line, kept
//! from the order and saga events; the RPC aggregates them over the asked range.

use chrono::{DateTime, Utc};
use ordermesh::data::event_store::StoredEvent;
use ordermesh::data::projection::{Projection, ProjectionError};
use ordermesh::saga::SagaEvent;
use sea_orm::sea_query::{ColumnDef, Expr, Index, Query, Table};
use sea_orm::{ConnectionTrait, DatabaseTransaction, FromQueryResult};

use super::{a, t};
use crate::aggregate::OrderEvent;
use crate::domain::OrderStatus;

pub const NAME: &str = "order_stats";
const ORDERS: &str = "order_stats_orders";
const LINES: &str = "order_stats_lines";

pub struct Stats;

#[async_trait::async_trait]
impl Projection for Stats {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &[ORDERS, LINES]
    }

    fn indexes(&self) -> &'static [&'static str] {
        &[
            "idx_order_stats_orders_placed",
            "idx_order_stats_lines_placed",
        ]
    }

    async fn create(&self, c: &DatabaseTransaction, suffix: &str) -> Result<(), sea_orm::DbErr> {
        use ordermesh::data::schema::{big, int, text, timestamp};
        let b = c.get_database_backend();
        c.execute(
            b.build(
                Table::create()
                    .table(t(ORDERS, suffix))
                    .if_not_exists()
                    .col(text(a("order_id"), 64).primary_key())
                    .col(timestamp(a("placed_at")))
                    .col(text(a("day"), 10))
                    .col(text(a("status"), 16))
                    .col(ColumnDef::new(a("reason")).text().not_null())
                    .col(text(a("currency"), 3))
                    .col(big(a("total_minor")))
                    .col(ColumnDef::new(a("saga_ms")).big_integer().null()),
            ),
        )
        .await?;
        c.execute(
            b.build(
                Index::create()
                    .name(format!("idx_{ORDERS}_placed{suffix}"))
                    .table(t(ORDERS, suffix))
                    .col(a("placed_at"))
                    .if_not_exists(),
            ),
        )
        .await?;
        c.execute(
            b.build(
                Table::create()
                    .table(t(LINES, suffix))
                    .if_not_exists()
                    .col(text(a("order_id"), 64))
                    .col(int(a("line_no")))
                    .col(timestamp(a("placed_at")))
                    .col(text(a("sku"), 64))
                    .col(int(a("quantity")))
                    .col(text(a("currency"), 3))
                    .col(big(a("revenue_minor")))
                    .primary_key(Index::create().col(a("order_id")).col(a("line_no"))),
            ),
        )
        .await?;
        c.execute(
            b.build(
                Index::create()
                    .name(format!("idx_{LINES}_placed{suffix}"))
                    .table(t(LINES, suffix))
                    .col(a("placed_at"))
                    .if_not_exists(),
            ),
        )
        .await?;
        Ok(())
    }

    async fn apply(
        &self,
        txn: &DatabaseTransaction,
        suffix: &str,
        e: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let b = txn.get_database_backend();
        let bad = |x: &dyn std::fmt::Display| ProjectionError::Event(x.to_string());
        if let Some(saga) = SagaEvent::from_stored(e) {
            if !matches!(
                saga.map_err(|x| bad(&x))?,
                SagaEvent::SagaCompleted {} | SagaEvent::SagaCompensated {}
            ) {
                return Ok(());
            }
            #[derive(FromQueryResult)]
            struct Placed {
                placed_at: DateTime<Utc>,
            }
            let placed = Placed::find_by_statement(
                b.build(
                    Query::select()
                        .column(a("placed_at"))
                        .from(t(ORDERS, suffix))
                        .and_where(Expr::col(a("order_id")).eq(e.stream_id.clone())),
                ),
            )
            .one(txn)
            .await?;
            if let Some(p) = placed {
                let ms = (e.recorded_at - p.placed_at).num_milliseconds().max(0);
                txn.execute(
                    b.build(
                        Query::update()
                            .table(t(ORDERS, suffix))
                            .value(a("saga_ms"), ms)
                            .and_where(Expr::col(a("order_id")).eq(e.stream_id.clone())),
                    ),
                )
                .await?;
            }
            return Ok(());
        }
        let Some(event) = OrderEvent::from_stored(e) else {
            return Ok(());
        };
        match event.map_err(|x| bad(&x))? {
            OrderEvent::OrderPlaced {
                currency,
                total_minor,
                lines,
                ..
            } => {
                let insert = Query::insert()
                    .into_table(t(ORDERS, suffix))
                    .columns(
                        [
                            "order_id",
                            "placed_at",
                            "day",
                            "status",
                            "reason",
                            "currency",
                            "total_minor",
                        ]
                        .map(a),
                    )
                    .values([
                        e.stream_id.clone().into(),
                        e.recorded_at.into(),
                        e.recorded_at.format("%Y-%m-%d").to_string().into(),
                        OrderStatus::Pending.as_str().into(),
                        "".into(),
                        currency.clone().into(),
                        total_minor.into(),
                    ])
                    .map_err(|x| bad(&x))?
                    .to_owned();
                txn.execute(b.build(&insert)).await?;
                if !lines.is_empty() {
                    let mut q = Query::insert();
                    q.into_table(t(LINES, suffix)).columns(
                        [
                            "order_id",
                            "line_no",
                            "placed_at",
                            "sku",
                            "quantity",
                            "currency",
                            "revenue_minor",
                        ]
                        .map(a),
                    );
                    for (i, l) in lines.iter().enumerate() {
                        q.values([
                            e.stream_id.clone().into(),
                            (i as i32).into(),
                            e.recorded_at.into(),
                            l.sku.clone().into(),
                            l.quantity.into(),
                            currency.clone().into(),
                            l.line_total_minor.into(),
                        ])
                        .map_err(|x| bad(&x))?;
                    }
                    txn.execute(b.build(&q)).await?;
                }
            }
            other => {
                let reason = other.reason().to_string();
                txn.execute(
                    b.build(
                        Query::update()
                            .table(t(ORDERS, suffix))
                            .value(a("status"), other.status().as_str())
                            .value(a("reason"), reason)
                            .and_where(Expr::col(a("order_id")).eq(e.stream_id.clone())),
                    ),
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// Orders and revenue of one day, status and currency.
#[derive(Debug, FromQueryResult)]
pub struct DayRow {
    pub day: String,
    pub status: String,
    pub currency: String,
    pub orders: i64,
    pub revenue: i64,
}

#[derive(Debug, FromQueryResult)]
pub struct SkuRow {
    pub sku: String,
    pub currency: String,
    pub quantity: i64,
    pub orders: i64,
    pub revenue: i64,
}

#[derive(Debug, FromQueryResult)]
pub struct ReasonRow {
    pub reason: String,
    pub orders: i64,
}

/// What `GetOrderStats` shows for orders placed in [from, to).
#[derive(Debug)]
pub struct Report {
    pub days: Vec<DayRow>,
    pub skus: Vec<SkuRow>,
    pub reasons: Vec<ReasonRow>,
    /// Saga durations in milliseconds, sorted.
    pub saga_ms: Vec<i64>,
}

/// Aggregates the model over orders placed in [from, to), with the `top` SKUs.
pub async fn report<C: ConnectionTrait>(
    c: &C,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    top: u64,
) -> Result<Report, sea_orm::DbErr> {
    use sea_orm::sea_query::{Func, Order as SortOrder};
    let b = c.get_database_backend();
    let range = |q: &mut sea_orm::sea_query::SelectStatement| {
        q.and_where(Expr::col(a("placed_at")).gte(from))
            .and_where(Expr::col(a("placed_at")).lt(to));
    };
    let mut days = Query::select();
    days.columns(["day", "status", "currency"].map(a))
        .expr_as(Func::count(Expr::col(a("order_id"))), a("orders"))
        .expr_as(
            Expr::cust("CAST(COALESCE(SUM(total_minor), 0) AS BIGINT)"),
            a("revenue"),
        )
        .from(a(ORDERS))
        .group_by_columns(["day", "status", "currency"].map(a))
        .order_by(a("day"), SortOrder::Asc)
        .order_by(a("status"), SortOrder::Asc)
        .order_by(a("currency"), SortOrder::Asc);
    range(&mut days);
    let mut skus = Query::select();
    skus.expr_as(Expr::col((a("l"), a("sku"))), a("sku"))
        .expr_as(Expr::col((a("l"), a("currency"))), a("currency"))
        .expr_as(Expr::cust("CAST(SUM(l.quantity) AS BIGINT)"), a("quantity"))
        .expr_as(Expr::cust("COUNT(l.order_id)"), a("orders"))
        .expr_as(
            Expr::cust("CAST(SUM(l.revenue_minor) AS BIGINT)"),
            a("revenue"),
        )
        .from_as(a(LINES), a("l"))
        .inner_join(
            a(ORDERS),
            Expr::col((a(ORDERS), a("order_id"))).equals((a("l"), a("order_id"))),
        )
        .and_where(Expr::col((a(ORDERS), a("status"))).is_in(["CONFIRMED", "SHIPPED", "DELIVERED"]))
        .and_where(Expr::col((a("l"), a("placed_at"))).gte(from))
        .and_where(Expr::col((a("l"), a("placed_at"))).lt(to))
        .group_by_columns([(a("l"), a("sku")), (a("l"), a("currency"))])
        .order_by_expr(Expr::cust("3"), SortOrder::Desc)
        .order_by(a("sku"), SortOrder::Asc)
        .limit(top);
    let mut reasons = Query::select();
    reasons
        .column(a("reason"))
        .expr_as(Func::count(Expr::col(a("order_id"))), a("orders"))
        .from(a(ORDERS))
        .and_where(Expr::col(a("status")).eq("REJECTED"))
        .group_by_col(a("reason"))
        .order_by_expr(Expr::cust("2"), SortOrder::Desc)
        .order_by(a("reason"), SortOrder::Asc);
    range(&mut reasons);
    let mut saga = Query::select();
    saga.column(a("saga_ms"))
        .from(a(ORDERS))
        .and_where(Expr::col(a("saga_ms")).is_not_null())
        .order_by(a("saga_ms"), SortOrder::Asc);
    range(&mut saga);
    #[derive(FromQueryResult)]
    struct Ms {
        saga_ms: i64,
    }
    Ok(Report {
        days: DayRow::find_by_statement(b.build(&days)).all(c).await?,
        skus: SkuRow::find_by_statement(b.build(&skus)).all(c).await?,
        reasons: ReasonRow::find_by_statement(b.build(&reasons))
            .all(c)
            .await?,
        saga_ms: Ms::find_by_statement(b.build(&saga))
            .all(c)
            .await?
            .into_iter()
            .map(|m| m.saga_ms)
            .collect(),
    })
}
