//! Who is calling, as request extensions: the peer address (set by the gateway for every
//! request) and the token's subject (set by the auth layer). The rate limit, the cache key and
//! the upstream metadata read them.

use std::net::SocketAddr;

/// The TCP peer of the connection the request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The `sub` of the caller's verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject(pub String);

impl Subject {
    /// The subject of a request, if the auth layer verified one.
    pub fn of<B>(req: &http::Request<B>) -> Option<&str> {
        req.extensions().get::<Subject>().map(|s| s.0.as_str())
    }
}

/// The caller's verified token carries the operator scope (`ordermesh:operator`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operator;

impl Operator {
    /// Whether the auth layer found the operator scope on this request's token.
    pub fn of<B>(req: &http::Request<B>) -> bool {
        req.extensions().get::<Operator>().is_some()
    }
}
