//! HTTP fetches of key material: bounded in time and size, no redirects,
//! only JSON content types. Never called with anything taken from a token.

use std::time::Duration;

use http::header;

use crate::config::ConfigProblem;

/// Time allowed for one fetch, connect included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest document accepted.
/// Largest key or discovery document accepted, fetched or read from a file.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// Why a fetch failed (logged and counted; never shown to clients).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connection, TLS or timeout failure.
    #[error("request failed: {0}")]
    Transport(String),
    /// A status other than 200.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// Not JSON by its content type.
    #[error("content type {0:?} is not JSON")]
    ContentType(String),
    /// Larger than allowed.
    #[error("document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    /// The document does not have the expected shape.
    #[error("invalid document: {0}")]
    Invalid(&'static str),
    /// A discovery document for another issuer.
    #[error("discovery document names issuer {found:?}, not the configured one")]
    IssuerMismatch {
        /// What the document said.
        found: String,
    },
    /// Reading a local file failed.
    #[error("cannot read file: {0}")]
    File(std::io::ErrorKind),
}

/// A fetched document and how long its server says it stays fresh.
#[derive(Debug)]
pub struct Document {
    /// Body bytes.
    pub body: bytes::Bytes,
    /// `Cache-Control: max-age` (0 for `no-store` / `no-cache`).
    pub max_age: Option<Duration>,
}

/// An HTTP client for one issuer's key and discovery fetches.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    /// A client trusting the system roots plus `ca_file`, if given.
    pub fn new(ca_file: Option<&std::path::Path>, path: &str) -> Result<Self, ConfigProblem> {
        Ok(Self {
            client: http_client(ca_file, path, FETCH_TIMEOUT)?,
        })
    }

    /// GETs a JSON document.
    pub async fn get_json(&self, url: &str) -> Result<Document, FetchError> {
        let mut response = self
            .client
            .get(url)
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| FetchError::Transport(describe(&e)))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if let Some(ct) = response.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            if !matches!(essence, "application/json" | "application/jwk-set+json") {
                return Err(FetchError::ContentType(essence.to_owned()));
            }
        }
        let max_age = response
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_DOCUMENT_BYTES)
        {
            return Err(FetchError::TooLarge);
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Transport(describe(&e)))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Document {
            body: body.freeze(),
            max_age,
        })
    }
}

/// An HTTP client for calls to an identity provider: bounded by `timeout`
/// (connect included), no redirects, trusting the system roots plus
/// `ca_file`. `path` names the config key for problems.
pub fn http_client(
    ca_file: Option<&std::path::Path>,
    path: &str,
    timeout: Duration,
) -> Result<reqwest::Client, ConfigProblem> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| {
            ConfigProblem::new(
                path,
                format!("cannot read {}: {}", ca.display(), e.kind()),
                "a readable PEM CA file",
            )
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
            ConfigProblem::new(
                path,
                "no certificates in the CA file",
                "PEM CA certificates",
            )
        })?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| {
        ConfigProblem::new(
            path,
            format!("cannot build HTTP client: {e}"),
            "a usable CA file",
        )
    })
}

/// `max-age` from a Cache-Control value; `no-store`/`no-cache` mean 0.
fn max_age(value: &str) -> Option<Duration> {
    let mut age = None;
    for directive in value.split(',') {
        let d = directive.trim().to_ascii_lowercase();
        if d == "no-store" || d == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(n) = d.strip_prefix("max-age=") {
            age = n
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

/// A transport error in words, without the URL's query (never holds token data anyway).
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age_is_read() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }
}
