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
            Box::new(ordermesh::data::tombstone::Migration),
        ]
    }
}

#[derive(DeriveIden)]
enum Payments {
    #[sea_orm(iden = "payment_payments")]
    Table,
    PaymentId,
    OrderId,
    Status,
    Currency,
    AuthorizedMinor,
    CapturedMinor,
    RefundedMinor,
    DeclineReason,
    CardLast4,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Refunds {
    #[sea_orm(iden = "payment_refunds")]
    Table,
    RefundId,
    PaymentId,
    AmountMinor,
    Reason,
    CreatedAt,
}

pub struct M0001Init;

impl MigrationName for M0001Init {
    fn name(&self) -> &str {
        "m0001_payment_init"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Init {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Payments::Table)
                .if_not_exists()
                .col(text(Payments::PaymentId, 64).primary_key())
                .col(text(Payments::OrderId, 128))
                .col(text(Payments::Status, 24))
                .col(text(Payments::Currency, 3))
                .col(big(Payments::AuthorizedMinor))
                .col(big(Payments::CapturedMinor))
                .col(big(Payments::RefundedMinor))
                .col(text(Payments::DeclineReason, 32))
                .col(text(Payments::CardLast4, 4))
                .col(timestamp(Payments::CreatedAt))
                .col(timestamp(Payments::UpdatedAt))
                // Money never appears from nowhere: captures stay within the authorization
                // and refunds within the capture, whatever concurrent writers do.
                .check(Expr::cust(
                    "captured_minor >= 0 AND captured_minor <= authorized_minor \
                     AND refunded_minor >= 0 AND refunded_minor <= captured_minor",
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_payment_payments_order")
                .table(Payments::Table)
                .col(Payments::OrderId)
                .col(Payments::CreatedAt)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Refunds::Table)
                .if_not_exists()
                .col(text(Refunds::RefundId, 64).primary_key())
                .col(text(Refunds::PaymentId, 64))
                .col(big(Refunds::AmountMinor))
                .col(text(Refunds::Reason, 200))
                .col(timestamp(Refunds::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(Refunds::Table, Refunds::PaymentId)
                        .to(Payments::Table, Payments::PaymentId),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Refunds::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Payments::Table).to_owned())
            .await
    }
}
