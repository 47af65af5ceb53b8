//! The tables sagas were kept in before they became events (`saga_instances`, `saga_steps`).
//! Nothing writes them any more; a service that kept sagas there reads them once, when it
//! moves its instances into its event store (the order service's start-up import). States
//! are stored as their upper-case names.

use sea_orm::sea_query::StringLen;

/// Where an instance stood, as the table stored it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum RowState {
    #[sea_orm(string_value = "RUNNING")]
    Running,
    #[sea_orm(string_value = "COMPENSATING")]
    Compensating,
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    #[sea_orm(string_value = "COMPENSATED")]
    Compensated,
}

/// Where a step stood, as the table stored it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(24))")]
pub enum RowStatus {
    #[sea_orm(string_value = "STARTED")]
    Started,
    #[sea_orm(string_value = "SUCCEEDED")]
    Succeeded,
    #[sea_orm(string_value = "FAILED")]
    Failed,
    #[sea_orm(string_value = "COMPENSATING")]
    Compensating,
    #[sea_orm(string_value = "COMPENSATED")]
    Compensated,
    #[sea_orm(string_value = "COMPENSATION_FAILED")]
    CompensationFailed,
}

pub mod instance {
    use sea_orm::entity::prelude::*;

    use super::RowState;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "saga_instances")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub saga_id: String,
        pub kind: String,
        pub state: RowState,
        /// Index of the step being run (RUNNING) or the last one to compensate (COMPENSATING).
        pub step: i32,
        pub data: String,
        /// Why the saga turned back, when it did.
        pub error: String,
        pub created_at: ChronoDateTimeUtc,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod step_row {
    use sea_orm::entity::prelude::*;

    use super::RowStatus;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "saga_steps")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub saga_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub step_no: i32,
        pub name: String,
        pub status: RowStatus,
        pub attempts: i32,
        pub error: String,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
