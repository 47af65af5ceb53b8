//! Creates `es_events`, `es_snapshots` and `es_checkpoints`; an event-sourced service's
//! migrator lists it.

use sea_orm_migration::prelude::*;

use crate::data::schema::{big, int, text, timestamp};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0000_event_store"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let events = || Alias::new("es_events");
        m.create_table(
            Table::create()
                .table(events())
                .if_not_exists()
                .col(big(Alias::new("position")).auto_increment().primary_key())
                .col(text(Alias::new("event_id"), 64).unique_key())
                .col(text(Alias::new("stream_id"), 128))
                .col(big(Alias::new("version")))
                .col(text(Alias::new("event_type"), 64))
                .col(int(Alias::new("schema_version")))
                .col(ColumnDef::new(Alias::new("payload")).text().not_null())
                .col(ColumnDef::new(Alias::new("metadata")).text().not_null())
                .col(timestamp(Alias::new("recorded_at")))
                .col(
                    ColumnDef::new(Alias::new("log_seq"))
                        .big_integer()
                        .null()
                        .unique_key(),
                )
                .check(Expr::cust("version >= 1 AND schema_version >= 1"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_es_events_stream_version")
                .table(events())
                .col(Alias::new("stream_id"))
                .col(Alias::new("version"))
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_es_events_type")
                .table(events())
                .col(Alias::new("event_type"))
                .col(Alias::new("position"))
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("es_snapshots"))
                .if_not_exists()
                .col(text(Alias::new("stream_id"), 128).primary_key())
                .col(big(Alias::new("version")))
                .col(int(Alias::new("schema_version")))
                .col(ColumnDef::new(Alias::new("state")).text().not_null())
                .col(timestamp(Alias::new("taken_at")))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("es_checkpoints"))
                .if_not_exists()
                .col(text(Alias::new("name"), 128).primary_key())
                .col(big(Alias::new("position")))
                .col(timestamp(Alias::new("updated_at")))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["es_checkpoints", "es_snapshots", "es_events"] {
            m.drop_table(Table::drop().table(Alias::new(t)).to_owned())
                .await?;
        }
        Ok(())
    }
}
