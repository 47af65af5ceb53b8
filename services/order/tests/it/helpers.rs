//! What the order tests share beyond the mesh itself (which `test_support` spawns).

/// The placement steps that have a compensation: once the saga turns back, each of them that
/// succeeded, or that failed (its call may have arrived), is compensated.
const UNDOABLE: [&str; 4] = [
    "reserve_stock",
    "authorize_payment",
    "create_shipment",
    "capture_payment",
];

/// Whether an order's saga has stopped moving: it either confirmed the order or turned back,
/// no step is running or compensating, and after a failure no undoable step is still SUCCEEDED
/// or FAILED (compensations go one step at a time, the failed step's own first, and start a
/// moment after the failure is written). Between one step's success and the next step's
/// start no step runs yet the saga is not over: hence "confirmed or turned back".
pub fn saga_over(o: &ordermesh::proto::order::v1::Order) -> bool {
    let any = |names: &[&str]| {
        o.saga_steps
            .iter()
            .any(|s| names.contains(&s.status.as_str()))
    };
    let running = any(&["STARTED", "COMPENSATING"]);
    let turned_back = any(&["FAILED", "COMPENSATED", "COMPENSATION_FAILED"]);
    let undo_pending = turned_back
        && o.saga_steps.iter().any(|s| {
            UNDOABLE.contains(&s.name.as_str())
                && matches!(s.status.as_str(), "SUCCEEDED" | "FAILED")
        });
    let confirmed = o
        .saga_steps
        .iter()
        .any(|s| s.name == "confirm_order" && s.status == "SUCCEEDED");
    (confirmed || turned_back) && !(running || undo_pending)
}

/// The exit status of `child`, once it exits within `within`.
pub async fn wait_exit(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if started.elapsed() > within {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A request for the order as it is now.
pub(crate) fn order_now(order_id: &str) -> ordermesh::proto::order::v1::GetOrderRequest {
    ordermesh::proto::order::v1::GetOrderRequest {
        order_id: order_id.into(),
        ..Default::default()
    }
}
