# The gRPC rows of bench/run.sh (sourced by it, after its other runs; uses
# its WORK, PIDS, ROUNDS, THREADS, HZ, NGINX, ticks and free_port).
#
# h2load (Debian's nghttp2-client) sends GRPC_CALLS framed unary calls,
# GRPC_STREAMS concurrent streams on each of GRPC_CLIENTS connections, with
# one reused token, to the echo upstream (examples/grpc_echo.rs: the demo's
# echo) directly over h2c, through nginx grpc_pass, and through authgate's
# h2c route; calls/s and the proxy's own CPU per call, interleaved round by
# round.

echo
echo "== gRPC unary calls (h2load): $GRPC_CALLS calls, $GRPC_CLIENTS connections x $GRPC_STREAMS streams, reused token"
need h2load || {
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client
}
cargo build --release --quiet --example grpc_echo
GRPC_UP=$(free_port); GRPC_NGINX=$(free_port); GRPC_GATE=$(free_port); GRPC_ADMIN=$(free_port)
target/release/examples/grpc_echo "$GRPC_UP" &
PIDS+=($!)
cat >"$WORK/nginx-grpc.conf" <<EOF
worker_processes auto;
daemon on;
pid $WORK/nginx-grpc.pid;
error_log $WORK/nginx-grpc.err warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $WORK/grpc-body; proxy_temp_path $WORK/grpc-proxy;
    fastcgi_temp_path $WORK/grpc-fcgi; uwsgi_temp_path $WORK/grpc-uwsgi; scgi_temp_path $WORK/grpc-scgi;
    upstream grpc_app { server 127.0.0.1:$GRPC_UP; keepalive 128; }
    server {
        listen 127.0.0.1:$GRPC_NGINX http2;
        keepalive_requests 1000000;
        location / { grpc_pass grpc://grpc_app; }
    }
}
EOF
"$NGINX" -c "$WORK/nginx-grpc.conf"
cat >"$WORK/gate-grpc.yaml" <<EOF
server: { listen: "127.0.0.1:$GRPC_GATE", max_connections: $GATE_MAX_CONNECTIONS }
admin: { listen: "127.0.0.1:$GRPC_ADMIN" }
issuers:
  idp: { issuer: "https://idp.bench", jwks_file: jwks.json, algorithms: [RS256], audiences: [api] }
routes:
  - name: grpc
    match: { path_prefix: / }
    upstream: "h2c://127.0.0.1:$GRPC_UP"
    auth: { issuers: [idp], scopes_all: [read] }
EOF
target/release/authgate run --config "$WORK/gate-grpc.yaml" --log-level error >>"$WORK/gate-grpc.log" 2>&1 &
GRPC_GATE_PID=$!
PIDS+=("$GRPC_GATE_PID")
wait_ready "$GRPC_ADMIN" "$WORK/gate-grpc.log"
# One message: field 1 = "hello", behind gRPC's 5-byte length prefix.
printf '\0\0\0\0\7\n\5hello' >"$WORK/grpc-frame.bin"
grpc_nginx_pids() {
    local master
    master=$(cat "$WORK/nginx-grpc.pid")
    echo "$master $(pgrep -P "$master" | tr '\n' ' ')"
}
: >"$WORK/grpc.tsv"
for round in $(seq "$ROUNDS"); do
    for target in direct nginx authgate; do
        case $target in
        direct) port=$GRPC_UP; pids="" ;;
        nginx) port=$GRPC_NGINX; pids=$(grpc_nginx_pids) ;;
        authgate) port=$GRPC_GATE; pids=$GRPC_GATE_PID ;;
        esac
        # shellcheck disable=SC2086
        before=$(ticks $pids)
        out=$(h2load -n "$GRPC_CALLS" -c "$GRPC_CLIENTS" -m "$GRPC_STREAMS" -t "$THREADS" \
            -d "$WORK/grpc-frame.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
            -H "authorization: Bearer $(head -1 "$WORK/reused.txt")" \
            "http://127.0.0.1:$port/demo.Echo/Say")
        # shellcheck disable=SC2086
        after=$(ticks $pids)
        rps=$(awk '/^finished in/ {print $4}' <<<"$out")
        ok=$(awk '/^status codes:/ {print $3}' <<<"$out")
        cpu="-"
        if [ -n "$pids" ]; then
            cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$GRPC_CALLS" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
        fi
        printf '  round %s grpc %-9s %10s calls/s  cpu/call %6s us  2xx %s\n' "$round" "$target" "$rps" "$cpu" "$ok"
        printf '%s\t%s\t%s\n' "$target" "$rps" "$cpu" >>"$WORK/grpc.tsv"
    done
done
python3 - "$WORK/grpc.tsv" <<'EOF'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    t, rps, cpu = line.rstrip("\n").split("\t")
    runs[t].append((float(rps), None if cpu == "-" else float(cpu)))
med = {}
for t, vs in runs.items():
    cpus = [v[1] for v in vs if v[1] is not None]
    med[t] = (statistics.median(v[0] for v in vs), statistics.median(cpus) if cpus else None)
nginx_cpu = med.get("nginx", (0, None))[1]
print(f"{'grpc target':12} {'calls/s':>9} {'cpu/call us':>11} {'cpu vs nginx':>12}")
for t in ["direct", "nginx", "authgate"]:
    if t in med:
        rps, cpu = med[t]
        ratio = f"{cpu / nginx_cpu:.2f}x" if cpu and nginx_cpu else "-"
        print(f"{t:12} {rps:9.0f} {(f'{cpu:.1f}' if cpu else '-'):>11} {ratio:>12}")
EOF
