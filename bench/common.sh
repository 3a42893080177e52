# Shared by bench/run.sh and bench/soak.sh (sourced, not run): installs wrk,
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
