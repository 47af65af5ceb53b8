//! What the order tests share beyond the mesh itself (which `test_support` spawns).

/// Whether an order's saga has stopped moving: no step is running or compensating, and after
/// a failure nothing it must undo is still SUCCEEDED (compensations go one step at a time and
/// start a moment after the failure is written).
pub fn saga_over(o: &ordermesh::proto::order::v1::Order) -> bool {
    let any = |names: &[&str]| {
        o.saga_steps
            .iter()
            .any(|s| names.contains(&s.status.as_str()))
    };
    let running = any(&["STARTED", "COMPENSATING"]);
    let turned_back = any(&["FAILED", "COMPENSATED", "COMPENSATION_FAILED"]);
    let undo_pending = turned_back && any(&["SUCCEEDED"]);
    !(running || undo_pending)
}
