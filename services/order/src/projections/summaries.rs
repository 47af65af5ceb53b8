//! The order summaries read model behind `ListOrders`: one row per order with what a list
//! shows (lines as JSON), kept from the order events. Saga events do not touch it.

use chrono::{DateTime, Utc};
use ordermesh::data::event_store::StoredEvent;
use ordermesh::data::projection::{Projection, ProjectionError};
use ordermesh::types::ids::CustomerId;
use sea_orm::sea_query::{ColumnDef, Expr, Index, Order as SortOrder, Query, Table};
use sea_orm::{ConnectionTrait, DatabaseTransaction, FromQueryResult};

use super::a;
use crate::aggregate::{AddressData, LineData, OrderEvent};
use crate::domain::OrderStatus;

pub const NAME: &str = "order_summaries";

fn t(suffix: &str) -> sea_orm::sea_query::Alias {
    super::t(NAME, suffix)
}

/// The model's columns, as a row is written and read.
const COLUMNS: [&str; 11] = [
    "order_id",
    "customer_id",
    "status",
    "status_reason",
    "currency",
    "total_minor",
    "lines",
    "address",
    "version",
    "created_at",
    "updated_at",
];

/// A row of the model.
#[derive(Clone, Debug, PartialEq, Eq, FromQueryResult)]
pub struct Summary {
    pub order_id: String,
    pub customer_id: String,
    pub status: String,
    pub status_reason: String,
    pub currency: String,
    pub total_minor: i64,
    /// JSON array of `LineData`.
    pub lines: String,
    /// JSON `AddressData`.
    pub address: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Summary {
    pub fn lines(&self) -> Vec<LineData> {
        serde_json::from_str(&self.lines).unwrap_or_default()
    }

    pub fn address(&self) -> AddressData {
        serde_json::from_str(&self.address).unwrap_or_default()
    }
}

pub struct Summaries;

#[async_trait::async_trait]
impl Projection for Summaries {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &[NAME]
    }

    fn indexes(&self) -> &'static [&'static str] {
        &[
            "idx_order_summaries_created",
            "idx_order_summaries_customer",
        ]
    }

    async fn create(&self, c: &DatabaseTransaction, suffix: &str) -> Result<(), sea_orm::DbErr> {
        use ordermesh::data::schema::{big, text, timestamp};
        let b = c.get_database_backend();
        let table = Table::create()
            .table(t(suffix))
            .if_not_exists()
            .col(text(a("order_id"), 64).primary_key())
            .col(text(a("customer_id"), 128))
            .col(text(a("status"), 16))
            .col(ColumnDef::new(a("status_reason")).text().not_null())
            .col(text(a("currency"), 3))
            .col(big(a("total_minor")))
            .col(ColumnDef::new(a("lines")).text().not_null())
            .col(ColumnDef::new(a("address")).text().not_null())
            .col(big(a("version")))
            .col(timestamp(a("created_at")))
            .col(timestamp(a("updated_at")))
            .to_owned();
        c.execute(b.build(&table)).await?;
        for (name, cols) in [
            ("created", vec!["created_at", "order_id"]),
            ("customer", vec!["customer_id", "created_at"]),
        ] {
            let mut idx = Index::create();
            idx.name(format!("idx_{NAME}_{name}{suffix}"))
                .table(t(suffix))
                .if_not_exists();
            for col in cols {
                idx.col(a(col));
            }
            c.execute(b.build(&idx)).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        txn: &DatabaseTransaction,
        suffix: &str,
        e: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let Some(event) = OrderEvent::from_stored(e) else {
            return Ok(());
        };
        let event = event.map_err(|x| ProjectionError::Event(x.to_string()))?;
        let b = txn.get_database_backend();
        let json = |v: &dyn erased::Json| v.json();
        let stmt = match &event {
            OrderEvent::OrderPlaced {
                customer_id,
                currency,
                total_minor,
                lines,
                address,
                ..
            } => b.build(
                Query::insert()
                    .into_table(t(suffix))
                    .columns(COLUMNS.map(a))
                    .values([
                        e.stream_id.clone().into(),
                        customer_id.clone().into(),
                        OrderStatus::Pending.as_str().into(),
                        "".into(),
                        currency.clone().into(),
                        (*total_minor).into(),
                        json(lines).into(),
                        json(address).into(),
                        1i64.into(),
                        e.recorded_at.into(),
                        e.recorded_at.into(),
                    ])
                    .map_err(|x| ProjectionError::Event(x.to_string()))?,
            ),
            other => {
                let reason = other.reason().to_string();
                b.build(
                    Query::update()
                        .table(t(suffix))
                        .value(a("status"), other.status().as_str())
                        .value(a("status_reason"), reason)
                        .value(a("version"), Expr::col(a("version")).add(1))
                        .value(a("updated_at"), e.recorded_at)
                        .and_where(Expr::col(a("order_id")).eq(e.stream_id.clone())),
                )
            }
        };
        txn.execute(stmt).await?;
        Ok(())
    }
}

mod erased {
    /// Values stored as JSON text.
    pub trait Json {
        fn json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

/// Summaries newest first, optionally of one customer and in some statuses.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    customer_id: Option<&CustomerId>,
    statuses: &[OrderStatus],
    offset: u64,
    limit: u64,
) -> Result<Vec<Summary>, sea_orm::DbErr> {
    let mut q = Query::select();
    q.columns(COLUMNS.map(a))
        .from(t(""))
        .order_by(a("created_at"), SortOrder::Desc)
        .order_by(a("order_id"), SortOrder::Desc)
        .offset(offset)
        .limit(limit);
    if let Some(customer) = customer_id {
        q.and_where(Expr::col(a("customer_id")).eq(customer.as_str()));
    }
    if !statuses.is_empty() {
        q.and_where(Expr::col(a("status")).is_in(statuses.iter().map(|s| s.as_str())));
    }
    let b = c.get_database_backend();
    Summary::find_by_statement(b.build(&q)).all(c).await
}
