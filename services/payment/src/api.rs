//! The gRPC face of payment: validates requests into domain types, asks the simulated
//! processor, runs the change against the store, and maps errors to `tonic::Status` in one
//! place.

use futures::FutureExt;
use ordermesh::data::group_commit::GroupCommit;
use ordermesh::data::idempotency;
use ordermesh::proto::common::v1::Money as PbMoney;
use ordermesh::proto::payment::v1 as pb;
use ordermesh::proto::payment::v1::payment_service_server::PaymentService;
use ordermesh::types::ids::{OrderId, PaymentId};
use ordermesh::types::money::Money;
use ordermesh::types::status::{illegal_transition, invalid_argument, not_found};
use ordermesh::types::time::{now, to_proto};
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

use crate::domain::{self, CardToken, Outcome, PaymentError};
use crate::store::{self, payment, NewPayment};

impl From<PaymentError> for Status {
    fn from(e: PaymentError) -> Self {
        use PaymentError::*;
        match &e {
            Invalid { field, rule } => invalid_argument(field, rule),
            NotFound(id) => not_found("payment", id),
            IllegalTransition { id, from, action } => {
                illegal_transition("payment", id, from, action)
            }
            Exceeds { .. } => Status::failed_precondition(e.to_string()),
            // The processor failed on this one card: the payment service is fine, so the
            // answer is marked as the request's own (the caller's breaker counts it once per
            // key and no endpoint is ejected for it); a retry later may succeed.
            ProcessorUnavailable { card_last4 } => {
                ordermesh::types::status::unavailable_for_request(
                    e.to_string(),
                    "PROCESSOR_UNAVAILABLE",
                    "payment.ordermesh",
                    [("card_last4".to_string(), card_last4.clone())].into(),
                    std::time::Duration::from_secs(1),
                )
            }
            OrderClosed(_) => Status::failed_precondition(e.to_string()),
        }
    }
}

/// What a VoidPayment names.
enum VoidTarget {
    Payment(PaymentId),
    Order(OrderId),
}

#[derive(Clone)]
pub struct PaymentApi {
    /// The service's database, whose keyed writes share commits through it.
    writes: GroupCommit,
}

impl PaymentApi {
    fn db(&self) -> &DatabaseConnection {
        self.writes.db()
    }

    pub fn new(writes: GroupCommit) -> Self {
        Self { writes }
    }
}

fn money(currency: &str, minor: i64) -> Option<PbMoney> {
    Some(PbMoney {
        currency_code: currency.to_string(),
        amount_minor: minor,
    })
}

pub fn payment_to_proto(m: &payment::Model) -> pb::Payment {
    let status = match m.status() {
        domain::PaymentStatus::Authorized => pb::PaymentStatus::Authorized,
        domain::PaymentStatus::Declined => pb::PaymentStatus::Declined,
        domain::PaymentStatus::Captured => pb::PaymentStatus::Captured,
        domain::PaymentStatus::Voided => pb::PaymentStatus::Voided,
        domain::PaymentStatus::PartiallyRefunded => pb::PaymentStatus::PartiallyRefunded,
        domain::PaymentStatus::Refunded => pb::PaymentStatus::Refunded,
    };
    pb::Payment {
        payment_id: m.payment_id.clone(),
        order_id: m.order_id.clone(),
        status: status as i32,
        authorized_amount: money(&m.currency, m.authorized_minor),
        captured_amount: money(&m.currency, m.captured_minor),
        refunded_amount: money(&m.currency, m.refunded_minor),
        decline_reason: m.decline_reason.clone(),
        card_last4: m.card_last4.clone(),
        create_time: Some(to_proto(m.created_at)),
        update_time: Some(to_proto(m.updated_at)),
    }
}

