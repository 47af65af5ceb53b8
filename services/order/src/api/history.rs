//! Reads a CRUD table could not give: an order as it was at a version or a time, and the
//! order's whole history as events.

use ordermesh::data::event_store::{StoredEvent, StreamBounds};
use ordermesh::proto::order::v1 as pb;
use ordermesh::types::ids::OrderId;
use ordermesh::types::status::{invalid_argument, not_found};
use ordermesh::types::time::to_proto;
use tonic::Status;

use super::OrderApi;
use crate::orders::order_to_proto;
use crate::store;

/// Longest page of `ListOrderEvents`.
pub const MAX_EVENTS_PAGE: i32 = 1000;

fn to_struct(v: &serde_json::Value) -> prost_types::Struct {
    let fields = v
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
        .unwrap_or_default();
    prost_types::Struct { fields }
}

fn to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(to_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn event_to_proto(e: &StoredEvent) -> pb::OrderEvent {
    pb::OrderEvent {
        event_id: e.event_id.clone(),
        version: e.version,
        position: e.position,
        r#type: e.event_type.clone(),
        schema_version: e.schema_version,
        payload: Some(to_struct(&e.payload)),
        record_time: Some(to_proto(e.recorded_at)),
        correlation_id: e.metadata.correlation_id.clone(),
        causation_id: e.metadata.causation_id.clone(),
    }
}

impl OrderApi {
    /// `GetOrder`, now or as of a version or a time of its stream.
    pub(super) async fn get_order_as_of(
        &self,
        r: pb::GetOrderRequest,
    ) -> Result<pb::GetOrderResponse, Status> {
        let id = OrderId::parse(&r.order_id)?;
        if r.as_of_version < 0 {
            return Err(invalid_argument("as_of_version", "must not be negative"));
        }
        let as_of = match &r.as_of_time {
            None => None,
            Some(t) => Some(ordermesh::types::time::from_proto("as_of_time", t)?),
        };
        let db = self.orders.db();
        if r.as_of_version == 0 && as_of.is_none() {
            let order = store::get(db, &id).await?;
            return Ok(pb::GetOrderResponse {
                order: Some(order_to_proto(&order)),
            });
        }
        let head = ordermesh::data::event_store::stream_version(db, id.as_str())
            .await
            .map_err(ordermesh::data::db_status)?;
        if head == 0 {
            return Err(not_found("order", id.as_str()));
        }
        if r.as_of_version > head {
            return Err(invalid_argument(
                "as_of_version",
                format!(
                    "order '{id}' has {head} events; {} is beyond its last",
                    r.as_of_version
                ),
            ));
        }
        let bounds = StreamBounds {
            to_version: (r.as_of_version > 0).then_some(r.as_of_version),
            as_of,
            ..StreamBounds::default()
        };
        match store::find_as_of(db, id.as_str(), bounds).await? {
            Some(order) => Ok(pb::GetOrderResponse {
                order: Some(order_to_proto(&order)),
            }),
            None => Err(Status::not_found(format!(
                "order '{id}' did not exist yet at as_of_time"
            ))),
        }
    }

    /// `ListOrderEvents`: a page of the order's stream.
    pub(super) async fn history(
        &self,
        r: pb::ListOrderEventsRequest,
    ) -> Result<pb::ListOrderEventsResponse, Status> {
        let id = OrderId::parse(&r.order_id)?;
        if r.after_version < 0 {
            return Err(invalid_argument("after_version", "must not be negative"));
        }
        let size = match r.page_size {
            0 => 100,
            n if (1..=MAX_EVENTS_PAGE).contains(&n) => n,
            _ => {
                return Err(invalid_argument(
                    "page_size",
                    format!("must be 1-{MAX_EVENTS_PAGE} (0 means 100)"),
                ))
            }
        };
        let db = self.orders.db();
        let head = ordermesh::data::event_store::stream_version(db, id.as_str())
            .await
            .map_err(ordermesh::data::db_status)?;
        if head == 0 {
            return Err(not_found("order", id.as_str()));
        }
        if r.after_version > head {
            return Err(invalid_argument(
                "after_version",
                format!(
                    "order '{id}' has {head} events; {} is beyond its last",
                    r.after_version
                ),
            ));
        }
        let bounds = StreamBounds {
            after_version: r.after_version,
            limit: Some(size as u64),
            ..StreamBounds::default()
        };
        let events = store::events(db, id.as_str(), bounds).await?;
        let last = events.last().map(|e| e.version).unwrap_or(r.after_version);
        Ok(pb::ListOrderEventsResponse {
            events: events.iter().map(event_to_proto).collect(),
            next_after_version: if last < head { last } else { 0 },
        })
    }
}
