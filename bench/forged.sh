#!/usr/bin/env bash
# What a forged token costs the gateway, by its shape: one RS256 token under
# the JWKS's kid whose signature covers other bytes, sent on every request
# (refusals are not cached, so each is parsed, checked and refused as
# bad_signature). Shapes: `plain` (540 bytes), `long` (15 KiB, one long
# claim: what its size costs) and `wide` (15.5 KiB of 650 header members and
# 620 claims: what a forger sends to make each refusal cost the most). The
# bench/miss.sh placement: one worker pinned to the last CPU, wrk and the
# upstream on the others; gateway CPU (utime+stime) per request, rounds
# interleaved.
#
#   bash bench/forged.sh                               # 3 rounds of 3 s (about 1 minute)
#   BEFORE=/tmp/authgate-before bash bench/forged.sh   # an earlier build too
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
CONNECTIONS=${CONNECTIONS:-64}
source bench/common.sh authgate-forged
pinned_placement

cargo build --release --quiet --bin authgate --example bench_tokens
target/release/examples/bench_tokens "$WORK" 1 1 >/dev/null
UPSTREAM=$(free_port)
start_upstream "$UPSTREAM"
for shape in plain long wide; do
    cat >"$WORK/$shape.lua" <<L
local token = io.open("$WORK/forged-$shape.txt"):read("*l")
request = function()
    return wrk.format("GET", "/bench", { ["Authorization"] = "Bearer " .. token })
end
L
done
refused() { curl -sf "http://127.0.0.1:$1/metrics" | awk '/^authgate_auth_failures_total\{.*reason="bad_signature"/ {n += $2} END {print n + 0}'; }
BUILDS=("authgate=target/release/authgate")
[ -n "${BEFORE:-}" ] && BUILDS+=("before=$BEFORE")

: >"$WORK/runs.tsv"
for round in $(seq "$ROUNDS"); do
    for shape in plain long wide; do
        for b in "${BUILDS[@]}"; do
            gate=$(free_port); admin=$(free_port)
            gateway_yaml "$WORK/gate.yaml" "$gate" "$admin" "$UPSTREAM" "  workers: 1"
            taskset -c "$PROXY_CPU" "${b#*=}" run --config "$WORK/gate.yaml" --log-level error >"$WORK/gate.log" 2>&1 &
            pid=$!; PIDS+=("$pid")
            wait_ready "$admin" "$WORK/gate.log"
            t0=$(cpu_ticks "$pid")
            out=$(taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WORK/$shape.lua" "http://127.0.0.1:$gate/bench")
            t1=$(cpu_ticks "$pid"); r=$(refused "$admin")
            kill "$pid"; wait "$pid" 2>/dev/null || true
            n=$(awk '/requests in/ {print $1}' <<<"$out")
            [ "$r" -ge "$n" ] || { echo "$shape through ${b%%=*}: $r of $n refused as bad_signature" >&2; exit 1; }
            printf '%s\t%s\t%s\t%s\n' "$shape" "${b%%=*}" "$n" "$(( t1 - t0 ))" >>"$WORK/runs.tsv"
        done
    done
done
python3 - "$WORK/runs.tsv" "$HZ" <<'PY'
import sys, statistics, collections
hz = float(sys.argv[2])
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    shape, build, n, ticks = line.split()
    runs[(build, shape)].append(int(ticks) / hz / int(n) * 1e6)
print(f"{'build':9} {'shape':6} {'us/request':>10}   rounds")
for (build, shape), us in runs.items():
    print(f"{build:9} {shape:6} {statistics.median(us):10.1f}   ({' / '.join(f'{u:.1f}' for u in us)})")
print("\nµs of gateway CPU a refused request (median of rounds), one worker pinned to its own CPU.")
PY
