//! The gRPC face of shipping: validates requests into domain types, runs them against the
//! store, publishes tracking events to trackers, and maps errors to `tonic::Status` in one
//! place.

use std::pin::Pin;

use futures::{FutureExt, Stream};
use ordermesh::data::group_commit::GroupCommit;
use ordermesh::data::idempotency;
use ordermesh::proto::common::v1::{Money as PbMoney, SkuQuantity};
use ordermesh::proto::shipping::v1 as pb;
use ordermesh::proto::shipping::v1::shipping_service_server::ShippingService;
use ordermesh::transport::shutdown::Drain;
use ordermesh::transport::watch::{Seen, Watch, WatchFeed};
use ordermesh::types::status::{
    illegal_transition, invalid_argument, not_found, require_id, require_idempotency_key,
};
use ordermesh::types::time::{now, to_proto};
use sea_orm::{DatabaseConnection, TransactionTrait};
use tonic::{Code, Request, Response, Status};

use crate::domain::{self, NewShipment, ShipmentStatus, ShippingError};
use crate::store::{self, tracking_event, ShipmentView};

/// Note of a cancellation event when the request gives no reason.
pub const DEFAULT_CANCEL_NOTE: &str = "cancelled";

impl From<ShippingError> for Status {
    fn from(e: ShippingError) -> Self {
        use ShippingError::*;
        match &e {
            Invalid { field, rule } => invalid_argument(field, rule),
            ShipmentNotFound(id) => not_found("shipment", id),
            ShipmentExists(_) => Status::already_exists(e.to_string()),
            IllegalTransition { id, from, action } => {
                illegal_transition("shipment", id, from, action)
            }
            OrderClosed(_) => Status::failed_precondition(e.to_string()),
        }
    }
}

/// Fan-out of new tracking events to TrackShipment streams in this process (a `WatchFeed`
/// that counts its streams as trackers).
#[derive(Clone, Default)]
pub struct TrackingFeed {
    events: WatchFeed<tracking_event::Model>,
}

impl TrackingFeed {
    /// TrackShipment streams currently open; a stream whose client left is no longer counted.
    pub fn active_trackers(&self) -> usize {
        self.events.active_watchers()
    }
}

#[derive(Clone)]
pub struct ShippingApi {
    /// The service's database, whose keyed writes share commits through it.
    writes: GroupCommit,
    feed: TrackingFeed,
    drain: Drain,
}

impl ShippingApi {
    fn db(&self) -> &DatabaseConnection {
        self.writes.db()
    }

    pub fn new(writes: GroupCommit, feed: TrackingFeed, drain: Drain) -> Self {
        Self {
            writes,
            feed,
            drain,
        }
    }

    /// Tells trackers about a shipment's latest event after a committed change. Trackers
    /// drop events they already sent and fill gaps from the database, so announcing an
    /// event twice (a replayed request) or out of order is harmless.
    async fn announce(&self, shipment_id: &str) {
        if !self.feed.events.is_watched() {
            return;
        }
        if let Ok(Some(event)) = store::latest_event(self.db(), shipment_id).await {
            self.feed.events.publish(event);
        }
    }

    async fn create_once(
        &self,
        r: &pb::CreateShipmentRequest,
        new: &NewShipment,
    ) -> Result<pb::CreateShipmentResponse, Status> {
        let new = new.clone();
        idempotency::execute(
            &self.writes,
            "shipping.create",
            &r.idempotency_key,
            r,
            move |txn| {
                async move {
                    let view = store::create_shipment(txn, &new, now()).await?;
                    Ok(pb::CreateShipmentResponse {
                        shipment: Some(shipment_to_proto(&view)),
                    })
                }
                .boxed()
            },
        )
        .await
    }
}

