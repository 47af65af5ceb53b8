//! gRPC header names the stacks read or write on every call, made once: a header looked up
//! or inserted by `&str` is parsed and validated each time.

use http::HeaderName;

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT: HeaderName = HeaderName::from_static("x-ordermesh-idempotent");
