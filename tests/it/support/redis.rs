//! A real `redis-server` on a free loopback port, in its own directory
//! with an append-only file (so a restart keeps what was written); killed
//! when dropped. The README's test command installs Debian's redis-server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// The certificate directory of a TLS-only server (`server.crt`,
    /// `server.key`, `ca.crt`).
    tls: Option<PathBuf>,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub async fn start() -> Self {
        let mut server = Self {
            port: super::binary::free_port(),
            dir: super::temp_dir("redis"),
            child: None,
            tls: None,
        };
        server.restart().await;
        server
    }

    /// A server that speaks only TLS, with `pki`'s certificate.
    pub async fn start_tls(pki: &super::tls::TestPki) -> Self {
        let mut server = Self {
            port: super::binary::free_port(),
            dir: super::temp_dir("redis-tls"),
            child: None,
            tls: Some(pki.dir.clone()),
        };
        server.restart().await;
        server
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown) and waits until
    /// its port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        super::eventually("redis to stop", async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        })
        .await;
    }

    /// Starts (again) on the same port and directory.
    pub async fn restart(&mut self) {
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()]),
            Some(certs) => command
                .args(["--bind", "127.0.0.1", "--port", "0"])
                .args([
                    "--tls-port",
                    &self.port.to_string(),
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(certs.join("server.crt"))
                .arg("--tls-key-file")
                .arg(certs.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(certs.join("ca.crt")),
        };
        let child = command
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); `bash scripts/test.sh` installs it")
            });
        self.child = Some(child);
        let port = self.port;
        if self.tls.is_some() {
            super::eventually("redis to listen", async || {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await;
        } else {
            super::eventually("redis to answer PING", async || ping(port).await).await;
        }
    }

    /// Runs one command through `redis-cli` (for assertions on stored keys).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        if self.tls.is_some() {
            // Only for reading what the gateway stored: OpenSSL is stricter
            // than rustls about the test CA's extensions.
            command.args(["--tls", "--insecure"]);
        }
        let out = command
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || text.is_empty() {
            eprintln!("redis-cli: {}", String::from_utf8_lossy(&out.stderr));
        }
        text
    }
}

async fn ping(port: u16) -> bool {
    let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if tcp.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tcp.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && &buf == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
