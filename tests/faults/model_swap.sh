#!/usr/bin/env bash
# model_swap.sh [BUILD]: the served model's file is truncated in place, overwritten with junk,
# copied over non-atomically and renamed over, while 4 clients classify through it. No request
# may fail: a damaged file is refused (logged) and the version loaded before keeps serving; a
# good file is loaded; nothing half-written is ever served.
source "$(dirname "$0")/../integration/lib.sh"
echo "model file swaps under load: truncate, junk, copy over, rename over"
mkdir -p "$T/models" "$T/state"
cp "$(model_path)" "$T/models/mnist.dyn"
cp "$(model_path)" "$T/good.dyn"
make_digits 30 "$T/digits"
start_dynd --log-level info --repository-poll-ms 100
$PY "$HERE/balancer_client.py" load "$URL" "$T/digits" "$T/stop" "$T/progress" 4 120 > "$T/load.json" &
LOAD=$!
loaded() { grep -c '"msg":"model loaded","model":"mnist"' "$T/dynd.err" || true; }
refused() { grep -c '"msg":"model load failed","model":"mnist"' "$T/dynd.err" || true; }
settle() { sleep 1.5; } # the poll (100 ms) and the load of a 57 kB model, with room to spare
M=$T/models/mnist.dyn
r0=$(refused)
$PY -c 'import os,sys; f=open(sys.argv[1],"r+b"); f.truncate(os.path.getsize(sys.argv[1])//2)' "$M"
settle
check "a file truncated in place is refused" [ "$(refused)" -gt "$r0" ]
r0=$(refused)
head -c 57024 /dev/urandom > "$M"
settle
check "junk written over the file is refused" [ "$(refused)" -gt "$r0" ]
l0=$(loaded)
cp "$T/good.dyn" "$T/models/.incoming" && mv "$T/models/.incoming" "$M"
settle
check "a good file renamed over it is loaded" [ "$(loaded)" -gt "$l0" ]
for k in 1 2 3; do cp "$T/good.dyn" "$M"; sleep 0.5; done # copied over in place, non-atomically
settle
req POST /v1/models/mnist/classify -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_status 200 "mnist classifies after the swaps"
touch "$T/stop"; wait "$LOAD" || true
log "load during the swaps: $(cat "$T/load.json")"
check "no failed request during the swaps" [ "$($PY -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["failed"] == 0 and s["total"] > 0)' "$T/load.json")" = True ]
stop_dynd
finish
