#!/usr/bin/env bash
# Worker scaling on this machine: reused-token requests through authgate
# with `server.workers: 1` and `workers: 2`, the proxy pinned with taskset
# to the cores under test, interleaved round by round.
#
#   one worker, one core:   the proxy on CPU 0; wrk and the upstream nginx
#                           on CPU 1, so the proxy's core is its own
#   two workers, two cores: the proxy on CPUs 0-1; wrk and the upstream
#                           share both with it (a 2-core machine has no
#                           third core to give them)
#   one worker, two cores:  the same placement as the line above, one worker
#
# For each it prints requests/s, the proxy's CPU (cores busy) and requests
# per proxy CPU-second: with perfect scaling the last stays the same from
# one worker to two, and requests/s grows with the cores the proxy gets.
#
#   bash bench/cores.sh                # 3 rounds of 5 s (about 1 minute)
#   ROUNDS=5 SECONDS_PER_RUN=10 bash bench/cores.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
CONNECTIONS=${CONNECTIONS:-64}
source bench/common.sh authgate-cores
pinned_placement

cargo build --release --quiet --bin authgate --example bench_tokens
target/release/examples/bench_tokens "$WORK" 1 >/dev/null
UPSTREAM=$(free_port)
start_upstream "$UPSTREAM"
upstream_pids() { local m; m=$(cat "$WORK/nginx-upstream.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }
pin() { for p in "$@"; do taskset -pc "$CPUS" "$p" >/dev/null; done; }
cat >"$WORK/token.lua" <<EOF
local token = io.open("$WORK/reused.txt"):read("*l")
wrk.headers["Authorization"] = "Bearer " .. token
EOF

declare -A PORT PID
for w in 1 2; do
    gate=$(free_port); admin=$(free_port)
    gateway_yaml "$WORK/gate-$w.yaml" "$gate" "$admin" "$UPSTREAM" "  workers: $w"
    target/release/authgate run --config "$WORK/gate-$w.yaml" --log-level error >>"$WORK/gate.log" 2>&1 &
    PIDS+=($!)
    PORT[$w]=$gate; PID[$w]=$!
    wait_ready "$admin" "$WORK/gate.log"
done

run() { # label, workers, proxy CPUs, load CPUs, wrk threads
    local label=$1 w=$2 proxy=$3 load=$4 threads=$5
    CPUS=$proxy pin $(ps -L -o tid= -p "${PID[$w]}")
    CPUS=$load pin $(upstream_pids)
    local t0 t1 out n
    t0=$(cpu_ticks "${PID[$w]}")
    out=$(taskset -c "$load" wrk -t"$threads" -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WORK/token.lua" "http://127.0.0.1:${PORT[$w]}/bench")
    t1=$(cpu_ticks "${PID[$w]}")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v l="$label" -v n="$n" -v t=$((t1 - t0)) -v hz="$HZ" -v s="$SECONDS_PER_RUN" 'BEGIN {
        cpu = t / hz; printf "%s\t%.0f\t%.2f\t%.0f\n", l, n / s, cpu / s, n / cpu }' >>"$WORK/cores.tsv"
}
: >"$WORK/cores.tsv"
for round in $(seq "$ROUNDS"); do
    run "1 worker, 1 core" 1 0 1 1
    run "2 workers, 2 cores" 2 0,1 0,1 2
    run "1 worker, 2 cores" 1 0,1 0,1 2
done
python3 - "$WORK/cores.tsv" <<'EOF'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, rps, cores, per_cpu = line.rstrip("\n").split("\t")
    rows[label].append((float(rps), float(cores), float(per_cpu)))
base = statistics.median(r[0] for r in rows["1 worker, 1 core"])
print(f"{'placement':20} {'req/s':>8} {'vs 1 worker':>11} {'proxy cores busy':>16} {'req per proxy CPU-s':>19}  (medians of {len(rows['1 worker, 1 core'])} rounds; per round req/s)")
for label, vals in rows.items():
    med = [statistics.median(v[i] for v in vals) for i in range(3)]
    each = " / ".join(f"{v[0]:.0f}" for v in vals)
    print(f"{label:20} {med[0]:8.0f} {med[0] / base:10.2f}x {med[1]:16.2f} {med[2]:19.0f}  ({each})")
EOF
