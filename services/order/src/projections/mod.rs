//! The order service's read models, kept from its event store by the runtime's projector
//! (`ordermesh::data::projection`): `summaries` (ListOrders) and `stats` (GetOrderStats).

pub mod stats;
pub mod summaries;

use std::sync::Arc;

use ordermesh::data::projection::{Projection, Projector};
use sea_orm::DatabaseConnection;

/// A column or table name for sea-query.
pub(crate) fn a(s: &str) -> sea_orm::sea_query::Alias {
    sea_orm::sea_query::Alias::new(s)
}

/// The table `base` as a projection writes it: live (`suffix` empty) or its shadow.
pub(crate) fn t(base: &str, suffix: &str) -> sea_orm::sea_query::Alias {
    sea_orm::sea_query::Alias::new(format!("{base}{suffix}"))
}

/// The projector of this service's read models.
pub fn projector(db: DatabaseConnection) -> Projector {
    let all: Vec<Arc<dyn Projection>> =
        vec![Arc::new(summaries::Summaries), Arc::new(stats::Stats)];
    Projector::new(db, crate::aggregate::upcasters(), all)
}
