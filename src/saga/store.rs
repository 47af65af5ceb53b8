//! Where sagas are kept: one `saga_instances` row per instance (its state, current step and
//! data as JSON) and one `saga_steps` row per step it reached (status, attempts, last error).
//! States are enums stored as their upper-case names.

use sea_orm::sea_query::StringLen;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Set,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Saga, SagaError};

/// Where an instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum InstanceState {
    /// Running its steps forward; `step` is the one to run next.
    #[sea_orm(string_value = "RUNNING")]
    Running,
    /// Turned back; `step` is the last one to compensate.
    #[sea_orm(string_value = "COMPENSATING")]
    Compensating,
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    #[sea_orm(string_value = "COMPENSATED")]
    Compensated,
}

impl InstanceState {
    /// Not finished: what start-up resumes.
    pub fn is_unfinished(self) -> bool {
        matches!(self, Self::Running | Self::Compensating)
    }
}

/// Where one step of an instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(24))")]
pub enum StepStatus {
    /// An attempt of the action is under way (recorded before the call).
    #[sea_orm(string_value = "STARTED")]
    Started,
    #[sea_orm(string_value = "SUCCEEDED")]
    Succeeded,
    /// The action was rejected or ran out of retries: the saga turned back here.
    #[sea_orm(string_value = "FAILED")]
    Failed,
    /// An attempt of the compensation is under way.
    #[sea_orm(string_value = "COMPENSATING")]
    Compensating,
    #[sea_orm(string_value = "COMPENSATED")]
    Compensated,
    /// The participant refused the compensation: an operator must look.
    #[sea_orm(string_value = "COMPENSATION_FAILED")]
    CompensationFailed,
}

impl StepStatus {
    /// The upper-case name, as stored and as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "STARTED",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Compensating => "COMPENSATING",
            Self::Compensated => "COMPENSATED",
            Self::CompensationFailed => "COMPENSATION_FAILED",
        }
    }
}

pub mod instance {
    use sea_orm::entity::prelude::*;

    use super::InstanceState;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "saga_instances")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub saga_id: String,
        pub kind: String,
        pub state: InstanceState,
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

    use super::StepStatus;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "saga_steps")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub saga_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub step_no: i32,
        pub name: String,
        pub status: StepStatus,
        pub attempts: i32,
        pub error: String,
        pub updated_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// What a step row is set to: its status, the error to keep, and whether an attempt began.
pub(super) struct StepMark<'a> {
    pub saga_id: &'a str,
    pub step_no: i32,
    pub name: &'a str,
    pub status: StepStatus,
    pub error: String,
    pub count_attempt: bool,
}

