#!/usr/bin/env bash
# The S3 model store (server/store.h) against s3rver (npm, an S3-compatible server on loopback,
# a temporary directory): two dynd processes sharing nothing but the store, each with its own
# model_dir (its cache). A publishes a conversion; B serves it after a poll; a new version
# published by A reaches B; a model edit (PATCH) on B reaches A; a model removed from the store leaves B's cache; the store killed
# before a publish fails the job cleanly (a conversion of a repository model: an upload is refused
# at once, 503 store_unavailable, since it goes to the store first), leaves every manifest pointing at existing objects
# and B serving; a store that takes the upload but refuses the manifest write (a fault proxy,
# s3_fault_proxy.py) fails the job, leaves the manifest as it was and the object deleted again;
# every request D sends carries a valid SigV4 signature (checked by the proxy: s3rver checks
# only the access key id); a manifest write answered 412 (a concurrent publisher) is retried from
# a fresh read, one answered 501 (no conditional writes) is written unconditionally; a wrong key
# id, a wrong secret or none give a clear error. Skipped (not failed) without node / npm.
# s3rver (pinned with its dependencies in tests/integration/s3/package-lock.json) is installed
# by `npm ci` into $BUILD/s3-node once, and again only when the lock changes.
source "$(dirname "$0")/lib.sh"
echo "store: model_store = s3://… shared by two replicas (s3rver)"
source "$HERE/s3/s3lib.sh"
s3_prepare
make_digits 1 "$T/digits"
mkdir -p "$T/data" && ln -s "$ROOT/data/mnist" "$T/data/mnist"
ONNX=$ROOT/tests/fixtures/lenet5.onnx
BUCKET=dynd-models
S3_PID="" PIDS=()
cleanup_store() {
    for p in "${PIDS[@]}" $S3_PID; do kill -KILL "$p" 2>/dev/null || true; done
    cleanup
}
trap cleanup_store EXIT

# replica NAME [flags]: dynd with model_dir $T/NAME/models sharing the store; sets <NAME>_URL.
replica() {
    local name=$1 t0=$T; shift
    T=$t0/$name
    mkdir -p "$T/models"
    AWS_ACCESS_KEY_ID=${KEY_ID:-S3RVER} AWS_SECRET_ACCESS_KEY=${SECRET:-S3RVER} AWS_REGION=us-east-1 \
        start_dynd --log-level info --model-store "s3://$BUCKET/team/models" \
        --store-endpoint "${ENDPOINT:-http://127.0.0.1:$S3_PORT}" --store-poll-ms 300 --data-dir "$t0/data" \
        --allow-unauthenticated-writes "$@"
    PIDS+=("$DYND_PID")
    printf -v "${name}_URL" '%s' "$URL"
    printf -v "${name}_PID" '%s' "$DYND_PID"
    DYND_PID=""
    T=$t0
}
# convert URL OUTPUT [query]: a quick conversion of the ONNX fixture; waits; sets STATE, BODY.
convert() {
    URL=$1
    req POST "/v1/conversions?steps=50&force_publish=true&preprocess_from=mnist&output=$2${3:-}" \
        -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"
    [ "$STATUS" = 202 ] || { fail "conversion to $2 not accepted: $STATUS ${BODY:0:200}"; return 0; }
    local id t0=$SECONDS
    id=$(json_get 'j["id"]')
    while :; do
        req GET "/v1/jobs/$id"
        STATE=$(json_get 'j["state"]' || echo "?")
        case "$STATE" in queued|running) ;; *) return 0;; esac
        [ $((SECONDS - t0)) -lt 120 ] || { fail "job $id still $STATE"; return 0; }
        sleep 0.1
    done
}
# convert_model URL OUTPUT: a quick conversion of repository model lenet (no upload, so nothing
# goes to the store before the publish); waits; sets STATE, BODY.
convert_model() {
    URL=$1
    req POST /v1/conversions -H 'Content-Type: application/json' \
        -d '{"model": "lenet", "steps": 50, "force_publish": true, "overwrite": true, "output": "'"$2"'"}'
    [ "$STATUS" = 202 ] || { fail "conversion of lenet to $2 not accepted: $STATUS ${BODY:0:200}"; return 0; }
    local id t0=$SECONDS
    id=$(json_get 'j["id"]')
    while :; do
        req GET "/v1/jobs/$id"
        STATE=$(json_get 'j["state"]' || echo "?")
        case "$STATE" in queued|running) ;; *) return 0;; esac
        [ $((SECONDS - t0)) -lt 120 ] || { fail "job $id still $STATE"; return 0; }
        sleep 0.1
    done
}
contains() { grep -qF -- "$1" <<<"$2"; }
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$1/v2/models/$2/ready")" = 200 ]; }
classifies() {
    [ "$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST -H 'Content-Type: image/png' \
        --data-binary "@$T/digits/0.png" "$1/v1/models/$2/classify")" = 200 ]
}
# The versions a manifest lists ("[1, 2]"), and the objects under a model's folder (count).
manifest_versions() { s3 GET "team/models/$1/manifest.json" | $PY -c 'import json,sys; print([v["version"] for v in json.load(sys.stdin)["versions"]])'; }
objects() { s3 GET "?list-type=2&prefix=team/models/$1/" | grep -o '<Key>' | wc -l; }
# Every version key of every manifest exists in the store.
manifests_sound() {
    local keys k
    keys=$(s3 GET "?list-type=2&prefix=team/models/" | grep -o '<Key>[^<]*manifest.json</Key>' | sed 's/<[^>]*>//g')
    [ -n "$keys" ] || return 1
    for k in $keys; do
        s3 GET "$k" | $PY -c 'import json,sys; [print(v["key"]) for v in json.load(sys.stdin)["versions"]]' > "$T/vkeys" || return 1
        while read -r v; do
            [ "$(s3 HEAD "$v" -I -o /dev/null -w '%{http_code}')" = 200 ] || { echo "  $k names missing $v"; return 1; }
        done < "$T/vkeys"
    done
}

