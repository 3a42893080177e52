//! Replays the committed fuzz seeds and crash reproducers
//! (`fuzz/seeds/TARGET/*`, `fuzz/regressions/TARGET/*`) through the same
//! checks the fuzz targets run, so a fixed crash stays fixed on every
//! `cargo test` without a nightly toolchain.

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// One fuzz target's check.
type Check = fn(&[u8]);

fn replay(target: &str, check: Check) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [
        root.join("seeds").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "{} panicked", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn fuzz_seeds_and_regressions_replay_cleanly() {
    let targets: [(&str, Check); 5] = [
        ("token", checks::token),
        ("jwks", checks::jwks),
        ("discovery", checks::discovery),
        ("config", checks::config),
        ("path", checks::path),
    ];
    for (target, check) in targets {
        assert!(replay(target, check) > 0, "no seeds for {target}");
    }
}
