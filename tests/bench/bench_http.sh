#!/usr/bin/env bash
# HTTP benchmark of dynd on loopback with wrk: requests/s and p50 / p99 latency for the MNIST
# DyN LeNet-5 via /v1/models/mnist/classify (a PNG digit) and via v2 infer (one UINT8 digit),
# at 1, 16 and 64 connections, with dynamic batching on and off. Prints a table.
#   tests/bench/bench_http.sh [build-dir] [seconds per run]
# Targets (issue 4, 2 cores): classify >= 3000 req/s at 64 connections with p99 < 50 ms and no
# errors; batching on >= 1.5x off at 64 connections.
set -euo pipefail
BUILD=${1:-build}
SECS=${2:-5}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DYND=$ROOT/$BUILD/dynd
[ -x "$DYND" ] || { echo "bench_http: no $DYND (make first)"; exit 1; }
command -v wrk >/dev/null || { echo "bench_http: wrk not installed (make deps)"; exit 1; }
MODEL=$ROOT/models/mnist.dyn
[ -f "$MODEL" ] || MODEL=$ROOT/$BUILD/it-cache/mnist.dyn
[ -f "$MODEL" ] || { echo "bench_http: no demo model (make run, or make integration, first)"; exit 1; }
T=$(mktemp -d /tmp/dynd_bench_XXXXXX)
PIDS=""
trap '[ -n "$PIDS" ] && kill -KILL $PIDS 2>/dev/null; rm -rf "$T"' EXIT
mkdir -p "$T/models" && cp "$MODEL" "$T/models/mnist.dyn"

# one test digit: PNG for classify, UINT8 JSON for v2
cc -O2 -o "$T/mkdigits" "$ROOT/tests/integration/mkdigits.c" -lpng -ljpeg -lz
mkdir -p "$T/d"
"$T/mkdigits" "$ROOT/data/mnist/t10k-images-idx3-ubyte" "$ROOT/data/mnist/t10k-labels-idx1-ubyte" "$T/d" 1
python3 -c 'import json,sys; print(json.dumps({"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"UINT8","data":list(open(sys.argv[1],"rb").read())}]}))' "$T/d/0.u8" > "$T/infer.json"
for ep in classify infer; do
    if [ $ep = classify ]; then f=$T/d/0.png; ct=image/png; else f=$T/infer.json; ct=application/json; fi
    cat > "$T/$ep.lua" <<LUA
local f = assert(io.open("$f", "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "$ct"
LUA
done

start() { # start <batching true|false> <tag>: sets PID_<tag>, PORT_<tag>
    "$DYND" --model-dir "$T/models" --state-dir "$T/state-$2" --port 0 --log-level error \
        --batching "$1" --http-threads 2 --max-connections 4096 > "$T/out-$2" 2> "$T/err-$2" &
    local pid=$!
    PIDS="$PIDS $pid"
    for _ in $(seq 1 100); do grep -q "listening on" "$T/out-$2" && break; sleep 0.05; done
    printf -v "PORT_$2" '%s' "$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$T/out-$2" | head -1)"
}

# "Requests/sec", p50 and p99 (ms), errors from wrk --latency output
parse() {
    python3 - "$1" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", s).group(1))
lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", s, re.M)}
errs = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", s))
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", s)
if m: errs += sum(int(x) for x in m.groups())
print("%10.0f %9.2f %9.2f %7d" % (rps, lat.get("50", 0), lat.get("99", 0), errs))
PY
}

# Both daemons run at once and every (endpoint, connections) point is measured with batching on,
# then off, right after each other, so the ratio compares runs under the same machine load.
start true on
start false off
printf "dynd HTTP benchmark: %s, %d s per run, %s\n" "$(basename "$MODEL")" "$SECS" "$(nproc) cores"
printf "%-9s %-9s %6s %10s %9s %9s %7s\n" endpoint batching conns "req/s" "p50 ms" "p99 ms" errors
for ep in classify infer; do
    path=/v1/models/mnist/classify; [ $ep = infer ] && path=/v2/models/mnist/infer
    for c in 1 16 64; do
        th=$(( c < 2 ? 1 : 2 ))
        for mode in on off; do
            port=PORT_$mode
            wrk -t$th -c$c -d${SECS}s --latency -s "$T/$ep.lua" "http://127.0.0.1:${!port}$path" > "$T/wrk.txt" 2>&1 || true
            row=$(parse "$T/wrk.txt")
            printf "%-9s %-9s %6d %s\n" $ep $mode $c "$row"
            echo "$ep $mode $c $row" >> "$T/rows"
        done
    done
done
kill -TERM $PIDS; wait $PIDS 2>/dev/null || true; PIDS=""
python3 - "$T/rows" <<'PY'
import sys
r = {}
for line in open(sys.argv[1]):
    ep, mode, c, rps, p50, p99, err = line.split()
    r[ep, mode, int(c)] = (float(rps), float(p99), int(err))
rps, p99, err = r["classify", "on", 64]
ok = rps >= 3000 and p99 < 50 and err == 0
print(f"target: classify at 64 connections >= 3000 req/s, p99 < 50 ms, no errors: "
      f"{rps:.0f} req/s, p99 {p99:.2f} ms, {err} errors: {'PASS' if ok else 'MISSED'}")
for ep in ("classify", "infer"):
    ratio = r[ep, "on", 64][0] / max(r[ep, "off", 64][0], 1e-9)
    print(f"target: {ep} batching on / off at 64 connections >= 1.5: {ratio:.2f}x: "
          f"{'PASS' if ratio >= 1.5 else 'MISSED'}")
PY
