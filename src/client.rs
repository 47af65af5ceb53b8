//! The one way to build a channel to another service. Every outbound call goes through here,
//! so transport concerns (mTLS now; discovery, balancing and resilience next) live in one place.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::tls::MeshIdentity;

/// How the channel secures its connections.
#[derive(Clone, Debug)]
pub enum Security {
    /// Plaintext HTTP/2: tests and explicit development setups only.
    Plaintext,
    /// mTLS presenting `identity`; the server must prove it is `service`.
    Mesh {
        identity: Arc<MeshIdentity>,
        service: String,
    },
}

/// Settings for one upstream service.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `http://host:port` of the upstream (the scheme names HTTP/2; TLS comes from `security`).
    pub uri: String,
    pub connect_timeout: Duration,
    /// Deadline for calls that carry none of their own.
    pub default_timeout: Duration,
    pub security: Security,
}

impl Upstream {
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            connect_timeout: Duration::from_secs(3),
            default_timeout: Duration::from_secs(10),
            security: Security::Plaintext,
        }
    }

    /// Calls go over mTLS with this process's identity to the named mesh service.
    pub fn mesh(mut self, identity: Arc<MeshIdentity>, service: &str) -> Self {
        self.security = Security::Mesh {
            identity,
            service: service.to_string(),
        };
        self
    }

    fn endpoint(&self) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(self.uri.clone())?
            .connect_timeout(self.connect_timeout)
            .timeout(self.default_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true))
    }

    /// A channel that connects on first use and reconnects after failures.
    pub fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        let endpoint = self.endpoint()?;
        Ok(match &self.security {
            Security::Plaintext => endpoint.connect_lazy(),
            Security::Mesh { identity, service } => endpoint
                .connect_with_connector_lazy(crate::tls::connector(identity.clone(), service)),
        })
    }

    /// A channel whose first connection is made now, so a bad address or identity fails here.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        let endpoint = self.endpoint()?;
        match &self.security {
            Security::Plaintext => endpoint.connect().await,
            Security::Mesh { identity, service } => {
                endpoint
                    .connect_with_connector(crate::tls::connector(identity.clone(), service))
                    .await
            }
        }
    }
}
