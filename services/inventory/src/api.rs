//! The gRPC face of inventory: validates requests into domain types, runs them against the
//! store, publishes stock changes to watchers, and maps errors to `tonic::Status` in one place.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use ordermesh::data::group_commit::GroupCommit;
use ordermesh::data::idempotency;
use ordermesh::proto::common::v1::{Money as PbMoney, SkuQuantity};
use ordermesh::proto::inventory::v1 as pb;
use ordermesh::proto::inventory::v1::inventory_service_server::InventoryService;
use ordermesh::transport::shutdown::Drain;
use ordermesh::transport::watch::{Seen, Watch, WatchFeed};
use ordermesh::types::status::{illegal_transition, invalid_argument, not_found};
use ordermesh::types::time::{now, to_proto};
use sea_orm::{DatabaseConnection, TransactionTrait};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::domain::{self, InventoryError, Sku};
use crate::store::{self, item, ReservationView, StoreError};

/// Most SKUs one WatchStock call may follow.
pub const MAX_WATCHED_SKUS: usize = 100;
/// Reservation lifetime when the request gives none.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(900);

impl From<InventoryError> for Status {
    fn from(e: InventoryError) -> Self {
        use InventoryError::*;
        match &e {
            Invalid { field, rule } => invalid_argument(field, rule),
            ItemNotFound(sku) => not_found("item", sku),
            ReservationNotFound(order) => not_found("reservation", order),
            ItemExists(_) | ReservationExists(_) => Status::already_exists(e.to_string()),
            InsufficientStock { .. } | BelowReserved { .. } | ReleasedBeforeReserved(_) => {
                Status::failed_precondition(e.to_string())
            }
            IllegalTransition {
                order_id,
                from,
                action,
            } => illegal_transition("reservation", order_id, from, action),
        }
    }
}

/// Fan-out of stock level changes to WatchStock streams in this process.
pub type StockFeed = WatchFeed<pb::StockLevel>;

/// Tells watchers the stock levels of `items`, as committed.
fn publish_levels(feed: &StockFeed, items: &[item::Model]) {
    for i in items {
        feed.publish(stock_level(i));
    }
}

#[derive(Clone)]
pub struct InventoryApi {
    /// The service's database, whose keyed writes share commits through it.
    writes: GroupCommit,
    feed: StockFeed,
    drain: Drain,
}

impl InventoryApi {
    fn db(&self) -> &DatabaseConnection {
        self.writes.db()
    }

    pub fn new(writes: GroupCommit, feed: StockFeed, drain: Drain) -> Self {
        Self {
            writes,
            feed,
            drain,
        }
    }

    /// Re-reads the given SKUs after a committed change and tells watchers.
    async fn announce(&self, skus: impl IntoIterator<Item = String>) {
        let skus: Vec<String> = skus.into_iter().collect();
        if skus.is_empty() || !self.feed.is_watched() {
            return;
        }
        if let Ok(items) = store::find_items(self.db(), &skus).await {
            publish_levels(&self.feed, &items);
        }
    }

    /// Expires due reservations; returns how many it expired. Runs periodically from `App`.
    pub async fn expire_due(&self) -> Result<usize, StoreError> {
        let now = now();
        let due = store::due_for_expiry(self.db(), now).await?;
        let mut n = 0;
        for order_id in due {
            let txn = self.db().begin().await?;
            let expired = store::expire(&txn, &order_id, now).await?;
            txn.commit().await?;
            if let Some(view) = expired {
                n += 1;
                tracing::info!(order_id, "reservation expired");
                self.announce(view.lines.into_iter().map(|l| l.sku)).await;
            }
        }
        Ok(n)
    }
}

fn item_to_proto(m: &item::Model) -> pb::Item {
    pb::Item {
        sku: m.sku.clone(),
        name: m.name.clone(),
        price: Some(PbMoney {
            currency_code: m.price_currency.clone(),
            amount_minor: m.price_minor,
        }),
        on_hand: m.on_hand,
        reserved: m.reserved,
        available: m.on_hand - m.reserved,
        low_stock_threshold: m.low_stock_threshold,
        update_time: Some(to_proto(m.updated_at)),
    }
}

