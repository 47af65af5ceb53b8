//! The gRPC face of orders: validates requests into domain types, runs them against the
//! store, tells WatchOrder streams about every change, and maps errors to `tonic::Status` in
//! one place.

use std::pin::Pin;
use std::sync::Arc;

use futures::{FutureExt, Stream};
use ordermesh::data::idempotency;
use ordermesh::proto::order::v1 as pb;
use ordermesh::proto::order::v1::order_service_server::OrderService;
use ordermesh::transport::shutdown::Drain;
use ordermesh::transport::watch::{Seen, Watch};
use ordermesh::types::ids::{CustomerId, OrderId};
use ordermesh::types::status::{invalid_argument, not_found};
use ordermesh::types::time::{now, to_proto};
use sea_orm::{DatabaseConnection, TransactionTrait};
use tonic::{Request, Response, Status};

use crate::domain::{self, OrderError, OrderStatus};
use crate::orders::{is_final, move_order_from, order_to_proto, OrderFeed, Orders};
use crate::saga::{OrderSaga, PlaceOrderData};
use crate::store::{self, NewOrder, OrderView};

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

fn status_from_proto(field: &str, v: i32) -> Result<OrderStatus, Status> {
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
    pub fn new(db: DatabaseConnection, feed: OrderFeed, drain: Drain) -> Self {
        Self {
            orders: Orders::new(db, feed),
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

    /// Cancels an order placed through the saga. Until its payment is captured, a PENDING order
    /// can be cancelled and its saga compensates; from then on the saga only goes forward, so
    /// the cancel is refused. The saga instance row is locked while deciding, and the saga
    /// updates that row when it moves to the next step, so the two cannot cross.
    async fn cancel_placed(&self, order_id: &OrderId, reason: &str) -> Result<pb::Order, Status> {
        use sea_orm::{EntityTrait, QuerySelect};
        let db_status = ordermesh::data::db_status;
        let txn = self.orders.db.begin().await.map_err(db_status)?;
        let instance =
            ordermesh::saga::instance::Entity::find_by_id(OrderSaga::saga_id(order_id.as_str()))
                .lock_exclusive()
                .one(&txn)
                .await
                .map_err(db_status)?;
        let past_capture = match (&instance, &self.saga) {
            (Some(i), Some(saga)) => saga.def.has_passed(i, crate::saga::CAPTURE_PAYMENT),
            _ => false,
        };
        if past_capture {
            let current = store::get(&txn, order_id).await?;
            return Err(ordermesh::types::status::illegal_transition(
                "order",
                order_id.as_str(),
                current.status().as_str(),
                "cancel (its payment is captured; it can only go forward)",
            ));
        }
        let (view, changed) = move_order_from(
            &txn,
            order_id,
            OrderStatus::Cancelled,
            reason,
            Some(&[OrderStatus::Pending]),
        )
        .await?;
        txn.commit().await.map_err(db_status)?;
        let order = order_to_proto(&view);
        if changed {
            tracing::info!(order_id = %order_id, reason, "order cancelled");
            self.orders.feed.publish(order.clone());
        }
        Ok(order)
    }

    /// The same API, placing orders through `saga`.
    pub fn with_saga(mut self, saga: Arc<OrderSaga>) -> Self {
        self.saga = Some(saga);
        self
    }

    /// The order with its saga's steps.
    async fn order_with_steps(&self, view: &OrderView) -> Result<pb::Order, Status> {
        let mut order = order_to_proto(view);
        let steps = ordermesh::saga::Saga::<PlaceOrderData>::steps(
            &self.orders.db,
            &OrderSaga::saga_id(&view.row.order_id),
        )
        .await
        .map_err(ordermesh::types::status::db_error)?;
        order.saga_steps = steps
            .into_iter()
            .map(|s| pb::SagaStep {
                name: s.name,
                status: s.status.as_str().to_string(),
                attempts: s.attempts,
                error: s.error,
                update_time: Some(to_proto(s.updated_at)),
            })
            .collect();
        Ok(order)
    }
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
        let response = idempotency::execute(
            &self.orders.db,
            "order.place",
            &r.idempotency_key,
            &r,
            move |txn| {
                async move {
                    let view = store::insert(
                        txn,
                        NewOrder {
                            customer_id: &customer_id,
                            lines: &lines,
                            address: &address,
                            card_token: &card_token,
                        },
                        now(),
                    )
                    .await?;
                    // The saga is recorded with the order: one exists exactly when the other does.
                    if let Some(saga) = &saga {
                        saga.def
                            .start_in(
                                txn,
                                &OrderSaga::saga_id(&view.row.order_id),
                                &PlaceOrderData::from_view(&view),
                            )
                            .await
                            .map_err(ordermesh::types::status::db_error)?;
                    }
                    Ok(pb::PlaceOrderResponse {
                        order: Some(order_to_proto(&view)),
                    })
                }
                .boxed()
            },
        )
        .await?;
        if let Some(o) = &response.order {
            tracing::info!(order_id = %o.order_id, customer_id = %o.customer_id, "order placed");
            self.orders.feed.publish(o.clone());
            if let Some(saga) = &self.saga {
                saga.spawn(&o.order_id);
            }
        }
        Ok(Response::new(response))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let id = OrderId::parse(&request.get_ref().order_id)?;
        let view = store::get(&self.orders.db, &id).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(self.order_with_steps(&view).await?),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let r = request.into_inner();
        let customer = if r.customer_id.is_empty() {
            None
        } else {
            Some(CustomerId::parse(&r.customer_id)?)
        };
        if r.statuses.len() > OrderStatus::ALL.len() {
            return Err(invalid_argument(
                "statuses",
                format!("must name at most {} statuses", OrderStatus::ALL.len()),
            ));
        }
        let mut statuses = Vec::with_capacity(r.statuses.len());
        for (i, s) in r.statuses.iter().enumerate() {
            let s = status_from_proto(&format!("statuses[{i}]"), *s)?;
            if !statuses.contains(&s) {
                statuses.push(s);
            }
        }
        let mut names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        names.sort_unstable();
        let filter = format!("customer={};statuses={}", r.customer_id, names.join(","));
        let page = ordermesh::types::pagination::Page::parse(r.page_size, &r.page_token, &filter)?;
        let mut views = store::list(
            &self.orders.db,
            customer.as_ref(),
            &statuses,
            page.offset,
            page.fetch_limit(),
        )
        .await?;
        let next_page_token = page.next_token(views.len(), &filter);
        views.truncate(page.size as usize);
        Ok(Response::new(pb::ListOrdersResponse {
            orders: views.iter().map(order_to_proto).collect(),
            next_page_token,
        }))
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
        let order = match &self.saga {
            None => {
                self.orders
                    .advance(&order_id, OrderStatus::Cancelled, reason)
                    .await?
            }
            Some(_) => self.cancel_placed(&order_id, reason).await?,
        };
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(order),
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
        let current = order_to_proto(&store::get(&self.orders.db, &order_id).await?);
        let watch = OrderWatch {
            order_id,
            db: self.orders.db.clone(),
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
