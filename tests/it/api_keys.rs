//! API keys stored as digests (CONTRACT §8.5), through the real binary:
//! keys made by `authgate key new`, looked up by digest from a header of
//! their own or as Bearer, the route policy and identity headers applied,
//! the file reloaded when it changes (a bad one refused, the old kept), and
//! `check` linting a file others can read.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::binary::{BIN, free_port, run};
use crate::support::{Upstream, eventually, temp_dir};

/// `authgate key new`: the key and its file entry.
fn new_key(subject: &str, scopes: &str) -> (String, String) {
    let out = Command::new(BIN)
        .args(["key", "new", "--subject", subject, "--scopes", scopes])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text.lines().next().unwrap().to_owned();
    assert!(key.len() >= 43, "256 bits or more: {key}");
    let entry: String = text
        .lines()
        .skip_while(|l| !l.starts_with("- sha256"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!entry.contains(&key), "the entry holds the key itself");
    (key, entry)
}

fn write_keys(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

fn config(proxy: u16, admin: u16, up: &Upstream) -> String {
    format!(
        r#"
server: {{ listen: "127.0.0.1:{proxy}", workers: 1 }}
admin: {{ listen: "127.0.0.1:{admin}" }}
issuers:
  partners:
    api_keys: {{ file: keys.yaml }}
routes:
  - name: partners
    match: {{ path_prefix: /partners }}
    upstream: "{up}"
    auth: {{ issuers: [partners], scopes_all: [orders.read], token_from: ["header:X-Api-Key", header] }}
    forward: {{ headers: {{ x-auth-subject: sub, x-auth-client: client_id, x-auth-scopes: scope }} }}
"#,
        up = up.url()
    )
}

#[tokio::test]
async fn api_keys_are_looked_up_by_digest_and_reloaded_when_the_file_changes() {
    let dir = temp_dir("api-keys");
    let up = Upstream::spawn().await;
    let (proxy, admin) = (free_port(), free_port());
    let (alice, alice_entry) = new_key("alice", "orders.read orders.write");
    let (bob, bob_entry) = new_key("bob", "profile");
    let (old, old_entry) = new_key("old", "orders.read");
    let now = crate::support::now();
    let old_entry = format!(
        "{old_entry}  expires_at: {}\n  client_id: legacy\n",
        now - 10
    );
    write_keys(
        &dir.join("keys.yaml"),
        &format!("{alice_entry}{bob_entry}{old_entry}"),
    );
    let file = dir.join("gateway.yaml");
    std::fs::write(&file, config(proxy, admin, &up)).unwrap();
    let _gw = run(&file, admin).await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{proxy}/partners/orders");
    let with = async |name: &str, value: &str| {
        client
            .get(&url)
            .header(name, value)
            .send()
            .await
            .unwrap()
            .status()
    };

    assert_eq!(with("x-api-key", &alice).await, 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.headers["x-auth-subject"], "alice");
    assert_eq!(seen.headers["x-auth-scopes"], "orders.read orders.write");
    assert!(
        !seen.headers.contains_key("x-api-key"),
        "the key went upstream"
    );
    assert_eq!(with("authorization", &format!("Bearer {alice}")).await, 200);
    assert_eq!(with("x-api-key", &bob).await, 403, "the policy applies");
    assert_eq!(with("x-api-key", &old).await, 401, "expired");
    let mut wrong = alice.clone();
    wrong.pop();
    wrong.push('x');
    assert_eq!(with("x-api-key", &wrong).await, 401, "unknown");
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in ["unknown_key", "expired", "insufficient_scope"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason}: {metrics}"
        );
    }

    // A new file: alice is gone, carol is in.
    let (carol, carol_entry) = new_key("carol", "orders.read");
    write_keys(&dir.join("keys.yaml"), &carol_entry);
    eventually("the new key file", async || {
        with("x-api-key", &carol).await == 200
    })
    .await;
    assert_eq!(with("x-api-key", &alice).await, 401);
    // A bad file is refused: carol still works.
    write_keys(
        &dir.join("keys.yaml"),
        &format!("{carol_entry}{carol_entry}"),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(with("x-api-key", &carol).await, 200);
}

#[test]
fn check_refuses_bad_key_files_and_lints_readable_ones() {
    let dir = temp_dir("api-keys-check");
    let up_url = "http://127.0.0.1:1";
    let yaml = format!(
        "issuers:\n  k:\n    api_keys: {{ file: keys.yaml }}\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: \"{up_url}\"\n    auth: {{ issuers: [k] }}\n"
    );
    std::fs::write(dir.join("gateway.yaml"), &yaml).unwrap();
    let check = |strict: bool| {
        let mut c = Command::new(BIN);
        c.args(["check", "--config"]).arg(dir.join("gateway.yaml"));
        if strict {
            c.arg("--strict");
        }
        c.output().unwrap()
    };
    // A malformed digest, and the same digest twice.
    for bad in [
        "- { sha256: \"abc\", subject: a }\n".to_owned(),
        format!(
            "- {{ sha256: \"{0}\", subject: a }}\n- {{ sha256: \"{0}\", subject: b }}\n",
            "ab".repeat(32)
        ),
    ] {
        write_keys(&dir.join("keys.yaml"), &bad);
        let out = check(false);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(text.contains("issuers.k.api_keys.file"), "{text}");
    }
    // Readable by others: a lint (an error with --strict). No audience needed.
    let good = format!("- {{ sha256: \"{}\", subject: a }}\n", "ab".repeat(32));
    write_keys(&dir.join("keys.yaml"), &good);
    assert!(check(true).status.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("keys.yaml");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check(false).status.success());
        let out = check(true);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(text.contains("readable by others"), "{text}");
    }
}
