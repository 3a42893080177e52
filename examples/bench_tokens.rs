//! Writes what the load benchmark (`bench/run.sh`) needs into a directory:
//! `jwks.json` (public keys), `reused.txt` (one valid RS256 token),
//! `distinct.txt` (N valid RS256 tokens, one per line; N is the second
//! argument, default 10,000), `distinct-es256.txt` (N valid ES256 tokens),
//! `forged.txt` (1,000 RS256 tokens signed by a key the JWKS does not hold,
//! under a kid it does), `forged-plain.txt`, `forged-long.txt` and
//! `forged-wide.txt` (one RS256 token each, under the JWKS's kid with a
//! signature over other bytes: a plain one, one of 15 KiB in one claim, one
//! of 650 header members and 620 claims; `bench/forged.sh`), `dpop-token.txt` (one RS256 token bound to an
//! ES256 key) and `dpop.txt` (M proofs by that key for
//! `GET http://bench.example/bench`, one per line, each with its own `jti`;
//! M is the third argument, default 200,000).
//!
//! `cargo run --release --example bench_tokens -- DIR [N] [M]`

#![allow(clippy::unwrap_used)]

use std::io::Write;

#[path = "../benches/support/mod.rs"]
mod support;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: bench_tokens DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = support::Keys::new();
    let impostor = support::Keys::new();
    std::fs::write(dir.join("jwks.json"), keys.jwks()).unwrap();
    std::fs::write(dir.join("reused.txt"), keys.token("RS256", "reused") + "\n").unwrap();
    let n: usize = std::env::args()
        .nth(2)
        .map_or(10_000, |n| n.parse().unwrap());
    // RSA signing is the slow part: one thread per core.
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let chunks: Vec<(String, String)> = std::thread::scope(|s| {
        let keys = &keys;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out = String::new();
                    let mut es256 = String::new();
                    for i in (t..n).step_by(threads) {
                        out.push_str(&keys.token("RS256", &format!("user-{i}")));
                        out.push('\n');
                        es256.push_str(&keys.token("ES256", &format!("user-{i}")));
                        es256.push('\n');
                    }
                    (out, es256)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut distinct = std::fs::File::create(dir.join("distinct.txt")).unwrap();
    let mut es256 = std::fs::File::create(dir.join("distinct-es256.txt")).unwrap();
    for (rs, es) in chunks {
        distinct.write_all(rs.as_bytes()).unwrap();
        es256.write_all(es.as_bytes()).unwrap();
    }
    let jkt = authgate::auth::dpop::thumbprint(&keys.jwk("ES256")).unwrap();
    let bound = keys.token_with("RS256", "dpop", serde_json::json!({"cnf": {"jkt": jkt}}));
    std::fs::write(dir.join("dpop-token.txt"), format!("{bound}\n")).unwrap();
    let m: usize = std::env::args()
        .nth(3)
        .map_or(200_000, |m| m.parse().unwrap());
    let proofs: Vec<String> = std::thread::scope(|s| {
        let (keys, bound) = (&keys, &bound);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out = String::new();
                    for i in (t..m).step_by(threads) {
                        let jti = format!("bench-{i}");
                        out.push_str(&keys.proof(
                            "ES256",
                            "http://bench.example/bench",
                            bound,
                            &jti,
                        ));
                        out.push('\n');
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    std::fs::write(dir.join("dpop.txt"), proofs.concat()).unwrap();
    let mut forged = std::fs::File::create(dir.join("forged.txt")).unwrap();
    for i in 0..1_000 {
        writeln!(
            forged,
            "{}",
            impostor.token("RS256", &format!("forged-{i}"))
        )
        .unwrap();
    }
    for (name, members, claims, pad) in [
        ("plain", 0, 0, 0),
        ("long", 0, 0, 11_000),
        ("wide", 650, 620, 0),
    ] {
        let token = keys.forged("RS256", members, claims, pad);
        std::fs::write(dir.join(format!("forged-{name}.txt")), token + "\n").unwrap();
    }
}
