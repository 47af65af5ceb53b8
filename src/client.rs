//! The one way to build a channel to another service. Every outbound call goes through here,
//! so transport concerns (TLS, discovery, balancing, resilience) are added in one place.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Settings for one upstream service.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `http://host:port` of the upstream.
    pub uri: String,
    pub connect_timeout: Duration,
    /// Deadline for calls that carry none of their own.
    pub default_timeout: Duration,
}

impl Upstream {
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            connect_timeout: Duration::from_secs(3),
            default_timeout: Duration::from_secs(10),
        }
    }

    /// A channel that connects on first use and reconnects after failures.
    pub fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        Ok(Endpoint::from_shared(self.uri.clone())?
            .connect_timeout(self.connect_timeout)
            .timeout(self.default_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy())
    }

    /// A channel whose first connection is made now, so a bad address fails here.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(self.uri.clone())?
            .connect_timeout(self.connect_timeout)
            .timeout(self.default_timeout)
            .tcp_nodelay(true)
            .connect()
            .await
    }
}
