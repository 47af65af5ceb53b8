//! Issuing: a mesh CA (rcgen) and leaf certificates carrying a SPIFFE URI SAN.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use super::{CertPaths, SpiffeId, TlsError};

fn err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Issue(e.to_string())
}

/// A leaf certificate and its private key, PEM encoded.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The mesh certificate authority.
pub struct MeshCa {
    pub cert_pem: String,
    key: KeyPair,
}

impl MeshCa {
    /// A new self-signed CA for `trust_domain`, valid for ten years.
    pub fn generate(trust_domain: &str) -> Result<Self, TlsError> {
        Self::generate_valid(
            trust_domain,
            OffsetDateTime::now_utc() - time::Duration::hours(1),
            OffsetDateTime::now_utc() + time::Duration::days(3650),
        )
    }

    pub fn generate_valid(
        trust_domain: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Self, TlsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("ordermesh mesh CA ({trust_domain})"),
        );
        dn.push(DnType::OrganizationName, "ordermesh");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
        })
    }

    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(err)?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key,
        })
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A leaf for `id`, valid from now for `lifetime`.
    pub fn issue(&self, id: &SpiffeId, lifetime: Duration) -> Result<IssuedCert, TlsError> {
        let now = OffsetDateTime::now_utc();
        self.issue_valid(id, now - time::Duration::minutes(5), now + lifetime)
    }

    /// A leaf for `id` with an explicit validity window (tests issue expired ones).
    pub fn issue_valid(
        &self,
        id: &SpiffeId,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCert, TlsError> {
        let mut params = CertificateParams::new(id.dns_names()).map_err(err)?;
        params
            .subject_alt_names
            .push(SanType::URI(id.to_string().try_into().map_err(err)?));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, id.service.clone());
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(err)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(err)?;
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .map_err(|e| TlsError::Io(tmp.display().to_string(), e))?;
        f.write_all(contents.as_bytes())
            .map_err(|e| TlsError::Io(tmp.display().to_string(), e))?;
        f.sync_all()
            .map_err(|e| TlsError::Io(tmp.display().to_string(), e))?;
    }
    // Rename, so a reader never sees half a file.
    std::fs::rename(&tmp, path).map_err(|e| TlsError::Io(path.display().to_string(), e))
}

/// Writes a leaf for `id` to `paths` (certificate, then key, each replaced atomically).
pub fn write_leaf(paths: &CertPaths, leaf: &IssuedCert) -> Result<(), TlsError> {
    write_private(&paths.key, &leaf.key_pem)?;
    write_private(&paths.cert, &leaf.cert_pem)
}

/// Creates `dir/ca.pem` + `dir/ca-key.pem` unless present, and a leaf per service
/// (`dir/<service>.pem`, `dir/<service>-key.pem`) unless present. Returns the services
/// whose leaves it wrote.
pub fn ensure_dev_certs(
    dir: &Path,
    trust_domain: &str,
    namespace: &str,
    services: &[&str],
) -> Result<Vec<String>, TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| TlsError::Io(dir.display().to_string(), e))?;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca-key.pem");
    let ca = if ca_cert.exists() && ca_key.exists() {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| TlsError::Io(p.display().to_string(), e))
        };
        MeshCa::load(&read(&ca_cert)?, &read(&ca_key)?)?
    } else {
        let ca = MeshCa::generate(trust_domain)?;
        write_private(&ca_key, &ca.key_pem())?;
        write_private(&ca_cert, &ca.cert_pem)?;
        ca
    };
    let mut written = vec![];
    for service in services {
        let paths = CertPaths::in_dir(dir, service);
        if paths.cert.exists() && paths.key.exists() {
            continue;
        }
        let id = SpiffeId::new(trust_domain, namespace, service);
        write_leaf(&paths, &ca.issue(&id, Duration::from_secs(90 * 24 * 3600))?)?;
        written.push(service.to_string());
    }
    Ok(written)
}
