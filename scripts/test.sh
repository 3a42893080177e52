#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Installs what the tests need on a fresh Debian machine, then checks
# formatting, lints, runs every test and builds the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! need cargo; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
fi
# rustfmt and clippy ship with rustup's default profile; add them if missing.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
# aws-lc-sys needs a C compiler; the revocation tests start a real
# redis-server (and use redis-cli) from Debian's packages.
missing=()
need cc || missing+=(build-essential)
{ need redis-server && need redis-cli; } || missing+=(redis-server)
# the demo test runs the printed gRPC lines with curl (HTTP/2 built in); the
# decision-mode tests put a real nginx (auth_request) in front of authgate
need curl || missing+=(curl)
{ need nginx || [ -x /usr/sbin/nginx ]; } || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
# The tests start their own redis-server and nginx on free ports; the ones
# the Debian packages may have started are not used.

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets
echo "== cargo bench --no-run"
cargo bench --no-run
echo "all checks passed"
