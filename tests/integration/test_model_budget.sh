#!/usr/bin/env bash
# Memory budget, lazy loading, listening while the repository loads, and writes refused without
# a token (issue 11, defect 6):
#   - max_loaded_models = 2 over 6 models: every model classifies right, the loaded count read
#     from /metrics never exceeds 2, evicted models come back on their next request, readiness
#     per model says what is loaded, concurrent first requests load a model once;
#   - max_model_memory_bytes below two models' measured memory: one model loaded at a time;
#   - a model_dir of many models: dynd is live (and listening) before its first scan ends, ready
#     after, and a request made meanwhile is answered;
#   - with no auth_tokens, conversions and other writes are refused unless
#     allow_unauthenticated_writes = true; reads stay open.
source "$(dirname "$0")/lib.sh"
echo "model budget: LRU unloading, lazy loading, listen while loading, writes need a token"
MODEL=$(model_path)
make_digits 4 "$T/digits"
mkdir -p "$T/models"
for i in 0 1 2 3 4 5; do cp "$MODEL" "$T/models/m$i.dyn"; done
label_of() { awk -v i="$1" '$1 == i {print $2}' "$T/digits/labels.txt"; }
classify() { # classify MODEL DIGIT
    req POST "/v1/models/$1/classify?top_k=1" -H 'Content-Type: image/png' --data-binary "@$T/digits/$2.png"
}
metric() { curl -s -m 10 "$URL/metrics" | awk -v k="$1" '$1 == k {print $2}'; }
MAXSEEN=0
note_loaded() { # records the loaded count; fails when it is over $1
    local n; n=$(metric dynd_models_loaded)
    [ "${n:-99}" -gt "$MAXSEEN" ] && MAXSEEN=$n
    if [ "${n:-99}" -le "$1" ]; then ok; else fail "$2: $n models loaded (budget $1)"; fi
}
stop() { # stop_dynd, then no sanitizer report in its log (the next start_dynd overwrites it)
    stop_dynd
    if grep -qE "Sanitizer|runtime error:" "$T/dynd.err"; then
        fail "sanitizer report in the daemon's log ($1)"; grep -E -A5 "Sanitizer|runtime error:" "$T/dynd.err" | head -20
    fi
}
loads_of() { grep -c "\"msg\":\"model loaded\".*\"model\":\"$1\"" "$T/dynd.err" || true; }

# ---- max_loaded_models = 2 ----
start_dynd --max-loaded-models 2 --repository-poll-ms 200 --log-level info
note_loaded 2 "after the first scan"
req POST /v2/repository/index -H 'Content-Type: application/json' -d '{}'
expect_status 200 "the repository index (a read) is open without tokens"
check "index: 2 READY, 4 UNAVAILABLE (not loaded, memory budget)" [ "$(json_get '(sum(e["state"] == "READY" for e in j), sum(e["state"] == "UNAVAILABLE" and "memory budget" in e["reason"] for e in j))')" = "(2, 4)" ]
LAZY=$(json_get '[e["name"] for e in j if e["state"] != "READY"][0]')
READY1=$(json_get '[e["name"] for e in j if e["state"] == "READY"][0]')
req GET "/v2/models/$LAZY/ready"
expect_error 503 model_not_loaded "readiness of a model not loaded now"
check "it says so: ready false, state UNAVAILABLE" [ "$(json_get 'j["ready"], j["state"]')" = "(False, 'UNAVAILABLE')" ]
req GET "/v2/models/$READY1/ready"; expect_status 200 "readiness of a loaded model"
req GET "/v1/models"
check "/v1/models lists all 6 once" [ "$(json_get 'sorted(m["name"] for m in j["models"])')" = "['m0', 'm1', 'm2', 'm3', 'm4', 'm5']" ]

for round in 1 2; do
    for i in 0 1 2 3 4 5; do
        d=$(( (i + round) % 4 ))
        classify "m$i" "$d"
        check "round $round: m$i classifies digit $d right" [ "$STATUS:$(json_get 'j["predictions"][0]["label"]')" = "200:$(label_of $d)" ]
        note_loaded 2 "round $round after m$i"
    done
done
EV=$(metric dynd_model_evictions_total)
check "models were unloaded to make room ($EV evictions)" [ "${EV:-0}" -ge 8 ]
check "loaded + not loaded = 6" [ "$(( $(metric dynd_models_loaded) + $(metric dynd_models_not_loaded) ))" = 6 ]
check "the budget was used (2 loaded at most, 2 seen)" [ "$MAXSEEN" = 2 ]
check "the evictions were logged" grep -q "model unloaded to make room" "$T/dynd.err"
MEM=$(metric dynd_model_memory_bytes)
check "the loaded models' memory is measured (> 1 MB for two LeNet-5: $MEM)" [ "${MEM:-0}" -gt 1000000 ]
# m0 was evicted by rounds of 6 models over 2 slots; it comes back on its next request
req GET /v2/models/m0/ready; expect_error 503 model_not_loaded "m0 evicted"
classify m0 1
check "an evicted model answers its next request" [ "$STATUS:$(json_get 'j["predictions"][0]["label"]')" = "200:$(label_of 1)" ]
req GET /v2/models/m0/ready; expect_status 200 "m0 ready again"
# metadata loads a model too
req POST /v2/repository/index -d '{}'
LAZY=$(json_get '[e["name"] for e in j if e["state"] != "READY"][0]')
req GET "/v2/models/$LAZY"
check "metadata of a model not loaded loads it" [ "$STATUS:$(json_get 'j["name"]')" = "200:$LAZY" ]
note_loaded 2 "after metadata"

