//! A service's loaded identity: its certificate chain and key, the mesh CA, and the rustls
//! verifiers built from them. Files are re-read when they change; new handshakes use the new
//! pair, connections already open keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::SpiffeId;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Pem(String),
    #[error("certificate issuing failed: {0}")]
    Issue(String),
    #[error("identity: {0}")]
    Identity(String),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where a service's certificate, key and the mesh CA live.
#[derive(Clone, Debug)]
pub struct CertPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertPaths {
    /// `dir/ca.pem`, `dir/<service>.pem`, `dir/<service>-key.pem`.
    pub fn in_dir(dir: &Path, service: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{service}.pem")),
            key: dir.join(format!("{service}-key.pem")),
        }
    }

    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        [&self.ca, &self.cert, &self.key]
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
            })
            .collect()
    }
}

struct Loaded {
    key: Arc<CertifiedKey>,
    id: SpiffeId,
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<WebPkiServerVerifier>,
    stamp: Vec<Option<(SystemTime, u64)>>,
}

/// A service's mesh identity, shared by its server and its clients.
pub struct MeshIdentity {
    paths: CertPaths,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for MeshIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshIdentity")
            .field("id", &self.id().to_string())
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Io(path.display().to_string(), e))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

/// The SPIFFE id in a certificate's URI SANs.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Option<SpiffeId> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = x509.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => SpiffeId::parse(u).ok(),
        _ => None,
    })
}

impl MeshIdentity {
    /// Loads the files; fails if any is missing, unreadable, or the key does not match.
    pub fn load(paths: CertPaths) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = Self::read_files(&paths, &provider)?;
        Ok(Arc::new(Self {
            paths,
            provider,
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    fn read_files(paths: &CertPaths, provider: &Arc<CryptoProvider>) -> Result<Loaded, TlsError> {
        let stamp = paths.stamp();
        let chain = certs(&paths.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&read(&paths.key)?)
            .map_err(|e| TlsError::Pem(format!("{}: {e}", paths.key.display())))?;
        let id = spiffe_id_of(&chain[0]).ok_or_else(|| {
            TlsError::Identity(format!("{} has no spiffe:// URI SAN", paths.cert.display()))
        })?;
        let certified = CertifiedKey::from_der(chain, key, provider)?;
        let mut roots = RootCertStore::empty();
        for ca in certs(&paths.ca)? {
            roots.add(ca)?;
        }
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::Identity(e.to_string()))?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Identity(e.to_string()))?;
        Ok(Loaded {
            key: Arc::new(certified),
            id,
            client_verifier,
            server_verifier,
            stamp,
        })
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// This service's own identity.
    pub fn id(&self) -> SpiffeId {
        self.loaded().id.clone()
    }

    /// Re-reads the files if any changed. A half-written or mismatched set is not taken: the
    /// old pair stays in use and the next check tries again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if self.loaded().stamp == self.paths.stamp() {
            return Ok(false);
        }
        let fresh = Self::read_files(&self.paths, &self.provider)?;
        tracing::info!(id = %fresh.id, "mesh certificate reloaded");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(true)
    }

    /// Checks the files every `every` until the returned task is dropped or aborted.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = me.reload_if_changed() {
                    tracing::warn!(error = %e, "mesh certificate files changed but could not be loaded; keeping the current pair");
                }
            }
        })
    }

    /// Server side: TLS 1.2/1.3, HTTP/2 only, a client certificate from the mesh CA required.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_client_cert_verifier(Arc::new(CurrentClientVerifier(self.clone())))
            .with_cert_resolver(Arc::new(CurrentCert(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// Client side: presents this identity, trusts only the mesh CA.
    pub fn client_config(self: &Arc<Self>) -> Arc<rustls::ClientConfig> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CurrentServerVerifier(self.clone())))
            .with_client_cert_resolver(Arc::new(CurrentCert(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }
}

/// Resolves to whatever pair is current at handshake time.
#[derive(Debug)]
struct CurrentCert(Arc<MeshIdentity>);

impl rustls::server::ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.loaded().key.clone())
    }
}

impl rustls::client::ResolvesClientCert for CurrentCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.loaded().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates against the CA that is current at handshake time.
#[derive(Debug)]
struct CurrentClientVerifier(Arc<MeshIdentity>);

impl ClientCertVerifier for CurrentClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .loaded()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        if spiffe_id_of(end_entity).is_none() {
            return Err(rustls::Error::General(
                "client certificate has no spiffe:// URI SAN".into(),
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .loaded()
            .client_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .loaded()
            .client_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.loaded().client_verifier.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

/// Verifies the server's chain against the current CA and its DNS name (the service name).
#[derive(Debug)]
struct CurrentServerVerifier(Arc<MeshIdentity>);

impl ServerCertVerifier for CurrentServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.loaded().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .loaded()
            .server_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .loaded()
            .server_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.loaded().server_verifier.supported_verify_schemes()
    }
}
