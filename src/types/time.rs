//! Conversions between chrono timestamps (stored) and protobuf Timestamps (on the wire).

use chrono::{DateTime, Utc};

pub fn to_proto(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Current time truncated to microseconds, the precision both SQLite and PostgreSQL keep,
/// so what a handler returns equals what a later read returns.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
