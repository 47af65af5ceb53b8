//! One SKU and quantity of a shipment, at its position in the request.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "shipping_shipment_items")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub shipment_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub position: i32,
    pub sku: String,
    pub quantity: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