/// An optional amount: absent means "all of it".
fn optional_amount(m: Option<&PbMoney>) -> Result<Option<Money>, Status> {
    m.map(|m| domain::positive_amount("amount", Some(m)))
        .transpose()
        .map_err(Status::from)
}

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    async fn authorize_payment(
        &self,
        request: Request<pb::AuthorizePaymentRequest>,
    ) -> Result<Response<pb::AuthorizePaymentResponse>, Status> {
        let r = request.into_inner();
        let order_id = OrderId::parse(&r.order_id)?;
        let amount = domain::positive_amount("amount", r.amount.as_ref())?;
        let token = CardToken::parse(&r.card_token)?;
        ordermesh::types::status::require_idempotency_key(&r.idempotency_key)?;
        let response = idempotency::execute(
            &self.writes,
            "payment.authorize",
            &r.idempotency_key,
            &r,
            move |txn| {
                async move {
                    let decline = match domain::simulate(&token, amount) {
                        Outcome::Approved => None,
                        Outcome::Declined(reason) => Some(reason),
                        // Nothing is stored, so a retry with the same key tries again.
                        Outcome::Unavailable => {
                            return Err(PaymentError::ProcessorUnavailable {
                                card_last4: token.last4(),
                            }
                            .into())
                        }
                    };
                    let row = store::insert(
                        txn,
                        NewPayment {
                            order_id: &order_id,
                            amount,
                            decline,
                            card_last4: token.last4(),
                        },
                        now(),
                    )
                    .await?;
                    Ok(pb::AuthorizePaymentResponse {
                        payment: Some(payment_to_proto(&row)),
                    })
                }
                .boxed()
            },
        )
        .await?;
        if let Some(p) = &response.payment {
            tracing::info!(payment_id = %p.payment_id, order_id = %p.order_id,
                status = ?pb::PaymentStatus::try_from(p.status).ok(), "payment authorized");
        }
        Ok(Response::new(response))
    }

    async fn capture_payment(
        &self,
        request: Request<pb::CapturePaymentRequest>,
    ) -> Result<Response<pb::CapturePaymentResponse>, Status> {
        let r = request.into_inner();
        let id = PaymentId::parse(&r.payment_id)?;
        let amount = optional_amount(r.amount.as_ref())?;
        ordermesh::types::status::require_idempotency_key(&r.idempotency_key)?;
        let response = idempotency::execute(
            &self.writes,
            "payment.capture",
            &r.idempotency_key,
            &r,
            move |txn| {
                async move {
                    let row = store::capture(txn, &id, amount, now()).await?;
                    Ok(pb::CapturePaymentResponse {
                        payment: Some(payment_to_proto(&row)),
                    })
                }
                .boxed()
            },
        )
        .await?;
        Ok(Response::new(response))
    }

    async fn void_payment(
        &self,
        request: Request<pb::VoidPaymentRequest>,
    ) -> Result<Response<pb::VoidPaymentResponse>, Status> {
        let r = request.into_inner();
        ordermesh::types::status::require_idempotency_key(&r.idempotency_key)?;
        let target = match (r.payment_id.is_empty(), r.order_id.is_empty()) {
            (false, true) => VoidTarget::Payment(PaymentId::parse(&r.payment_id)?),
            (true, false) => VoidTarget::Order(OrderId::parse(&r.order_id)?),
            (true, true) => {
                return Err(
                    PaymentError::invalid("payment_id", "give payment_id or order_id").into(),
                )
            }
            (false, false) => {
                return Err(PaymentError::invalid(
                    "order_id",
                    "give payment_id or order_id, not both",
                )
                .into())
            }
        };
        let response = idempotency::execute(
            &self.writes,
            "payment.void",
            &r.idempotency_key,
            &r,
            move |txn| {
                async move {
                    Ok(match target {
                        VoidTarget::Payment(id) => pb::VoidPaymentResponse {
                            payment: Some(payment_to_proto(&store::void(txn, &id, now()).await?)),
                            payments: Vec::new(),
                        },
                        VoidTarget::Order(order_id) => pb::VoidPaymentResponse {
                            payment: None,
                            payments: store::void_order(txn, &order_id, now())
                                .await?
                                .iter()
                                .map(payment_to_proto)
                                .collect(),
                        },
                    })
                }
                .boxed()
            },
        )
        .await?;
        Ok(Response::new(response))
    }

    async fn refund_payment(
        &self,
        request: Request<pb::RefundPaymentRequest>,
    ) -> Result<Response<pb::RefundPaymentResponse>, Status> {
        let r = request.into_inner();
        let id = PaymentId::parse(&r.payment_id)?;
        let amount = optional_amount(r.amount.as_ref())?;
        ordermesh::types::status::require_idempotency_key(&r.idempotency_key)?;
        let reason = r.reason.trim().to_string();
        if reason.chars().count() > 200 {
            return Err(invalid_argument("reason", "must be at most 200 characters"));
        }
        let response = idempotency::execute(
            &self.writes,
            "payment.refund",
            &r.idempotency_key,
            &r,
            move |txn| {
                async move {
                    let row = store::refund(txn, &id, amount, &reason, now()).await?;
                    Ok(pb::RefundPaymentResponse {
                        payment: Some(payment_to_proto(&row)),
                    })
                }
                .boxed()
            },
        )
        .await?;
        Ok(Response::new(response))
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let id = PaymentId::parse(&request.get_ref().payment_id)?;
        let row = store::get(self.db(), &id).await?;
        Ok(Response::new(pb::GetPaymentResponse {
            payment: Some(payment_to_proto(&row)),
        }))
    }

    async fn list_payments(
        &self,
        request: Request<pb::ListPaymentsRequest>,
    ) -> Result<Response<pb::ListPaymentsResponse>, Status> {
        let r = request.into_inner();
        let order = if r.order_id.is_empty() {
            None
        } else {
            Some(OrderId::parse(&r.order_id)?)
        };
        let filter = format!("order={}", r.order_id);
        let page = ordermesh::types::pagination::Page::parse(r.page_size, &r.page_token, &filter)?;
        let mut rows =
            store::list(self.db(), order.as_ref(), page.offset, page.fetch_limit()).await?;
        let next_page_token = page.next_token(rows.len(), &filter);
        rows.truncate(page.size as usize);
        Ok(Response::new(pb::ListPaymentsResponse {
            payments: rows.iter().map(payment_to_proto).collect(),
            next_page_token,
        }))
    }
}
