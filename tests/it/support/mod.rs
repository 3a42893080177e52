//! Test support: a real JWKS issuer, a real echo upstream and a real
//! gateway, all on 127.0.0.1 with ephemeral ports.

pub mod binary;
pub mod gateway;
pub mod grpc;
pub mod introspection;
pub mod issuer;
pub mod nginx;
pub mod raw;
pub mod redis;
pub mod tls;
pub mod upstream;

pub use gateway::TestGateway;
pub use issuer::{Signer, TestIssuer};
pub use upstream::Upstream;

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `f` until it is true or 10 s pass.
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("authgate-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Lower-case hex SHA-256 of `s` (admin token digests, `token_fp`).
pub fn sha256_hex(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
