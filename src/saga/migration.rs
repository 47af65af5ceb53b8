//! The saga tables: `saga_instances` and `saga_steps`, in the orchestrator's own database.

use sea_orm_migration::prelude::*;

use crate::data::schema::{int, text, timestamp};

/// Creates `saga_instances` and `saga_steps`; an orchestrator's migrator lists it.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0000_saga"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("saga_instances"))
                .if_not_exists()
                .col(text(Alias::new("saga_id"), 128).primary_key())
                .col(text(Alias::new("kind"), 64))
                .col(text(Alias::new("state"), 16))
                .col(int(Alias::new("step")))
                .col(ColumnDef::new(Alias::new("data")).text().not_null())
                .col(ColumnDef::new(Alias::new("error")).text().not_null())
                .col(timestamp(Alias::new("created_at")))
                .col(timestamp(Alias::new("updated_at")))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_saga_instances_state")
                .table(Alias::new("saga_instances"))
                .col(Alias::new("state"))
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("saga_steps"))
                .if_not_exists()
                .col(text(Alias::new("saga_id"), 128))
                .col(int(Alias::new("step_no")))
                .col(text(Alias::new("name"), 64))
                .col(text(Alias::new("status"), 24))
                .col(int(Alias::new("attempts")))
                .col(ColumnDef::new(Alias::new("error")).text().not_null())
                .col(timestamp(Alias::new("updated_at")))
                .primary_key(
                    Index::create()
                        .col(Alias::new("saga_id"))
                        .col(Alias::new("step_no")),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Alias::new("saga_steps")).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Alias::new("saga_instances")).to_owned())
            .await
    }
}