fn stock_level(m: &item::Model) -> pb::StockLevel {
    pb::StockLevel {
        sku: m.sku.clone(),
        on_hand: m.on_hand,
        reserved: m.reserved,
        available: m.on_hand - m.reserved,
        update_time: Some(to_proto(m.updated_at)),
    }
}

fn reservation_to_proto(v: &ReservationView) -> pb::Reservation {
    let status = match v.status() {
        domain::ReservationStatus::Reserved => pb::ReservationStatus::Reserved,
        domain::ReservationStatus::Released => pb::ReservationStatus::Released,
        domain::ReservationStatus::Committed => pb::ReservationStatus::Committed,
        domain::ReservationStatus::Expired => pb::ReservationStatus::Expired,
    };
    pb::Reservation {
        order_id: v.row.order_id.clone(),
        lines: v
            .lines
            .iter()
            .map(|l| SkuQuantity {
                sku: l.sku.clone(),
                quantity: l.quantity as i32,
            })
            .collect(),
        status: status as i32,
        expire_time: Some(to_proto(v.row.expires_at)),
        create_time: Some(to_proto(v.row.created_at)),
    }
}

fn require_order_id(order_id: &str) -> Result<(), Status> {
    ordermesh::types::status::require_id("order_id", order_id)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn create_item(
        &self,
        request: Request<pb::CreateItemRequest>,
    ) -> Result<Response<pb::CreateItemResponse>, Status> {
        let r = request.into_inner();
        let new = domain::NewItem::parse(
            &r.sku,
            &r.name,
            r.price.as_ref(),
            r.initial_stock,
            r.low_stock_threshold,
        )?;
        let row = store::insert_item(self.db(), &new, now()).await?;
        self.announce([row.sku.clone()]).await;
        Ok(Response::new(pb::CreateItemResponse {
            item: Some(item_to_proto(&row)),
        }))
    }

    async fn get_item(
        &self,
        request: Request<pb::GetItemRequest>,
    ) -> Result<Response<pb::GetItemResponse>, Status> {
        let sku = Sku::parse(&request.get_ref().sku)?;
        let row = store::get_item(self.db(), &sku).await?;
        Ok(Response::new(pb::GetItemResponse {
            item: Some(item_to_proto(&row)),
        }))
    }

    async fn list_items(
        &self,
        request: Request<pb::ListItemsRequest>,
    ) -> Result<Response<pb::ListItemsResponse>, Status> {
        let r = request.into_inner();
        let filter = format!("low={}", r.low_stock_only);
        let page = ordermesh::types::pagination::Page::parse(r.page_size, &r.page_token, &filter)?;
        let mut rows =
            store::list_items(self.db(), r.low_stock_only, page.offset, page.fetch_limit()).await?;
        let next_page_token = page.next_token(rows.len(), &filter);
        rows.truncate(page.size as usize);
        Ok(Response::new(pb::ListItemsResponse {
            items: rows.iter().map(item_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        let r = request.into_inner();
        let sku = Sku::parse(&r.sku)?;
        if r.delta == 0 {
            return Err(invalid_argument("delta", "must not be zero"));
        }
        let txn = self
            .db()
            .begin()
            .await
            .map_err(ordermesh::data::db_status)?;
        let row = store::adjust_stock(&txn, &sku, r.delta, now()).await?;
        txn.commit().await.map_err(ordermesh::data::db_status)?;
        tracing::info!(sku = %sku, delta = r.delta, reason = %r.reason, "stock adjusted");
        publish_levels(&self.feed, std::slice::from_ref(&row));
        Ok(Response::new(pb::AdjustStockResponse {
            item: Some(item_to_proto(&row)),
        }))
    }

    type WatchStockStream = BoxStream<pb::WatchStockResponse>;

    async fn watch_stock(
        &self,
        request: Request<pb::WatchStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        let r = request.into_inner();
        if r.skus.is_empty() {
            return Err(invalid_argument("skus", "must name at least one SKU"));
        }
        if r.skus.len() > MAX_WATCHED_SKUS {
            return Err(invalid_argument(
                "skus",
                format!("must name at most {MAX_WATCHED_SKUS} SKUs"),
            ));
        }
        let mut wanted = HashSet::new();
        for (i, s) in r.skus.iter().enumerate() {
            Sku::parse(s).map_err(|e| Status::from(e.at(&format!("skus[{i}]."))))?;
            wanted.insert(s.clone());
        }
        let skus: Vec<String> = wanted.iter().cloned().collect();
        // Subscribe before reading, so no change between the read and the subscription is lost.
        let updates = self.feed.subscribe();
        let current = store::find_items(self.db(), &skus).await?;
        if let Some(missing) = skus.iter().find(|s| !current.iter().any(|i| &i.sku == *s)) {
            return Err(not_found("item", missing));
        }
        let watch = StockWatch {
            wanted,
            skus,
            db: self.db().clone(),
            last: HashMap::new(),
        };
        let first = current.iter().map(stock_level).collect();
        let stream = updates.stream(watch, first, self.drain.clone(), 64);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn import_stock(
        &self,
        request: Request<Streaming<pb::ImportStockRequest>>,
    ) -> Result<Response<pb::ImportStockResponse>, Status> {
        let mut stream = request.into_inner();
        let mut summary = pb::ImportStockResponse::default();
        let mut index = 0usize;
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            let outcome: Result<item::Model, Status> = async {
                let sku = Sku::parse(&msg.sku)?;
                if msg.delta == 0 {
                    return Err(invalid_argument("delta", "must not be zero"));
                }
                let txn = self
                    .db()
                    .begin()
                    .await
                    .map_err(ordermesh::data::db_status)?;
                let row = store::adjust_stock(&txn, &sku, msg.delta, now()).await?;
                txn.commit().await.map_err(ordermesh::data::db_status)?;
                Ok(row)
            }
            .await;
            match outcome {
                Ok(row) => {
                    summary.applied += 1;
                    publish_levels(&self.feed, std::slice::from_ref(&row));
                }
                Err(status) => {
                    summary.rejected += 1;
                    if summary.errors.len() < 100 {
                        summary.errors.push(format!(
                            "#{index} ({}): {}",
                            msg.sku,
                            status.message()
                        ));
                    }
                }
            }
            index += 1;
        }
        Ok(Response::new(summary))
    }

    type SyncStockStream = BoxStream<pb::SyncStockResponse>;

    async fn sync_stock(
        &self,
        request: Request<Streaming<pb::SyncStockRequest>>,
    ) -> Result<Response<Self::SyncStockStream>, Status> {
        let mut input = request.into_inner();
        let api = self.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    m = input.next() => m,
                };
                let msg = match msg {
                    None => return,
                    Some(Err(_)) => return,
                    Some(Ok(m)) => m,
                };
                let result: Result<(i64, item::Model), Status> = async {
                    let sku = Sku::parse(&msg.sku)?;
                    if msg.counted < 0 {
                        return Err(invalid_argument("counted", "must not be negative"));
                    }
                    if msg.counted > domain::MAX_STOCK {
                        return Err(invalid_argument("counted", "is too large"));
                    }
                    let txn = api.db().begin().await.map_err(ordermesh::data::db_status)?;
                    let out = store::set_on_hand(&txn, &sku, msg.counted, now()).await?;
                    txn.commit().await.map_err(ordermesh::data::db_status)?;
                    Ok(out)
                }
                .await;
                let reply = match result {
                    Ok((delta, row)) => {
                        publish_levels(&api.feed, std::slice::from_ref(&row));
                        pb::SyncStockResponse {
                            sku: row.sku,
                            delta,
                            on_hand: row.on_hand,
                            error: String::new(),
                        }
                    }
                    Err(status) => pb::SyncStockResponse {
                        sku: msg.sku,
                        delta: 0,
                        on_hand: 0,
                        error: status.message().to_string(),
                    },
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        let r = request.into_inner();
        require_order_id(&r.order_id)?;
        ordermesh::types::status::require_idempotency_key(&r.idempotency_key)?;
        let lines = domain::parse_lines(
            &r.lines
                .iter()
                .map(|l| (l.sku.clone(), l.quantity as i64))
                .collect::<Vec<_>>(),
        )?;
        let ttl = match r.ttl_seconds {
            0 => DEFAULT_RESERVATION_TTL,
            t if (1..=86_400).contains(&t) => Duration::from_secs(t as u64),
            _ => {
                return Err(invalid_argument(
                    "ttl_seconds",
                    "must be between 0 and 86400",
                ))
            }
        };
        let order_id = r.order_id.clone();
        let response = idempotency::execute(
            &self.writes,
            "inventory.reserve",
            &r.idempotency_key,
            &r,
            move |txn| {
                async move {
                    let now = now();
                    let expires = now + chrono::Duration::from_std(ttl).unwrap_or_default();
                    let view = store::reserve(txn, &order_id, &lines, expires, now).await?;
                    Ok(pb::ReserveStockResponse {
                        reservation: Some(reservation_to_proto(&view)),
                    })
                }
                .boxed()
            },
        )
        .await?;
        self.announce(lines_of(&response.reservation)).await;
        Ok(Response::new(response))
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        let order_id = &request.get_ref().order_id;
        require_order_id(order_id)?;
        let view = store::get_reservation(self.db(), order_id)
            .await?
            .ok_or_else(|| not_found("reservation", order_id))?;
        Ok(Response::new(pb::GetReservationResponse {
            reservation: Some(reservation_to_proto(&view)),
        }))
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        let r = request.into_inner();
        require_order_id(&r.order_id)?;
        ordermesh::types::status::require_idempotency_key(&r.idempotency_key)?;
        let order_id = r.order_id.clone();
        let response = idempotency::execute(
            &self.writes,
            "inventory.release",
            &r.idempotency_key,
            &r,
            move |txn| {
                async move {
                    let view = store::release(txn, &order_id, now()).await?;
                    Ok(pb::ReleaseReservationResponse {
                        reservation: Some(reservation_to_proto(&view)),
                    })
                }
                .boxed()
            },
        )
        .await?;
        self.announce(lines_of(&response.reservation)).await;
        Ok(Response::new(response))
    }

    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        let r = request.into_inner();
        require_order_id(&r.order_id)?;
        ordermesh::types::status::require_idempotency_key(&r.idempotency_key)?;
        let order_id = r.order_id.clone();
        let response = idempotency::execute(
            &self.writes,
            "inventory.commit",
            &r.idempotency_key,
            &r,
            move |txn| {
                async move {
                    let view = store::commit(txn, &order_id, now()).await?;
                    Ok(pb::CommitReservationResponse {
                        reservation: Some(reservation_to_proto(&view)),
                    })
                }
                .boxed()
            },
        )
        .await?;
        self.announce(lines_of(&response.reservation)).await;
        Ok(Response::new(response))
    }
}

fn lines_of(r: &Option<pb::Reservation>) -> Vec<String> {
    r.iter()
        .flat_map(|r| r.lines.iter().map(|l| l.sku.clone()))
        .collect()
}

/// One WatchStock stream: the levels of the wanted SKUs, each change once.
struct StockWatch {
    wanted: HashSet<String>,
    skus: Vec<String>,
    db: DatabaseConnection,
    /// The level last sent per SKU.
    last: HashMap<String, pb::StockLevel>,
}

impl Watch<pb::StockLevel> for StockWatch {
    type Message = pb::WatchStockResponse;

    fn update(&mut self, level: pb::StockLevel) -> Seen<pb::StockLevel> {
        if self.wanted.contains(&level.sku) {
            Seen::Send(level)
        } else {
            Seen::Ignore
        }
    }

    async fn reread(&mut self) -> Result<Vec<pb::StockLevel>, Status> {
        let items = store::find_items(&self.db, &self.skus).await?;
        Ok(items.iter().map(stock_level).collect())
    }

    fn message(&mut self, level: pb::StockLevel) -> Option<pb::WatchStockResponse> {
        if self.last.get(&level.sku) == Some(&level) {
            return None;
        }
        self.last.insert(level.sku.clone(), level.clone());
        Some(pb::WatchStockResponse {
            stock_level: Some(level),
        })
    }
}
