//! Payment over real gRPC, on SQLite and on PostgreSQL.

use ordermesh::config::ServiceConfig;
use ordermesh::proto::common::v1::Money;
use ordermesh::proto::payment::v1 as pb;
use ordermesh::proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh::testing::{
    bad_request_field, health_status, spawn, Backend, Spawned, TestDatabase, SERVING,
};
use payment_service::{App, SERVICE};
use tonic::transport::Channel;
use tonic::Code;

struct Harness {
    client: PaymentServiceClient<Channel>,
    server: Spawned,
    _db: TestDatabase,
}

async fn start(backend: Backend) -> Harness {
    let db = TestDatabase::new(backend).await;
    let app = App::build(&ServiceConfig::for_test(SERVICE, &db.url))
        .await
        .expect("build payment");
    let server = spawn(|l, s| app.serve(l, s)).await;
    let client = PaymentServiceClient::connect(server.uri())
        .await
        .expect("connect");
    Harness {
        client,
        server,
        _db: db,
    }
}

fn usd(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "USD".into(),
        amount_minor,
    })
}

fn authorize(order: &str, minor: i64, token: &str, key: &str) -> pb::AuthorizePaymentRequest {
    pb::AuthorizePaymentRequest {
        order_id: order.into(),
        amount: usd(minor),
        card_token: token.into(),
        idempotency_key: key.into(),
    }
}

async fn authorized(c: &mut PaymentServiceClient<Channel>, order: &str, minor: i64) -> pb::Payment {
    c.authorize_payment(authorize(
        order,
        minor,
        "tok_visa",
        &format!("auth-{order}"),
    ))
    .await
    .expect("authorize")
    .into_inner()
    .payment
    .expect("payment")
}

fn minor(m: &Option<Money>) -> i64 {
    m.as_ref().map(|m| m.amount_minor).unwrap_or(-1)
}

