#!/usr/bin/env bash
# Job files in the model store (server/store.h "job files", issue 14 item 2) against s3rver: a
# conversion's upload is in the store (.jobs/<id>/upload.bin, byte-identical) as soon as the job
# is accepted; a fine-tune's input snapshot and its last complete checkpoint (ckpt/state.json and
# exactly the files of the epoch it names) are there while it runs; after kill -9 and the loss
# of every local working file (upload, snapshot, checkpoint), the restarted dynd fetches them
# from the store: the fine-tune resumes from the store's epoch (history complete) and the
# queued conversion runs from the stored upload; the store's job folders are gone once the jobs
# end; with the store down a submission with an upload is refused (503 store_unavailable) and
# leaves no job behind. Skipped (not failed) without node / npm.
source "$(dirname "$0")/lib.sh"
echo "store: job files (uploads, snapshots, checkpoints) in the model store (s3rver)"
source "$HERE/s3/s3lib.sh"
s3_prepare
mkdir -p "$T/data" "$T/models" && ln -s "$ROOT/data/mnist" "$T/data/mnist"
cp "$(model_path)" "$T/models/mnist.dyn" # a local model of the cache: the fine-tune's input
ONNX=$ROOT/tests/fixtures/lenet5.onnx
BUCKET=dynd-models
P=team/models # the store's prefix
S3_PORT=0 DYND_PORT=0 # any free ports at first; restarts take the same ones again
S3_PID=""
cleanup_jobs() {
    if [ -n "$S3_PID" ]; then kill -KILL "$S3_PID" 2>/dev/null || true; wait "$S3_PID" 2>/dev/null || true; fi
    cleanup
}
trap cleanup_jobs EXIT

