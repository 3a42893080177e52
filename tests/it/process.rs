//! The `authgate` binary itself: `check` output and exit codes, SIGTERM
//! drain, SIGHUP reload, `token inspect`, and the demo end to end.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::support::binary::{BIN, free_port, proc_field, run, signal, wait_exit};
use crate::support::{Upstream, eventually, temp_dir};

#[test]
fn check_lists_every_problem_and_exits_2() {
    let dir = temp_dir("check");
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, "server:\n  idle_timeout: soon\nroutes:\n  - name: a\n    match: { path: /a }\n    upstream: \"http://127.0.0.1:1\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            r#"server.idle_timeout: "soon" is not a duration (a number with ms, s, m or h, like 500ms or 30s)"#,
            "routes[0].auth: missing (`public` or a policy with issuers; there is no implicit public route)",
        ]
    );
    let ok = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn check_strict_turns_lints_into_errors() {
    let dir = temp_dir("strict");
    let file = dir.join("gateway.yaml");
    std::fs::write(
        &file,
        "routes:\n  - name: a\n    match: { path: /a }\n    upstream: \"http://10.0.0.1:80\"\n    auth: public\n    forward: { authorization: keep }\n",
    )
    .unwrap();
    let lax = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(lax.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&lax.stderr)
            .starts_with("warning: routes[0].forward.authorization:")
    );
    let strict = Command::new(BIN)
        .args(["check", "--strict", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(2));
}

fn write_config(
    dir: &std::path::Path,
    port: u16,
    admin: u16,
    upstream: &str,
    path: &str,
) -> std::path::PathBuf {
    let file = dir.join("gateway.yaml");
    std::fs::write(
        &file,
        format!(
            "server:\n  listen: \"127.0.0.1:{port}\"\n  drain_timeout: 10s\nadmin:\n  listen: \"127.0.0.1:{admin}\"\nroutes:\n  - name: r\n    match: {{ path_prefix: {path} }}\n    upstream: \"{upstream}\"\n    auth: public\n"
        ),
    )
    .unwrap();
    file
}

