#!/usr/bin/env bash
# The load benchmark: one command, bounded in time, stops everything it
# started. It runs an upstream (nginx returning a small 200), a plain nginx
# proxy_pass in front of it, and authgate in front of it, and drives each
# with wrk, interleaved round by round so all three see the same machine:
#
#   scenarios: one reused valid token; distinct valid RS256 tokens (the
#              gateways restart before each such run, so every token is a
#              signature check until the list runs out: the table shows the
#              share of requests that verified); forged tokens
#              (a valid kid, a signature from another key: every one is a
#              full RS256 check and a 401)
#   transports: plain HTTP (direct, nginx, authgate) and TLS (nginx, authgate)
#
# For each run it prints requests/s, p50/p99 latency and the proxy's own CPU
# time per request (utime+stime from /proc over the run / requests served),
# then ratios against nginx and against direct. wrk sends as fast as it is
# answered, so those runs saturate the machine, and their latency is mostly
# queueing. So then, for each rate in RATES, oha sends that many requests a
# second in all (open loop: each request timed from when it was due) to
# direct, nginx and authgate, plain and TLS, and the table shows the p99
# each proxy adds at a load the machine carries. Finally it opens 10,000
# idle keep-alive connections to authgate over each transport and reports
# its RSS (bench/idle.sh).
#
#   bash bench/run.sh                 # 2 rounds of 5 s per run (about 6 min)
#   ROUNDS=3 SECONDS_PER_RUN=10 CONNECTIONS=64 bash bench/run.sh
#   SCENARIOS=reused TARGETS="nginx authgate" IDLE_CONNECTIONS=0 bash bench/run.sh
#   RATES="1000 4000" RATE_SECONDS=20 bash bench/run.sh   # RATES= skips them
#   GRPC_CALLS=0 bash bench/run.sh      # skips the gRPC rows (bench/grpc.sh)
#   DECISIONS=0 bash bench/run.sh       # skips the decision-mode rows (bench/decisions.sh)
#   DPOP=0 bash bench/run.sh            # skips the DPoP rows (bench/dpop.sh)
#   BEFORE=/tmp/authgate-before bash bench/run.sh
#                                       # adds targets before and before-tls (beside authgate
#                                       # and authgate-tls, where TARGETS has them): the same
#                                       # gateways run from an earlier build, interleaved
#   PINNED=1 bash bench/run.sh          # every proxy (nginx and each authgate) with one
#                                       # worker pinned to the last CPU, wrk (one thread) and
#                                       # the upstream on the others: each proxy's CPU per
#                                       # request without the load generator on its core
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
DISTINCT_TOKENS=${DISTINCT_TOKENS:-40000}
SCENARIOS=${SCENARIOS:-reused distinct forged}
TARGETS=${TARGETS:-direct nginx authgate nginx-tls authgate-tls}
RATES=${RATES-2000 8000}
RATE_SECONDS=${RATE_SECONDS:-10}
GRPC_CALLS=${GRPC_CALLS:-200000}
GRPC_CLIENTS=${GRPC_CLIENTS:-16}
GRPC_STREAMS=${GRPC_STREAMS:-8}
DECISIONS=${DECISIONS:-1}
DPOP=${DPOP:-1}
DPOP_PROOFS=${DPOP_PROOFS:-200000}

source bench/common.sh authgate-bench
PINNED=${PINNED:-0}
PROXY_WORKERS=auto
if [ "$PINNED" = 1 ]; then
    pinned_placement
    PROXY_WORKERS=1 THREADS=1
fi
# pin CPUS PID...: every thread of each process onto CPUS (the upstream's,
# started by common.sh; the proxies start under taskset).
pin() { local cpus=$1 p; shift; [ "$PINNED" = 1 ] || return 0
    for p in "$@"; do taskset -a -cp "$cpus" "$p" >/dev/null; done; }

# oha (crates.io) sends at a fixed rate, which wrk cannot; built once (a
# few minutes) into ~/.cargo/bin when missing. RATES= skips that part.
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
if [ -n "$RATES" ] && [ ! -x "$OHA" ]; then
    echo "== installing oha (load generator with a fixed rate; once, a few minutes)"
    cargo install oha --locked --quiet
fi
echo "== building (release)"
cargo build --release --quiet --bin authgate --example bench_tokens
echo "== minting $DISTINCT_TOKENS distinct RS256 tokens"
target/release/examples/bench_tokens "$WORK" "$DISTINCT_TOKENS" "$DPOP_PROOFS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

