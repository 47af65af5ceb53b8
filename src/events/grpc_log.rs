//! The broker-less transport: a consumer of a producer's own `EventLogService/Subscribe`
//! stream. It subscribes after its checkpoint, applies each event through the inbox, and
//! resumes from the checkpoint when the stream ends or fails.

use std::time::Duration;

use futures::StreamExt;
use sea_orm::DatabaseConnection;

use crate::events::inbox::{
    apply_once, checkpoint_of, dead_letter, Applied, Handler, HandlerError, MAX_ATTEMPTS,
};
use crate::proto::events::v1 as pb;
use crate::transport::client::MeshChannel;
use crate::transport::shutdown::Drain;

/// One consumer of one producer's gRPC log.
pub struct Subscription {
    /// Consumer name, e.g. `order`.
    pub consumer: String,
    /// Producer name, e.g. `shipping`.
    pub producer: String,
    /// Event types to receive; empty for all.
    pub types: Vec<String>,
    pub channel: MeshChannel,
}

/// Applies one event exactly once. Returns whether the handler ran (false for a repeat).
async fn apply(
    db: &DatabaseConnection,
    sub: &Subscription,
    handler: &dyn Handler,
    event: &pb::EventEnvelope,
) -> Result<bool, String> {
    let mut last_error = String::new();
    for attempt in 0..MAX_ATTEMPTS {
        match apply_once(db, &sub.consumer, &sub.producer, handler, event).await {
            Ok(Applied::Now) => return Ok(true),
            Ok(Applied::Before) => return Ok(false),
            Err(HandlerError::Retry(e)) => {
                // Not dead-lettered: the stream is resumed from the checkpoint after a pause.
                return Err(format!("event {} not applied yet: {e}", event.event_id));
            }
            Err(HandlerError::Poison(e)) => {
                tracing::warn!(consumer = %sub.consumer, event_id = %event.event_id, attempt, error = %e, "event handler failed");
                last_error = e;
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        }
    }
    // A poison message: park it in the inbox with its error and move on.
    tracing::error!(consumer = %sub.consumer, event_id = %event.event_id, error = %last_error, "event dead-lettered");
    dead_letter(db, &sub.consumer, &sub.producer, event, &last_error)
        .await
        .map_err(|e| e.to_string())?;
    Ok(false)
}

/// Consumes `sub` until `drain` starts: subscribes after the checkpoint, applies each event,
/// and reconnects with back-off when the stream ends or fails.
pub async fn run(
    db: DatabaseConnection,
    sub: Subscription,
    handler: std::sync::Arc<dyn Handler>,
    drain: Drain,
) {
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let attempt = async {
            let from = checkpoint_of(&db, &sub.consumer, &sub.producer)
                .await
                .map_err(|e| e.to_string())?;
            let mut client =
                pb::event_log_service_client::EventLogServiceClient::new(sub.channel.clone());
            let mut stream = client
                .subscribe(pb::SubscribeRequest {
                    from_sequence: (from + 1) as u64,
                    types: sub.types.clone(),
                })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            while let Some(msg) = stream.next().await {
                let event = msg.map_err(|e| e.to_string())?.event.unwrap_or_default();
                apply(&db, &sub, handler.as_ref(), &event).await?;
            }
            Ok::<(), String>(())
        };
        tokio::select! {
            r = attempt => {
                if let Err(e) = r {
                    tracing::info!(consumer = %sub.consumer, producer = %sub.producer, error = %e, "event stream interrupted; resuming");
                } else {
                    backoff.reset();
                }
            }
            _ = drain.draining() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_wait()) => {}
            _ = drain.draining() => return,
        }
    }
}