# concurrent first requests load a model once
req POST /v2/repository/index -d '{}'
LAZY=$(json_get '[e["name"] for e in j if e["state"] != "READY"][0]')
BEFORE=$(loads_of "$LAZY")
pids=()
for k in 1 2 3 4 5 6; do
    curl -s -m 20 -o "$T/c$k.json" -w '%{http_code}' -H 'Content-Type: image/png' \
        --data-binary "@$T/digits/2.png" "$URL/v1/models/$LAZY/classify" > "$T/c$k.code" &
    pids+=($!)
done
wait "${pids[@]}"
codes=$(cat "$T"/c?.code | tr -d '\n')
check "6 concurrent first requests to $LAZY: all 200 ($codes)" [ "$codes" = 200200200200200200 ]
check "...and $LAZY was loaded once ($BEFORE loads before, $(loads_of "$LAZY") after)" [ "$(loads_of "$LAZY")" = $((BEFORE + 1)) ]
note_loaded 2 "after the concurrent requests"
# scans (every 200 ms) leave the budget alone: no model is reloaded by a scan
L0=$(grep -c '"msg":"model loaded"' "$T/dynd.err")
sleep 1
check "scans reload nothing" [ "$(grep -c '"msg":"model loaded"' "$T/dynd.err")" = "$L0" ]
still_serves "the budget run"
stop "max_loaded_models run"
log "max_loaded_models = 2: $EV evictions over 12 requests, at most $MAXSEEN loaded"

# ---- max_model_memory_bytes: below two models' memory ----
ONE=$(( MEM / 2 ))
BUDGET=$(( ONE * 3 / 2 ))
start_dynd --max-model-memory-bytes "$BUDGET" --log-level info
check "memory budget: the first scan loaded one model and unloaded none" [ "$(metric dynd_models_loaded):$(metric dynd_model_evictions_total)" = 1:0 ]
for i in 3 4 5 3; do
    classify "m$i" 0
    check "memory budget: m$i classifies" [ "$STATUS:$(json_get 'j["predictions"][0]["label"]')" = "200:$(label_of 0)" ]
    note_loaded 1 "memory budget $BUDGET after m$i"
    b=$(metric dynd_model_memory_bytes)
    check "memory budget: $b bytes loaded <= $BUDGET" [ "${b:-0}" -le "$BUDGET" ]
done
stop "memory budget run"
log "max_model_memory_bytes = $BUDGET (1.5 models of ~$ONE bytes): one loaded at a time"

# ---- listening while the repository loads ----
for i in $(seq 6 60); do cp "$MODEL" "$T/models/m$i.dyn"; done
NO_READY_WAIT=1 start_dynd --log-level info
req GET /v2/health/live; expect_status 200 "live as soon as it listens"
req GET /v2/health/ready; R1=$STATUS
if [ "$R1" = 503 ]; then expect_error 503 not_ready "not ready while the repository loads"; fi
classify m60 3
check "a request made while the repository loads is answered" [ "$STATUS:$(json_get 'j["predictions"][0]["label"]')" = "200:$(label_of 3)" ]
for i in $(seq 1 1200); do req GET /v2/health/ready; [ "$STATUS" = 200 ] && break; sleep 0.05; done
expect_status 200 "ready once the first scan ended"
# the order of the log lines is the proof: listening first, then the scan's end
ORDER=$(grep -o -E '"msg":"(listening|repository loaded: ready)"' "$T/dynd.err" | cut -d'"' -f4 | tr '\n' ,)
check "it listened before the repository was loaded ($ORDER)" [ "$ORDER" = "listening,repository loaded: ready," ]
check "61 models loaded" [ "$(metric dynd_models_loaded)" = 61 ]
log "61 models: ready answered $R1 right after listening"
stop "listen while loading run"
rm -f "$T"/models/m[1-6][0-9].dyn "$T"/models/m[6-9].dyn

# ---- writes need a token ----
start_dynd
req POST '/v1/conversions?output=x' -H 'Content-Type: application/octet-stream' --data-binary "@$MODEL"
expect_error 403 writes_need_auth "a conversion without auth_tokens"
check "the message says how to allow it" [ "$(json_get '"auth_tokens" in j["error"] and "allow_unauthenticated_writes" in j["error"]')" = True ]
req POST /v1/finetunes -H 'Content-Type: application/json' -d '{"model":"m0","data":"mnist"}'
expect_error 403 writes_need_auth "a fine-tune without auth_tokens"
req PUT /v1/datasets/x --data-binary "@$T/digits/0.png"
expect_error 403 writes_need_auth "a data set upload without auth_tokens"
req POST /v2/repository/models/m0/unload
expect_error 403 writes_need_auth "an unload without auth_tokens"
req PATCH /v1/models/m0 -H 'Content-Type: application/json' -d '{"labels": []}'
expect_error 403 writes_need_auth "a model edit without auth_tokens"
req GET /v1/jobs; expect_status 200 "reads stay open (jobs list)"
classify m0 0; expect_status 200 "inference stays open"
stop "writes without tokens"
start_dynd --allow-unauthenticated-writes
req POST /v2/repository/models/m0/unload
expect_status 200 "allow_unauthenticated_writes: an unload without a token"
req POST '/v1/conversions?output=x' -H 'Content-Type: application/octet-stream' --data-binary 'not a model'
check "allow_unauthenticated_writes: a conversion reaches its checks ($STATUS)" [ "$STATUS" != 403 ] && [ "$STATUS" != 401 ]
check "the open writes are logged as a warning" grep -q "allow_unauthenticated_writes = true" "$T/dynd.err"
stop "open writes"
start_dynd --auth-tokens tok
req POST '/v1/conversions?output=x' -H 'Content-Type: application/octet-stream' --data-binary "@$MODEL"
expect_error 401 unauthorized "with tokens: a conversion without one"
stop "tokens"
finish