UPSTREAM=$(free_port); NGINX_PLAIN=$(free_port); NGINX_TLS=$(free_port)
GATE_PLAIN=$(free_port); GATE_TLS=$(free_port); ADMIN_PLAIN=$(free_port); ADMIN_TLS=$(free_port)
GATE_BPLAIN=$(free_port); GATE_BTLS=$(free_port); ADMIN_BPLAIN=$(free_port); ADMIN_BTLS=$(free_port)
BEFORE=${BEFORE:-}
if [ -n "$BEFORE" ]; then
    # The earlier build runs beside each of authgate's transports asked for.
    case " $TARGETS " in *" authgate "*) TARGETS="$TARGETS before" ;; esac
    case " $TARGETS " in *" authgate-tls "*) TARGETS="$TARGETS before-tls" ;; esac
fi

nginx_conf() { # name, server block
    cat >"$WORK/nginx-$1.conf" <<EOF
worker_processes $PROXY_WORKERS;
daemon on;
pid $WORK/nginx-$1.pid;
error_log $WORK/nginx-$1.err warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $WORK/$1-body; proxy_temp_path $WORK/$1-proxy;
    fastcgi_temp_path $WORK/$1-fcgi; uwsgi_temp_path $WORK/$1-uwsgi; scgi_temp_path $WORK/$1-scgi;
    upstream app { server 127.0.0.1:$UPSTREAM; keepalive 128; }
    $2
}
EOF
    ${PROXY_CPU:+taskset -c "$PROXY_CPU"} "$NGINX" -c "$WORK/nginx-$1.conf"
}
UPSTREAM_WORKERS=auto start_upstream "$UPSTREAM"
master=$(cat "$WORK/nginx-upstream.pid")
pin "${LOAD_CPUS:-}" "$master" $(pgrep -P "$master")
PROXY_LOCATION="location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
nginx_conf proxy "server { listen 127.0.0.1:$NGINX_PLAIN; keepalive_requests 1000000; $PROXY_LOCATION }
    server { listen 127.0.0.1:$NGINX_TLS ssl; ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; keepalive_requests 1000000; $PROXY_LOCATION }"
# Pinned, each gateway gets the one worker nginx gets.
GATE_SERVER="  max_connections: $GATE_MAX_CONNECTIONS"
[ "$PINNED" = 1 ] && GATE_SERVER="$GATE_SERVER
  workers: 1"

# One gateway process per transport, so each one's CPU is its own.
# Proofs for the DPoP rows are minted before the runs: an hour's max_age.
DPOP_ISSUER="    dpop: { max_age: 1h }"
gateway_yaml "$WORK/gate-plain.yaml" "$GATE_PLAIN" "$ADMIN_PLAIN" "$UPSTREAM" "$GATE_SERVER" "$DPOP_ISSUER"
gateway_yaml "$WORK/gate-tls.yaml" "$GATE_TLS" "$ADMIN_TLS" "$UPSTREAM" "$GATE_SERVER
  tls: { cert_file: cert.pem, key_file: key.pem }"
gateway_yaml "$WORK/gate-bplain.yaml" "$GATE_BPLAIN" "$ADMIN_BPLAIN" "$UPSTREAM" "$GATE_SERVER" "$DPOP_ISSUER"
gateway_yaml "$WORK/gate-btls.yaml" "$GATE_BTLS" "$ADMIN_BTLS" "$UPSTREAM" "$GATE_SERVER
  tls: { cert_file: cert.pem, key_file: key.pem }"
start_gateways() { # (re)starts the gateways: an empty verified-token cache
    local kinds="plain tls" bin
    [ -n "$BEFORE" ] && kinds="$kinds bplain btls"
    for t in $kinds; do
        local var="GATE_PID_$t"
        [ -n "${!var:-}" ] && { kill "${!var}" 2>/dev/null || true; wait "${!var}" 2>/dev/null || true; }
        bin=target/release/authgate
        case $t in b*) bin=$BEFORE ;; esac
        ${PROXY_CPU:+taskset -c "$PROXY_CPU"} "$bin" run --config "$WORK/gate-$t.yaml" --log-level error >>"$WORK/gate-$t.log" 2>&1 &
        PIDS+=($!)
        eval "GATE_PID_$t=$!"
    done
    for admin in "$ADMIN_PLAIN" "$ADMIN_TLS" ${BEFORE:+"$ADMIN_BPLAIN" "$ADMIN_BTLS"}; do
        wait_ready "$admin"
    done
}
GATE_PID_plain=; GATE_PID_tls=; GATE_PID_bplain=; GATE_PID_btls=
start_gateways

