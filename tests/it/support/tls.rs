//! A test CA and a server certificate for 127.0.0.1 / localhost, written
//! as PEM files into a temp dir.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

pub struct TestPki {
    pub dir: PathBuf,
    pub ca_pem: String,
    /// Two client certificates from the same CA (`client-a`, `client-b`):
    /// PEM (certificate then key) and the certificate's DER.
    pub clients: [(String, Vec<u8>); 2],
}

impl TestPki {
    /// Writes `server.crt` (leaf + CA chain), `server.key` (PKCS#8) and `ca.crt`.
    pub fn new() -> Self {
        let dir = super::temp_dir("pki");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let ca_pem = ca.pem();
        std::fs::write(dir.join("server.crt"), format!("{}{}", leaf.pem(), ca_pem)).unwrap();
        std::fs::write(dir.join("server.key"), leaf_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.crt"), &ca_pem).unwrap();
        let client = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &ca).unwrap();
            (
                format!("{}{}", cert.pem(), key.serialize_pem()),
                cert.der().to_vec(),
            )
        };
        let clients = [client("client-a"), client("client-b")];
        Self {
            dir,
            ca_pem,
            clients,
        }
    }

    /// A TLS acceptor presenting the server certificate (for HTTPS upstreams).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = authgate::tls::server_config(
            &self.dir.join("server.crt"),
            &self.dir.join("server.key"),
            None,
        )
        .unwrap();
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// A reqwest client trusting only the test CA and presenting client
    /// certificate `which` (0 or 1).
    pub fn client_with_cert(&self, which: usize, http2: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let id = reqwest::Identity::from_pem(self.clients[which].0.as_bytes()).unwrap();
        let b = reqwest::Client::builder().tls_certs_only([ca]).identity(id);
        let b = if http2 { b } else { b.http1_only() };
        b.build().unwrap()
    }

    /// A reqwest client trusting only the test CA.
    pub fn client(&self, http2_only: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let b = reqwest::Client::builder().tls_certs_only([ca]);
        let b = if http2_only { b } else { b.http1_only() };
        b.build().unwrap()
    }

    /// A raw TLS connector trusting only the test CA, offering `http/1.1`.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        self.connector_for(rustls::DEFAULT_VERSIONS)
    }

    /// [`Self::connector`] speaking only `versions` of TLS.
    pub fn connector_for(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in authgate::tls::read_certs(&self.dir.join("ca.crt"), "ca").unwrap() {
            roots.add(cert).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(authgate::tls::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    }
}
