//! Schema migrations, applied at start-up.

use ordermesh::data::schema::{big, text, timestamp};
use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(ordermesh::data::idempotency::Migration),
            Box::new(ordermesh::events::outbox::Migration),
            Box::new(M0001Init),
        ]
    }
}

#[derive(DeriveIden)]
enum Items {
    #[sea_orm(iden = "inventory_items")]
    Table,
    Sku,
    Name,
    PriceCurrency,
    PriceMinor,
    OnHand,
    Reserved,
    LowStockThreshold,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Reservations {
    #[sea_orm(iden = "inventory_reservations")]
    Table,
    OrderId,
    Status,
    ExpiresAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ReservationLines {
    #[sea_orm(iden = "inventory_reservation_lines")]
    Table,
    OrderId,
    Sku,
    Quantity,
}

pub struct M0001Init;

impl MigrationName for M0001Init {
    fn name(&self) -> &str {
        "m0001_inventory_init"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Init {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Items::Table)
                .if_not_exists()
                .col(text(Items::Sku, 64).primary_key())
                .col(text(Items::Name, 200))
                .col(text(Items::PriceCurrency, 3))
                .col(big(Items::PriceMinor))
                .col(big(Items::OnHand))
                .col(big(Items::Reserved))
                .col(big(Items::LowStockThreshold))
                .col(timestamp(Items::CreatedAt))
                .col(timestamp(Items::UpdatedAt))
                .check(Expr::cust("reserved >= 0 AND on_hand >= reserved"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Reservations::Table)
                .if_not_exists()
                .col(text(Reservations::OrderId, 128).primary_key())
                .col(text(Reservations::Status, 16))
                .col(timestamp(Reservations::ExpiresAt))
                .col(timestamp(Reservations::CreatedAt))
                .col(timestamp(Reservations::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_inventory_reservations_status_expiry")
                .table(Reservations::Table)
                .col(Reservations::Status)
                .col(Reservations::ExpiresAt)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ReservationLines::Table)
                .if_not_exists()
                .col(text(ReservationLines::OrderId, 128))
                .col(text(ReservationLines::Sku, 64))
                .col(big(ReservationLines::Quantity))
                .primary_key(
                    Index::create()
                        .col(ReservationLines::OrderId)
                        .col(ReservationLines::Sku),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(ReservationLines::Table, ReservationLines::OrderId)
                        .to(Reservations::Table, Reservations::OrderId),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ReservationLines::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Reservations::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Items::Table).to_owned())
            .await
    }
}