cat >"$WORK/tokens.lua" <<'EOF'
local tokens = {}
local i = 0
init = function(args)
    for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
    math.randomseed(os.time() + math.floor(os.clock() * 1000000))
    i = math.random(#tokens)
end
request = function()
    i = i % #tokens + 1
    return wrk.format("GET", "/bench", { ["Authorization"] = "Bearer " .. tokens[i] })
end
EOF

# CPU ticks (utime+stime) of a set of pids.
ticks() { local sum=0; for p in "$@"; do
    read -r -a f < "/proc/$p/stat" || continue; sum=$((sum + f[13] + f[14])); done; echo "$sum"; }
# The nginx workers are children of the master named in the pid file.
nginx_pids() { local master; master=$(cat "$WORK/nginx-proxy.pid"); echo "$master $(pgrep -P "$master" | tr '\n' ' ')"; }
HZ=$(getconf CLK_TCK)

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
# Verified-cache misses so far (each one a signature check), from /metrics.
misses() { curl -sf "http://127.0.0.1:$1/metrics" | awk '/^authgate_verified_cache_total\{result="miss"\}/ {print $2}'; }
run() { # scenario, target, url, admin port or -, pids...
    local scenario=$1 target=$2 url=$3 admin=$4; shift 4
    local before after out m0=0 m1=0
    [ "$admin" != - ] && m0=$(misses "$admin")
    before=$(ticks "$@")
    out=$(${LOAD_CPUS:+taskset -c "$LOAD_CPUS"} wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency \
        -s "$WORK/tokens.lua" "$url" -- "$WORK/$scenario.txt")
    after=$(ticks "$@")
    [ "$admin" != - ] && m1=$(misses "$admin")
    local requests rps p50 p99 statuses
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    statuses=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    local cpu_us="-" verified="-"
    if [ -n "$*" ] && [ "${requests:-0}" -gt 0 ]; then
        cpu_us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    fi
    if [ "$admin" != - ] && [ "${requests:-0}" -gt 0 ]; then
        verified=$(awk -v m="$((${m1%.*} - ${m0%.*}))" -v n="$requests" 'BEGIN {printf "%.0f%%", 100 * m / n}')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$target" "$rps" "$p50" "$p99" "$cpu_us" "${statuses:-0}" "$verified" >>"$RESULTS"
    printf '  %-9s %-13s %9s req/s  p50 %8s  p99 %8s  cpu/req %6s us  non-2xx %-6s verified %s\n' \
        "$scenario" "$target" "$rps" "$p50" "$p99" "$cpu_us" "${statuses:-0}" "$verified"
}

echo "== $ROUNDS rounds x ${SECONDS_PER_RUN}s per run, $CONNECTIONS connections, $THREADS wrk threads"
for round in $(seq "$ROUNDS"); do
    echo "-- round $round"
    for scenario in $SCENARIOS; do
        [ "$scenario" = distinct ] && start_gateways
        for target in $TARGETS; do
            case $target in
            direct) run "$scenario" direct "http://127.0.0.1:$UPSTREAM" - ;;
            nginx) run "$scenario" nginx "http://127.0.0.1:$NGINX_PLAIN" - $(nginx_pids) ;;
            authgate) run "$scenario" authgate "http://127.0.0.1:$GATE_PLAIN" "$ADMIN_PLAIN" "$GATE_PID_plain" ;;
            nginx-tls) run "$scenario" nginx-tls "https://127.0.0.1:$NGINX_TLS" - $(nginx_pids) ;;
            authgate-tls) run "$scenario" authgate-tls "https://127.0.0.1:$GATE_TLS" "$ADMIN_TLS" "$GATE_PID_tls" ;;
            before) run "$scenario" before "http://127.0.0.1:$GATE_BPLAIN" "$ADMIN_BPLAIN" "$GATE_PID_bplain" ;;
            before-tls) run "$scenario" before-tls "https://127.0.0.1:$GATE_BTLS" "$ADMIN_BTLS" "$GATE_PID_btls" ;;
            *) echo "unknown target $target" >&2; exit 2 ;;
            esac
        done
    done
done

echo
echo "== medians over rounds (latency in ms; cpu in us per request)"
python3 - "$RESULTS" <<'EOF'
import sys, statistics, collections
def ms(v):
    v = v.strip()
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit):
            return float(v[:-len(unit)]) * f
    return float("nan")
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    s, t, rps, p50, p99, cpu, non2xx, verified = line.rstrip("\n").split("\t")
    runs[(s, t)].append((float(rps), ms(p50), ms(p99), float(cpu) if cpu != "-" else None, int(non2xx or 0), verified))
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
rows = {}
for key, vals in runs.items():
    rows[key] = [med([v[i] for v in vals]) for i in range(4)] + [sum(v[4] for v in vals), "/".join(v[5] for v in vals)]
