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
                .col(
                    ColumnDef::new(Shipments::ShipmentId)
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(Shipments::OrderId)
                        .string_len(128)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Shipments::LiveOrderId)
                        .string_len(128)
                        .null(),
                )
                .col(ColumnDef::new(Shipments::Status).string_len(32).not_null())
                .col(
                    ColumnDef::new(Shipments::TrackingNumber)
                        .string_len(32)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Shipments::Recipient)
                        .string_len(200)
                        .not_null(),
                )
                .col(ColumnDef::new(Shipments::Street).string_len(200).not_null())
                .col(ColumnDef::new(Shipments::City).string_len(200).not_null())
                .col(
                    ColumnDef::new(Shipments::PostalCode)
                        .string_len(200)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Shipments::CountryCode)
                        .string_len(2)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Shipments::CostCurrency)
                        .string_len(3)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Shipments::CostMinor)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Shipments::EstimatedDays)
                        .integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Shipments::CreatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(Shipments::UpdatedAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
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
                .col(
                    ColumnDef::new(ShipmentItems::ShipmentId)
                        .string_len(64)
                        .not_null(),
                )
                .col(ColumnDef::new(ShipmentItems::Position).integer().not_null())
                .col(ColumnDef::new(ShipmentItems::Sku).string_len(64).not_null())
                .col(
                    ColumnDef::new(ShipmentItems::Quantity)
                        .big_integer()
                        .not_null(),
                )
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
                .col(
                    ColumnDef::new(TrackingEvents::ShipmentId)
                        .string_len(64)
                        .not_null(),
                )
                .col(ColumnDef::new(TrackingEvents::Seq).big_integer().not_null())
                .col(
                    ColumnDef::new(TrackingEvents::Status)
                        .string_len(32)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(TrackingEvents::Location)
                        .string_len(200)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(TrackingEvents::Note)
                        .string_len(200)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(TrackingEvents::OccurredAt)
                        .timestamp_with_time_zone()
                        .not_null(),
                )
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
