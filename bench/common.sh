# Shared by the benchmark scripts in bench/ (sourced, not run): installs wrk,
# nginx and openssl from Debian's packages when missing, makes a work
# directory, and on exit stops every process in PIDS and every nginx
# started from a config in the work directory.
#
#   source bench/common.sh authgate-bench   # from the repository root

need() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
need wrk || missing+=(wrk)
need nginx || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
need openssl || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

WORK=$(mktemp -d "/tmp/$1.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for conf in "$WORK"/nginx*.conf; do
        [ -f "$conf" ] && "$NGINX" -c "$conf" -s stop 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# server.max_connections for the benchmark gateways: 20,000, or what the
# hard descriptor limit leaves room for (check refuses more; CONTRACT §8.1b).
HARD_NOFILE=$(ulimit -Hn)
[ "$HARD_NOFILE" = unlimited ] && HARD_NOFILE=1048576
GATE_MAX_CONNECTIONS=$(( HARD_NOFILE - 2000 < 20000 ? HARD_NOFILE - 2000 : 20000 ))

# wait_ready ADMIN_PORT [LOG]: waits up to 10 s for a gateway's /readyz;
# if it never answers, prints LOG (when given) and fails.
wait_ready() {
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0
        sleep 0.1
    done
    [ -n "${2:-}" ] && cat "$2" >&2
    echo "gateway on admin port $1 not ready after 10 s" >&2
    return 1
}

# pinned_placement: for the benchmarks that pin the proxy to its own CPU;
# needs taskset and two CPUs or more. PROXY_CPU is the last CPU, LOAD_CPUS
# the others (for wrk and the upstream).
pinned_placement() {
    need taskset || { echo "taskset (util-linux) is needed" >&2; exit 1; }
    [ "$(nproc)" -ge 2 ] || { echo "needs at least 2 CPUs" >&2; exit 1; }
    PROXY_CPU=$(( $(nproc) - 1 )); LOAD_CPUS=0-$(( PROXY_CPU - 1 ))
}

# cpu_ticks PID: the process's utime+stime so far, in ticks of HZ a second.
HZ=$(getconf CLK_TCK)
cpu_ticks() { local f; read -r -a f < "/proc/$1/stat"; echo $((f[13] + f[14])); }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_upstream PORT: nginx on PORT answering every request 200 "ok", with
# unlimited keep-alive; UPSTREAM_WORKERS worker processes (default 1).
start_upstream() {
    cat >"$WORK/nginx-upstream.conf" <<EOF
worker_processes ${UPSTREAM_WORKERS:-1};
daemon on;
pid $WORK/nginx-upstream.pid;
error_log $WORK/nginx-upstream.err warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $WORK/up-body; proxy_temp_path $WORK/up-proxy;
    fastcgi_temp_path $WORK/up-fcgi; uwsgi_temp_path $WORK/up-uwsgi; scgi_temp_path $WORK/up-scgi;
    server { listen 127.0.0.1:$1; keepalive_requests 1000000; location / { return 200 'ok'; } }
}
EOF
    "$NGINX" -c "$WORK/nginx-upstream.conf"
}

# gateway_yaml FILE LISTEN ADMIN UPSTREAM [SERVER_LINES] [ISSUER_LINES]: the
# benchmark gateway's config: one RS256 issuer (GATE_ALGORITHMS="RS256,
# ES256" allows more) whose keys are jwks.json beside FILE, one protected
# route to UPSTREAM. The optional arguments are extra lines (already
# indented) for the server and the issuer.
gateway_yaml() {
    cat >"$1" <<EOF
server:
  listen: "127.0.0.1:$2"
${5:-}
admin: { listen: "127.0.0.1:$3" }
issuers:
  idp:
    issuer: "https://idp.bench"
    jwks_file: jwks.json
    algorithms: [${GATE_ALGORITHMS:-RS256}]
    audiences: [api]
${6:-}
routes:
  - name: bench
    match: { path_prefix: / }
    upstream: "http://127.0.0.1:$4"
    auth: { issuers: [idp], scopes_all: [read] }
EOF
}
