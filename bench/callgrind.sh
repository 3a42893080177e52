#!/usr/bin/env bash
# Instructions per request for the whole gateway process, reused-token path:
# authgate runs under valgrind's callgrind in front of an nginx upstream,
# wrk drives it (1 thread, 4 connections, 10 s) with one valid token, and
# the instructions counted during the load (the counters are zeroed after
# start-up) are divided by the requests served. Counts instructions, not
# time, so it is repeatable on a busy machine. Prints the heaviest
# functions (inclusive, per request) after the total.
#
#   bash bench/callgrind.sh            # about 1 minute
#   TOP=60 bash bench/callgrind.sh
#   KEEP=/tmp/cg.out bash bench/callgrind.sh   # keeps the profile
#   TOKENS=distinct bash bench/callgrind.sh     # a new RS256 token on every
#                                               # request: the signature-checking path
#   TLS=1 bash bench/callgrind.sh               # clients over TLS (1.3, P-256
#                                               # certificate; wrk's 4 handshakes
#                                               # are counted, spread over the run)
#   AUTHGATE=/tmp/authgate-before bash bench/callgrind.sh   # an earlier build
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=${TOP:-30}
source bench/common.sh authgate-callgrind
if ! need valgrind; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind
fi

cargo build --release --quiet --bin authgate --example bench_tokens
TOKENS=${TOKENS:-reused}
# Under callgrind the gateway serves a few thousand requests in 10 s:
# 20,000 distinct tokens are never used twice.
target/release/examples/bench_tokens "$WORK" "$([ "$TOKENS" = distinct ] && echo 20000 || echo 10)" >/dev/null
UPSTREAM=$(free_port); GATE=$(free_port); ADMIN=$(free_port)
start_upstream "$UPSTREAM"
scheme=http tls=""
if [ "${TLS:-0}" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
    scheme=https tls="  tls: { cert_file: cert.pem, key_file: key.pem }"
fi
gateway_yaml "$WORK/gate.yaml" "$GATE" "$ADMIN" "$UPSTREAM" "$tls"
cat >"$WORK/token.lua" <<EOF
local tokens = {}
for line in io.lines("$WORK/$TOKENS.txt") do tokens[#tokens + 1] = line end
local i = 0
request = function()
    i = i % #tokens + 1
    return wrk.format("GET", "/bench", { ["Authorization"] = "Bearer " .. tokens[i] })
end
EOF

OUT="$WORK/callgrind.out"
valgrind --tool=callgrind --callgrind-out-file="$OUT" \
    "${AUTHGATE:-target/release/authgate}" run --config "$WORK/gate.yaml" --log-level error >"$WORK/gate.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break
    sleep 0.5
done
status=$(curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(head -1 "$WORK/reused.txt")" "$scheme://127.0.0.1:$GATE/bench")
[ "$status" = 200 ] || { echo "warm-up request answered $status" >&2; exit 1; }

callgrind_control -z "${PIDS[-1]}" >/dev/null
requests=$(wrk -t1 -c4 -d10s -s "$WORK/token.lua" "$scheme://127.0.0.1:$GATE/bench" | awk '/requests in/ {print $1}')
callgrind_control -d "${PIDS[-1]}" >/dev/null
sleep 1
dump=$(ls "$OUT".* | head -1)
# KEEP=FILE keeps the profile for callgrind_annotate.
[ -n "${KEEP:-}" ] && cp "$dump" "$KEEP"
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
# Allocations: calls into mimalloc's entry points, summed over their callers.
allocations=$(callgrind_annotate --tree=caller --threshold=100 "$dump" 2>/dev/null | awk '
    /^ *[0-9,]+ .*< / { if (match($0, /\(([0-9,]+)x\)/)) { n = substr($0, RSTART + 1, RLENGTH - 3); gsub(",", "", n); calls += n } next }
    /\*  \?\?\?:mi_(malloc|zalloc|realloc)(_aligned)? / { sum += calls }
    { calls = 0 }
    END { print sum + 0 }')
echo "requests served: $requests ($TOKENS tokens; verified-cache misses: $(curl -sf "http://127.0.0.1:$ADMIN/metrics" | awk '/^authgate_verified_cache_total\{result="miss"\}/ {print $2}'))"
echo "instructions per request: $((total / requests))"
echo "allocations per request: $(awk -v a="$allocations" -v n="$requests" 'BEGIN {printf "%.1f", a / n}')"
echo
echo "heaviest functions, inclusive instructions per request:"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null |
    awk -v n="$requests" -v top="$TOP" '/file:function/ {on=1; next}
        on && /\?\?\?:|\.[cS]:/ && shown < top {
            c=$1; gsub(",", "", c); fn=$0; sub(/^[^:]*:/, "", fn); sub(/ \[.*$/, "", fn)
            if (fn ~ /^(clone|start_thread|<std::sys|std::sys|core::ops::function|tokio::runtime::(blocking|task|scheduler))/) next
            printf "%9d  %s\n", c / n, substr(fn, 1, 110); shown++ }'