start_s3
log "s3rver on 127.0.0.1:$S3_PORT"
replica A
replica B

# ---- A publishes; B, sharing only the store, serves it after a poll ----
convert "$A_URL" lenet
check "A's conversion published to the store ($STATE: $(json_get 'j["error"]'))" [ "$STATE" = succeeded ]
check "the manifest in the store lists version 1" [ "$(manifest_versions lenet)" = "[1]" ]
check "A serves its model from its cache (lenet/1.dyn)" [ -f "$T/A/models/lenet/1.dyn" ]
check "B serves lenet after its poll" until_true 20 ready "$B_URL" lenet
check "B classifies with it" classifies "$B_URL" lenet
check "B's copy is byte-identical to A's" cmp -s "$T/A/models/lenet/1.dyn" "$T/B/models/lenet/1.dyn"
check "no temporary file left in B's cache" bash -c "! find '$T/B/models' -name '*.tmp*' | grep -q ."

# ---- a new version ----
convert "$A_URL" lenet "&overwrite=true"
check "A published version 2 ($STATE: $(json_get 'j["error"]'))" [ "$STATE" = succeeded ]
check "B picks up version 2 as its default" until_true 20 bash -c "[ \"\$(curl -s -m 5 '$B_URL/v2/models/lenet' | $PY -c 'import json,sys; print(max(int(v) for v in json.load(sys.stdin)[\"versions\"]))' 2>/dev/null)\" = 2 ]"
check "B still serves version 1" ready "$B_URL" lenet/versions/1
URL=$A_URL req POST "/v1/conversions?steps=50&force_publish=true&output=lenet" -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"
expect_error 409 model_exists "a conversion to a taken name without overwrite"
check "every manifest points at existing objects" manifests_sound

# ---- a model removed from the store leaves the caches ----
convert "$A_URL" scratch
check "scratch published" [ "$STATE" = succeeded ]
check "B serves scratch" until_true 20 ready "$B_URL" scratch
s3 DELETE team/models/scratch/manifest.json > /dev/null
check "B drops scratch once its manifest is gone" until_true 20 bash -c "[ ! -e '$T/B/models/scratch' ]"
check "  and stops serving it" until_true 20 bash -c "! curl -sf -m 5 -o /dev/null '$B_URL/v2/models/scratch/ready'"