impl<D> Saga<D>
where
    D: Serialize + DeserializeOwned + Send + Sync,
{
    /// Records a new instance in `txn`, the transaction that creates what the saga is about,
    /// so the saga exists exactly when its subject does.
    pub async fn start_in<C: ConnectionTrait>(
        &self,
        txn: &C,
        saga_id: &str,
        data: &D,
    ) -> Result<(), SagaError> {
        let now = crate::types::time::now();
        instance::ActiveModel {
            saga_id: Set(saga_id.to_string()),
            kind: Set(self.kind.to_string()),
            state: Set(InstanceState::Running),
            step: Set(0),
            data: Set(serde_json::to_string(data)?),
            error: Set(String::new()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(txn)
        .await?;
        Ok(())
    }

    /// Instances of this kind that have not finished, oldest first (what start-up resumes).
    pub async fn unfinished(&self, db: &DatabaseConnection) -> Result<Vec<String>, SagaError> {
        Ok(instance::Entity::find()
            .filter(instance::Column::Kind.eq(self.kind))
            .filter(
                instance::Column::State
                    .is_in([InstanceState::Running, InstanceState::Compensating]),
            )
            .order_by_asc(instance::Column::CreatedAt)
            .all(db)
            .await?
            .into_iter()
            .map(|i| i.saga_id)
            .collect())
    }

    /// The recorded steps of an instance, in order.
    pub async fn steps(
        db: &DatabaseConnection,
        saga_id: &str,
    ) -> Result<Vec<step_row::Model>, SagaError> {
        Ok(step_row::Entity::find()
            .filter(step_row::Column::SagaId.eq(saga_id))
            .order_by_asc(step_row::Column::StepNo)
            .all(db)
            .await?)
    }
}

/// The instance `saga_id`.
pub(super) async fn load<C: ConnectionTrait>(
    c: &C,
    saga_id: &str,
) -> Result<instance::Model, SagaError> {
    instance::Entity::find_by_id(saga_id)
        .one(c)
        .await?
        .ok_or_else(|| SagaError::NotFound(saga_id.to_string()))
}

/// Step numbers of `saga_id` whose compensation is over (done, or refused for good).
pub(super) async fn compensated_steps(
    db: &DatabaseConnection,
    saga_id: &str,
) -> Result<Vec<i32>, SagaError> {
    Ok(step_row::Entity::find()
        .filter(step_row::Column::SagaId.eq(saga_id))
        .filter(
            step_row::Column::Status
                .is_in([StepStatus::Compensated, StepStatus::CompensationFailed]),
        )
        .all(db)
        .await?
        .into_iter()
        .map(|r| r.step_no)
        .collect())
}

/// Writes a step's row in one statement (an upsert): creates it on the step's first attempt,
/// updates it after, counting the attempt when `count_attempt`. A compensated step keeps the
/// error that made the saga turn back: an empty error replaces the stored one only when the
/// step starts or succeeds.
pub(super) async fn mark_step<C: ConnectionTrait>(c: &C, m: StepMark<'_>) -> Result<(), SagaError> {
    use sea_orm::sea_query::{Expr, OnConflict};
    use step_row::Column;
    let row = step_row::ActiveModel {
        saga_id: Set(m.saga_id.into()),
        step_no: Set(m.step_no),
        name: Set(m.name.into()),
        status: Set(m.status),
        attempts: Set(i32::from(m.count_attempt)),
        error: Set(m.error),
        updated_at: Set(crate::types::time::now()),
    };
    let keep_error = Expr::cust(
        "CASE WHEN excluded.error <> '' OR excluded.status IN ('STARTED', 'SUCCEEDED') \
         THEN excluded.error ELSE saga_steps.error END",
    );
    let on_conflict = OnConflict::columns([Column::SagaId, Column::StepNo])
        .update_columns([Column::Status, Column::UpdatedAt])
        .value(
            Column::Attempts,
            Expr::col((step_row::Entity, Column::Attempts)).add(Expr::cust("excluded.attempts")),
        )
        .value(Column::Error, keep_error)
        .to_owned();
    step_row::Entity::insert(row)
        .on_conflict(on_conflict)
        .exec_without_returning(c)
        .await?;
    Ok(())
}

/// What an instance row is moved to.
pub(super) struct InstanceMove {
    pub state: InstanceState,
    pub step: i32,
    pub data: Option<String>,
    pub error: Option<String>,
}

/// Moves `inst` to a new state (and step, data, error when given); returns it as written.
pub(super) async fn set_instance<C: ConnectionTrait>(
    c: &C,
    inst: &instance::Model,
    to: InstanceMove,
) -> Result<instance::Model, SagaError> {
    let mut a: instance::ActiveModel = inst.clone().into();
    a.state = Set(to.state);
    a.step = Set(to.step);
    if let Some(d) = to.data {
        a.data = Set(d);
    }
    if let Some(e) = to.error {
        a.error = Set(e);
    }
    a.updated_at = Set(crate::types::time::now());
    Ok(a.update(c).await?)
}

/// Saves `inst`'s data without moving it (a compensation changed what the saga carries).
pub(super) async fn save_data<C: ConnectionTrait>(
    c: &C,
    inst: &instance::Model,
    data: String,
) -> Result<(), SagaError> {
    let mut a: instance::ActiveModel = inst.clone().into();
    a.data = Set(data);
    a.updated_at = Set(crate::types::time::now());
    a.update(c).await?;
    Ok(())
}
