//! Moving a database written before orders were event-sourced into streams, once, as a
//! migration (on PostgreSQL under the migration lock, on one replica), in one transaction: a
//! crash leaves the old tables as they were and the next start does it again.
//!
//! - Each order row (with its lines) becomes a stream: `OrderPlaced` at its creation time, then
//!   the status changes that lead to its status (a SHIPPED order was confirmed, then shipped).
//! - Its saga instance and step rows become the saga's events in the same stream: every
//!   recorded attempt, how each step ended, how the instance ended. An unfinished saga resumes
//!   from there after the import, re-issuing its current step with the same idempotency key.
//! - The table outbox's rows move into the store with their envelopes, event ids and log
//!   sequences (unpublished rows get the next ones), so consumers of the order's log see it
//!   continue where it was; the relay to RabbitMQ carries on after the last published row.
//!
//! The imported order events are not published again (the outbox rows are their
//! publication). The old tables are left as they were.

use ordermesh::data::event_store::{self, Expected, Metadata, NewEvent};
use ordermesh::saga::legacy::{instance, step_row, RowState, RowStatus};
use ordermesh::saga::SagaEvent;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};
use sea_orm_migration::prelude::*;

use super::legacy::{order, order_line};
use crate::aggregate::{AddressData, LineData, OrderEvent};
use crate::domain::OrderStatus;

pub struct M0002IntoStreams;

