//! How every failure looks to a REST client: one place maps gRPC codes to HTTP statuses and
//! writes the JSON body `{code, status, message, details}`.
//!
//! `code` is the gRPC code number (as grpc-gateway writes it), `status` its name. FAILED_PRECONDITION
//! maps to 400 (the request cannot succeed in the resource's current state; retrying it unchanged
//! will not help), ABORTED and ALREADY_EXISTS to 409.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};
use tonic::Code;
use tonic_types::StatusExt;

use crate::body::{full, Body};

#[derive(Debug, Clone)]
pub struct GatewayError {
    pub code: Code,
    pub message: String,
    field: Option<String>,
    details: Vec<Value>,
    http: Option<StatusCode>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for GatewayError {}

pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub use ordermesh::telemetry::rpc::code_name;

impl GatewayError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            details: Vec::new(),
            http: None,
            headers: Vec::new(),
        }
    }

    /// INVALID_ARGUMENT naming the field (a dotted JSON path, `body`, or a query parameter).
    pub fn bad_request(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        let mut e = Self::new(Code::InvalidArgument, format!("{field}: {description}"));
        e.field = Some(field.to_string());
        e.details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": description}],
        }));
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    pub fn with_http(mut self, status: StatusCode) -> Self {
        self.http = Some(status);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The field a bad request was about.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// Prefixes the field with the position of a streamed message, e.g. `[3].quantity`.
    pub fn prefix_field(&mut self, prefix: &str) {
        if let Some(f) = &self.field {
            let joined = if f == "body" {
                prefix.to_string()
            } else {
                format!("{prefix}.{f}")
            };
            self.message = self.message.replacen(f.as_str(), &joined, 1);
            for d in &mut self.details {
                if let Some(v) = d.pointer_mut("/fieldViolations/0/field") {
                    *v = Value::String(joined.clone());
                }
            }
            self.field = Some(joined);
        }
    }

    /// Rewrites the field paths of the BadRequest violations, and the one leading the message
    /// (`customer_id: must not be empty`), with `rename`: a service names fields as its protos
    /// do, a REST caller knows them by their JSON names.
    pub fn rename_fields(mut self, rename: impl Fn(&str) -> String) -> Self {
        let mut message_done = false;
        for detail in &mut self.details {
            if detail["@type"] != "type.googleapis.com/google.rpc.BadRequest" {
                continue;
            }
            let Some(violations) = detail
                .get_mut("fieldViolations")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for v in violations {
                let Some(field) = v.get("field").and_then(Value::as_str).map(str::to_string) else {
                    continue;
                };
                let renamed = rename(&field);
                if renamed == field {
                    continue;
                }
                if !message_done {
                    if let Some(rest) = self
                        .message
                        .strip_prefix(field.as_str())
                        .filter(|r| r.starts_with(':'))
                    {
                        self.message = format!("{renamed}{rest}");
                        message_done = true;
                    }
                }
                if self.field.as_deref() == Some(field.as_str()) {
                    self.field = Some(renamed.clone());
                }
                v["field"] = Value::String(renamed);
            }
        }
        self
    }

    /// An upstream's status, with its rich error details (google.rpc.*) as JSON.
    pub fn from_status(status: &tonic::Status) -> Self {
        let mut e = Self::new(status.code(), status.message());
        let details = status.get_error_details();
        if let Some(br) = details.bad_request() {
            e.field = br.field_violations.first().map(|v| v.field.clone());
            e.details.push(json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": br.field_violations.iter()
                    .map(|v| json!({"field": v.field, "description": v.description}))
                    .collect::<Vec<_>>(),
            }));
        }
        if let Some(info) = details.error_info() {
            e.details.push(json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": info.reason, "domain": info.domain, "metadata": info.metadata,
            }));
        }
        if let Some(pf) = details.precondition_failure() {
            e.details.push(json!({
                "@type": "type.googleapis.com/google.rpc.PreconditionFailure",
                "violations": pf.violations.iter()
                    .map(|v| json!({"type": v.r#type, "subject": v.subject, "description": v.description}))
                    .collect::<Vec<_>>(),
            }));
        }
        if let Some(ri) = details.resource_info() {
            e.details.push(json!({
                "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                "resourceType": ri.resource_type, "resourceName": ri.resource_name,
                "owner": ri.owner, "description": ri.description,
            }));
        }
        if let Some(retry) = details.retry_info() {
            if let Some(d) = retry.retry_delay {
                e.details.push(json!({
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{}.{:03}s", d.as_secs(), d.subsec_millis()),
                }));
            }
        }
        e
    }

    pub fn status(&self) -> StatusCode {
        self.http.unwrap_or_else(|| http_status(self.code))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "code": self.code as i32,
            "status": code_name(self.code),
            "message": self.message,
            "details": self.details,
        })
    }

    pub fn into_response(self) -> http::Response<Body> {
        let body = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        let mut resp = http::Response::new(full(Bytes::from(body)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (k, v) in self.headers {
            h.append(k, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_statuses_users_expect() {
        for (code, http) in [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
        ] {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn renamed_fields_reach_the_details_and_the_message() {
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "customer_id: must not be empty",
            tonic_types::ErrorDetails::with_bad_request_violation(
                "customer_id",
                "must not be empty",
            ),
        );
        let e = GatewayError::from_status(&status).rename_fields(|f| f.replace("_id", "Id"));
        assert_eq!(e.field(), Some("customerId"));
        assert_eq!(e.message, "customerId: must not be empty");
        assert_eq!(
            e.to_json()["details"][0]["fieldViolations"][0]["field"],
            "customerId"
        );
        // A message that does not start with the field is left alone.
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "bad input",
            tonic_types::ErrorDetails::with_bad_request_violation("customer_id", "x"),
        );
        let e = GatewayError::from_status(&status).rename_fields(|f| f.replace("_id", "Id"));
        assert_eq!(e.message, "bad input");
        assert_eq!(e.field(), Some("customerId"));
    }

    #[test]
    fn upstream_bad_request_details_survive() {
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "lines[0].quantity: must be positive",
            tonic_types::ErrorDetails::with_bad_request_violation(
                "lines[0].quantity",
                "must be positive",
            ),
        );
        let e = GatewayError::from_status(&status);
        assert_eq!(e.field(), Some("lines[0].quantity"));
        let v = e.to_json();
        assert_eq!(v["code"], 3);
        assert_eq!(v["status"], "INVALID_ARGUMENT");
        assert_eq!(
            v["details"][0]["fieldViolations"][0]["field"],
            "lines[0].quantity"
        );
    }
}