# ---- the store unreachable during a publish ----
kill -KILL "$S3_PID"; wait "$S3_PID" 2>/dev/null || true
URL=$A_URL req POST "/v1/conversions?steps=50&force_publish=true&output=lenet&overwrite=true" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"
expect_error 503 store_unavailable "an upload with the store down (it goes to the store first: test_store_jobs.sh)"
convert_model "$A_URL" lenet
ERR=$(json_get 'j["error"]')
check "a publish with the store down fails the job ($STATE)" [ "$STATE" = failed ]
check "  with the store's error: $ERR" contains "model store: reading the manifest of 'lenet'" "$ERR"
check "  and leaves nothing half-published in A's cache" bash -c "[ ! -e '$T/A/models/lenet/3.dyn' ] && ! find '$T/A/models' -name '.job-*' | grep -q ."
sleep 1
check "B keeps serving version 2 while the store is down" classifies "$B_URL" lenet/versions/2
check "B logs the failed poll" grep -q "model store: poll failed" "$T/B/dynd.err"
start_s3 "$S3_PORT"
check "every manifest still points at existing objects" manifests_sound
check "the manifest still lists versions 1 and 2" [ "$(manifest_versions lenet)" = "[1, 2]" ]
convert "$A_URL" lenet "&overwrite=true"
check "with the store back, the next publish succeeds as version 3 ($STATE)" [ "$STATE" = succeeded ] 
check "B picks up version 3" until_true 20 ready "$B_URL" lenet/versions/3

# ---- a model edit (PATCH) on B is published to the store and reaches A ----
URL=$B_URL req PATCH /v1/models/lenet -H 'Content-Type: application/json' \
    -d '{"labels": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]}'
check "B's edit is version 4 ($STATUS: ${BODY:0:120})" [ "$STATUS:$(json_get 'j["version"]')" = 200:4 ]
check "the store lists it" [ "$(manifest_versions lenet)" = "[1, 2, 3, 4]" ]
check "A serves the edit" until_true 20 bash -c "curl -s -m 5 '$A_URL/v2/models/lenet/versions/4' | grep -q zero"

# ---- the store takes the upload, then refuses the manifest write (a proxy injects 503; it
# also checks every request's SigV4 signature, which s3rver does not) ----
# start_proxy NAME ARGS...: s3_fault_proxy.py in front of s3rver, its log $T/NAME.log; sets PROXY.
start_proxy() {
    local name=$1; shift
    PROXY_LOG=$T/$name.log $PY "$HERE/s3_fault_proxy.py" "$S3_PORT" "$@" > "$T/$name.out" 2>&1 &
    PIDS+=($!)
    until_true 10 grep -q "proxy listening" "$T/$name.out" || { echo "  FAIL: the fault proxy did not start"; cat "$T/$name.out"; exit 1; }
    PROXY=http://127.0.0.1:$(sed -n 's/proxy listening on //p' "$T/$name.out")
}
N_OBJ=$(objects lenet)
start_proxy pd --fail-manifest 503 1000 --secret S3RVER --delay-ms 150 # a slow store
ENDPOINT=$PROXY replica D
check "D (behind the proxy) is ready with the store's versions already cached" ready "$D_URL" lenet/versions/4
convert "$D_URL" lenet "&overwrite=true"
ERR=$(json_get 'j["error"]')
check "a refused manifest write fails the job ($STATE)" [ "$STATE" = failed ]
check "  after the upload, at the manifest write: $ERR" contains "writing the manifest of 'lenet': S3 PUT team/models/lenet/manifest.json: HTTP 503 SlowDown" "$ERR"
check "the manifest is unchanged (versions 1-4)" [ "$(manifest_versions lenet)" = "[1, 2, 3, 4]" ]
check "the uploaded object was deleted again ($N_OBJ objects before, $(objects lenet) after)" [ "$(objects lenet)" = "$N_OBJ" ]
check "no version 5 anywhere" bash -c "[ ! -e '$T/D/models/lenet/5.dyn' ] && ! curl -sf -m 5 -o /dev/null '$B_URL/v2/models/lenet/versions/5/ready'"
check "every manifest still points at existing objects" manifests_sound
log "proxy: $(grep -cx ok "$T/pd.log") SigV4 signatures of D's requests valid, $(grep -cx bad "$T/pd.log" || true) invalid"
check "D's requests all carry a valid SigV4 signature ($(grep -cx ok "$T/pd.log") checked)" \
    [ "$(grep -cx ok "$T/pd.log")" -ge 10 -a "$(grep -cx bad "$T/pd.log")" = 0 ]

