#!/usr/bin/env bash
# disk_full.sh [BUILD]: model_dir and state_dir on small tmpfs mounts (needs root and
# mount; skipped, saying so, where mounting is not allowed). A full state_dir refuses an upload
# (507, nothing left behind) and a full model_dir fails a job's publish (the job says so; no
# partial file, the models already there keep serving); freed space makes both work again.
source "$(dirname "$0")/../integration/lib.sh"
echo "disk full: model_dir and state_dir on small tmpfs mounts"
mkdir -p "$T/models" "$T/state" "$T/data"
MOUNTED=()
unmount_all() { for m in "${MOUNTED[@]}"; do umount "$m" 2>/dev/null || true; done; }
trap 'unmount_all; cleanup' EXIT
if ! mount -t tmpfs -o size=160k tmpfs "$T/models" 2>/dev/null; then
    echo "  SKIPPED: cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)"; exit 0
fi
MOUNTED+=("$T/models")
mount -t tmpfs -o size=96k tmpfs "$T/state" && MOUNTED+=("$T/state")
cp "$(model_path)" "$T/models/mnist.dyn"
make_digits 10 "$T/digits"
ONNX=$ROOT/tests/fixtures/lenet5.onnx # 250 kB: more than state_dir holds
A='Authorization: Bearer tok'
start_dynd --log-level info --auth-tokens tok --data-dir "$T/data"

# state_dir full: the streamed upload fails with 507 and leaves no file behind
req POST "/v1/conversions?output=big&force_publish=true" -H "$A" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"
expect_error 507 upload_failed "an upload into a full state_dir"
left=$(find "$T/state" -path '*uploads*' -type f | wc -l)
check "no partial upload left in state_dir ($left)" [ "$left" = 0 ]
req POST /v1/models/mnist/classify -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_status 200 "mnist still classifies with state_dir full"

# model_dir full: more room in state_dir, not in model_dir (160k holds mnist.dyn, 57 kB, and
# not a second model of 128 kB): the job fails with a message naming the cause
stop_dynd; umount "$T/state"; MOUNTED=("$T/models")
start_dynd --log-level info --auth-tokens tok --data-dir "$T/data"
req POST "/v1/conversions?output=big&force_publish=true&ratio=2&steps=300" -H "$A" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"
id=$(json_get 'j["id"]' || true)
st=""
for _ in $(seq 1 300); do
    req GET "/v1/jobs/$id" -H "$A"; st=$(json_get 'j["state"]' || true)
    case "$st" in succeeded|failed) break;; esac; sleep 0.2
done
err=$(json_get 'j["error"]' || true)
log "job into a full model_dir: $st: $err"
check "the job failed, saying the disk is full" bash -c "[ '$st' = failed ] && grep -qi 'space' <<< '$err'"
ls -la "$T/models" | sed 's/^/    /'
check "no partial model file in model_dir" [ "$(find "$T/models" -type f ! -name mnist.dyn | wc -l)" = 0 ]
req POST /v1/models/mnist/classify -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_status 200 "mnist still classifies with model_dir full"
req GET /v2/models/big/ready; expect_status 404 "the failed model is not served"

# room again: the same job resubmitted succeeds
stop_dynd; umount "$T/models"; MOUNTED=()
start_dynd --log-level info --auth-tokens tok --data-dir "$T/data"
cp "$(model_path)" "$T/models/mnist.dyn" 2>/dev/null || true
req POST "/v1/conversions?output=big&force_publish=true&ratio=2&steps=300" -H "$A" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"
id=$(json_get 'j["id"]' || true)
for _ in $(seq 1 300); do
    req GET "/v1/jobs/$id" -H "$A"; st=$(json_get 'j["state"]' || true)
    case "$st" in succeeded|failed) break;; esac; sleep 0.2
done
check "with room again the conversion succeeds ($st)" [ "$st" = succeeded ]
stop_dynd
finish
