//! Running the real `authgate` binary: free ports, signals, start and wait.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// A port free at the time of the call.
///
/// Picked below Linux's ephemeral range (32768 and up), where every
/// `127.0.0.1:0` bind of the in-process tests lands, and never twice in one
/// test process: a port handed to a child gateway or redis-server cannot be
/// taken by another test's socket before the child binds it (an ephemeral
/// port could, and a replica once failed that way).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The first word of the `name:` line (`VmRSS`, `THP_enabled`, …) of
/// `/proc/{pid}/{file}`; `pid` a process id or `self`.
pub fn proc_field(pid: impl std::fmt::Display, file: &str, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?;
    value.split_whitespace().next().map(str::to_string)
}

/// Sends `sig` (`TERM`, `HUP`, `INT`) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A running gateway process, killed when dropped (a failed test leaves
/// nothing running).
pub struct Process(pub Child);

impl std::ops::Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `authgate run --config file`, returned once `/readyz` on `admin` answers 200.
pub async fn run(file: &Path, admin: u16) -> Process {
    run_with_env(file, admin, &[]).await
}

/// As [`run`], with extra environment variables.
pub async fn run_with_env(file: &Path, admin: u16, env: &[(&str, &Path)]) -> Process {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(file)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    super::eventually("the gateway to be ready", async || {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
            panic!("authgate exited early ({status}): {err}");
        }
        reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    // Nobody reads stderr after this: drop the pipe so a chatty gateway never blocks.
    drop(child.stderr.take());
    Process(child)
}

/// Waits (at most 10 s) for `child` to exit.
pub async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    panic!("authgate did not exit");
}
