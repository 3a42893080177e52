//! A real gateway, started in-process from YAML through the same
//! `config::parse` and `server::Running` the binary uses.

use std::path::Path;

use authgate::server::Running;

pub struct TestGateway {
    pub running: Running,
    /// `http://127.0.0.1:PORT` of the proxy.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin: String,
}

impl TestGateway {
    /// Starts a gateway on `yaml` (listen addresses are forced to ephemeral
    /// ports, and two workers, unless the YAML sets `server:` itself);
    /// waits for `/readyz`.
    pub async fn start(yaml: &str) -> Self {
        Self::start_in(yaml, Path::new(".")).await
    }

    /// As [`TestGateway::start`], resolving relative files against `dir`.
    pub async fn start_in(yaml: &str, dir: &Path) -> Self {
        let gw = Self::start_unready(yaml, dir).await;
        gw.wait_ready().await;
        gw
    }

    /// As [`TestGateway::start`], with `env` seen by `${VAR}` and `*_env`
    /// keys before the process environment.
    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Self {
        let gw = Self::start_inner(yaml, Path::new("."), env).await;
        gw.wait_ready().await;
        gw
    }

    /// Starts without waiting for readiness (for issuers that cannot load).
    pub async fn start_unready(yaml: &str, dir: &Path) -> Self {
        Self::start_inner(yaml, dir, &[]).await
    }

    async fn start_inner(yaml: &str, dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut text = String::new();
        if !yaml.contains("server:") {
            // Two workers whatever the machine's cores: the multi-worker
            // paths are exercised, and a many-core machine running tests in
            // parallel does not start a runtime per core per gateway.
            text.push_str("server:\n  listen: \"127.0.0.1:0\"\n  workers: 2\n");
        }
        if !yaml.contains("admin:") {
            text.push_str("admin:\n  listen: \"127.0.0.1:0\"\n");
        }
        text.push_str(yaml);
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .or_else(|| std::env::var(name).ok())
        };
        let loaded = authgate::config::parse(&text, dir, &lookup)
            .unwrap_or_else(|p| panic!("test config invalid: {p:#?}"));
        let running = Running::start(loaded.config).await.unwrap();
        let url = format!("http://{}", running.proxy_addr);
        let admin = format!("http://{}", running.admin_addr);
        Self {
            running,
            url,
            admin,
        }
    }

    /// Waits until `/readyz` answers 200 (issuers whose keys cannot load never get there).
    pub async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.admin);
        super::eventually("readyz", async || {
            reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    /// Current `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}
