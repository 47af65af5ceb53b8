//! Schema migrations, applied at start-up. `M0001Init` and the saga and outbox tables are
//! how orders were kept before they became event streams; `import::M0002IntoStreams` moves
//! what they hold into the event store once. The read models create their own tables
//! (`projections`), so a rebuild can make shadow copies of them.

use ordermesh::data::schema::{big, int, text, timestamp};
use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(ordermesh::data::idempotency::Migration),
            Box::new(M0001Init),
            Box::new(ordermesh::saga::Migration),
            Box::new(ordermesh::events::outbox::Migration),
            Box::new(ordermesh::events::inbox::Migration),
            Box::new(ordermesh::data::event_store::Migration),
            Box::new(super::import::M0002IntoStreams),
        ]
    }
}

#[derive(DeriveIden)]
enum Orders {
    #[sea_orm(iden = "order_orders")]
    Table,
    OrderId,
    CustomerId,
    Status,
    StatusReason,
    Currency,
    TotalMinor,
    Recipient,
    Street,
    City,
    PostalCode,
    CountryCode,
    CardToken,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Lines {
    #[sea_orm(iden = "order_lines")]
    Table,
    OrderId,
    LineNo,
    Sku,
    Quantity,
    UnitPriceMinor,
    LineTotalMinor,
}

pub struct M0001Init;

impl MigrationName for M0001Init {
    fn name(&self) -> &str {
        "m0001_order_init"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Init {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Orders::Table)
                .if_not_exists()
                .col(text(Orders::OrderId, 64).primary_key())
                .col(text(Orders::CustomerId, 128))
                .col(text(Orders::Status, 16))
                .col(text(Orders::StatusReason, 500))
                .col(text(Orders::Currency, 3))
                .col(big(Orders::TotalMinor))
                .col(text(Orders::Recipient, 200))
                .col(text(Orders::Street, 200))
                .col(text(Orders::City, 200))
                .col(text(Orders::PostalCode, 200))
                .col(text(Orders::CountryCode, 2))
                .col(text(Orders::CardToken, 64))
                .col(big(Orders::Version))
                .col(timestamp(Orders::CreatedAt))
                .col(timestamp(Orders::UpdatedAt))
                .check(Expr::cust("total_minor >= 0 AND version >= 1"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_order_orders_customer_created")
                .table(Orders::Table)
                .col(Orders::CustomerId)
                .col(Orders::CreatedAt)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_order_orders_created")
                .table(Orders::Table)
                .col(Orders::CreatedAt)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Lines::Table)
                .if_not_exists()
                .col(text(Lines::OrderId, 64))
                .col(int(Lines::LineNo))
                .col(text(Lines::Sku, 64))
                .col(int(Lines::Quantity))
                .col(big(Lines::UnitPriceMinor))
                .col(big(Lines::LineTotalMinor))
                .primary_key(Index::create().col(Lines::OrderId).col(Lines::LineNo))
                .foreign_key(
                    ForeignKey::create()
                        .from(Lines::Table, Lines::OrderId)
                        .to(Orders::Table, Orders::OrderId),
                )
                .check(Expr::cust("quantity > 0 AND unit_price_minor >= 0"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Lines::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Orders::Table).to_owned())
            .await
    }
}
