//! The order service's read models, kept from its event store by the runtime's projector
//! (`ordermesh::data::projection`): `summaries` (ListOrders) and `stats` (GetOrderStats).

pub mod stats;
pub mod summaries;

use std::sync::Arc;

use ordermesh::data::projection::{Projection, Projector};
use sea_orm::DatabaseConnection;

/// The projector of this service's read models.
pub fn projector(db: DatabaseConnection) -> Projector {
    let all: Vec<Arc<dyn Projection>> =
        vec![Arc::new(summaries::Summaries), Arc::new(stats::Stats)];
    Projector::new(db, crate::aggregate::upcasters(), all)
}
