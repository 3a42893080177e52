//! Writes what the load benchmark (`bench/run.sh`) needs into a directory:
//! `jwks.json` (public keys), `reused.txt` (one valid RS256 token),
//! `distinct.txt` (10,000 valid RS256 tokens, one per line) and
//! `forged.txt` (1,000 RS256 tokens signed by a key the JWKS does not hold,
//! under a kid it does).
//!
//! `cargo run --release --example bench_tokens -- DIR`

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
    let mut distinct = std::fs::File::create(dir.join("distinct.txt")).unwrap();
    for i in 0..10_000 {
        writeln!(distinct, "{}", keys.token("RS256", &format!("user-{i}"))).unwrap();
    }
    let mut forged = std::fs::File::create(dir.join("forged.txt")).unwrap();
    for i in 0..1_000 {
        writeln!(
            forged,
            "{}",
            impostor.token("RS256", &format!("forged-{i}"))
        )
        .unwrap();
    }
}