impl MigrationName for M0002IntoStreams {
    fn name(&self) -> &str {
        "m0002_order_into_streams"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002IntoStreams {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One transaction (a savepoint inside PostgreSQL's migration transaction; SQLite's
        // migrations run without one), so a crash leaves nothing half moved.
        let txn = m.get_connection().begin().await?;
        let n = import(&txn).await?;
        txn.commit().await?;
        if n > 0 {
            tracing::info!(orders = n, "orders moved from tables into event streams");
        }
        Ok(())
    }

    async fn down(&self, _m: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

fn custom(e: impl std::fmt::Display) -> DbErr {
    DbErr::Custom(e.to_string())
}

/// The status changes that take a new order to `status`.
fn path_to(status: OrderStatus, reason: &str) -> Vec<OrderEvent> {
    let reason = reason.to_string();
    match status {
        OrderStatus::Pending => vec![],
        OrderStatus::Confirmed => vec![OrderEvent::OrderConfirmed {}],
        OrderStatus::Rejected => vec![OrderEvent::OrderRejected { reason }],
        OrderStatus::Cancelled => vec![OrderEvent::OrderCancelled { reason }],
        OrderStatus::Shipped => vec![OrderEvent::OrderConfirmed {}, OrderEvent::OrderShipped {}],
        OrderStatus::Delivered => vec![
            OrderEvent::OrderConfirmed {},
            OrderEvent::OrderShipped {},
            OrderEvent::OrderDelivered {},
        ],
    }
}

/// The saga events that rebuild a stored instance and its steps.
fn saga_events(inst: &instance::Model, steps: &[step_row::Model]) -> Vec<SagaEvent> {
    let mut out = vec![SagaEvent::SagaStarted {
        saga_id: inst.saga_id.clone(),
        kind: inst.kind.clone(),
        data: inst.data.clone(),
    }];
    for s in steps {
        let compensation = matches!(
            s.status,
            RowStatus::Compensating | RowStatus::Compensated | RowStatus::CompensationFailed
        );
        // Attempts of the action, then of the compensation (the table kept only the sum).
        let acts = if compensation {
            (s.attempts - 1).max(1)
        } else {
            s.attempts.max(1)
        };
        for _ in 0..acts {
            out.push(SagaEvent::SagaStepStarted {
                step: s.step_no,
                name: s.name.clone(),
                compensating: false,
            });
        }
        let failed = |error: &str| SagaEvent::SagaStepFailed {
            step: s.step_no,
            error: error.to_string(),
            data: inst.data.clone(),
        };
        match s.status {
            RowStatus::Started => {}
            RowStatus::Succeeded => out.push(SagaEvent::SagaStepSucceeded {
                step: s.step_no,
                data: inst.data.clone(),
            }),
            RowStatus::Failed => out.push(failed(&s.error)),
            RowStatus::Compensating | RowStatus::Compensated | RowStatus::CompensationFailed => {
                // The step turned back (the failed one) or had succeeded before it.
                if inst.step == s.step_no {
                    out.push(failed(&s.error));
                } else {
                    out.push(SagaEvent::SagaStepSucceeded {
                        step: s.step_no,
                        data: inst.data.clone(),
                    });
                }
                out.push(SagaEvent::SagaStepStarted {
                    step: s.step_no,
                    name: s.name.clone(),
                    compensating: true,
                });
                if s.status != RowStatus::Compensating {
                    out.push(SagaEvent::SagaStepCompensated {
                        step: s.step_no,
                        refused: s.status == RowStatus::CompensationFailed,
                        error: s.error.clone(),
                        data: inst.data.clone(),
                    });
                }
            }
        }
    }
    // An instance that turned back without a failed step row (it failed before writing it).
    if inst.state == RowState::Compensating || inst.state == RowState::Compensated {
        let turned = steps
            .iter()
            .any(|s| s.step_no == inst.step && s.status != RowStatus::Succeeded);
        if !turned {
            out.push(SagaEvent::SagaStepFailed {
                step: inst.step,
                error: inst.error.clone(),
                data: inst.data.clone(),
            });
        }
    }
    match inst.state {
        RowState::Completed => out.push(SagaEvent::SagaCompleted {}),
        RowState::Compensated => out.push(SagaEvent::SagaCompensated {}),
        RowState::Running | RowState::Compensating => {}
    }
    out
}

/// Moves every order (and its saga and outbox rows) into the event store; returns how many
/// orders. Orders whose stream exists already are left alone.
pub async fn import<C: ConnectionTrait>(c: &C) -> Result<usize, DbErr> {
    let rows = order::Entity::find()
        .order_by_asc(order::Column::CreatedAt)
        .order_by_asc(order::Column::OrderId)
        .all(c)
        .await?;
    let mut moved = 0;
    for row in rows {
        if event_store::stream_exists(c, &row.order_id)
            .await
            .map_err(custom)?
        {
            continue;
        }
        let lines = order_line::Entity::find()
            .filter(order_line::Column::OrderId.eq(&row.order_id))
            .order_by_asc(order_line::Column::LineNo)
            .all(c)
            .await?;
        let status = OrderStatus::parse(&row.status).ok_or_else(|| {
            custom(format!(
                "order {}: unknown status {}",
                row.order_id, row.status
            ))
        })?;
        let mut events: Vec<NewEvent> = Vec::new();
        let placed = OrderEvent::OrderPlaced {
            customer_id: row.customer_id.clone(),
            currency: row.currency.clone(),
            total_minor: row.total_minor,
            lines: lines
                .iter()
                .map(|l| LineData {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price_minor,
                    line_total_minor: l.line_total_minor,
                })
                .collect(),
            address: AddressData {
                recipient: row.recipient.clone(),
                street: row.street.clone(),
                city: row.city.clone(),
                postal_code: row.postal_code.clone(),
                country_code: row.country_code.clone(),
            },
            card_token: row.card_token.clone(),
        };
        events.push(unpublished(placed.to_new()));
        let saga_id = crate::saga::OrderSaga::saga_id(&row.order_id);
        if let Some(inst) = instance::Entity::find_by_id(&saga_id).one(c).await? {
            let steps = step_row::Entity::find()
                .filter(step_row::Column::SagaId.eq(&saga_id))
                .order_by_asc(step_row::Column::StepNo)
                .all(c)
                .await?;
            events.extend(saga_events(&inst, &steps).iter().map(SagaEvent::to_new));
        }
        events.extend(
            path_to(status, &row.status_reason)
                .iter()
                .map(|e| unpublished(e.to_new())),
        );
        let meta = Metadata {
            correlation_id: row.order_id.clone(),
            causation_id: "import".into(),
            ..Metadata::default()
        };
        event_store::append_exclusive(c, &row.order_id, Expected::NoStream, &events, &meta)
            .await
            .map_err(custom)?;
        moved += 1;
    }
    ordermesh::events::outbox::published::move_table_outbox(c, "outbox").await?;
    Ok(moved)
}

fn unpublished(mut e: NewEvent) -> NewEvent {
    e.published = false;
    e
}
