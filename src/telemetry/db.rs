//! Database calls: a client span per statement (OpenTelemetry database conventions:
//! `db.system.name`, `db.operation.name`, `db.collection.name`, `db.query.text`) and the
//! `db_client_operation_duration_seconds` histogram, from sea-orm's per-statement callback.
//!
//! sea-orm calls back once a statement has run, in the task that ran it, with its duration;
//! the span is made then, with its start set back by that duration, as a child of the span
//! current in the caller (a saga step, a handler). Statements of unsampled traces, and those
//! run outside any trace (the outbox relay's polls), make no span.
//!
//! The query text is the statement as prepared, with placeholders (`$1`, `?`): values are
//! bound apart and never reach a span.

use std::time::SystemTime;

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection};

use super::metrics;

/// Longest query text put on a span, in bytes.
const MAX_QUERY_TEXT: usize = 2048;

/// Installs the callback on `db` (done by `ordermesh::data::db::connect` for every pool).
pub fn instrument(db: &mut DatabaseConnection) {
    let system = match db.get_database_backend() {
        DatabaseBackend::Postgres => "postgresql",
        DatabaseBackend::Sqlite => "sqlite",
        DatabaseBackend::MySql => "mysql",
    };
    db.set_metric_callback(move |info| {
        record(system, &info.statement.sql, info.elapsed, info.failed)
    });
}

fn record(system: &'static str, sql: &str, elapsed: std::time::Duration, failed: bool) {
    let (operation, collection) = describe(sql);
    // The label takes the usual statements by name and the rest as `other`, so the set of
    // series stays small whatever SQL is run.
    const NAMED: &[&str] = &[
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "WITH",
    ];
    let label = operation
        .as_deref()
        .filter(|op| NAMED.contains(op))
        .unwrap_or("other");
    metrics::DB_DURATION
        .with_label_values(&[system, label, if failed { "error" } else { "ok" }])
        .observe(elapsed.as_secs_f64());
    let Some(tracer) = super::setup::tracer() else {
        return;
    };
    let parent = super::current_context();
    if !parent.span().span_context().is_sampled() {
        return;
    }
    let end = SystemTime::now();
    let name = match (&operation, &collection) {
        (Some(op), Some(table)) => format!("{op} {table}"),
        (Some(op), None) => op.clone(),
        _ => system.to_string(),
    };
    let mut attributes = vec![
        KeyValue::new("db.system.name", system),
        KeyValue::new("db.query.text", truncate(sql, MAX_QUERY_TEXT).to_string()),
    ];
    if let Some(op) = operation {
        attributes.push(KeyValue::new("db.operation.name", op));
    }
    if let Some(table) = collection {
        attributes.push(KeyValue::new("db.collection.name", table));
    }
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_start_time(end.checked_sub(elapsed).unwrap_or(end))
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    if failed {
        span.set_status(Status::error("the statement failed"));
    }
    span.end_with_timestamp(end);
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The statement's operation (`SELECT`, `INSERT`, ...) and the table it names first.
fn describe(sql: &str) -> (Option<String>, Option<String>) {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let Some(first) = words.first() else {
        return (None, None);
    };
    let operation = first.to_ascii_uppercase();
    if !operation.chars().all(|c| c.is_ascii_alphabetic()) {
        return (None, None);
    }
    let after = |keyword: &str| {
        words
            .iter()
            .position(|w| w.eq_ignore_ascii_case(keyword))
            .and_then(|i| words.get(i + 1))
    };
    let table = match operation.as_str() {
        "SELECT" | "DELETE" => after("FROM"),
        "INSERT" => after("INTO"),
        "UPDATE" => words.get(1),
        _ => None,
    }
    .map(|t| {
        t.trim_end_matches([',', ';', '('])
            .split('(')
            .next()
            .unwrap_or("")
            .trim_matches(['"', '`'])
            .to_string()
    })
    .filter(|t| !t.is_empty() && !t.starts_with('('));
    (Some(operation), table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_named_by_operation_and_table() {
        let d = |s: &str| {
            let (op, table) = describe(s);
            (op.unwrap_or_default(), table.unwrap_or_default())
        };
        assert_eq!(
            d(r#"SELECT "orders"."id" FROM "orders" WHERE "orders"."id" = $1"#),
            ("SELECT".into(), "orders".into())
        );
        assert_eq!(
            d(r#"INSERT INTO "outbox" ("id", "seq") VALUES (?, ?)"#),
            ("INSERT".into(), "outbox".into())
        );
        assert_eq!(
            d(r#"insert into stock(sku, on_hand) values ($1, $2)"#),
            ("INSERT".into(), "stock".into())
        );
        assert_eq!(
            d(r#"UPDATE "saga_steps" SET "status" = $1"#),
            ("UPDATE".into(), "saga_steps".into())
        );
        assert_eq!(
            d("DELETE FROM `holds` WHERE id = ?"),
            ("DELETE".into(), "holds".into())
        );
        assert_eq!(d("SELECT 1"), ("SELECT".into(), String::new()));
        assert_eq!(
            d("SELECT x FROM (SELECT 1 AS x) t"),
            ("SELECT".into(), String::new())
        );
        assert_eq!(d("  "), (String::new(), String::new()));
        assert_eq!(d("$1"), (String::new(), String::new()));
    }

    #[test]
    fn long_queries_are_cut_on_a_character_boundary() {
        let s = "é".repeat(10);
        assert_eq!(truncate(&s, 5), "éé");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
