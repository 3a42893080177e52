# The decision-mode rows of bench/run.sh (sourced by it, after its other
# runs; uses its WORK, PIDS, ROUNDS, THREADS, CONNECTIONS, SECONDS_PER_RUN,
# HZ, NGINX, UPSTREAM, NGINX_PLAIN, ticks, nginx_pids and free_port).
#
# nginx `auth_request` asks authgate's decision listener about every
# request (`/.authgate/x-original`, a keep-alive pool of 64 connections),
# then proxies to the same upstream as the other rows; against nginx alone
# (`proxy_pass`, no auth). For a reused token and for distinct RS256 tokens
# (authgate restarted before each distinct run: every decision is a
# signature check until the list runs out): requests/s, the CPU per request
# of nginx and authgate together, and authgate's own CPU per decision.

echo
echo "== decision mode: nginx auth_request -> authgate decisions, against nginx alone"
DEC_NGINX=$(free_port); DEC_GATE=$(free_port); DEC_ADMIN=$(free_port)
cat >"$WORK/nginx-decisions.conf" <<EOF
worker_processes auto;
daemon on;
pid $WORK/nginx-decisions.pid;
error_log $WORK/nginx-decisions.err warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $WORK/dec-body; proxy_temp_path $WORK/dec-proxy;
    fastcgi_temp_path $WORK/dec-fcgi; uwsgi_temp_path $WORK/dec-uwsgi; scgi_temp_path $WORK/dec-scgi;
    upstream app { server 127.0.0.1:$UPSTREAM; keepalive 128; }
    upstream authgate { server 127.0.0.1:$DEC_GATE; keepalive 64; }
    server {
        listen 127.0.0.1:$DEC_NGINX;
        keepalive_requests 1000000;
        location = /.authgate-decision {
            internal;
            proxy_pass http://authgate/.authgate/x-original;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI \$request_uri;
            proxy_set_header X-Original-Method \$request_method;
        }
        location / {
            auth_request /.authgate-decision;
            auth_request_set \$authgate_subject \$upstream_http_x_auth_subject;
            proxy_set_header X-Auth-Subject \$authgate_subject;
            proxy_set_header Authorization "";
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
"$NGINX" -c "$WORK/nginx-decisions.conf"
cat >"$WORK/gate-decisions.yaml" <<EOF
decisions: { listen: "127.0.0.1:$DEC_GATE", trusted_proxies: ["127.0.0.1/32"] }
admin: { listen: "127.0.0.1:$DEC_ADMIN" }
issuers:
  idp: { issuer: "https://idp.bench", jwks_file: jwks.json, algorithms: [RS256], audiences: [api] }
routes:
  - name: bench
    match: { path_prefix: / }
    auth: { issuers: [idp], scopes_all: [read] }
EOF
DEC_GATE_PID=
start_decisions() { # (re)starts authgate: an empty verified-token cache
    if [ -n "$DEC_GATE_PID" ]; then
        kill "$DEC_GATE_PID" 2>/dev/null || true
        wait "$DEC_GATE_PID" 2>/dev/null || true
    fi
    target/release/authgate run --config "$WORK/gate-decisions.yaml" --log-level error >>"$WORK/gate-decisions.log" 2>&1 &
    DEC_GATE_PID=$!
    PIDS+=("$DEC_GATE_PID")
    wait_ready "$DEC_ADMIN" "$WORK/gate-decisions.log"
}
dec_nginx_pids() {
    local master
    master=$(cat "$WORK/nginx-decisions.pid")
    echo "$master $(pgrep -P "$master" | tr '\n' ' ')"
}
start_decisions
: >"$WORK/decisions.tsv"
for round in $(seq "$ROUNDS"); do
    for scenario in reused distinct; do
        [ "$scenario" = distinct ] && start_decisions
        for target in nginx nginx+authgate; do
            case $target in
            nginx) port=$NGINX_PLAIN; npids=$(nginx_pids); gpid="" ;;
            nginx+authgate) port=$DEC_NGINX; npids=$(dec_nginx_pids); gpid=$DEC_GATE_PID ;;
            esac
            # shellcheck disable=SC2086
            n0=$(ticks $npids); g0=0; m0=0
            [ -n "$gpid" ] && { g0=$(ticks "$gpid"); m0=$(misses "$DEC_ADMIN"); }
            out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" \
                -s "$WORK/tokens.lua" "http://127.0.0.1:$port" -- "$WORK/$scenario.txt")
            # shellcheck disable=SC2086
            n1=$(ticks $npids); g1=0; m1=0
            [ -n "$gpid" ] && { g1=$(ticks "$gpid"); m1=$(misses "$DEC_ADMIN"); }
            requests=$(awk '/requests in/ {print $1}' <<<"$out")
            rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
            bad=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
            both=$(awk -v t=$((n1 - n0 + g1 - g0)) -v hz="$HZ" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
            gate="-"; verified="-"
            if [ -n "$gpid" ]; then
                gate=$(awk -v t=$((g1 - g0)) -v hz="$HZ" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
                verified=$(awk -v m="$((${m1%.*} - ${m0%.*}))" -v n="$requests" 'BEGIN {printf "%.0f%%", 100 * m / n}')
            fi
            printf '  round %s %-9s %-15s %9s req/s  cpu/req %6s us (authgate %s us, verified %s)  non-2xx %s\n' \
                "$round" "$scenario" "$target" "$rps" "$both" "$gate" "$verified" "${bad:-0}"
            printf '%s\t%s\t%s\t%s\t%s\n' "$scenario" "$target" "$rps" "$both" "$gate" >>"$WORK/decisions.tsv"
        done
    done
done
python3 - "$WORK/decisions.tsv" <<'EOF'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    s, t, rps, both, gate = line.rstrip("\n").split("\t")
    runs[(s, t)].append((float(rps), float(both), None if gate == "-" else float(gate)))
print(f"{'scenario':9} {'target':15} {'req/s':>9} {'cpu/req us':>10} {'authgate us/decision':>20} {'cpu vs nginx':>12}")
for s in ["reused", "distinct"]:
    base = runs.get((s, "nginx"))
    base_cpu = statistics.median(v[1] for v in base) if base else None
    for t in ["nginx", "nginx+authgate"]:
        if (s, t) not in runs:
            continue
        v = runs[(s, t)]
        rps = statistics.median(x[0] for x in v)
        both = statistics.median(x[1] for x in v)
        gates = [x[2] for x in v if x[2] is not None]
        gate = f"{statistics.median(gates):.1f}" if gates else "-"
        ratio = f"{both / base_cpu:.2f}x" if base_cpu else "-"
        print(f"{s:9} {t:15} {rps:9.0f} {both:10.1f} {gate:>20} {ratio:>12}")
EOF
