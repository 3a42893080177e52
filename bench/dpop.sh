# The DPoP rows of bench/run.sh (sourced by it, after its other runs; uses
# its WORK, ROUNDS, THREADS, CONNECTIONS, SECONDS_PER_RUN, HZ, GATE_PLAIN,
# GATE_PID_plain, start_gateways and ticks).
#
# wrk against the plain authgate: a reused Bearer token, and a reused
# DPoP-bound token with a fresh ES256 proof on every request (minted ahead
# by bench_tokens: one signature check of the proof per request, the token
# itself a verified-cache hit; `Host: bench.example` as the proofs' htu
# names). Requests/s and authgate's CPU per request; a run that uses up
# the proofs shows non-2xx (replays refused).

echo
echo "== DPoP: reused DPoP-bound token with a fresh proof per request, against a reused Bearer token"
cat >"$WORK/dpop.lua" <<'LUA'
local proofs = {}
local i = 0
local token
init = function(args)
    for line in io.lines(args[1]) do token = line end
    for line in io.lines(args[2]) do proofs[#proofs + 1] = line end
end
request = function()
    i = i % #proofs + 1
    return wrk.format("GET", "/bench", {
        ["Host"] = "bench.example",
        ["Authorization"] = "DPoP " .. token,
        ["DPoP"] = proofs[i],
    })
end
LUA
: >"$WORK/dpop.tsv"
for round in $(seq "$ROUNDS"); do
    for scenario in bearer dpop; do
        # A fresh process for each DPoP run: the proofs are used again,
        # and the replay memory of the last run would refuse them.
        [ "$scenario" = dpop ] && start_gateways
        before=$(ticks "$GATE_PID_plain")
        if [ "$scenario" = dpop ]; then
            out=$(wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WORK/dpop.lua" \
                "http://127.0.0.1:$GATE_PLAIN" -- "$WORK/dpop-token.txt" "$WORK/dpop.txt")
        else
            out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WORK/tokens.lua" \
                "http://127.0.0.1:$GATE_PLAIN" -- "$WORK/reused.txt")
        fi
        after=$(ticks "$GATE_PID_plain")
        requests=$(awk '/requests in/ {print $1}' <<<"$out")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        bad=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
        cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$requests" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
        printf '  round %s %-7s %9s req/s  authgate cpu/req %6s us  non-2xx %s\n' "$round" "$scenario" "$rps" "$cpu" "${bad:-0}"
        printf '%s\t%s\t%s\n' "$scenario" "$rps" "$cpu" >>"$WORK/dpop.tsv"
    done
done
python3 - "$WORK/dpop.tsv" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    s, rps, cpu = line.rstrip("\n").split("\t")
    runs[s].append((float(rps), float(cpu)))
print(f"{'scenario':8} {'req/s':>9} {'cpu/req us':>10}")
for s in ["bearer", "dpop"]:
    if s in runs:
        v = runs[s]
        print(f"{s:8} {statistics.median(x[0] for x in v):9.0f} {statistics.median(x[1] for x in v):10.1f}")
PY
