//! One tracking event of a shipment; `seq` numbers a shipment's events from 1.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "shipping_tracking_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub shipment_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub status: String,
    pub location: String,
    pub note: String,
    pub occurred_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
