#!/usr/bin/env bash
# Idle keep-alive connections: RSS of a freshly started authgate holding
# IDLE_CONNECTIONS connections, each served one request and left open, for
# each transport in IDLE_TRANSPORTS: plain HTTP/1.1 (h1), HTTP/1.1 over TLS
# (h1-tls), HTTP/2 with prior knowledge (h2c), HTTP/2 over TLS by ALPN
# (h2-tls). Each transport gets a gateway of its own, started fresh; the
# client is Python's standard library (HTTP/2 frames written by hand, so
# nothing to install). Reports the RSS right after the last request and 3 s
# later, when idle connections have been at rest long enough to be parked.
#
#   bash bench/idle.sh                           # about 2 minutes
#   IDLE_CONNECTIONS=2000 IDLE_TRANSPORTS="h1 h2c" bash bench/idle.sh
#   AUTHGATE=/tmp/authgate-before bash bench/idle.sh   # an earlier build
#   HEAP=1 IDLE_CONNECTIONS=2000 bash bench/idle.sh   # and where the heap
#       goes: the gateway runs under dhat (examples/idle_heap.rs) and the
#       allocation sites still live with the connections open are listed,
#       in bytes per connection (slow: every allocation is traced)
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
IDLE_TRANSPORTS=${IDLE_TRANSPORTS:-h1 h1-tls h2c h2-tls}
source bench/common.sh authgate-idle

cargo build --release --quiet --bin authgate --example bench_tokens
if [ "${HEAP:-0}" = 1 ]; then
    cargo build --release --quiet --example idle_heap
    AUTHGATE=target/release/examples/idle_heap
fi
target/release/examples/bench_tokens "$WORK" 1 >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
UPSTREAM=$(free_port)
start_upstream "$UPSTREAM"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

for transport in $IDLE_TRANSPORTS; do
    GATE=$(free_port); ADMIN=$(free_port)
    tls=""
    case $transport in *tls) tls="  tls: { cert_file: cert.pem, key_file: key.pem }" ;; esac
    gateway_yaml "$WORK/gate-$transport.yaml" "$GATE" "$ADMIN" "$UPSTREAM" "  max_connections: $GATE_MAX_CONNECTIONS
$tls"
    heap_trigger=""
    [ "${HEAP:-0}" = 1 ] && heap_trigger="$WORK/heap-$transport.go"
    DHAT_FILE="$WORK/heap-$transport.json" DHAT_TRIGGER="$heap_trigger" \
    "${AUTHGATE:-target/release/authgate}" run --config "$WORK/gate-$transport.yaml" --log-level error >>"$WORK/gate.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_ready "$ADMIN" "$WORK/gate.log"
    echo "== $IDLE_CONNECTIONS idle keep-alive connections, $transport"
    python3 - "$transport" "$GATE" "$IDLE_CONNECTIONS" "$(head -1 "$WORK/reused.txt")" "$pid" \
        "$heap_trigger" <<'EOF'
import socket, ssl, struct, sys, time
transport, port, n, token, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
tls, h2 = transport.endswith("tls"), transport.startswith("h2")

def rss(field="VmRSS"):
    return int([l for l in open(f"/proc/{pid}/status") if l.startswith(field)][0].split()[1])

def split():  # anonymous (heap, stacks) against file-backed (the binary's pages)
    return f"anonymous {rss('RssAnon') / 1024:.1f}, file {rss('RssFile') / 1024:.1f}"

def hpack_int(value, bits, flags):
    top = (1 << bits) - 1
    if value < top:
        return bytes([flags | value])
    out, value = [flags | top], value - top
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes(out + [value])

def literal(index, value):  # literal without indexing, indexed name
    v = value.encode()
    return hpack_int(index, 4, 0) + hpack_int(len(v), 7, 0) + v

def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

block = (b"\x82" + (b"\x87" if tls else b"\x86") + literal(4, "/bench") + literal(1, "b")
         + literal(15 + 8, f"Bearer {token}"))
h2_request = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block))
h1_request = f"GET /bench HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\n\r\n".encode()

context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
context.set_alpn_protocols(["h2" if h2 else "http/1.1"])

def read_exact(s, k):
    data = b""
    while len(data) < k:
        chunk = s.recv(k - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data

def one():
    s = socket.create_connection(("127.0.0.1", port))
    if tls:
        s = context.wrap_socket(s)
    if not h2:
        s.sendall(h1_request)
        return s, s.recv(4096).startswith(b"HTTP/1.1 200")
    s.sendall(h2_request)
    while True:  # frames until the response's HEADERS on stream 1
        head = read_exact(s, 9)
        length, kind, flags, stream = int.from_bytes(head[:3], "big"), head[3], head[4], int.from_bytes(head[5:], "big") & 0x7FFFFFFF
        payload = read_exact(s, length)
        if kind == 4 and not flags & 1:
            s.sendall(frame(4, 1, 0))  # SETTINGS ACK
        if kind == 1 and stream == 1:
            return s, payload[:1] == b"\x88"  # :status 200, indexed

warm = [one()[0] for _ in range(10)]  # caches, pools and allocator warmed
for s in warm:
    s.close()
time.sleep(0.5)
before, before_split = rss(), split()
socks, ok = [], 0
for _ in range(n):  # one at a time: each served, then left idle
    s, good = one()
    socks.append(s)
    ok += good
served = rss()
time.sleep(3)  # connections at rest are parked where they can be
after = rss()
print(f"{transport}: {ok}/{n} connections served one request each and held open")
print(f"{transport}: RSS {before / 1024:.1f} MiB before, {served / 1024:.1f} MiB right after "
      f"({(served - before) / n:.1f} KiB per connection), {after / 1024:.1f} MiB at rest "
      f"({(after - before) / n:.1f} KiB per connection)", flush=True)
print(f"{transport}: MiB before: {before_split}; at rest: {split()}", flush=True)
if sys.argv[6]:  # HEAP=1: the profile is written while the connections are open
    open(sys.argv[6], "w").close()
    def running():
        try:
            return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
        except FileNotFoundError:
            return False
    while running():
        time.sleep(0.2)
EOF
    if [ "${HEAP:-0}" = 1 ]; then
        wait "$pid" 2>/dev/null || true
        python3 - "$WORK/heap-$transport.json" "$IDLE_CONNECTIONS" <<'EOF'
import json, sys
profile, n = json.load(open(sys.argv[1])), int(sys.argv[2])
frames, sites = profile["ftbl"], sorted(profile["pps"], key=lambda p: -p["eb"])
print(f"heap live at the end: {sum(p['eb'] for p in sites) / n:.0f} bytes, "
      f"{sum(p['ebk'] for p in sites) / n:.1f} blocks per connection; by allocation site:")
plumbing = ("<dhat", "dhat", "alloc::", "__rust", "<alloc::", "core::ptr", "RawVec", "Box<T>")
for p in sites[:12]:
    names = [frames[i].split(" (")[0].split(": ", 1)[-1] for i in p["fs"]]
    names = [f for f in names if not f.startswith(plumbing)][:2]
    print(f"  {p['eb'] / n:7.0f} B {p['ebk'] / n:5.2f} blocks  " + " <- ".join(x[-90:] for x in names))
EOF
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
