#!/usr/bin/env bash
# shutdown_race.sh [BUILD] [ITERATIONS] [HOGS]: SIGTERM under load, again and again.
# Each round starts dynd, points 8 keep-alive clients at classify (as a balancer does), sends
# SIGTERM at a random moment within the first second and stops the clients a little later;
# dynd must exit 0 every time and leave no core. HOGS busy loops (default 2) crowd the cores:
# the race this guards against (libmicrohttpd dropping a reply queued while MHD_stop_daemon runs,
# then calling the request's handler anyway: server/http.c `queued`) showed about once in 100
# rounds with them, never without. Loopback only; about 1 s a round.
source "$(dirname "$0")/../integration/lib.sh"
N=${2:-100}
HOGS=${3:-2}
echo "shutdown race: $N rounds of SIGTERM under keep-alive load, $HOGS busy loops beside"
mkdir -p "$T/models" "$T/state" "$T/data"
cp "$(model_path)" "$T/models/mnist.dyn"
make_digits 30 "$T/digits"
HOG_PIDS=()
for _ in $(seq 1 "$HOGS"); do (while :; do :; done) & HOG_PIDS+=($!); done
stop_hogs() { for p in "${HOG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; HOG_PIDS=(); }
trap 'stop_hogs; cleanup' EXIT
bad=0
for n in $(seq 1 "$N"); do
    rm -f "$T/stop" "$T/out"
    (cd "$T" && ulimit -c 0 && exec "$DYND" --model-dir "$T/models" --state-dir "$T/state" \
        --data-dir "$T/data" --port 0 --log-level info --shutdown-grace-s 20 \
        > "$T/out" 2> "$T/err") &
    DYND_PID=$!
    for _ in $(seq 1 200); do grep -q "listening on" "$T/out" 2>/dev/null && break; sleep 0.05; done
    PORT=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$T/out" | head -1)
    [ -n "$PORT" ] || { fail "round $n: dynd did not start"; break; }
    $PY "$HERE/balancer_client.py" load "http://127.0.0.1:$PORT" "$T/digits" "$T/stop" "$T/prog" 8 30 \
        > /dev/null &
    LOAD=$!
    sleep "0.$((RANDOM % 9 + 1))"
    kill -TERM "$DYND_PID"
    sleep "0.$((RANDOM % 5))"
    touch "$T/stop"
    rc=0; wait "$DYND_PID" || rc=$?
    DYND_PID=""
    wait "$LOAD" || true
    if [ "$rc" != 0 ]; then
        bad=$((bad + 1))
        fail "round $n: dynd exited with status $rc after SIGTERM under load; its log's end:"
        grep -v '"msg":"request"' "$T/err" | tail -5 | sed 's/^/    /'
    else
        ok
    fi
done
stop_hogs
log "$N rounds, $bad bad exits"
finish
