//! A trivial inventory backend for the gateway benchmark (`scripts/bench-gateway.sh`, the
//! default backend there): `CreateItem` keeps the item in memory and `GetItem` answers it from
//! there, over plaintext gRPC on a bare tonic server with reflection, so what the benchmark
//! measures is the gateways in front of it, not a database read behind them. Every other
//! method answers UNIMPLEMENTED: nothing but the benchmark calls this.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use clap::Parser;
use futures::Stream;
use ordermesh::proto::inventory::v1 as pb;
use ordermesh::proto::inventory::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use tonic::{Request, Response, Status, Streaming};

#[derive(Parser, Debug)]
#[command(
    about = "an in-memory InventoryService (CreateItem, GetItem) to benchmark gateways against"
)]
struct Args {
    /// Where to serve plaintext gRPC.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
}

#[derive(Default)]
struct Items(Arc<RwLock<HashMap<String, pb::Item>>>);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn not_here(method: &str) -> Status {
    Status::unimplemented(format!(
        "{method} is not served by the benchmark backend (only CreateItem and GetItem)"
    ))
}

#[tonic::async_trait]
impl InventoryService for Items {
    async fn create_item(
        &self,
        request: Request<pb::CreateItemRequest>,
    ) -> Result<Response<pb::CreateItemResponse>, Status> {
        let r = request.into_inner();
        if r.sku.is_empty() {
            return Err(Status::invalid_argument("sku: required"));
        }
        let item = pb::Item {
            sku: r.sku.clone(),
            name: r.name,
            price: r.price,
            on_hand: r.initial_stock,
            reserved: 0,
            available: r.initial_stock,
            low_stock_threshold: r.low_stock_threshold,
            update_time: Some(ordermesh::types::time::to_proto(
                ordermesh::types::time::now(),
            )),
        };
        let mut items = self
            .0
            .write()
            .map_err(|_| Status::internal("the item map is poisoned"))?;
        if items.contains_key(&r.sku) {
            return Err(Status::already_exists(format!("item {} exists", r.sku)));
        }
        items.insert(r.sku, item.clone());
        Ok(Response::new(pb::CreateItemResponse { item: Some(item) }))
    }

    async fn get_item(
        &self,
        request: Request<pb::GetItemRequest>,
    ) -> Result<Response<pb::GetItemResponse>, Status> {
        let sku = &request.get_ref().sku;
        let item = self
            .0
            .read()
            .map_err(|_| Status::internal("the item map is poisoned"))?
            .get(sku)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("item {sku} not found")))?;
        Ok(Response::new(pb::GetItemResponse { item: Some(item) }))
    }

    async fn list_items(
        &self,
        _: Request<pb::ListItemsRequest>,
    ) -> Result<Response<pb::ListItemsResponse>, Status> {
        Err(not_here("ListItems"))
    }

    async fn adjust_stock(
        &self,
        _: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        Err(not_here("AdjustStock"))
    }

    type WatchStockStream = BoxStream<pb::WatchStockResponse>;

    async fn watch_stock(
        &self,
        _: Request<pb::WatchStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        Err(not_here("WatchStock"))
    }

    async fn import_stock(
        &self,
        _: Request<Streaming<pb::ImportStockRequest>>,
    ) -> Result<Response<pb::ImportStockResponse>, Status> {
        Err(not_here("ImportStock"))
    }

    type SyncStockStream = BoxStream<pb::SyncStockResponse>;

    async fn sync_stock(
        &self,
        _: Request<Streaming<pb::SyncStockRequest>>,
    ) -> Result<Response<Self::SyncStockStream>, Status> {
        Err(not_here("SyncStock"))
    }

    async fn reserve_stock(
        &self,
        _: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        Err(not_here("ReserveStock"))
    }

    async fn get_reservation(
        &self,
        _: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        Err(not_here("GetReservation"))
    }

    async fn release_reservation(
        &self,
        _: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        Err(not_here("ReleaseReservation"))
    }

    async fn commit_reservation(
        &self,
        _: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        Err(not_here("CommitReservation"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ordermesh::proto::FILE_DESCRIPTOR_SET)
            .with_service_name("ordermesh.inventory.v1.InventoryService")
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    // Small answers go out at once, as the services' (and Go's) do.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |c| {
            c.inspect(|tcp| {
                let _ = tcp.set_nodelay(true);
            })
        },
    );
    tonic::transport::Server::builder()
        .add_service(InventoryServiceServer::new(Items::default()))
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .serve_with_incoming_shutdown(incoming, ordermesh::transport::shutdown::signal())
        .await?;
    Ok(())
}
