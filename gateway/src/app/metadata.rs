//! What crosses between HTTP headers and gRPC metadata: the headers a REST caller may pass to
//! the service, the caller's identity the gateway adds, and the response metadata returned as
//! `Grpc-Metadata-*` headers.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};

/// Metadata the gateway sets itself; a client cannot pass these in.
pub const SUBJECT_METADATA: &str = "x-ordermesh-subject";

/// Whether `name` is one of the headers that ask for an injected fault.
fn is_fault_header(name: &str) -> bool {
    ordermesh::transport::faults::REQUEST_HEADERS.contains(&name)
}

/// The metadata of an upstream call made for a REST request: the `forward` headers,
/// `Grpc-Metadata-<key>` headers as `<key>` (never the gateway's own keys or `grpc-*`), the
/// caller's subject and address. Fault headers (`x-ordermesh-fault-*`) go on only when
/// `faults` says the caller may ask for them (FAULTS on and an operator token), and then
/// without being listed in `forward`.
pub fn request_metadata(
    forward: &[HeaderName],
    headers: &HeaderMap,
    subject: Option<&str>,
    peer: SocketAddr,
    faults: bool,
) -> MetadataMap {
    let mut md = MetadataMap::new();
    let fault_headers = ordermesh::transport::faults::REQUEST_HEADERS.map(HeaderName::from_static);
    let passed: Vec<&HeaderName> = match faults {
        true => forward.iter().chain(fault_headers.iter()).collect(),
        false => forward
            .iter()
            .filter(|n| !is_fault_header(n.as_str()))
            .collect(),
    };
    for name in passed {
        for v in headers.get_all(name) {
            if let (Ok(k), Ok(v)) = (
                MetadataKey::from_bytes(name.as_str().as_bytes()),
                MetadataValue::try_from(v.as_bytes()),
            ) {
                md.append(k, v);
            }
        }
    }
    for (name, v) in headers {
        if let Some(rest) = name.as_str().strip_prefix("grpc-metadata-") {
            if rest == SUBJECT_METADATA || rest.starts_with("grpc-") || is_fault_header(rest) {
                continue;
            }
            if let (Ok(k), Ok(v)) = (
                MetadataKey::from_bytes(rest.as_bytes()),
                MetadataValue::try_from(v.as_bytes()),
            ) {
                md.append(k, v);
            }
        }
    }
    if let Some(s) = subject.and_then(|s| MetadataValue::try_from(s).ok()) {
        md.insert(SUBJECT_METADATA, s);
    }
    if let Ok(v) = MetadataValue::try_from(peer.ip().to_string()) {
        md.insert("x-forwarded-for", v);
    }
    md
}

/// Response metadata back to the client as `Grpc-Metadata-<key>` headers.
pub fn response_headers(md: &MetadataMap, h: &mut HeaderMap) {
    for entry in md.iter() {
        let KeyAndValueRef::Ascii(k, v) = entry else {
            continue;
        };
        let name = k.as_str();
        if name.starts_with("grpc-")
            || name == "content-type"
            || name == "date"
            || name.ends_with("-bin")
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(format!("grpc-metadata-{name}").as_bytes()),
            HeaderValue::from_bytes(v.as_encoded_bytes()),
        ) {
            h.append(n, v);
        }
    }
}

/// Native gRPC: fault headers are dropped unless the caller may ask for faults.
pub fn strip_faults(headers: &mut HeaderMap, faults: bool) {
    if !faults {
        for name in ordermesh::transport::faults::REQUEST_HEADERS {
            headers.remove(name);
        }
    }
}

/// Native gRPC: the caller's subject replaces whatever the client sent under the gateway's key.
pub fn set_subject(headers: &mut HeaderMap, subject: Option<&str>) {
    headers.remove(SUBJECT_METADATA);
    if let Some(v) = subject.and_then(|s| HeaderValue::from_str(s).ok()) {
        headers.insert(SUBJECT_METADATA, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_cannot_pass_the_subject_in() {
        let mut h = HeaderMap::new();
        h.insert(
            "grpc-metadata-x-ordermesh-subject",
            "mallory".parse().unwrap(),
        );
        h.insert("grpc-metadata-x-tenant", "t1".parse().unwrap());
        h.insert("x-request-id", "r1".parse().unwrap());
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let forward = [HeaderName::from_static("x-request-id")];
        let md = request_metadata(&forward, &h, None, peer, false);
        assert!(md.get(SUBJECT_METADATA).is_none());
        assert_eq!(md.get("x-tenant").unwrap(), "t1");
        assert_eq!(md.get("x-request-id").unwrap(), "r1");
        assert_eq!(md.get("x-forwarded-for").unwrap(), "10.1.2.3");
        let md = request_metadata(&forward, &h, Some("alice"), peer, false);
        assert_eq!(md.get(SUBJECT_METADATA).unwrap(), "alice");
        let mut grpc = h.clone();
        grpc.insert(SUBJECT_METADATA, "mallory".parse().unwrap());
        set_subject(&mut grpc, None);
        assert!(grpc.get(SUBJECT_METADATA).is_none());
    }

    #[test]
    fn fault_headers_go_on_only_for_a_caller_allowed_to_ask() {
        let mut h = HeaderMap::new();
        h.insert("x-ordermesh-fault-abort", "UNAVAILABLE".parse().unwrap());
        h.insert(
            "grpc-metadata-x-ordermesh-fault-delay",
            "1s".parse().unwrap(),
        );
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        // Even listed in GATEWAY_FORWARD_HEADERS, a fault header is stripped for others.
        let forward = [HeaderName::from_static("x-ordermesh-fault-abort")];
        let md = request_metadata(&forward, &h, Some("alice"), peer, false);
        assert!(md.get("x-ordermesh-fault-abort").is_none());
        assert!(md.get("x-ordermesh-fault-delay").is_none());
        let md = request_metadata(&[], &h, Some("ops"), peer, true);
        assert_eq!(md.get("x-ordermesh-fault-abort").unwrap(), "UNAVAILABLE");
        // Native gRPC metadata is stripped the same way.
        let mut grpc = HeaderMap::new();
        grpc.insert("x-ordermesh-fault-target", "payment".parse().unwrap());
        strip_faults(&mut grpc, true);
        assert!(grpc.contains_key("x-ordermesh-fault-target"));
        strip_faults(&mut grpc, false);
        assert!(grpc.is_empty());
    }
}
