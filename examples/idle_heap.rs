//! authgate's command line under dhat's heap profiler, for `HEAP=1 bash
//! bench/idle.sh`: once the file named by `DHAT_TRIGGER` appears, it
//! writes the blocks live at that moment (dhat's "t-end") to `DHAT_FILE`
//! and exits, while the benchmark still holds its idle connections open.
//! The allocator is dhat's, over the system's (not the binary's
//! mimalloc): the sizes are what the code asks for, not pages.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let profiler = dhat::Profiler::builder()
        .file_name(var("DHAT_FILE", "dhat-heap.json"))
        .build();
    let trigger = PathBuf::from(var("DHAT_TRIGGER", "dhat-trigger"));
    std::thread::spawn(move || {
        while !trigger.exists() {
            std::thread::park_timeout(Duration::from_millis(200));
        }
        drop(profiler);
        std::process::exit(0);
    });
    authgate::cli::run(authgate::cli::Cli::parse());
}
