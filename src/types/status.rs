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
