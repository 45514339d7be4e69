//! TLS for the release service and its client: mutual TLS 1.3 against the organisation's CA
//! (rustls on aws-lc-rs), revocation by CRL, and the requester identity a client certificate
//! names (an e-mail SAN names a person, a URI SAN a workload).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS set-up errors (one line, naming the file).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{path}: {why}")]
    File {
        /// File.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.into(),
        why: why.to_string(),
    }
}

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_err(path, format!("no usable private key: {e}")))
}

fn roots(ca: &Path) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots.add(c).map_err(|e| file_err(ca, e))?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server's TLS files.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// The organisation's CA: client certificates must chain to it (PEM).
    pub client_ca: PathBuf,
    /// Certificate revocation lists (PEM), checked for every client certificate.
    pub crls: Vec<PathBuf>,
}

/// TLS 1.3 server configuration that requires a client certificate from `client_ca`, not
/// expired and not revoked by any of the CRLs.
pub fn server_config(t: &ServerTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut crls = Vec::new();
    for p in &t.crls {
        for c in CertificateRevocationListDer::pem_file_iter(p).map_err(|e| file_err(p, e))? {
            crls.push(c.map_err(|e| file_err(p, e))?);
        }
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots(&t.client_ca)?,
        provider(),
    )
    .with_crls(crls)
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(&t.cert)?, read_key(&t.key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// TLS 1.3 client configuration for `fetch`: trusts only `ca` for the server, presents
/// `cert`/`key`.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Who a client certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The requester id: the e-mail address or the URI.
    pub name: String,
    /// Person (e-mail SAN) or workload (URI SAN).
    pub workload: bool,
    /// SHA-256 of the certificate (binds nonces and releases to this client).
    pub fingerprint: [u8; 32],
}

/// Why a client certificate names no requester.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// It is not a DER X.509 certificate.
    #[error("unreadable certificate: {0}")]
    Unreadable(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// It has neither a URI nor an e-mail subject alternative name.
    #[error("the client certificate names no e-mail or URI subject alternative name")]
    NoIdentity,
    /// It has several URI SANs, or no URI SAN and several e-mail SANs.
    #[error("the client certificate names more than one identity")]
    SeveralIdentities,
}

/// The identity of a client certificate (already verified by the TLS handshake): its single
/// URI SAN (a workload) or else its single e-mail SAN (a person).
pub fn identity_of(der: &[u8]) -> Result<ClientIdentity, IdentityError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(IdentityError::Unreadable)?;
    let mut uris = Vec::new();
    let mut emails = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::RFC822Name(e) => emails.push(e.to_ascii_lowercase()),
                _ => {}
            }
        }
    }
    let fingerprint = sha2::Sha256::digest(der).into();
    match (uris.as_slice(), emails.as_slice()) {
        ([u], _) => Ok(ClientIdentity {
            name: u.clone(),
            workload: true,
            fingerprint,
        }),
        ([], [e]) => Ok(ClientIdentity {
            name: e.clone(),
            workload: false,
            fingerprint,
        }),
        ([], []) => Err(IdentityError::NoIdentity),
        _ => Err(IdentityError::SeveralIdentities),
    }
}