fn status_to_proto(s: ShipmentStatus) -> pb::ShipmentStatus {
    match s {
        ShipmentStatus::Pending => pb::ShipmentStatus::Pending,
        ShipmentStatus::LabelCreated => pb::ShipmentStatus::LabelCreated,
        ShipmentStatus::PickedUp => pb::ShipmentStatus::PickedUp,
        ShipmentStatus::InTransit => pb::ShipmentStatus::InTransit,
        ShipmentStatus::OutForDelivery => pb::ShipmentStatus::OutForDelivery,
        ShipmentStatus::Delivered => pb::ShipmentStatus::Delivered,
        ShipmentStatus::Cancelled => pb::ShipmentStatus::Cancelled,
    }
}

fn status_from_proto(s: pb::ShipmentStatus) -> Option<ShipmentStatus> {
    Some(match s {
        pb::ShipmentStatus::Unspecified => return None,
        pb::ShipmentStatus::Pending => ShipmentStatus::Pending,
        pb::ShipmentStatus::LabelCreated => ShipmentStatus::LabelCreated,
        pb::ShipmentStatus::PickedUp => ShipmentStatus::PickedUp,
        pb::ShipmentStatus::InTransit => ShipmentStatus::InTransit,
        pb::ShipmentStatus::OutForDelivery => ShipmentStatus::OutForDelivery,
        pb::ShipmentStatus::Delivered => ShipmentStatus::Delivered,
        pb::ShipmentStatus::Cancelled => ShipmentStatus::Cancelled,
    })
}

fn event_status(e: &tracking_event::Model) -> ShipmentStatus {
    ShipmentStatus::parse(&e.status).unwrap_or(ShipmentStatus::Pending)
}

fn shipment_to_proto(v: &ShipmentView) -> pb::Shipment {
    let r = &v.row;
    pb::Shipment {
        shipment_id: r.shipment_id.clone(),
        order_id: r.order_id.clone(),
        address: Some(ordermesh::proto::common::v1::Address {
            recipient: r.recipient.clone(),
            street: r.street.clone(),
            city: r.city.clone(),
            postal_code: r.postal_code.clone(),
            country_code: r.country_code.clone(),
        }),
        items: v
            .items
            .iter()
            .map(|i| SkuQuantity {
                sku: i.sku.clone(),
                quantity: i32::try_from(i.quantity).unwrap_or(i32::MAX),
            })
            .collect(),
        status: status_to_proto(v.status()) as i32,
        tracking_number: r.tracking_number.clone(),
        cost: Some(PbMoney {
            currency_code: r.cost_currency.clone(),
            amount_minor: r.cost_minor,
        }),
        create_time: Some(to_proto(r.created_at)),
        update_time: Some(to_proto(r.updated_at)),
    }
}

fn event_to_proto(e: &tracking_event::Model) -> pb::TrackingEvent {
    pb::TrackingEvent {
        shipment_id: e.shipment_id.clone(),
        status: status_to_proto(event_status(e)) as i32,
        location: e.location.clone(),
        note: e.note.clone(),
        occur_time: Some(to_proto(e.occurred_at)),
    }
}

