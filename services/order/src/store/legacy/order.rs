//! An order: who, where, how much, and where it is in its life cycle.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "order_orders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub order_id: String,
    pub customer_id: String,
    pub status: String,
    pub status_reason: String,
    pub currency: String,
    pub total_minor: i64,
    pub recipient: String,
    pub street: String,
    pub city: String,
    pub postal_code: String,
    pub country_code: String,
    pub card_token: String,
    /// Incremented on every change; updates are conditional on the version they read.
    pub version: i64,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