/// Transparent huge pages would grow the gateway's memory 2 MiB at a time
/// (`src/huge_pages.rs`): they are off for the whole process, whatever the
/// kernel's setting, and none was taken before they were turned off.
#[tokio::test]
async fn the_gateway_runs_without_transparent_huge_pages() {
    let up = Upstream::spawn().await;
    let (port, admin) = (free_port(), free_port());
    let file = write_config(&temp_dir("thp"), port, admin, &up.url(), "/");
    let child = run(&file, admin).await;
    assert_eq!(
        reqwest::get(format!("http://127.0.0.1:{port}/a"))
            .await
            .unwrap()
            .status(),
        200
    );
    // The process's own flag (PR_SET_THP_DISABLE): 1 unless turned off.
    assert_eq!(
        proc_field(child.id(), "status", "THP_enabled").as_deref(),
        Some("0")
    );
    // With the kernel set to `always`, pages faulted before main() may be
    // huge whatever the binary does; otherwise none may be.
    let system =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !system.contains("[always]") {
        assert_eq!(
            proc_field(child.id(), "smaps_rollup", "AnonHugePages").as_deref(),
            Some("0")
        );
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let up = Upstream::spawn().await;
    let (port, admin) = (free_port(), free_port());
    let file = write_config(&temp_dir("drain"), port, admin, &up.url(), "/");
    let mut child = run(&file, admin).await;
    let slow = tokio::spawn(reqwest::get(format!(
        "http://127.0.0.1:{port}/slow?delay_ms=1500"
    )));
    eventually("the slow request to reach the upstream", async || {
        up.count() == 1
    })
    .await;
    signal(&child, "TERM");
    eventually("readyz to turn 503", async || {
        reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the listener must stop accepting"
    );
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "the in-flight request finishes");
    assert!(wait_exit(&mut child).await.success());
}

#[tokio::test]
async fn sighup_reloads_and_a_bad_file_keeps_the_old_config() {
    let up = Upstream::spawn().await;
    let (port, admin) = (free_port(), free_port());
    let dir = temp_dir("reload");
    let file = write_config(&dir, port, admin, &up.url(), "/old");
    let mut child = run(&file, admin).await;
    let get = async |path: &str| {
        reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(get("/old").await, 200);
    write_config(&dir, port, admin, &up.url(), "/new");
    signal(&child, "HUP");
    eventually("the new route", async || get("/new").await == 200).await;
    assert_eq!(get("/old").await, 404);
    std::fs::write(&file, "routes: [ {name: broken} ]\n").unwrap();
    signal(&child, "HUP");
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    eventually("a refused reload to be counted", async || {
        reqwest::get(&metrics)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains(r#"authgate_config_reloads_total{result="error"} 1"#)
    })
    .await;
    assert_eq!(get("/new").await, 200, "the old config keeps serving");
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).await.success());
}

#[test]
fn token_inspect_prints_claims_not_verified_and_no_signature() {
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
    let mut child = Command::new(BIN)
        .args(["token", "inspect"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT VERIFIED"));
    assert!(stdout.contains(r#""sub": "alice""#), "{stdout}");
    assert!(!stdout.contains("c2lnbmF0dXJlLWJ5dGVz"));
}

#[tokio::test]
async fn the_demo_works_end_to_end() {
    let mut child = Command::new(BIN)
        .args(["demo", "--ephemeral-ports", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("curl -s http://");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    let field = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let (gw, issuer, admin) = (field("gateway"), field("issuer"), field("admin"));
    let token = field("TOKEN=");
    let client = reqwest::Client::new();
    let ok = client
        .get(format!("{gw}/orders/42"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let echo = ok.text().await.unwrap();
    assert!(echo.contains(r#""x-auth-subject": "alice""#), "{echo}");
    assert_eq!(
        client
            .get(format!("{gw}/orders/42"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let mint = async |q: &str| {
        client
            .get(format!("{issuer}/token?{q}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let profile = mint("sub=bob&scope=profile").await;
    assert_eq!(
        client
            .get(format!("{gw}/orders/42"))
            .bearer_auth(profile)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let expired = mint("sub=alice&scope=orders:read&ttl=-300").await;
    assert_eq!(
        client
            .get(format!("{gw}/orders/42"))
            .bearer_auth(expired)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .get(format!("{gw}/tenants/globex/orders"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let metrics = client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"authgate_auth_failures_total{route="orders",reason="expired"} 1"#),
        "{metrics}"
    );
    // The printed gRPC lines, run as printed (curl from Debian's packages).
    let run = |prefix: &str| {
        let line = lines.iter().find(|l| l.starts_with(prefix)).unwrap();
        let out = std::process::Command::new("bash")
            .args(["-c", line])
            .env("TOKEN", &token)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let echoed = run("printf ");
    assert!(echoed.contains(r"h   e   l   l   o"), "{echoed}");
    let refused = run("curl -si --http2-prior-knowledge");
    assert!(refused.contains("grpc-status: 16"), "{refused}");
    // The printed DPoP lines, in one shell: a key, a bound token, a request.
    let at = lines
        .iter()
        .position(|l| l.contains(" dpop key --out "))
        .unwrap();
    let script = lines[at..at + 3].join("\n");
    assert!(script.contains("DPOP_TOKEN=") && script.contains("Authorization: DPoP"));
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    let echoed = String::from_utf8_lossy(&out.stdout);
    assert!(echoed.contains(r#""x-auth-subject": "alice""#), "{echoed}");
    // The printed API key and its curl line.
    let at = lines
        .iter()
        .position(|l| l.starts_with("API_KEY="))
        .unwrap();
    let out = std::process::Command::new("bash")
        .args(["-c", &lines[at..at + 2].join("\n")])
        .output()
        .unwrap();
    let echoed = String::from_utf8_lossy(&out.stdout);
    assert!(
        echoed.contains(r#""x-auth-subject": "partner-acme""#),
        "{echoed}"
    );
    assert!(!echoed.contains("x-api-key"), "{echoed}");
    signal(&child, "INT");
    let status = wait_exit(&mut child).await;
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
}

/// `authgate ARGS` under a shell that first lowers the descriptor limits.
fn with_limits(limits: &str, args: &str) -> Command {
    let mut c = Command::new("bash");
    c.args(["-c", &format!("{limits}; exec \"$0\" {args}"), BIN]);
    c
}

#[test]
fn check_refuses_max_connections_the_descriptor_limit_cannot_hold() {
    let dir = temp_dir("nofile");
    let file = dir.join("gateway.yaml");
    std::fs::write(
        &file,
        "server:\n  max_connections: 5000\nroutes:\n  - name: a\n    match: { path: /a }\n    upstream: \"http://127.0.0.1:1\"\n    auth: public\n",
    )
    .unwrap();
    let out = with_limits(
        "ulimit -n 2048",
        &format!("check --config {}", file.display()),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim(),
        "server.max_connections: 5000 client connections, 256 upstream connections and 256 others need 5512 file descriptors, but this process may open 2048 (at most 1536 (or raise the hard limit: ulimit -Hn, LimitNOFILE=))"
    );
    // Left unset, the default is lowered to fit instead.
    std::fs::write(
        &file,
        "routes:\n  - name: a\n    match: { path: /a }\n    upstream: \"http://127.0.0.1:1\"\n    auth: public\n",
    )
    .unwrap();
    let out = with_limits(
        "ulimit -n 2048",
        &format!("check --strict --config {}", file.display()),
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn run_raises_the_soft_descriptor_limit_to_the_hard_one() {
    let (port, admin) = (free_port(), free_port());
    let dir = temp_dir("nofile-run");
    let file = dir.join("gateway.yaml");
    std::fs::write(
        &file,
        format!("server: {{ listen: \"127.0.0.1:{port}\", max_connections: 100 }}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\nroutes:\n  - name: a\n    match: {{ path: /a }}\n    upstream: \"http://127.0.0.1:1\"\n    auth: public\n"),
    )
    .unwrap();
    let mut child = with_limits(
        "ulimit -Sn 512 && ulimit -Hn 4096",
        &format!("run --config {}", file.display()),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    eventually("the gateway to be ready", async || {
        reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>();
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).await.success());
    assert_eq!(
        open_files,
        ["4096", "4096"],
        "soft raised to the hard limit"
    );
}