print(f"{'scenario':9} {'target':13} {'req/s':>9} {'vs direct':>9} {'vs nginx':>8} {'p50':>7} {'p99':>7} {'cpu/req':>8} {'cpu vs nginx':>12} {'p99 +direct':>11} {'non-2xx':>8} verified")
for (s, t), (rps, p50, p99, cpu, bad, verified) in sorted(rows.items(), key=lambda kv: (["reused","distinct","forged"].index(kv[0][0]), kv[0][1])):
    nginx = rows.get((s, "nginx-tls" if t.endswith("tls") else "nginx"))
    direct = rows.get((s, "direct"))
    ratio = f"{cpu / nginx[3]:.2f}x" if cpu and nginx and nginx[3] else "-"
    added = f"{p99 - direct[2]:+.2f}" if direct and t != "direct" else "-"
    # Throughput as a share of the upstream reached directly, and of nginx.
    vs_direct = f"{rps / direct[0]:.2f}x" if direct and direct[0] and t != "direct" else "-"
    vs_nginx = f"{rps / nginx[0]:.2f}x" if nginx and nginx[0] and t.startswith(("authgate", "before")) else "-"
    print(f"{s:9} {t:13} {rps:9.0f} {vs_direct:>9} {vs_nginx:>8} {p50:7.2f} {p99:7.2f} {(f'{cpu:.1f}' if cpu else '-'):>8} {ratio:>12} {added:>11} {bad:8d} {verified}")
EOF

if [ -n "$RATES" ]; then
    echo
    echo "== latency at a fixed rate (open loop, oha): $CONNECTIONS connections, ${RATE_SECONDS}s per run, reused token"
    echo "   (each request timed from when it was due, so a stall is not hidden; medians over $ROUNDS rounds, ms)"
    : >"$WORK/rates.tsv"
    for round in $(seq "$ROUNDS"); do
        for rate in $RATES; do
            for target in direct nginx authgate nginx-tls authgate-tls; do
                case $target in
                direct) url="http://127.0.0.1:$UPSTREAM/bench" ;;
                nginx) url="http://127.0.0.1:$NGINX_PLAIN/bench" ;;
                authgate) url="http://127.0.0.1:$GATE_PLAIN/bench" ;;
                nginx-tls) url="https://127.0.0.1:$NGINX_TLS/bench" ;;
                authgate-tls) url="https://127.0.0.1:$GATE_TLS/bench" ;;
                esac
                "$OHA" --no-tui --insecure --output-format json -c "$CONNECTIONS" -q "$rate" \
                    --latency-correction -z "${RATE_SECONDS}s" \
                    -H "Authorization: Bearer $(head -1 "$WORK/reused.txt")" "$url" >"$WORK/oha.json"
                python3 - "$WORK/oha.json" "$rate" "$target" >>"$WORK/rates.tsv" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
# Requests still in flight when the run's time is up are not failures.
errors = {e: n for e, n in r.get("errorDistribution", {}).items() if "deadline" not in e}
for e, n in errors.items():
    print(f"{sys.argv[3]}: {n} x {e}", file=sys.stderr)
bad = sum(n for c, n in codes.items() if c != "200") + sum(errors.values())
print(sys.argv[2], sys.argv[3], r["summary"]["requestsPerSec"], p["p50"] * 1e3, p["p99"] * 1e3, p["p99.9"] * 1e3, bad, sep="\t")
EOF
            done
        done
    done
    python3 - "$WORK/rates.tsv" <<'EOF'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    rate, target, rps, p50, p99, p999, bad = line.split("\t")
    runs[(int(rate), target)].append((float(rps), float(p50), float(p99), float(p999), int(bad)))
order = ["direct", "nginx", "authgate", "nginx-tls", "authgate-tls"]
print(f"{'rate':>6} {'target':13} {'req/s':>8} {'p50':>7} {'p99':>7} {'p99.9':>7} {'p99 +direct':>11} {'p99 +nginx':>10} {'errors':>6}")
for rate, target in sorted(runs, key=lambda k: (k[0], order.index(k[1]))):
    v = runs[(rate, target)]
    med = [statistics.median(x[i] for x in v) for i in range(4)]
    p99 = lambda t: statistics.median(x[2] for x in runs[(rate, t)]) if (rate, t) in runs else None
    d99, n99 = p99("direct"), p99("nginx-tls" if target.endswith("tls") else "nginx")
    added = f"{med[2] - d99:+.2f}" if d99 is not None and target != "direct" else "-"
    vs_nginx = f"{med[2] - n99:+.2f}" if n99 is not None and target.startswith("authgate") else "-"
    print(f"{rate:6d} {target:13} {med[0]:8.0f} {med[1]:7.2f} {med[2]:7.2f} {med[3]:7.2f} {added:>11} {vs_nginx:>10} {sum(x[4] for x in v):6d}")
EOF
fi

[ "$GRPC_CALLS" -gt 0 ] && source bench/grpc.sh
[ "$DECISIONS" = 1 ] && source bench/decisions.sh
[ "$DPOP" = 1 ] && source bench/dpop.sh

echo
[ "$IDLE_CONNECTIONS" -gt 0 ] || exit 0
# Plain HTTP/1.1, TLS and HTTP/2 (bench/idle.sh), each on a fresh gateway.
IDLE_CONNECTIONS=$IDLE_CONNECTIONS bash bench/idle.sh
