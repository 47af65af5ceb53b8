//! Reads from the read models: `ListOrders` (summaries) and `GetOrderStats` (stats), each
//! after waiting until the model has applied what the caller needs: `min_position`, or by
//! default everything committed before the call (bounded by the call's deadline).

use std::time::Duration;

use chrono::{DateTime, Utc};
use ordermesh::proto::common::v1::Money;
use ordermesh::proto::order::v1 as pb;
use ordermesh::types::ids::CustomerId;
use ordermesh::types::status::invalid_argument;
use tonic::Status;

use super::{status_from_proto, OrderApi};
use crate::domain::OrderStatus;
use crate::orders::{status_to_proto, summary_to_proto};
use crate::projections::{stats, summaries};

/// How long a read waits for its model when the call has no deadline.
const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// How long a read may wait for its read model: most of what is left of the call's deadline
/// (the server stack sets it from `grpc-timeout`), `DEFAULT_WAIT` without one.
pub(super) fn wait_budget() -> Duration {
    ordermesh::transport::deadline::current()
        .map(|d| {
            d.saturating_duration_since(tokio::time::Instant::now())
                .mul_f64(0.8)
        })
        .unwrap_or(DEFAULT_WAIT)
}

fn rounded_ms(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// The value at quantile `q` of sorted `v`.
fn quantile(v: &[i64], q: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

impl OrderApi {
    /// Waits until projection `name` has reached `min_position` (0: the store's head now).
    async fn caught_up(
        &self,
        name: &str,
        min_position: i64,
        within: Duration,
    ) -> Result<i64, Status> {
        if min_position < 0 {
            return Err(invalid_argument("min_position", "must not be negative"));
        }
        let head = ordermesh::data::event_store::head_position(self.orders.db()).await?;
        if min_position > head {
            return Err(invalid_argument(
                "min_position",
                format!("{min_position} is beyond the last position written ({head})"),
            ));
        }
        let target = if min_position == 0 {
            head
        } else {
            min_position
        };
        self.orders
            .projector
            .wait_for(name, target, within)
            .await
            .map_err(Status::unavailable)
    }

    pub(super) async fn list(
        &self,
        r: pb::ListOrdersRequest,
        within: Duration,
    ) -> Result<pb::ListOrdersResponse, Status> {
        let customer = if r.customer_id.is_empty() {
            None
        } else {
            Some(CustomerId::parse(&r.customer_id)?)
        };
        if r.statuses.len() > OrderStatus::ALL.len() {
            return Err(invalid_argument(
                "statuses",
                format!("must name at most {} statuses", OrderStatus::ALL.len()),
            ));
        }
        let mut statuses = Vec::with_capacity(r.statuses.len());
        for (i, s) in r.statuses.iter().enumerate() {
            let s = status_from_proto(&format!("statuses[{i}]"), *s)?;
            if !statuses.contains(&s) {
                statuses.push(s);
            }
        }
        let mut names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        names.sort_unstable();
        let filter = format!("customer={};statuses={}", r.customer_id, names.join(","));
        let page = ordermesh::types::pagination::Page::parse(r.page_size, &r.page_token, &filter)?;
        self.caught_up(summaries::NAME, r.min_position, within)
            .await?;
        let mut rows = summaries::list(
            self.orders.db(),
            customer.as_ref(),
            &statuses,
            page.offset,
            page.fetch_limit(),
        )
        .await
        .map_err(ordermesh::data::db_status)?;
        let next_page_token = page.next_token(rows.len(), &filter);
        rows.truncate(page.size as usize);
        Ok(pb::ListOrdersResponse {
            orders: rows.iter().map(summary_to_proto).collect(),
            next_page_token,
        })
    }

    pub(super) async fn stats(
        &self,
        r: pb::GetOrderStatsRequest,
        within: Duration,
    ) -> Result<pb::GetOrderStatsResponse, Status> {
        use ordermesh::types::time::from_proto;
        let from = match &r.from {
            Some(t) => from_proto("from", t)?,
            None => DateTime::<Utc>::UNIX_EPOCH,
        };
        let to = match &r.to {
            Some(t) => from_proto("to", t)?,
            None => ordermesh::types::time::now() + chrono::Duration::seconds(1),
        };
        if to <= from {
            return Err(invalid_argument("to", "must be after from"));
        }
        let top = match r.top {
            0 => 10,
            n @ 1..=100 => n as u64,
            _ => return Err(invalid_argument("top", "must be 1-100 (0 means 10)")),
        };
        let position = self.caught_up(stats::NAME, r.min_position, within).await?;
        let rep = stats::report(self.orders.db(), from, to, top)
            .await
            .map_err(ordermesh::data::db_status)?;
        let money = |currency: &str, minor: i64| {
            Some(Money {
                currency_code: currency.to_string(),
                amount_minor: minor,
            })
        };
        Ok(pb::GetOrderStatsResponse {
            days: rep
                .days
                .iter()
                .map(|d| pb::DayStatusStats {
                    day: d.day.clone(),
                    status: OrderStatus::parse(&d.status)
                        .map(status_to_proto)
                        .unwrap_or(pb::OrderStatus::Unspecified) as i32,
                    orders: d.orders,
                    revenue: money(&d.currency, d.revenue),
                })
                .collect(),
            top_skus: rep
                .skus
                .iter()
                .map(|s| pb::SkuStats {
                    sku: s.sku.clone(),
                    quantity: s.quantity,
                    orders: s.orders,
                    revenue: money(&s.currency, s.revenue),
                })
                .collect(),
            rejection_reasons: rep
                .reasons
                .iter()
                .map(|x| pb::ReasonStats {
                    reason: x.reason.clone(),
                    orders: x.orders,
                })
                .collect(),
            saga_durations: Some(pb::SagaDurations {
                count: rep.saga_ms.len() as i64,
                p50: Some(rounded_ms(quantile(&rep.saga_ms, 0.5))),
                p90: Some(rounded_ms(quantile(&rep.saga_ms, 0.9))),
                p99: Some(rounded_ms(quantile(&rep.saga_ms, 0.99))),
                max: Some(rounded_ms(rep.saga_ms.last().copied().unwrap_or(0))),
            }),
            position,
        })
    }
}
