//! Schema migrations, applied at start-up.

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
                .col(
                    ColumnDef::new(Items::Sku)
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Items::Name).string_len(200).not_null())
                .col(
                    ColumnDef::new(Items::PriceCurrency)
                        .string_len(3)
                        .not_null(),
                )
                .col(ColumnDef::new(Items::PriceMinor).big_integer().not_null())
                .col(ColumnDef::new(Items::OnHand).big_integer().not_null())
                .col(ColumnDef::new(Items::Reserved).big_integer().not_null())
                .col(
                    ColumnDef::new(Items::LowStockThreshold)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Items::CreatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Items::UpdatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .check(Expr::cust("reserved >= 0 AND on_hand >= reserved"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Reservations::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(Reservations::OrderId)
                        .string_len(128)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(Reservations::Status)
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Reservations::ExpiresAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Reservations::CreatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Reservations::UpdatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
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
                .col(
                    ColumnDef::new(ReservationLines::OrderId)
                        .string_len(128)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ReservationLines::Sku)
                        .string_len(64)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ReservationLines::Quantity)
                        .big_integer()
                        .not_null(),
                )
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
