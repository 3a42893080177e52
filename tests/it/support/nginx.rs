//! A real nginx (Debian's package) on loopback, started by a test with its
//! own config and stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Nginx {
    child: Child,
    pub port: u16,
}

/// The nginx binary: `$NGINX`, then Debian's path.
fn binary() -> PathBuf {
    std::env::var_os("NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

impl Nginx {
    /// Starts nginx in the foreground (one process, as the current user)
    /// with `servers` (server blocks) inside its `http {}`.
    pub async fn start(servers: &str, port: u16) -> Self {
        let dir = super::temp_dir("nginx");
        let conf = format!(
            "daemon off;\nmaster_process off;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
events {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n\
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n{servers}\n}}\n",
            d = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx (Debian's package; scripts/test.sh installs it)");
        let nginx = Self { child, port };
        super::eventually("nginx listening", async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        nginx
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
