//! A shipment; `live_order_id` is the order id while the shipment is not cancelled and NULL
//! once it is, and a unique index on it keeps one live shipment per order.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "shipping_shipments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub shipment_id: String,
    pub order_id: String,
    pub live_order_id: Option<String>,
    pub status: String,
    pub tracking_number: String,
    pub recipient: String,
    pub street: String,
    pub city: String,
    pub postal_code: String,
    pub country_code: String,
    pub cost_currency: String,
    pub cost_minor: i64,
    pub estimated_days: i32,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
