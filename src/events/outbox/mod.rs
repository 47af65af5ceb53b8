//! The transactional outbox and the event log served from it.
//!
//! A state change records its event with `record`, in the same transaction, so an event exists
//! exactly when its change does. The relay (`Outbox::run_relay`) then publishes recorded rows in the order they
//! were recorded: it gives each the next sequence of this producer's log (rows committed late
//! still get a later sequence, so a consumer reading "after my last sequence" misses nothing)
//! and wakes subscribers. Rows are never deleted. `EventLog` serves the log as the gRPC stream
//! `ordermesh.events.v1.EventLogService/Subscribe`.
//!
//! An event-sourced service's outbox is its event store instead (`published`): the events it
//! appends as published carry their log sequence from their commit, and the relay only moves
//! them on to RabbitMQ (keeping the last confirmed sequence as a checkpoint).
//!
//! With an `amqp::Publisher` (when `BROKER_URL` is set) the relay publishes each row to
//! RabbitMQ as well, and a row gets its sequence only once the broker confirmed it: "published"
//! then means "in RabbitMQ and in the gRPC log", so the log keeps serving catch-up and replay.
//! Rows the broker did not confirm keep no sequence and are sent again (at-least-once).

mod log;
pub mod published;
mod relay;

pub use log::EventLog;
pub use published::PublicEvents;
pub use relay::{Outbox, RelayError};

use prost::Message;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};

use crate::events::envelope::{event_type, new_envelope};
use crate::proto::events::v1::event_envelope::Payload;

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub event_id: String,
        pub event_type: String,
        pub aggregate_type: String,
        pub aggregate_id: String,
        /// The encoded `EventEnvelope`, without its sequence.
        pub payload: Vec<u8>,
        pub occurred_at: ChronoDateTimeUtc,
        /// Position in the published log; NULL until the relay publishes the row.
        pub sequence: Option<i64>,
        pub published_at: Option<ChronoDateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use migration::Migration;

mod migration {
    use crate::data::schema::{big, text, timestamp};
    use sea_orm_migration::prelude::*;

    /// Creates `outbox_events`; every producing service's migrator lists it.
    pub struct Migration;

    impl MigrationName for Migration {
        fn name(&self) -> &str {
            "m0000_outbox"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Migration {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            let t = || Alias::new("outbox_events");
            m.create_table(
                Table::create()
                    .table(t())
                    .if_not_exists()
                    .col(big(Alias::new("id")).auto_increment().primary_key())
                    .col(text(Alias::new("event_id"), 64).unique_key())
                    .col(text(Alias::new("event_type"), 64))
                    .col(text(Alias::new("aggregate_type"), 32))
                    .col(text(Alias::new("aggregate_id"), 128))
                    .col(ColumnDef::new(Alias::new("payload")).binary().not_null())
                    .col(timestamp(Alias::new("occurred_at")))
                    .col(
                        ColumnDef::new(Alias::new("sequence"))
                            .big_integer()
                            .null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(Alias::new("published_at"))
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
        }

        async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.drop_table(Table::drop().table(Alias::new("outbox_events")).to_owned())
                .await
        }
    }
}

/// Records an event in `c`, the transaction of the change it describes.
pub async fn record<C: ConnectionTrait>(
    c: &C,
    producer: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    payload: Payload,
) -> Result<(), sea_orm::DbErr> {
    let now = crate::types::time::now();
    let kind = event_type(&payload);
    let envelope = new_envelope(producer, aggregate_type, aggregate_id, payload, now);
    entity::ActiveModel {
        event_id: Set(envelope.event_id.clone()),
        event_type: Set(kind.to_string()),
        aggregate_type: Set(aggregate_type.to_string()),
        aggregate_id: Set(aggregate_id.to_string()),
        payload: Set(envelope.encode_to_vec()),
        occurred_at: Set(now),
        sequence: Set(None),
        published_at: Set(None),
        ..Default::default()
    }
    .insert(c)
    .await?;
    Ok(())
}