has_key() { [ "$(s3 HEAD "$1" -I -o /dev/null -w '%{http_code}')" = 200 ]; }
no_keys() { [ -z "$(s3_keys "$1")" ]; }
start_a() {
    AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1 \
        start_dynd --port "$DYND_PORT" --log-level info --model-store "s3://$BUCKET/$P" \
        --store-endpoint "http://127.0.0.1:$S3_PORT" --store-poll-ms 300 --data-dir "$T/data" \
        --allow-unauthenticated-writes --jobs-max-concurrent 1 --jobs-lease-s 3
    DYND_PORT=$PORT
}
job_state() { req GET "/v1/jobs/$1"; json_get 'j["state"]' || echo "?"; }
# wait_job ID [timeout_s]: until the job is neither queued nor running; sets STATE, BODY.
wait_job() {
    local id=$1 limit=${2:-180} t0=$SECONDS
    while :; do
        req GET "/v1/jobs/$id"
        STATE=$(json_get 'j["state"]' || echo "?")
        case "$STATE" in queued|running) ;; *) return 0;; esac
        [ $((SECONDS - t0)) -lt "$limit" ] || { fail "job $id still $STATE after ${limit}s"; return 1; }
        sleep 0.2
    done
}
# the epoch of the store's checkpoint of job $1 (empty when none)
store_epoch() { s3 GET "$P/.jobs/$1/ckpt/state.json" -f 2>/dev/null | $PY -c 'import json,sys; print(json.load(sys.stdin)["epoch"])' 2>/dev/null || true; }
upload() { req POST "/v1/conversions?steps=50&force_publish=true&preprocess_from=mnist&output=$1" \
               -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"; }

start_s3
start_a

# ---- a fine-tune runs; a conversion from an upload waits behind it (one worker) ----
req POST /v1/finetunes -H 'Content-Type: application/json' \
    -d '{"model": "mnist", "data": "mnist", "epochs": 10, "limit": 2000, "val": 300, "output": "mnist_ft"}'
[ "$STATUS" = 202 ] || { fail "fine-tune not accepted: $STATUS ${BODY:0:300}"; finish; }
F=$(json_get 'j["id"]')
upload lenet
[ "$STATUS" = 202 ] || { fail "conversion not accepted: $STATUS ${BODY:0:300}"; finish; }
C=$(json_get 'j["id"]')
log "fine-tune $F, conversion $C ($(job_state "$C"))"
check "the queued conversion's upload is in the store as soon as it is accepted" has_key "$P/.jobs/$C/upload.bin"
s3 GET "$P/.jobs/$C/upload.bin" -o "$T/upload.back"
check "  byte-identical to what was sent" cmp -s "$ONNX" "$T/upload.back"
check "the fine-tune's input snapshot is in the store" until_true 60 has_key "$P/.jobs/$F/input.dyn"
epoch_ge2() { local e; e=$(store_epoch "$F"); [ -n "$e" ] && [ "$e" -ge 2 ]; }
check "the fine-tune's checkpoint reaches the store (epoch >= 2)" until_true 300 epoch_ge2
# ckpt_named: the store's ckpt/ holds state.json, best.dyn and the model and Adam moments of the
# epoch state.json names, and no file of another epoch (read twice around the listing: the
# job may store the next epoch meanwhile); sets CK, E.
ckpt_named() {
    local e1 e2
    e1=$(store_epoch "$F")
    CK=$(s3_keys "$P/.jobs/$F/ckpt/" | sed "s|^$P/.jobs/$F/ckpt/||" | tr '\n' ' ')
    e2=$(store_epoch "$F")
    [ -n "$e1" ] && [ "$e1" = "$e2" ] || return 1
    E=$e1
    local f
    for f in state.json best.dyn "cur-$E.dyn" "cur-$E.adam_m.dyn" "cur-$E.adam_v.dyn"; do
        grep -qF -- " $f " <<<" $CK" || return 1
    done
    ! grep -oE '(cur|dense)-[0-9]+' <<<"$CK" | grep -qvx -- "cur-$E"
}
check "the store's checkpoint holds exactly the files of the epoch its state.json names" until_true 30 ckpt_named
log "store checkpoint of $F: epoch $E: $CK"

# ---- kill -9 mid fine-tune; every local working file lost ----
kill -KILL "$DYND_PID"; wait "$DYND_PID" 2>/dev/null || true; DYND_PID=""
cp "$T/dynd.err" "$T/dynd.err.1"
E=$(store_epoch "$F")
log "killed dynd: the store's checkpoint of $F is epoch $E"
check "the job's files are in the store after the kill" \
    bash -c "[ -n '$E' ] && [ '$E' -ge 2 ] && [ '$E' -lt 10 ]"
grep -F 'checkpoint stored' "$T/dynd.err" | $PY -c 'import json,sys; [print("  ", json.loads(l)["ts"], "epoch", json.loads(l)["epoch"], json.loads(l)["bytes"], "bytes") for l in sys.stdin]'
rm -rf "$T/state/jobs/$F/ckpt" "$T/state/jobs/$F/input.dyn" "$T/state/jobs/$C/upload.bin"
check "no local working file left" bash -c "[ ! -e '$T/state/jobs/$F/ckpt' -a ! -e '$T/state/jobs/$F/input.dyn' -a ! -e '$T/state/jobs/$C/upload.bin' ]"
start_a
check "after the restart the fine-tune is interrupted" [ "$(job_state "$F")" = interrupted ]
req POST "/v1/jobs/$F/resume"
expect_status 202 "resume of the fine-tune"
wait_job "$F"
check "the resumed fine-tune succeeded ($STATE: $(json_get 'j["error"]'))" [ "$STATE" = succeeded ]
check "  from the store's checkpoint: resumed_from = $(json_get 'j["result"]["resumed_from"]') (the store had epoch $E)" \
    [ "$(json_get 'j["result"]["resumed_from"]')" = "$E" ]
check "  with the whole history" [ "$(json_get '[h["epoch"] for h in j["history"]]')" = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]" ]
check "  its snapshot and checkpoint were fetched from the store" \
    bash -c "grep -qF 'job files fetched\",\"job\":\"$F\",\"folder\":\"ckpt\"' '$T/dynd.err' && grep -qF 'job file fetched\",\"job\":\"$F\",\"file\":\"input.dyn\"' '$T/dynd.err'"
req POST "/v1/jobs/$C/resume"
expect_status 202 "resume of the conversion"
wait_job "$C"
check "the conversion ran from the stored upload ($STATE: $(json_get 'j["error"]'))" [ "$STATE" = succeeded ]
check "  fetched from the store" grep -qF "job file fetched\",\"job\":\"$C\",\"file\":\"upload.bin\"" "$T/dynd.err"
check "the fine-tune's files left the store when it ended" until_true 20 no_keys "$P/.jobs/$F/"
check "the conversion's too" until_true 20 no_keys "$P/.jobs/$C/"
check "both models are in the store" eval "has_key $P/mnist_ft/manifest.json && has_key $P/lenet/manifest.json"

# ---- the store down: a submission with an upload is refused and leaves nothing ----
kill -KILL "$S3_PID"; wait "$S3_PID" 2>/dev/null || true; S3_PID=""
req GET /v1/jobs; N0=$(json_get 'len(j["jobs"])')
D0=$(ls "$T/state/jobs" | sort | tr '\n' ' ')
upload down
expect_error 503 store_unavailable "a conversion upload with the store down"
check "  saying why: $(json_get 'j["error"]')" grep -q "model store did not take the upload" <<<"$BODY"
req GET /v1/jobs
check "  no job left behind ($N0 jobs before, $(json_get 'len(j["jobs"])') after)" [ "$(json_get 'len(j["jobs"])')" = "$N0" ]
check "  no job directory left behind" [ "$(ls "$T/state/jobs" | sort | tr '\n' ' ')" = "$D0" ]
check "  no upload left in the state directory" bash -c "! find '$T/state' -name 'upload.bin' | grep -q ."
start_s3 "$S3_PORT"
upload again
check "with the store back a submission is accepted ($STATUS)" [ "$STATUS" = 202 ]
G=$(json_get 'j["id"]')
wait_job "$G"
check "  and succeeds ($STATE)" [ "$STATE" = succeeded ]
check "  its files leave the store" until_true 20 no_keys "$P/.jobs/$G/"
check "the models' manifests were never confused with job files" \
    bash -c "[ \"\$(curl -s -m 5 '$URL/v2/models/lenet/ready' -o /dev/null -w '%{http_code}')\" = 200 ]"
stop_dynd
cat "$T/dynd.err.1" "$T/dynd.err" > "$T/dynd.all" && mv "$T/dynd.all" "$T/dynd.err"
finish
