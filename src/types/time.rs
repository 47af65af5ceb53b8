//! Time: conversions between chrono timestamps (stored) and protobuf Timestamps (on the wire),
//! and the one way settings spell a duration.

use std::time::Duration;

use chrono::{DateTime, Utc};

pub fn to_proto(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A protobuf Timestamp from a request, checked: INVALID_ARGUMENT naming `field` when it is
/// out of range.
pub fn from_proto(field: &str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>, tonic::Status> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(crate::types::status::invalid_argument(
            field,
            "nanos must be 0-999,999,999",
        ));
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
        .ok_or_else(|| crate::types::status::invalid_argument(field, "is not a representable time"))
}

/// Current time truncated to microseconds, the precision both SQLite and PostgreSQL keep,
/// so what a handler returns equals what a later read returns.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| "is not a duration such as 500ms, 10s or 2m".to_string())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("has unknown unit '{unit}' (use ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("").is_err());
    }
}