async fn simulator_outcomes_are_deterministic(backend: Backend) {
    let mut h = start(backend).await;
    let ok = authorized(&mut h.client, "ord-1", 2500).await;
    assert_eq!(ok.status, pb::PaymentStatus::Authorized as i32);
    assert_eq!(minor(&ok.authorized_amount), 2500);
    assert_eq!(ok.card_last4, "4242", "the simulated card's digits");
    assert!(ok.payment_id.starts_with("pay_"));

    for (token, reason) in [
        ("tok_decline", "card_declined"),
        ("tok_insufficient_funds", "insufficient_funds"),
        ("tok_expired", "expired_card"),
    ] {
        let p = h
            .client
            .authorize_payment(authorize("ord-2", 100, token, &format!("k-{token}")))
            .await
            .expect("a decline is a result")
            .into_inner()
            .payment
            .unwrap();
        assert_eq!(p.status, pb::PaymentStatus::Declined as i32, "{token}");
        assert_eq!(p.decline_reason, reason);
        assert_eq!(minor(&p.authorized_amount), 0);
    }
    let over = h
        .client
        .authorize_payment(authorize("ord-3", 1_000_001, "tok_visa", "over"))
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(over.decline_reason, "amount_over_limit");
    let at_limit = authorized(&mut h.client, "ord-4", 1_000_000).await;
    assert_eq!(at_limit.status, pb::PaymentStatus::Authorized as i32);

    // Processor down: UNAVAILABLE and nothing stored, so the same key can be retried.
    let down = h
        .client
        .authorize_payment(authorize("ord-5", 100, "tok_processor_down", "down"))
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable);
    // The failure is this card's, not the service's: marked so, with what and when to retry.
    assert_eq!(
        down.metadata()
            .get("x-ordermesh-failure-scope")
            .and_then(|v| v.to_str().ok()),
        Some("request")
    );
    {
        use tonic_types::StatusExt;
        let info = down.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "PROCESSOR_UNAVAILABLE");
        assert_eq!(
            info.metadata.get("card_last4").map(String::as_str),
            Some("0119")
        );
        assert!(down.get_details_retry_info().is_some());
    }
    let listed = h
        .client
        .list_payments(pb::ListPaymentsRequest {
            order_id: "ord-5".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.payments.is_empty());

    // A declined payment cannot be captured.
    let declined = h
        .client
        .list_payments(pb::ListPaymentsRequest {
            order_id: "ord-2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .payments;
    assert_eq!(declined.len(), 3);
    let e = h
        .client
        .capture_payment(pb::CapturePaymentRequest {
            payment_id: declined[0].payment_id.clone(),
            amount: None,
            idempotency_key: "cap-declined".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    h.server.stop().await.unwrap();
}

async fn capture_void_refund_life_cycle(backend: Backend) {
    let mut h = start(backend).await;
    let c = &mut h.client;
    let p = authorized(c, "ord-life", 10_000).await;
    let id = p.payment_id.clone();

    let over = c
        .capture_payment(pb::CapturePaymentRequest {
            payment_id: id.clone(),
            amount: usd(10_001),
            idempotency_key: "cap-over".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::FailedPrecondition);
    assert!(over.message().contains("captured"), "{}", over.message());

    let captured = c
        .capture_payment(pb::CapturePaymentRequest {
            payment_id: id.clone(),
            amount: usd(8_000),
            idempotency_key: "cap-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(captured.status, pb::PaymentStatus::Captured as i32);
    assert_eq!(minor(&captured.captured_amount), 8_000);

    // The same key replays; a new capture of a captured payment is refused.
    let again = c
        .capture_payment(pb::CapturePaymentRequest {
            payment_id: id.clone(),
            amount: usd(8_000),
            idempotency_key: "cap-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(again, captured);
    let twice = c
        .capture_payment(pb::CapturePaymentRequest {
            payment_id: id.clone(),
            amount: None,
            idempotency_key: "cap-2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);
    let changed = c
        .capture_payment(pb::CapturePaymentRequest {
            payment_id: id.clone(),
            amount: usd(7_000),
            idempotency_key: "cap-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(changed.code(), Code::AlreadyExists);

    // Void after capture is illegal.
    let void = c
        .void_payment(pb::VoidPaymentRequest {
            payment_id: id.clone(),
            idempotency_key: "void-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(void.code(), Code::FailedPrecondition);

    let refund = |amount: Option<Money>, key: &str| pb::RefundPaymentRequest {
        payment_id: id.clone(),
        amount,
        idempotency_key: key.into(),
        reason: "customer asked".into(),
    };
    let part = c
        .refund_payment(refund(usd(3_000), "rf-1"))
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(part.status, pb::PaymentStatus::PartiallyRefunded as i32);
    assert_eq!(minor(&part.refunded_amount), 3_000);
    let too_much = c
        .refund_payment(refund(usd(5_001), "rf-2"))
        .await
        .unwrap_err();
    assert_eq!(too_much.code(), Code::FailedPrecondition);
    let eur = c
        .refund_payment(refund(
            Some(Money {
                currency_code: "EUR".into(),
                amount_minor: 10,
            }),
            "rf-eur",
        ))
        .await
        .unwrap_err();
    assert_eq!(eur.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&eur), "amount.currency_code");
    let rest = c
        .refund_payment(refund(None, "rf-3"))
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(rest.status, pb::PaymentStatus::Refunded as i32);
    assert_eq!(minor(&rest.refunded_amount), 8_000);
    let none_left = c.refund_payment(refund(usd(1), "rf-4")).await.unwrap_err();
    assert_eq!(none_left.code(), Code::FailedPrecondition);

    // Void: an open authorization, twice is a no-op.
    let other = authorized(c, "ord-void", 500).await;
    for key in ["v-1", "v-2"] {
        let v = c
            .void_payment(pb::VoidPaymentRequest {
                payment_id: other.payment_id.clone(),
                idempotency_key: key.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .payment
            .unwrap();
        assert_eq!(v.status, pb::PaymentStatus::Voided as i32);
    }
    let got = c
        .get_payment(pb::GetPaymentRequest {
            payment_id: other.payment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(got.status, pb::PaymentStatus::Voided as i32);
    h.server.stop().await.unwrap();
}

async fn concurrent_refunds_never_exceed_the_capture(backend: Backend) {
    let mut h = start(backend).await;
    let p = authorized(&mut h.client, "ord-conc", 1_000).await;
    h.client
        .capture_payment(pb::CapturePaymentRequest {
            payment_id: p.payment_id.clone(),
            amount: None,
            idempotency_key: "cap".into(),
        })
        .await
        .unwrap();
    // 12 refunds of 100 race for 1,000 captured: exactly 10 succeed.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let mut c = h.client.clone();
        let id = p.payment_id.clone();
        tasks.push(tokio::spawn(async move {
            c.refund_payment(pb::RefundPaymentRequest {
                payment_id: id,
                amount: usd(100),
                idempotency_key: format!("rf-{i}"),
                reason: String::new(),
            })
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(
                matches!(e.code(), Code::FailedPrecondition | Code::Unavailable),
                "{e:?}"
            ),
        }
    }
    let after = h
        .client
        .get_payment(pb::GetPaymentRequest {
            payment_id: p.payment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(minor(&after.refunded_amount), 100 * ok);
    assert!(ok <= 10, "{ok} refunds of 100 out of 1000");
    assert_eq!(ok, 10, "every refund that fit should have succeeded");
    assert_eq!(after.status, pb::PaymentStatus::Refunded as i32);
    h.server.stop().await.unwrap();
}

async fn bad_input_is_refused_with_the_field_named(backend: Backend) {
    let mut h = start(backend).await;
    let c = &mut h.client;
    let cases: Vec<(pb::AuthorizePaymentRequest, &str)> = vec![
        (authorize("", 100, "tok_visa", "k"), "order_id"),
        (authorize("ord", -5, "tok_visa", "k"), "amount"),
        (authorize("ord", 0, "tok_visa", "k"), "amount"),
        (authorize("ord", 100, "visa", "k"), "card_token"),
        (authorize("ord", 100, "tok_visa", ""), "idempotency_key"),
        (
            pb::AuthorizePaymentRequest {
                amount: Some(Money {
                    currency_code: "XXQ".into(),
                    amount_minor: 100,
                }),
                ..authorize("ord", 100, "tok_visa", "k")
            },
            "amount",
        ),
        (
            pb::AuthorizePaymentRequest {
                amount: None,
                ..authorize("ord", 100, "tok_visa", "k")
            },
            "amount",
        ),
    ];
    for (req, field) in cases {
        let e = c.authorize_payment(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}");
        assert_eq!(bad_request_field(&e), field, "{req:?}: {}", e.message());
    }
    let e = c
        .authorize_payment(pb::AuthorizePaymentRequest {
            amount: Some(Money {
                currency_code: "XXQ".into(),
                amount_minor: 1,
            }),
            ..authorize("ord", 1, "tok_visa", "k")
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("unknown currency"), "{}", e.message());

    let e = c
        .get_payment(pb::GetPaymentRequest {
            payment_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&e), "payment_id");
    let e = c
        .get_payment(pb::GetPaymentRequest {
            payment_id: "pay_missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .list_payments(pb::ListPaymentsRequest {
            page_size: 101,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&e), "page_size");
    let e = c
        .capture_payment(pb::CapturePaymentRequest {
            payment_id: "pay_x".into(),
            amount: usd(-1),
            idempotency_key: "k".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&e), "amount");
    let e = c
        .refund_payment(pb::RefundPaymentRequest {
            payment_id: "pay_x".into(),
            amount: None,
            idempotency_key: "k".into(),
            reason: "r".repeat(201),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&e), "reason");
    // Nothing was written by any of it.
    let all = c
        .list_payments(pb::ListPaymentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.payments.is_empty());
    h.server.stop().await.unwrap();
}

async fn authorizations_are_idempotent_and_paged(backend: Backend) {
    let mut h = start(backend).await;
    let c = &mut h.client;
    let first = c
        .authorize_payment(authorize("ord-idem", 700, "tok_visa", "same"))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .authorize_payment(authorize("ord-idem", 700, "tok_visa", "same"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    let conflict = c
        .authorize_payment(authorize("ord-idem", 701, "tok_visa", "same"))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);

    for i in 0..4 {
        authorized(c, &format!("ord-page-{i}"), 100 + i).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_payments(pb::ListPaymentsRequest {
                page_size: 2,
                page_token: token.clone(),
                order_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.payments.len() <= 2);
        seen.extend(page.payments.into_iter().map(|p| p.payment_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5, "one idempotent authorization and four more");
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique, seen);
    assert_eq!(health_status(&h.server.uri(), "").await.unwrap(), SERVING);
    h.server.stop().await.unwrap();
}

ordermesh::backend_tests!(
    simulator_outcomes_are_deterministic,
    capture_void_refund_life_cycle,
    concurrent_refunds_never_exceed_the_capture,
    bad_input_is_refused_with_the_field_named,
    authorizations_are_idempotent_and_paged,
);
