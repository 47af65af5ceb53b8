//! What crosses between HTTP headers and gRPC metadata: the headers a REST caller may pass to
//! the service, the caller's identity the gateway adds, and the response metadata returned as
//! `Grpc-Metadata-*` headers.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};

/// Metadata the gateway sets itself; a client cannot pass these in.
pub const SUBJECT_METADATA: &str = "x-ordermesh-subject";

/// What a caller may pass on beyond the forward list, by its token and the gateway's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Privileged {
    /// `x-ordermesh-fault-*` (FAULTS on and an operator token).
    pub faults: bool,
    /// `x-ordermesh-backend`, which pins a call to one backend of a split (an operator token).
    pub pin: bool,
}

impl Privileged {
    /// What a caller with (or without) an operator token may send, given whether fault
    /// injection is on at the gateway.
    pub fn for_caller(operator: bool, faults_on: bool) -> Self {
        Self {
            faults: operator && faults_on,
            pin: operator,
        }
    }

    /// Whether `name` may go on: anything but the privileged headers, and those only when
    /// allowed.
    fn allows(&self, name: &str) -> bool {
        if name.starts_with(ordermesh::transport::faults::HEADER_PREFIX) {
            self.faults
        } else if name == ordermesh::transport::client::policy::PIN_HEADER {
            self.pin
        } else {
            true
        }
    }
}

/// The metadata of an upstream call made for a REST request: the `forward` headers,
/// `Grpc-Metadata-<key>` headers as `<key>` (never the gateway's own keys or `grpc-*`), the
/// caller's subject and address. The privileged headers (`x-ordermesh-fault-*`,
/// `x-ordermesh-backend`) go on only as `privileged` allows, and then as plain headers
/// without being listed in `forward`; in any other form, or for anyone else, they are dropped.
pub fn request_metadata(
    forward: &[HeaderName],
    headers: &HeaderMap,
    subject: Option<&str>,
    peer: SocketAddr,
    privileged: Privileged,
) -> MetadataMap {
    let mut md = MetadataMap::new();
    let extra: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            let n = n.as_str();
            (n.starts_with(ordermesh::transport::faults::HEADER_PREFIX)
                || n == ordermesh::transport::client::policy::PIN_HEADER)
                && privileged.allows(n)
        })
        .cloned()
        .collect();
    let passed: Vec<&HeaderName> = forward
        .iter()
        .filter(|n| privileged.allows(n.as_str()))
        .chain(extra.iter().filter(|n| !forward.contains(n)))
        .collect();
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
            if rest == SUBJECT_METADATA
                || rest.starts_with("grpc-")
                || !Privileged::default().allows(rest)
            {
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

/// Native gRPC: the privileged headers a caller may not send are dropped.
pub fn strip_privileged(headers: &mut HeaderMap, privileged: Privileged) {
    let drop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| !privileged.allows(n.as_str()))
        .cloned()
        .collect();
    for name in drop {
        headers.remove(name);
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
        let md = request_metadata(&forward, &h, None, peer, Privileged::default());
        assert!(md.get(SUBJECT_METADATA).is_none());
        assert_eq!(md.get("x-tenant").unwrap(), "t1");
        assert_eq!(md.get("x-request-id").unwrap(), "r1");
        assert_eq!(md.get("x-forwarded-for").unwrap(), "10.1.2.3");
        let md = request_metadata(&forward, &h, Some("alice"), peer, Privileged::default());
        assert_eq!(md.get(SUBJECT_METADATA).unwrap(), "alice");
        let mut grpc = h.clone();
        grpc.insert(SUBJECT_METADATA, "mallory".parse().unwrap());
        set_subject(&mut grpc, None);
        assert!(grpc.get(SUBJECT_METADATA).is_none());
    }

    #[test]
    fn privileged_headers_go_on_only_for_a_caller_allowed_to_send_them() {
        let mut h = HeaderMap::new();
        h.insert("x-ordermesh-fault-abort", "UNAVAILABLE".parse().unwrap());
        h.insert("x-ordermesh-fault-tag", "chaos".parse().unwrap());
        h.insert("x-ordermesh-backend", "payment-canary".parse().unwrap());
        h.insert(
            "grpc-metadata-x-ordermesh-fault-delay",
            "1s".parse().unwrap(),
        );
        h.insert(
            "grpc-metadata-x-ordermesh-backend",
            "payment-canary".parse().unwrap(),
        );
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        // Even listed in GATEWAY_FORWARD_HEADERS, they are dropped for others.
        let forward = [
            HeaderName::from_static("x-ordermesh-fault-abort"),
            HeaderName::from_static("x-ordermesh-backend"),
        ];
        let md = request_metadata(&forward, &h, Some("alice"), peer, Privileged::default());
        let keys: Vec<&str> = md
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                _ => None,
            })
            .collect();
        assert!(
            !keys
                .iter()
                .any(|k| k.starts_with("x-ordermesh-fault") || *k == "x-ordermesh-backend"),
            "{keys:?}"
        );
        let ops = Privileged {
            faults: true,
            pin: true,
        };
        let md = request_metadata(&[], &h, Some("ops"), peer, ops);
        assert_eq!(md.get("x-ordermesh-fault-abort").unwrap(), "UNAVAILABLE");
        assert_eq!(md.get("x-ordermesh-fault-tag").unwrap(), "chaos");
        assert_eq!(md.get("x-ordermesh-backend").unwrap(), "payment-canary");
        assert!(
            md.get("x-ordermesh-fault-delay").is_none(),
            "plain headers only"
        );
        // An operator while FAULTS is off: the pin goes on, faults do not.
        let md = request_metadata(
            &[],
            &h,
            Some("ops"),
            peer,
            Privileged {
                faults: false,
                pin: true,
            },
        );
        assert!(md.get("x-ordermesh-fault-abort").is_none());
        assert!(md.get("x-ordermesh-backend").is_some());
        // Native gRPC metadata is stripped the same way, by prefix.
        let mut grpc = h.clone();
        strip_privileged(&mut grpc, ops);
        assert_eq!(grpc.len(), h.len());
        strip_privileged(&mut grpc, Privileged::default());
        assert!(
            grpc.keys().all(|k| !k.as_str().starts_with("x-ordermesh-")),
            "{grpc:?}"
        );
    }
}