# ---- conditional manifest writes: a concurrent writer (412) and a server without them (501) ----
start_proxy pf --fail-manifest 412 1
ENDPOINT=$PROXY replica F
convert "$F_URL" condi
check "after a 412 the publish reads the manifest again and succeeds ($STATE: $(json_get 'j["error"]'))" [ "$STATE" = succeeded ]
check "  its two writes were create-only (If-None-Match: *)" [ "$(grep -c '^manifest \*$' "$T/pf.log")" = 2 ]
convert "$F_URL" condi "&overwrite=true"
check "a replacing write is conditional on the ETag read (If-Match)" grep -q '^manifest ".*"$' "$T/pf.log"
start_proxy pg --fail-manifest 501 1
ENDPOINT=$PROXY replica G
convert "$G_URL" nocond
check "after a 501 the manifest is written unconditionally ($STATE)" [ "$STATE:$(tail -1 "$T/pg.log")" = "succeeded:manifest -" ]
check "the store lists both" [ "$(manifest_versions condi):$(manifest_versions nocond)" = "[1, 2]:[1]" ]

# ---- wrong credentials ----
KEY_ID=NOT-A-KEY replica C
check "a replica with a wrong key id logs the store's refusal" until_true 10 grep -q "InvalidAccessKeyId" "$T/C/dynd.err"
URL=$C_URL req POST "/v1/conversions?steps=50&force_publish=true&output=other" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"
ERR=$(json_get 'j["error"]')
check "its uploads are refused ($STATUS $(json_get 'j["code"]'))" [ "$STATUS:$(json_get 'j["code"]')" = 503:store_unavailable ]
check "  saying why: $ERR" contains "HTTP 403 InvalidAccessKeyId" "$ERR"
start_proxy pe --secret S3RVER
SECRET=wrong ENDPOINT=$PROXY replica E
check "a replica with a wrong secret logs the refused signature" until_true 10 grep -q "HTTP 403 SignatureDoesNotMatch" "$T/E/dynd.err"
URL=$E_URL req POST "/v1/conversions?steps=50&force_publish=true&output=other" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"
ERR=$(json_get 'j["error"]')
check "its uploads are refused ($STATUS), saying why: $ERR" contains "HTTP 403 SignatureDoesNotMatch" "$ERR"
if out=$(env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "$DYND" --check-config --model-dir "$T/A/models" --model-store s3://$BUCKET/x 2>&1); then
    fail "dynd --check-config accepted a store without credentials"
else
    check "no credentials: refused at start ($out)" grep -q "needs credentials" <<<"$out"
fi
check "a malformed model_store is refused" bash -c "! '$DYND' --check-config --model-dir '$T/A/models' --model-store 'http://x/y' >/dev/null 2>&1"
# ---- SIGTERM while a poll hangs on a store that stopped answering ----
kill -STOP "$S3_PID"
sleep 1 # B's next poll (every 300 ms) is now waiting for a reply
t0=$(date +%s%N)
kill -TERM "$B_PID"
rc=0; wait "$B_PID" || rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
kill -CONT "$S3_PID"
log "B exited $rc, $ms ms after SIGTERM"
check "B exits 0 within 3 s of SIGTERM with its poll hanging (exit $rc after $ms ms)" \
    [ "$rc" = 0 -a "$ms" -lt 3000 ]
check "  its hanging poll was cancelled" grep -q "cancelled (shutting down)" "$T/B/dynd.err"
cat "$T"/{A,B,C,D,E,F,G}/dynd.err > "$T/dynd.err" # finish looks there for sanitizer reports
finish
