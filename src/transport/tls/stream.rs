//! mTLS on the wire: an incoming stream of verified server connections that tell tonic who the
//! peer is, and a client connector that presents this service's identity.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::identity::spiffe_id_of;
use super::{MeshIdentity, SpiffeId};

/// Who is on the other end of a server connection; handlers find it in request extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The SPIFFE id of the verified client certificate.
    pub identity: Option<SpiffeId>,
}

/// A server-side mTLS connection.
pub struct MeshTlsStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for MeshTlsStream {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for MeshTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for MeshTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections and completes the mTLS handshake of each concurrently. Only
/// connections that present a valid mesh certificate come out; plaintext, missing, expired
/// and foreign certificates are refused at the handshake and logged as warnings. A connection
/// closed before it sent anything (a TCP port check) is logged at DEBUG only.
pub fn tls_incoming(
    listener: TcpListener,
    identity: Arc<MeshIdentity>,
    handshake_timeout: Duration,
) -> ReceiverStream<Result<MeshTlsStream, io::Error>> {
    let (tx, rx) = mpsc::channel(128);
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + handshake_timeout;
                // A port check (connect, then close) sends nothing: not a refused handshake.
                let mut first = [0u8; 1];
                match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
                    Ok(Ok(0)) => {
                        tracing::debug!(peer = %addr, "connection closed before any TLS bytes");
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %addr, error = %e, "connection failed before any TLS bytes");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(peer = %addr, "mTLS handshake timed out");
                        return;
                    }
                    Ok(Ok(_)) => {}
                }
                match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let identity = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(spiffe_id_of);
                        let info = PeerInfo {
                            remote_addr: Some(addr),
                            identity,
                        };
                        let _ = tx.send(Ok(MeshTlsStream { inner: tls, info })).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %addr, error = %e, "mTLS handshake refused")
                    }
                    Err(_) => tracing::warn!(peer = %addr, "mTLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Connecting = Pin<
    Box<
        dyn Future<Output = Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, BoxError>>
            + Send,
    >,
>;

/// A connector for `tonic::transport::Endpoint::connect_with_connector`: TCP to the URI's
/// host and port, then mTLS presenting `identity`, requiring the server to be `service`
/// (its certificate's DNS name and SPIFFE id) in our trust domain.
pub fn connector(
    identity: Arc<MeshIdentity>,
    service: &str,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = BoxError,
    Future = Connecting,
> + Clone
       + Send
       + 'static {
    let service = service.to_string();
    tower::service_fn(move |uri: http::Uri| -> Connecting {
        let identity = identity.clone();
        let service = service.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or("upstream URI has no host")?
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(service.clone())?;
            let tls = tokio_rustls::TlsConnector::from(identity.client_config())
                .connect(name, tcp)
                .await?;
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(spiffe_id_of);
            let ours = identity.id();
            match peer {
                Some(p) if p.service == service && p.trust_domain == ours.trust_domain => {}
                other => {
                    return Err(format!(
                        "upstream at {host}:{port} is {}, expected service '{service}' in {}",
                        other
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "unidentified".into()),
                        ours.trust_domain
                    )
                    .into())
                }
            }
            Ok(TokioIo::new(tls))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::capture::capture;
    use crate::transport::tls::{ensure_dev_certs, CertPaths};
    use tokio::io::AsyncWriteExt;

    async fn logged(logs: &crate::telemetry::capture::Captured, what: &str) -> bool {
        for _ in 0..200 {
            if logs.text().contains(what) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_port_check_is_logged_at_debug_and_a_plaintext_client_is_refused_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        ensure_dev_certs(dir.path(), "ordermesh.local", "default", &["payment"]).unwrap();
        let identity = MeshIdentity::load(CertPaths::in_dir(dir.path(), "payment")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (logs, _guard) = capture("warn,ordermesh=debug");
        let incoming = tls_incoming(listener, identity, Duration::from_secs(5));

        // Connect and close, as `make run`'s start-up check or a TCP probe does.
        drop(TcpStream::connect(addr).await.unwrap());
        assert!(
            logged(&logs, "connection closed before any TLS bytes").await,
            "{}",
            logs.text()
        );
        assert!(!logs.text().contains("WARN"), "{}", logs.text());

        // A client that speaks something else than TLS is still refused, as a warning.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(
            logged(&logs, "mTLS handshake refused").await,
            "{}",
            logs.text()
        );
        assert!(logs.text().contains("WARN"), "{}", logs.text());
        drop(incoming);
    }
}
