//! Mesh identity and mutual TLS: SPIFFE ids, a mesh CA that issues one leaf per service,
//! rustls configurations for servers (client certificate required) and clients, and
//! certificate files that are re-read when they change.

mod identity;
mod issue;
mod settings;
mod stream;

pub use identity::{spiffe_id_of, CertPaths, MeshIdentity, TlsError};
pub use issue::{ensure_dev_certs, write_leaf, IssuedCert, MeshCa};
pub use settings::{TlsSettings, Transport};
pub use stream::{connector, tls_incoming, PeerInfo};

use std::fmt;

/// A workload identity: `spiffe://<trust-domain>/ns/<namespace>/sa/<service>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service: String,
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service: service.to_string(),
        }
    }

    pub fn parse(uri: &str) -> Result<Self, TlsError> {
        let bad = || {
            TlsError::Identity(format!(
                "'{uri}' is not spiffe://<domain>/ns/<ns>/sa/<name>"
            ))
        };
        let rest = uri.strip_prefix("spiffe://").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] if !td.is_empty() && !ns.is_empty() && !sa.is_empty() => {
                Ok(Self::new(td, ns, sa))
            }
            _ => Err(bad()),
        }
    }

    /// DNS names a leaf for this identity is valid for: the bare service name (what mesh
    /// clients verify), its cluster names and localhost.
    pub fn dns_names(&self) -> Vec<String> {
        let (s, ns) = (&self.service, &self.namespace);
        vec![
            s.clone(),
            format!("{s}.{ns}"),
            format!("{s}.{ns}.svc"),
            format!("{s}.{ns}.svc.cluster.local"),
            "localhost".to_string(),
        ]
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip() {
        let id = SpiffeId::new("ordermesh.local", "default", "order");
        assert_eq!(
            id.to_string(),
            "spiffe://ordermesh.local/ns/default/sa/order"
        );
        assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        assert!(SpiffeId::parse("spiffe://x/ns/a").is_err());
        assert!(SpiffeId::parse("https://x/ns/a/sa/b").is_err());
        assert!(SpiffeId::parse("spiffe:///ns/a/sa/b").is_err());
    }
}
