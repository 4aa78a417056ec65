#!/usr/bin/env bash
# soak.sh [BUILD] [SECONDS]: dynd under a long load (loopback only, bounded; make soak).
# For SECONDS (default 600): wrk with 256 connections in all (128 on classify with a PNG, 128
# on v2 infer with a JSON UINT8 tensor), a conversion job running (resubmitted whenever one
# ends), and 200 slowloris connections from 127.0.0.2 trickling headers (dynd drops each after
# request_header_timeout_s; the client opens another). Checks: zero errors and non-2xx answers
# for wrk; RSS at the end within RSS_BOUND (default 1.25) times its value after warm-up (the
# first fifth); open file descriptors back to their count before the load (+-8) once the
# clients stop.
# Prints the figures tests/experiments/RESULTS.md records.
source "$(dirname "$0")/../integration/lib.sh"
SECS=${2:-600}
RSS_BOUND=${RSS_BOUND:-1.25}
SOAK_JOBS=${SOAK_JOBS:-1} # 0: no conversion job (to tell its memory from the serving path's)
command -v wrk > /dev/null || { echo "FAIL: no wrk (Debian package wrk; make deps installs it)"; exit 1; }
echo "soak: $SECS s of wrk (256 connections), a conversion job and 200 slowloris connections"
mkdir -p "$T/models" "$T/state" "$T/data"
cp "$(model_path)" "$T/models/mnist.dyn"
make_digits 10 "$T/digits"
A='Authorization: Bearer tok'
# every client is on loopback: the per-address cap must let 256 wrk connections in
start_dynd --log-level warn --auth-tokens tok --max-connections-per-ip 512 --request-header-timeout-s 20
$PY - "$T" <<'PY'
import json, sys
t = sys.argv[1]
png = open(t + "/digits/0.png", "rb").read()
px = list(open(t + "/digits/0.u8", "rb").read())
def lua(path, ctype, body, name):
    with open(t + "/" + name, "w") as f:
        f.write('wrk.method = "POST"\nwrk.path = "%s"\nwrk.headers["Content-Type"] = "%s"\n' % (path, ctype))
        f.write("wrk.body = " + "".join("\\%d" % b for b in body).join(['"', '"']) + "\n")
lua("/v1/models/mnist/classify", "image/png", png, "classify.lua")
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "UINT8", "data": px}]}).encode()
lua("/v2/models/mnist/infer", "application/json", body, "infer.lua")
PY
rss() { awk '/^VmRSS/ {print $2}' "/proc/$DYND_PID/status"; }
fds() { ls "/proc/$DYND_PID/fd" | wc -l; }
convert() {
    [ "$SOAK_JOBS" = 1 ] || { echo none; return; }
    req POST "/v1/conversions?output=soak&overwrite=true&force_publish=true&ratio=2&steps=2000" -H "$A" \
        -H 'Content-Type: application/octet-stream' --data-binary "@$ROOT/tests/fixtures/lenet5.onnx"
    json_get 'j["id"]'
}
fds_base=$(fds)
$PY "$HERE/slow_clients.py" hold 127.0.0.1 "$PORT" 200 127.0.0.2 "$T/stop" > "$T/hold.json" &
HOLD=$!
wrk -t1 -c128 -d"${SECS}s" --timeout 10s -s "$T/classify.lua" "$URL" > "$T/wrk1.out" 2>&1 &
W1=$!
wrk -t1 -c128 -d"${SECS}s" --timeout 10s -s "$T/infer.lua" "$URL" > "$T/wrk2.out" 2>&1 &
W2=$!
t0=$SECONDS; warm=$((SECS / 5)); rss_warm=""; fds_warm=""; jobs_done=0; job=$(convert)
rss_max=0
while kill -0 "$W1" 2>/dev/null || kill -0 "$W2" 2>/dev/null; do
    sleep 5
    r=$(rss); [ "$r" -gt "$rss_max" ] && rss_max=$r
    if [ -z "$rss_warm" ] && [ $((SECONDS - t0)) -ge "$warm" ]; then rss_warm=$r; fds_warm=$(fds); fi
    [ "$job" = none ] && continue
    req GET "/v1/jobs/$job" -H "$A"
    case "$(json_get 'j["state"]')" in
    succeeded) jobs_done=$((jobs_done + 1)); job=$(convert) ;;
    failed|cancelled|interrupted) fail "conversion job $job: $(json_get 'j["state"]') $(json_get 'j["error"]')"; job=$(convert) ;;
    esac
done
wait "$W1" "$W2" || true
rss_end=$(rss)
touch "$T/stop"; wait "$HOLD" || true
sleep 2
fds_end=$(fds)
errs() { # "requests errors non2xx" from wrk's output
    awk '/requests in/ {r=$1} /Socket errors/ {gsub(",",""); e=$4+$6+$8+$10} /Non-2xx/ {n=$NF}
         END {printf "%d %d %d", r, e+0, n+0}' "$1"
}
read -r r1 e1 n1 <<< "$(errs "$T/wrk1.out")"
read -r r2 e2 n2 <<< "$(errs "$T/wrk2.out")"
dropped=$(curl -s "$URL/metrics" | sed -n 's/^dynd_connections_dropped_total{reason="header_timeout"} //p')
log "classify: $r1 requests, $e1 socket errors, $n1 non-2xx ($(grep -m1 'Requests/sec' "$T/wrk1.out" | tr -s ' '))"
log "v2 infer: $r2 requests, $e2 socket errors, $n2 non-2xx ($(grep -m1 'Requests/sec' "$T/wrk2.out" | tr -s ' '))"
log "conversions finished during the soak: $jobs_done; slowloris: $(cat "$T/hold.json"); header_timeout drops: $dropped"
log "RSS: ${rss_warm} kB after warm-up (${warm} s), ${rss_max} kB at most, ${rss_end} kB at the end; fds: $fds_base before the load, $fds_warm under it, $fds_end once the clients stopped"
check "wrk: no socket error, no non-2xx answer" [ "$((e1 + n1 + e2 + n2))" = 0 ]
check "wrk: requests served" [ "$((r1 + r2))" -gt 0 ]
[ "$SOAK_JOBS" = 1 ] && check "at least one conversion finished while under load" [ "$jobs_done" -ge 1 ]
check "RSS at the end within ${RSS_BOUND}x its value after warm-up" \
    $PY -c "import sys; sys.exit(0 if $rss_end <= $RSS_BOUND * $rss_warm else 1)"
check "file descriptors back to their count before the load (+-8)" [ "$fds_end" -le $((fds_base + 8)) ]
stop_dynd
finish
