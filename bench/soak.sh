#!/usr/bin/env bash
# Soak: authgate under mixed valid and forged traffic for SOAK_SECONDS
# (default 600), with the issuer's signing keys rotated and the config
# reloaded (SIGHUP) every ROTATE_EVERY seconds (default 60). Counts every
# status the clients see: anything but 200 (valid token, key published) and
# 401 (forged, or signed by the key just rotated out) is unexpected. Prints
# the gateway's RSS at the start and the end. Stops everything it started.
#
#   bash bench/soak.sh
#   SOAK_SECONDS=120 ROTATE_EVERY=20 bash bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_SECONDS=${SOAK_SECONDS:-600}
ROTATE_EVERY=${ROTATE_EVERY:-60}
CONNECTIONS=${CONNECTIONS:-32}

source bench/common.sh authgate-soak

cargo build --release --quiet --bin authgate --example bench_tokens
# Two key generations, A and B: each with its JWKS and 1,000 valid tokens.
for gen in a b; do target/release/examples/bench_tokens "$WORK/$gen" 1000; done
cat "$WORK/a/distinct.txt" "$WORK/b/distinct.txt" "$WORK/a/forged.txt" | shuf >"$WORK/mix.txt"

UPSTREAM=$(free_port); GATE=$(free_port); ADMIN=$(free_port)
start_upstream "$UPSTREAM"

cp "$WORK/a/jwks.json" "$WORK/jwks.json"
write_config() { # a comment that changes, so every rotation is also a reload
    gateway_yaml "$WORK/gateway.yaml" "$GATE" "$ADMIN" "$UPSTREAM" "" "    jwks_cache: { ttl: ${ROTATE_EVERY}s }"
    echo "# generation $1" >>"$WORK/gateway.yaml"
}
write_config 0
target/release/authgate run --config "$WORK/gateway.yaml" --log-level warn >"$WORK/gateway.log" 2>&1 &
GATE_PID=$!
PIDS+=("$GATE_PID")
wait_ready "$ADMIN"
rss() { awk '/VmRSS/ {print $2}' "/proc/$GATE_PID/status"; }
RSS_START=$(rss)

cat >"$WORK/soak.lua" <<'EOF'
-- `counts` is global so done() can read each thread's copy with get().
local tokens, i = {}, 0
counts = {}
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args)
    for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
    i = math.random(#tokens)
end
request = function()
    i = i % #tokens + 1
    return wrk.format("GET", "/soak", { ["Authorization"] = "Bearer " .. tokens[i] })
end
response = function(status) counts[status] = (counts[status] or 0) + 1 end
done = function()
    local total = {}
    for _, t in ipairs(threads) do
        local c = t:get("counts")
        for s, n in pairs(c) do total[s] = (total[s] or 0) + n end
    end
    for s, n in pairs(total) do io.write(string.format("status %d: %d\n", s, n)) end
end
EOF

echo "== soak: ${SOAK_SECONDS}s, rotation and reload every ${ROTATE_EVERY}s, RSS at start ${RSS_START} KiB"
wrk -t2 -c"$CONNECTIONS" -d"${SOAK_SECONDS}s" -s "$WORK/soak.lua" "http://127.0.0.1:$GATE" -- "$WORK/mix.txt" >"$WORK/wrk.out" 2>&1 &
WRK_PID=$!
PIDS+=("$WRK_PID")
gen=0
elapsed=0
while kill -0 "$WRK_PID" 2>/dev/null; do
    sleep 1
    elapsed=$((elapsed + 1))
    if [ $((elapsed % ROTATE_EVERY)) = 0 ]; then
        gen=$((gen + 1))
        if [ $((gen % 2)) = 1 ]; then cp "$WORK/b/jwks.json" "$WORK/jwks.json"; else cp "$WORK/a/jwks.json" "$WORK/jwks.json"; fi
        write_config "$gen"
        kill -HUP "$GATE_PID"
        echo "  ${elapsed}s: rotated to key generation $((gen % 2)), reloaded; RSS $(rss) KiB"
    fi
done
RSS_END=$(rss)
cat "$WORK/wrk.out"
if ! grep -q '^status ' "$WORK/wrk.out"; then
    echo "no status counts from wrk: the soak proves nothing" >&2
    exit 1
fi
UNEXPECTED=$(awk '/^status/ { sub(":", "", $2); if ($2 != 200 && $2 != 401) n += $3 } END { print n + 0 }' "$WORK/wrk.out")
RELOADS=$(curl -sf "http://127.0.0.1:$ADMIN/metrics" | grep '^authgate_config_reloads_total' || true)
echo "== RSS start ${RSS_START} KiB, end ${RSS_END} KiB; unexpected statuses: ${UNEXPECTED}"
echo "$RELOADS"
[ "$UNEXPECTED" = 0 ]
