//! Schema migrations, applied at start-up.

use ordermesh::data::schema::{big, int, text, timestamp};
use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(ordermesh::data::idempotency::Migration),
            Box::new(ordermesh::events::outbox::Migration),
            Box::new(M0001Init),
            Box::new(ordermesh::data::tombstone::Migration),
        ]
    }
}

#[derive(DeriveIden)]
enum Shipments {
    #[sea_orm(iden = "shipping_shipments")]
    Table,
    ShipmentId,
    OrderId,
    LiveOrderId,
    Status,
    TrackingNumber,
    Recipient,
    Street,
    City,
    PostalCode,
    CountryCode,
    CostCurrency,
    CostMinor,
    EstimatedDays,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ShipmentItems {
    #[sea_orm(iden = "shipping_shipment_items")]
    Table,
    ShipmentId,
    Position,
    Sku,
    Quantity,
}

#[derive(DeriveIden)]
enum TrackingEvents {
    #[sea_orm(iden = "shipping_tracking_events")]
    Table,
    ShipmentId,
    Seq,
    Status,
    Location,
    Note,
    OccurredAt,
}

pub struct M0001Init;

impl MigrationName for M0001Init {
    fn name(&self) -> &str {
        "m0001_shipping_init"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Init {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Shipments::Table)
                .if_not_exists()
                .col(text(Shipments::ShipmentId, 64).primary_key())
                .col(text(Shipments::OrderId, 128))
                .col(
                    ColumnDef::new(Shipments::LiveOrderId)
                        .string_len(128)
                        .null(),
                )
                .col(text(Shipments::Status, 32))
                .col(text(Shipments::TrackingNumber, 32))
                .col(text(Shipments::Recipient, 200))
                .col(text(Shipments::Street, 200))
                .col(text(Shipments::City, 200))
                .col(text(Shipments::PostalCode, 200))
                .col(text(Shipments::CountryCode, 2))
                .col(text(Shipments::CostCurrency, 3))
                .col(big(Shipments::CostMinor))
                .col(int(Shipments::EstimatedDays))
                .col(timestamp(Shipments::CreatedAt))
                .col(timestamp(Shipments::UpdatedAt))
                .check(Expr::cust(
                    "(status = 'CANCELLED' AND live_order_id IS NULL) \
                     OR (status <> 'CANCELLED' AND live_order_id = order_id)",
                ))
                .to_owned(),
        )
        .await?;
        // One live (not cancelled) shipment per order: NULLs do not collide.
        m.create_index(
            Index::create()
                .name("idx_shipping_shipments_live_order")
                .table(Shipments::Table)
                .col(Shipments::LiveOrderId)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_shipping_shipments_tracking_number")
                .table(Shipments::Table)
                .col(Shipments::TrackingNumber)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_shipping_shipments_order_created")
                .table(Shipments::Table)
                .col(Shipments::OrderId)
                .col(Shipments::CreatedAt)
                .col(Shipments::ShipmentId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_shipping_shipments_created")
                .table(Shipments::Table)
                .col(Shipments::CreatedAt)
                .col(Shipments::ShipmentId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ShipmentItems::Table)
                .if_not_exists()
                .col(text(ShipmentItems::ShipmentId, 64))
                .col(int(ShipmentItems::Position))
                .col(text(ShipmentItems::Sku, 64))
                .col(big(ShipmentItems::Quantity))
                .primary_key(
                    Index::create()
                        .col(ShipmentItems::ShipmentId)
                        .col(ShipmentItems::Position),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(ShipmentItems::Table, ShipmentItems::ShipmentId)
                        .to(Shipments::Table, Shipments::ShipmentId),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(TrackingEvents::Table)
                .if_not_exists()
                .col(text(TrackingEvents::ShipmentId, 64))
                .col(big(TrackingEvents::Seq))
                .col(text(TrackingEvents::Status, 32))
                .col(text(TrackingEvents::Location, 200))
                .col(text(TrackingEvents::Note, 200))
                .col(timestamp(TrackingEvents::OccurredAt))
                .primary_key(
                    Index::create()
                        .col(TrackingEvents::ShipmentId)
                        .col(TrackingEvents::Seq),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(TrackingEvents::Table, TrackingEvents::ShipmentId)
                        .to(Shipments::Table, Shipments::ShipmentId),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(TrackingEvents::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(ShipmentItems::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Shipments::Table).to_owned())
            .await
    }
}
