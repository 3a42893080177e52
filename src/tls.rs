//! rustls server configuration from PEM files: TLS 1.2 and 1.3 on the
//! aws-lc-rs provider, ALPN `h2` then `http/1.1`, optional client
//! certificates. Files are read only here, at load or reload, never per
//! connection.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS file or setting is unusable, naming the config key it came
/// from (callers turn it into their own error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem} ({expected})")]
pub struct TlsError {
    /// The config key, like `server.tls.key_file`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// What would be right.
    pub expected: String,
}

impl TlsError {
    fn new(key: &str, problem: impl Into<String>, expected: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            problem: problem.into(),
            expected: expected.into(),
        }
    }
}

/// The process-wide crypto provider: aws-lc-rs.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the listener's TLS config, naming the exact key on failure.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    listener_config(cert_file, key_file, client_ca_file, true)
}

/// As [`server_config`]; with a client CA, `client_required: false` lets
/// clients without a certificate in (one that is sent is still verified:
/// `server.tls.client_auth: optional`).
pub fn listener_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
    client_required: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(cert_file, "server.tls.cert_file")?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        TlsError::new(
            "server.tls.key_file",
            format!(
                "no usable private key in {}: {}",
                key_file.display(),
                pem_reason(&e)
            ),
            "a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)",
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::new("server.tls", e.to_string(), "TLS 1.2 and 1.3"))?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca, "server.tls.client_ca_file")? {
                roots.add(cert).map_err(|e| {
                    TlsError::new(
                        "server.tls.client_ca_file",
                        format!("unusable CA certificate: {e}"),
                        "PEM CA certificates",
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider());
            let verifier = match client_required {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| {
                TlsError::new(
                    "server.tls.client_ca_file",
                    format!("unusable CA bundle: {e}"),
                    "PEM CA certificates",
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError::new(
            "server.tls.key_file",
            format!("key does not fit the certificate: {e}"),
            "the private key of the first certificate in cert_file",
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads every certificate of a PEM file; at least one is required.
pub fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |why: String| {
        TlsError::new(
            key,
            format!("cannot read certificates from {}: {why}", path.display()),
            "a PEM file with at least one CERTIFICATE block",
        )
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| problem(pem_reason(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| problem(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(problem("no certificate found".into()));
    }
    Ok(certs)
}

fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.kind().to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM block found".into(),
        other => format!("{other:?}"),
    }
}
