//! How a process talks to the mesh: plaintext (tests, development) or mutual TLS with an
//! identity, its certificate files and the authorization policy its server enforces.

use std::time::Duration;

/// How a service talks to the mesh.
#[derive(Clone, Debug)]
pub enum Transport {
    /// No TLS and no caller identity: tests and explicit development use only.
    Plaintext,
    /// Mutual TLS with a mesh identity, and an authorization policy on every call.
    MutualTls(TlsSettings),
}

#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub paths: super::CertPaths,
    pub trust_domain: String,
    pub namespace: String,
    pub policy: crate::transport::authz::Policy,
    pub reload_every: Duration,
}
