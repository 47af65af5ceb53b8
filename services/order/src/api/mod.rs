//! The gRPC face of orders: validates requests into domain types, runs them against the
//! store, tells WatchOrder streams about every change, and maps errors to `tonic::Status` in
//! one place.

use std::pin::Pin;
use std::sync::Arc;

use futures::{FutureExt, Stream};
use ordermesh::data::event_store::{Metadata, NewEvent};
use ordermesh::data::group_commit::GroupCommit;
use ordermesh::data::idempotency;
use ordermesh::proto::order::v1 as pb;
use ordermesh::proto::order::v1::order_service_server::OrderService;
use ordermesh::transport::shutdown::Drain;
use ordermesh::transport::watch::{Seen, Watch};
use ordermesh::types::ids::{CustomerId, OrderId};
use ordermesh::types::status::{invalid_argument, not_found};
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

use crate::domain::{self, OrderError, OrderStatus};
use crate::orders::{is_final, order_to_proto, OrderFeed, Orders};
use crate::saga::{OrderSaga, PlaceOrderData};
use crate::store::{self, Writer};

mod history;
mod reads;

/// Longest status reason a caller may give, in characters.
pub const MAX_REASON_CHARS: usize = 500;

impl From<OrderError> for Status {
    fn from(e: OrderError) -> Self {
        use OrderError::*;
        match &e {
            Invalid { field, rule } => invalid_argument(field, rule),
            NotFound(id) => not_found("order", id),
            IllegalTransition { id, from, to } => ordermesh::types::status::illegal_transition(
                "order",
                id,
                from,
                &format!("move to {to}"),
            ),
            Contended(_) => Status::aborted(e.to_string()),
        }
    }
}

pub(crate) fn status_from_proto(field: &str, v: i32) -> Result<OrderStatus, Status> {
    Ok(match pb::OrderStatus::try_from(v) {
        Ok(pb::OrderStatus::Pending) => OrderStatus::Pending,
        Ok(pb::OrderStatus::Confirmed) => OrderStatus::Confirmed,
        Ok(pb::OrderStatus::Rejected) => OrderStatus::Rejected,
        Ok(pb::OrderStatus::Cancelled) => OrderStatus::Cancelled,
        Ok(pb::OrderStatus::Shipped) => OrderStatus::Shipped,
        Ok(pb::OrderStatus::Delivered) => OrderStatus::Delivered,
        Ok(pb::OrderStatus::Unspecified) | Err(_) => {
            return Err(invalid_argument(
                field,
                format!("{v} is not an order status"),
            ))
        }
    })
}

#[derive(Clone)]
pub struct OrderApi {
    orders: Orders,
    drain: Drain,
    /// Runs the placement saga of each new order; without it orders stay PENDING.
    saga: Option<Arc<OrderSaga>>,
}

impl OrderApi {
    pub fn new(writes: GroupCommit, feed: OrderFeed, drain: Drain, writer: Writer) -> Self {
        Self {
            orders: Orders::new(writes, feed, writer),
            drain,
            saga: None,
        }
    }

    /// How this API moves orders (the saga and the event handlers move them the same way).
    pub fn orders(&self) -> &Orders {
        &self.orders
    }

    /// `Orders::advance` on this API's orders (fulfilment and tests move orders this way).
    pub async fn advance(
        &self,
        order_id: &OrderId,
        to: OrderStatus,
        reason: &str,
    ) -> Result<pb::Order, Status> {
        self.orders.advance(order_id, to, reason).await
    }

    /// Cancels an order. Placed through the saga, until its payment is captured, a PENDING order
    /// can be cancelled and its saga compensates; from then on the saga only goes forward, so
    /// the cancel is refused. The saga's steps are events of the order's stream, so the
    /// decision and the append are at one version: a step recorded in between makes the
    /// append lose, and the cancel is decided again on the order as it now is.
    async fn cancel_placed(
        &self,
        order_id: &OrderId,
        reason: &str,
    ) -> Result<(pb::Order, i64), Status> {
        let db_status = ordermesh::data::db_status;
        let meta = Metadata::current(order_id.as_str(), "CancelOrder", "");
        let (w, id, why, saga) = (
            self.orders.writer,
            order_id.clone(),
            reason.to_string(),
            self.saga.clone(),
        );
        let decided = self
            .orders
            .writes
            .write_with(move |txn| {
                async move {
                    store::change(txn, w, &id, &meta, |order| {
                        decide_cancel(order, &id, &why, saga.as_deref())
                    })
                    .await
                    .into()
                }
                .boxed()
            })
            .await
            .map_err(db_status)?;
        let (order, changed, position) = decided?;
        if !changed {
            return Ok((order_to_proto(&order), 0));
        }
        tracing::info!(order_id = %order_id, reason, "order cancelled");
        Ok((self.orders.changed(&order), position))
    }

    /// The same API, placing orders through `saga`.
    pub fn with_saga(mut self, saga: Arc<OrderSaga>) -> Self {
        self.saga = Some(saga);
        self
    }
}

