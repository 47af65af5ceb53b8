//! gRPC header names the stacks read or write on every call, made once: a header looked up
//! or inserted by `&str` is parsed and validated each time.

use http::HeaderName;

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT: HeaderName = HeaderName::from_static("x-ordermesh-idempotent");
pub const FAILURE_SCOPE: HeaderName =
    HeaderName::from_static(crate::types::status::FAILURE_SCOPE_HEADER);

/// Whether a (trailers-only) answer says its failure belongs to the request alone
/// (`types::status::request_scoped`).
pub fn request_scoped(headers: &http::HeaderMap) -> bool {
    headers
        .get(FAILURE_SCOPE)
        .is_some_and(|v| v.as_bytes() == b"request")
}