fn require_shipment_id(id: &str) -> Result<(), Status> {
    require_id("shipment_id", id)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// One TrackShipment stream: the shipment's events in order, each once, until a DELIVERED or
/// CANCELLED event was sent.
struct ShipmentTrack {
    shipment_id: String,
    db: DatabaseConnection,
    /// `seq` of the last event sent.
    last: i64,
}

impl Watch<tracking_event::Model> for ShipmentTrack {
    type Message = pb::TrackShipmentResponse;

    fn update(&mut self, e: tracking_event::Model) -> Seen<tracking_event::Model> {
        if e.shipment_id != self.shipment_id || e.seq <= self.last {
            Seen::Ignore
        } else if e.seq == self.last + 1 {
            Seen::Send(e)
        } else {
            // A gap (an announcement overtook another): catch up from the database.
            Seen::Gap
        }
    }

    async fn reread(&mut self) -> Result<Vec<tracking_event::Model>, Status> {
        Ok(store::events_after(&self.db, &self.shipment_id, self.last).await?)
    }

    fn message(&mut self, e: tracking_event::Model) -> Option<pb::TrackShipmentResponse> {
        if e.seq <= self.last {
            return None;
        }
        self.last = e.seq;
        Some(pb::TrackShipmentResponse {
            tracking_event: Some(event_to_proto(&e)),
        })
    }

    fn is_last(&self, e: &tracking_event::Model) -> bool {
        event_status(e).is_terminal()
    }
}

#[tonic::async_trait]
impl ShippingService for ShippingApi {
    async fn get_quote(
        &self,
        request: Request<pb::GetQuoteRequest>,
    ) -> Result<Response<pb::GetQuoteResponse>, Status> {
        let r = request.into_inner();
        let (_, _, quote) = domain::quote(r.address.as_ref(), &r.items, &r.currency_code)?;
        Ok(Response::new(pb::GetQuoteResponse {
            quote: Some(pb::Quote {
                cost: Some(quote.cost.to_proto()),
                estimated_days: quote.estimated_days,
            }),
        }))
    }

    async fn create_shipment(
        &self,
        request: Request<pb::CreateShipmentRequest>,
    ) -> Result<Response<pb::CreateShipmentResponse>, Status> {
        let r = request.into_inner();
        require_id("order_id", &r.order_id)?;
        require_idempotency_key(&r.idempotency_key)?;
        let (address, items, quote) =
            domain::quote(r.address.as_ref(), &r.items, &r.currency_code)?;
        let new = NewShipment {
            order_id: r.order_id.clone(),
            address,
            items,
            quote,
        };
        let response = match self.create_once(&r, &new).await {
            // A concurrent request with the same key may have created the order's shipment
            // while this one ran: once more, and the stored reply is replayed.
            Err(e) if e.code() == Code::AlreadyExists => self.create_once(&r, &new).await,
            other => other,
        }?;
        if let Some(s) = &response.shipment {
            tracing::info!(shipment_id = %s.shipment_id, order_id = %s.order_id, "shipment created");
            self.announce(&s.shipment_id).await;
        }
        Ok(Response::new(response))
    }

    async fn get_shipment(
        &self,
        request: Request<pb::GetShipmentRequest>,
    ) -> Result<Response<pb::GetShipmentResponse>, Status> {
        let id = &request.get_ref().shipment_id;
        require_shipment_id(id)?;
        let view = store::get_shipment(self.db(), id)
            .await?
            .ok_or_else(|| not_found("shipment", id))?;
        Ok(Response::new(pb::GetShipmentResponse {
            shipment: Some(shipment_to_proto(&view)),
        }))
    }

    async fn list_shipments(
        &self,
        request: Request<pb::ListShipmentsRequest>,
    ) -> Result<Response<pb::ListShipmentsResponse>, Status> {
        let r = request.into_inner();
        let order_id = if r.order_id.is_empty() {
            None
        } else {
            require_id("order_id", &r.order_id)?;
            Some(r.order_id.as_str())
        };
        let filter = format!("order={}", r.order_id);
        let page = ordermesh::types::pagination::Page::parse(r.page_size, &r.page_token, &filter)?;
        let mut rows =
            store::list_shipments(self.db(), order_id, page.offset, page.fetch_limit()).await?;
        let next_page_token = page.next_token(rows.len(), &filter);
        rows.truncate(page.size as usize);
        Ok(Response::new(pb::ListShipmentsResponse {
            shipments: rows.iter().map(shipment_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn cancel_shipment(
        &self,
        request: Request<pb::CancelShipmentRequest>,
    ) -> Result<Response<pb::CancelShipmentResponse>, Status> {
        let r = request.into_inner();
        let by_order = match (r.shipment_id.is_empty(), r.order_id.is_empty()) {
            (false, true) => {
                require_shipment_id(&r.shipment_id)?;
                false
            }
            (true, false) => {
                ordermesh::types::ids::OrderId::parse(&r.order_id)?;
                true
            }
            (true, true) => {
                return Err(
                    ShippingError::invalid("shipment_id", "give shipment_id or order_id").into(),
                )
            }
            (false, false) => {
                return Err(ShippingError::invalid(
                    "order_id",
                    "give shipment_id or order_id, not both",
                )
                .into())
            }
        };
        require_idempotency_key(&r.idempotency_key)?;
        domain::check_text("reason", &r.reason)?;
        let reason = r.reason.trim();
        let note = if reason.is_empty() {
            DEFAULT_CANCEL_NOTE.to_string()
        } else {
            reason.to_string()
        };
        let id = r.shipment_id.clone();
        let order_id = r.order_id.clone();
        let response = idempotency::execute(
            &self.writes,
            "shipping.cancel",
            &r.idempotency_key,
            &r,
            move |txn| {
                async move {
                    if by_order {
                        let views = store::cancel_order(txn, &order_id, &note, now()).await?;
                        return Ok(pb::CancelShipmentResponse {
                            shipment: None,
                            shipments: views.iter().map(shipment_to_proto).collect(),
                        });
                    }
                    let (view, _) = store::cancel(txn, &id, &note, now()).await?;
                    Ok(pb::CancelShipmentResponse {
                        shipment: Some(shipment_to_proto(&view)),
                        shipments: Vec::new(),
                    })
                }
                .boxed()
            },
        )
        .await?;
        let cancelled: Vec<String> = response
            .shipment
            .iter()
            .chain(response.shipments.iter())
            .map(|s| s.shipment_id.clone())
            .collect();
        tracing::info!(shipments = ?cancelled, order_id = %r.order_id, "shipments cancelled");
        for id in &cancelled {
            self.announce(id).await;
        }
        Ok(Response::new(response))
    }

    async fn record_tracking_event(
        &self,
        request: Request<pb::RecordTrackingEventRequest>,
    ) -> Result<Response<pb::RecordTrackingEventResponse>, Status> {
        let r = request.into_inner();
        require_shipment_id(&r.shipment_id)?;
        let to = match pb::ShipmentStatus::try_from(r.status)
            .ok()
            .and_then(status_from_proto)
        {
            None => {
                return Err(invalid_argument(
                    "status",
                    "must be the status the shipment moves to",
                ))
            }
            Some(ShipmentStatus::Cancelled) => {
                return Err(invalid_argument(
                    "status",
                    "CANCELLED is not a tracking event; use CancelShipment",
                ))
            }
            Some(s) => s,
        };
        domain::check_text("location", &r.location)?;
        domain::check_text("note", &r.note)?;
        let txn = self
            .db()
            .begin()
            .await
            .map_err(ordermesh::data::db_status)?;
        let (view, event) =
            store::advance(&txn, &r.shipment_id, to, &r.location, &r.note, now()).await?;
        txn.commit().await.map_err(ordermesh::data::db_status)?;
        tracing::info!(shipment_id = %r.shipment_id, status = to.as_str(), "tracking event recorded");
        self.feed.events.publish(event);
        Ok(Response::new(pb::RecordTrackingEventResponse {
            shipment: Some(shipment_to_proto(&view)),
        }))
    }

    type TrackShipmentStream = BoxStream<pb::TrackShipmentResponse>;

    async fn track_shipment(
        &self,
        request: Request<pb::TrackShipmentRequest>,
    ) -> Result<Response<Self::TrackShipmentStream>, Status> {
        let id = request.into_inner().shipment_id;
        require_shipment_id(&id)?;
        // Subscribe before reading, so no event between the read and the subscription is lost.
        let updates = self.feed.events.subscribe();
        if store::get_shipment(self.db(), &id).await?.is_none() {
            return Err(not_found("shipment", &id));
        }
        let history = store::events_after(self.db(), &id, 0).await?;
        let track = ShipmentTrack {
            shipment_id: id,
            db: self.db().clone(),
            last: 0,
        };
        let stream = updates.stream(track, history, self.drain.clone(), 64);
        Ok(Response::new(Box::pin(stream)))
    }
}