/// Whether `order` may be cancelled now: placed through the saga, only while PENDING and before
/// its payment is captured; without one, whatever the status machine lets go.
fn decide_cancel(
    order: &crate::aggregate::Order,
    order_id: &OrderId,
    reason: &str,
    saga: Option<&OrderSaga>,
) -> Result<Option<crate::aggregate::OrderEvent>, Status> {
    let only_from = saga.map(|_| &[OrderStatus::Pending][..]);
    let past_capture = match (&order.saga, saga) {
        (Some(state), Some(saga)) => saga.def.has_passed(state, crate::saga::CAPTURE_PAYMENT),
        _ => false,
    };
    if past_capture {
        return Err(ordermesh::types::status::illegal_transition(
            "order",
            order_id.as_str(),
            order.status.as_str(),
            "cancel (its payment is captured; it can only go forward)",
        ));
    }
    Ok(order.decide_move(OrderStatus::Cancelled, reason, only_from)?)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let r = request.into_inner();
        let customer_id = CustomerId::parse(&r.customer_id)?;
        let lines = domain::parse_lines(&r.lines)?;
        let address =
            ordermesh::types::address::validate("shipping_address", r.shipping_address.as_ref())?;
        let card_token = domain::parse_card_token(&r.card_token)?;
        ordermesh::types::status::require_idempotency_key(&r.idempotency_key)?;
        let saga = self.saga.clone();
        let writer = self.orders.writer;
        let key = r.idempotency_key.clone();
        let response = idempotency::execute(
            &self.orders.writes,
            "order.place",
            &r.idempotency_key,
            &r,
            move |txn| {
                async move {
                    let order_id = OrderId::generate().into_string();
                    let placed = store::placed(customer_id.as_str(), &lines, &address, &card_token);
                    let mut new: Vec<NewEvent> = vec![placed.to_new()];
                    // The saga starts in the same append: one exists exactly when the other does.
                    if let Some(saga) = &saga {
                        let data = PlaceOrderData::from_placed(&order_id, &placed);
                        let events = saga
                            .def
                            .start_events(&OrderSaga::saga_id(&order_id), &data)
                            .map_err(ordermesh::types::status::db_error)?;
                        new.extend(events.iter().map(ordermesh::saga::SagaEvent::to_new));
                    }
                    let meta = Metadata::current(&order_id, "PlaceOrder", &key);
                    let (order, done) =
                        store::append(txn, writer, &order_id, None, &new, &meta).await?;
                    Ok(pb::PlaceOrderResponse {
                        order: Some(order_to_proto(&order)),
                        position: done.position,
                    })
                }
                .boxed()
            },
        )
        .await?;
        if let Some(o) = &response.order {
            tracing::info!(order_id = %o.order_id, customer_id = %o.customer_id, "order placed");
            self.orders.feed.publish(o.clone());
            self.orders.projector.poke();
            if let Some(saga) = &self.saga {
                saga.spawn_new(&o.order_id);
            }
        }
        Ok(Response::new(response))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        self.get_order_as_of(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let deadline = reads::wait_budget();
        self.list(request.into_inner(), deadline)
            .await
            .map(Response::new)
    }

    async fn list_order_events(
        &self,
        request: Request<pb::ListOrderEventsRequest>,
    ) -> Result<Response<pb::ListOrderEventsResponse>, Status> {
        self.history(request.into_inner()).await.map(Response::new)
    }

    async fn get_order_stats(
        &self,
        request: Request<pb::GetOrderStatsRequest>,
    ) -> Result<Response<pb::GetOrderStatsResponse>, Status> {
        let deadline = reads::wait_budget();
        self.stats(request.into_inner(), deadline)
            .await
            .map(Response::new)
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let r = request.into_inner();
        let order_id = OrderId::parse(&r.order_id)?;
        let reason = r.reason.trim();
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(invalid_argument(
                "reason",
                format!("must be at most {MAX_REASON_CHARS} characters"),
            ));
        }
        let reason = if reason.is_empty() {
            "cancelled by the customer"
        } else {
            reason
        };
        let (order, position) = self.cancel_placed(&order_id, reason).await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(order),
            position,
        }))
    }

    type WatchOrderStream = BoxStream<pb::WatchOrderResponse>;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let order_id = OrderId::parse(&request.into_inner().order_id)?;
        // Subscribe before reading, so no change between the read and the subscription is lost.
        let updates = self.orders.feed.subscribe();
        let current = order_to_proto(&store::get(self.orders.db(), &order_id).await?);
        let watch = OrderWatch {
            order_id,
            db: self.orders.db().clone(),
            last_version: 0,
        };
        let stream = updates.stream(watch, vec![current], self.drain.clone(), 16);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// One WatchOrder stream: the order's changes, each version once, until it is final.
struct OrderWatch {
    order_id: OrderId,
    db: DatabaseConnection,
    last_version: i64,
}

impl Watch<pb::Order> for OrderWatch {
    type Message = pb::WatchOrderResponse;

    fn update(&mut self, order: pb::Order) -> Seen<pb::Order> {
        if order.order_id == self.order_id.as_str() {
            Seen::Send(order)
        } else {
            Seen::Ignore
        }
    }

    async fn reread(&mut self) -> Result<Vec<pb::Order>, Status> {
        Ok(vec![order_to_proto(
            &store::get(&self.db, &self.order_id).await?,
        )])
    }

    fn message(&mut self, order: pb::Order) -> Option<pb::WatchOrderResponse> {
        // Versions only grow: anything not newer was sent already.
        (order.version > self.last_version).then(|| {
            self.last_version = order.version;
            pb::WatchOrderResponse { order: Some(order) }
        })
    }

    fn is_last(&self, order: &pb::Order) -> bool {
        is_final(order)
    }
}
