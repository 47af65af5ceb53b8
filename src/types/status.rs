//! How errors look to callers: one place builds the `tonic::Status` for bad input, missing
//! things, conflicts and illegal transitions, with google.rpc details a client can read.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// INVALID_ARGUMENT naming the field and the rule it broke, with a `BadRequest` detail.
pub fn invalid_argument(field: &str, rule: impl std::fmt::Display) -> Status {
    let rule = rule.to_string();
    let details = ErrorDetails::with_bad_request_violation(field, rule.clone());
    Status::with_error_details(Code::InvalidArgument, format!("{field}: {rule}"), details)
}

pub fn not_found(kind: &str, id: impl std::fmt::Display) -> Status {
    let details = ErrorDetails::with_resource_info(kind, id.to_string(), "", "not found");
    Status::with_error_details(Code::NotFound, format!("{kind} '{id}' not found"), details)
}

pub fn already_exists(message: impl Into<String>) -> Status {
    Status::already_exists(message)
}

/// FAILED_PRECONDITION for an operation the current state does not allow.
pub fn illegal_transition(kind: &str, id: &str, from: &str, action: &str) -> Status {
    let details = ErrorDetails::with_precondition_failure_violation(
        "STATE",
        format!("{kind}/{id}"),
        format!("cannot {action} while {from}"),
    );
    Status::with_error_details(
        Code::FailedPrecondition,
        format!("{kind} '{id}' is {from}; cannot {action}"),
        details,
    )
}

/// The response header (trailers-only answers carry it with `grpc-status`) by which a server
/// says a failure belongs to the one request, not to the server: `request`.
pub const FAILURE_SCOPE_HEADER: &str = "x-ordermesh-failure-scope";

/// Marks `status` as a failure of this request alone (one card the processor cannot charge
/// now, one key): the client stack does not eject the endpoint that answered it nor retry it
/// on another one at once, and its circuit breaker counts it once per idempotency key, so a
/// few bad requests never open the breaker that every request shares while the same answer
/// to every request still does. The caller's own retry (with backoff) is still welcome.
pub fn request_scoped(mut status: Status) -> Status {
    status.metadata_mut().insert(
        FAILURE_SCOPE_HEADER,
        tonic::metadata::MetadataValue::from_static("request"),
    );
    status
}

/// UNAVAILABLE for one request whose dependency cannot serve it now (retry later), with an
/// `ErrorInfo` (reason, domain, metadata) and a `RetryInfo` hint, marked `request_scoped`.
pub fn unavailable_for_request(
    message: impl Into<String>,
    reason: &str,
    domain: &str,
    metadata: std::collections::HashMap<String, String>,
    retry_after: std::time::Duration,
) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, domain, metadata);
    details.set_retry_info(Some(retry_after));
    request_scoped(Status::with_error_details(
        Code::Unavailable,
        message,
        details,
    ))
}

/// ABORTED for a write that lost to a concurrent one (a lock or serialization conflict on a
/// hot row): the request may be retried as it is; the server is fine.
pub fn contended(what: impl std::fmt::Display) -> Status {
    tracing::debug!(error = %what, "write conflict");
    Status::aborted("a concurrent change conflicted with this one; retry")
}

/// A database failure. The cause is logged, not sent: callers get UNAVAILABLE, which is
/// retryable, instead of INTERNAL.
pub fn db_error(err: impl std::fmt::Display) -> Status {
    tracing::error!(error = %err, "database error");
    Status::unavailable("database unavailable, retry later")
}

/// Checks that an id-like field is set and well formed: 1..=128 chars of `[A-Za-z0-9._:-]`.
pub fn require_id(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid_argument(field, "must not be empty"));
    }
    if value.len() > 128 {
        return Err(invalid_argument(field, "must be at most 128 characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
    {
        return Err(invalid_argument(
            field,
            "may only contain letters, digits, '.', '_', ':' and '-'",
        ));
    }
    Ok(())
}

/// Checks an idempotency key: required, 1..=200 printable ASCII characters.
pub fn require_idempotency_key(value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid_argument("idempotency_key", "must not be empty"));
    }
    if value.len() > 200 || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid_argument(
            "idempotency_key",
            "must be at most 200 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_the_field_in_details() {
        let s = invalid_argument("lines[0].quantity", "must be positive");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "lines[0].quantity: must be positive");
        let br = s.get_details_bad_request().expect("bad request detail");
        assert_eq!(br.field_violations[0].field, "lines[0].quantity");
    }

    #[test]
    fn a_request_scoped_failure_says_so_and_keeps_its_details() {
        let s = unavailable_for_request(
            "the processor is down",
            "PROCESSOR_UNAVAILABLE",
            "payment.ordermesh",
            [("card_last4".to_string(), "0119".to_string())].into(),
            std::time::Duration::from_secs(1),
        );
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.metadata()
                .get(FAILURE_SCOPE_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("request")
        );
        let http: http::Response<tonic::body::Body> = s.clone().into_http();
        assert_eq!(
            http.headers()
                .get(FAILURE_SCOPE_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("request"),
            "a trailers-only answer carries the mark beside grpc-status"
        );
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "PROCESSOR_UNAVAILABLE");
        assert_eq!(
            s.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(std::time::Duration::from_secs(1))
        );
    }

    #[test]
    fn ids() {
        assert!(require_id("order_id", "ord_1").is_ok());
        assert_eq!(
            require_id("order_id", "").unwrap_err().code(),
            Code::InvalidArgument
        );
        assert!(require_id("order_id", "a b").is_err());
        assert!(require_id("order_id", &"x".repeat(129)).is_err());
        assert!(require_idempotency_key("saga-1/reserve").is_ok());
        assert!(require_idempotency_key("").is_err());
    }
}
