#!/usr/bin/env bash
# dynd jobs: a conversion from an ONNX upload (raw and multipart) polled to a served model that
# classifies, a conversion of a repository model, a fine-tune whose progress rises and whose
# history is returned, cancel of a queued and of a running job, kill -9 mid-fine-tune then
# restart (interrupted, resume completes it from its checkpoint), SIGTERM (interrupted, not
# failed), the "preprocess" option, and bad inputs (status + code, still serving).
source "$(dirname "$0")/lib.sh"
echo "jobs: conversions, fine-tunes, cancel, kill -9 + resume, bad input"
mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn"
make_digits 100 "$T/digits"
ONNX=$ROOT/tests/fixtures/lenet5.onnx
[ -f "$ROOT/data/mnist/train-images-idx3-ubyte" ] || [ -f "$ROOT/data/mnist/train-images-idx3-ubyte.gz" ] ||
    { echo "FAIL: no MNIST in $ROOT/data (run make data)"; exit 1; }
# data_dir: MNIST (IDX files) and "digits", an image folder of PNGs in one folder per class
DATA=$T/data
mkdir -p "$DATA" && ln -s "$ROOT/data/mnist" "$DATA/mnist"
while read -r i lab; do mkdir -p "$DATA/digits/$lab" && cp "$T/digits/$i.png" "$DATA/digits/$lab/"; done < "$T/digits/labels.txt"
JOBFLAGS=(--log-level info --auth-tokens tok --data-dir "$DATA" --jobs-max-concurrent 1 --max-upload-bytes 1048576
          --jobs-lease-s 3)
start_dynd "${JOBFLAGS[@]}"
A='Authorization: Bearer tok'
J='Content-Type: application/json'

# wait_job ID [timeout_s]: polls GET /v1/jobs/ID until the state is not queued/running; sets
# STATE and BODY; the progress and ETA values seen go one per line to $T/progress, $T/eta.
wait_job() {
    local id=$1 limit=${2:-120} t0=$SECONDS
    : > "$T/progress"; : > "$T/eta"
    while :; do
        req GET "/v1/jobs/$id" -H "$A"
        STATE=$(json_get 'j["state"]' || echo "?")
        json_get 'j["progress"]' >> "$T/progress" || true
        json_get 'j["eta_s"]' >> "$T/eta" || true
        case "$STATE" in queued|running) ;; *) return 0;; esac
        [ $((SECONDS - t0)) -lt "$limit" ] || { fail "job $id still $STATE after ${limit}s"; return 1; }
        sleep 0.1
    done
}
# wait_for ID 'python condition on j' [timeout_s]
wait_for() {
    local id=$1 cond=$2 limit=${3:-120} t0=$SECONDS
    while :; do
        req GET "/v1/jobs/$id" -H "$A"
        [ "$(json_get "bool($cond)" || echo False)" = True ] && return 0
        [ $((SECONDS - t0)) -lt "$limit" ] || { fail "job $id: '$cond' not reached in ${limit}s: ${BODY:0:300}"; return 1; }
        sleep 0.1
    done
}
# the progress values seen never go down, end at 1, and were seen between 0 and 1 at least once
rising() { $PY -c 'import sys; p=[float(x) for x in open(sys.argv[1]) if x.strip()]; assert p[-1] == 1.0 and all(b >= a for a, b in zip(p, p[1:])) and any(0 < x < 1 for x in p), p' "$T/progress"; }
classify_ok() { # classify_ok MODEL N: the first N digits classified; echoes the number correct
    local m=$1 n=$2 c=0 i lab
    for i in $(seq 0 $((n - 1))); do
        lab=$(awk -v i="$i" '$1 == i {print $2}' "$T/digits/labels.txt")
        req POST "/v1/models/$m/classify" -H 'Content-Type: image/png' --data-binary "@$T/digits/$i.png"
        [ "$STATUS" = 200 ] && [ "$(json_get 'j["predictions"][0]["label"]')" = "$lab" ] && c=$((c + 1))
    done
    echo "$c"
}

# ---- conversion from a raw ONNX upload ----
req POST "/v1/conversions?steps=1500&preprocess_from=mnist&calib=mnist&output=lenet" -H "$A" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"
expect_status 202 "conversion from a raw upload"
C1=$(json_get 'j["id"]')
check "Location header" grep -qi "^Location: /v1/jobs/$C1" "$T/headers"
check "upload options applied" [ "$(json_get 'j["options"]["steps"], j["options"]["upload"]["format"]')" = "(1500, 'onnx')" ]
wait_job "$C1"
check "conversion succeeded ($STATE: $(json_get 'j["error"]'))" [ "$STATE" = succeeded ]
check "conversion names its model" [ "$(json_get 'j["model"]')" = lenet ]
check "per-layer results" [ "$(json_get 'sum(1 for l in j["layers"] if l.get("converted"))')" -ge 3 ]
check "fidelity measured on held-out calibration images" [ "$(json_get 'j["result"]["fidelity"]["on"], j["result"]["fidelity"]["images"] > 0, j["result"]["fidelity"]["verified"]')" = "('holdout', True, True)" ]
check "stored bytes reported (states as integer codes): $(json_get 'j["result"]["bytes_before"], j["result"]["bytes_stored"]')" [ "$(json_get '0 < j["result"]["bytes_stored"] < j["result"]["bytes_before"]')" = True ]
check "activation-aware fit chosen with calibration images" [ "$(json_get 'j["result"]["fit"]')" = activation ]
check "conversion progress rises to 1" rising
check "an ETA while it ran" grep -qE '^[0-9.]+$' "$T/eta"
check "upload removed after the job" [ ! -e "$T/state/jobs/$C1/upload.bin" ]
check "no temp file left in the model dir" bash -c "! ls -A '$T/models' | grep -q '^\.'"
req GET /v1/models
check "the produced model is listed" $PY -c 'import json,sys; assert any(m["name"] == "lenet" and m["ready"] for m in json.loads(sys.argv[1])["models"])' "$BODY"
req POST /v1/models/lenet/classify -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_status 200 "the converted upload classifies a PNG"
check "mnist labels from preprocess_from" [ "$(json_get 'all(p["label"] in "0123456789" for p in j["predictions"])')" = True ]

# multipart upload with an "options" JSON field and no output name
req POST /v1/conversions -H "$A" -F "file=@$ONNX;filename=lenet5.onnx" \
    -F 'options={"steps": 100, "preprocess_from": "mnist", "force_publish": true}'
expect_status 202 "conversion from a multipart upload"
C2=$(json_get 'j["id"]')
check "multipart options" [ "$(json_get 'j["options"]["steps"]')" = 100 ]

# ---- conversion of a repository model, evaluated (the trained DyN model stays accurate) ----
# (with the "preprocess" option: the demo model's normalization in the full form, a no-op crop
# as a step, so evaluation data and the output's classify go through the steps path)
PP='{"color": "gray", "steps": [{"center_crop": 28}], "mean": [0.1307], "std": [0.3081]}'
req POST /v1/conversions -H "$A" -H "$J" -d '{"model": "mnist", "steps": 200, "eval": "mnist", "eval_n": 500, "output": "mnist_conv", "preprocess": '"$PP"'}'
expect_status 202 "conversion of a repository model"
C3=$(json_get 'j["id"]')
wait_job "$C2"; check "multipart conversion succeeded, named after the job" [ "$STATE:$(json_get 'j["model"]')" = "succeeded:$C2" ]
check "force_publish without data: marked unverified" [ "$(json_get 'j["result"]["fidelity"]["verified"], j["result"]["fidelity"]["forced"]')" = "(False, True)" ]
req GET "/v2/models/$C2"
check "the model's metadata says it is unverified" grep -q '"verified": *false' <<< "$BODY"
wait_job "$C3"
check "repository conversion succeeded ($(json_get 'j["error"]'))" [ "$STATE" = succeeded ]
check "accuracy after conversion reported" [ "$(json_get 'j["result"]["acc_after"] > 0.9')" = True ]
n=$(classify_ok mnist_conv 20)
check "the converted repository model classifies ($n/20 digits right)" [ "$n" -ge 18 ]
req GET /v2/models/mnist_conv
check "the preprocess option is the output's metadata" [ "$(json_get 'j["parameters"]["preprocess"]["steps"][0]["center_crop"]')" = 28 ]

# ---- a conversion that ends by training on the labels of its calibration images ----
req POST /v1/conversions -H "$A" -H "$J" -d '{"model": "mnist", "steps": 100, "calib": "mnist", "calib_n": 256, "holdout_n": 256, "finetune_epochs": 2, "finetune_n": 1500, "output": "mnist_cft"}'
expect_status 202 "conversion with finetune_epochs"
C4=$(json_get 'j["id"]')
wait_job "$C4"
check "conversion with finetune_epochs succeeded ($(json_get 'j["error"]'))" [ "$STATE" = succeeded ]
check "its two epochs on 1,200 images, validated on 300: $(json_get 'j["result"].get("finetune", {}).get("history")')" \
    [ "$(json_get 'len(j["result"]["finetune"]["history"]), j["result"]["finetune"]["train_images"], j["result"]["finetune"]["val_images"], j["epochs"]')" = "(2, 1200, 300, 2)" ]
check "fidelity measured after it" [ "$(json_get 'j["result"]["fidelity"]["verified"], j["result"]["finetune"]["agree_top1_before"] > 0')" = "(True, True)" ]

# ---- fine-tune: progress rises, history returned ----
req POST /v1/finetunes -H "$A" -H "$J" -d '{"model": "mnist", "data": "mnist", "epochs": 3, "limit": 1000, "val": 300, "output": "mnist_ft"}'
expect_status 202 "fine-tune submitted"
F1=$(json_get 'j["id"]')
wait_job "$F1"
check "fine-tune succeeded ($(json_get 'j["error"]'))" [ "$STATE" = succeeded ]
check "fine-tune progress rises to 1" rising
check "history of 3 epochs" [ "$(json_get '[h["epoch"] for h in j["history"]]')" = "[1, 2, 3]" ]
check "history has losses and accuracies" [ "$(json_get 'all(h["train_loss"] > 0 and 0 < h["val_acc"] <= 1 for h in j["history"])')" = True ]
check "fine-tune result" [ "$(json_get 'j["result"]["train_images"], j["result"]["val_images"]')" = "(1000, 300)" ]
check "checkpoints removed after success" [ ! -e "$T/state/jobs/$F1/ckpt" ]
n=$(classify_ok mnist_ft 20)
check "the fine-tuned model classifies ($n/20)" [ "$n" -ge 16 ]

# fine-tune on an image folder (PNG files, one folder per class)
req POST /v1/finetunes -H "$A" -H "$J" -d '{"model": "mnist", "data": "digits", "epochs": 1, "val": 20, "output": "mnist_img"}'
expect_status 202 "fine-tune on an image folder"
IMG=$(json_get 'j["id"]'); wait_job "$IMG"
check "image-folder fine-tune succeeded ($(json_get 'j["error"]'))" [ "$STATE:$(json_get 'j["result"]["train_images"]')" = succeeded:80 ]

# ---- cancel: a queued job at once, a running one through its flag ----
LONG='{"model": "mnist", "data": "mnist", "epochs": 200, "limit": 3000, "val": 300, "output": "never"}'
req POST /v1/finetunes -H "$A" -H "$J" -d "$LONG"; R1=$(json_get 'j["id"]')
req POST /v1/finetunes -H "$A" -H "$J" -d "$LONG"; Q1=$(json_get 'j["id"]')
req GET "/v1/jobs?state=queued" -H "$A"
check "the second job waits (jobs_max_concurrent = 1)" [ "$(json_get "[x['id'] for x in j['jobs']]")" = "['$Q1']" ]
req DELETE "/v1/jobs/$Q1" -H "$A"
check "queued job cancelled at once" [ "$STATUS:$(json_get 'j["state"]')" = 200:cancelled ]
wait_for "$R1" 'j["state"] == "running" and j["step"] > 0'
req DELETE "/v1/jobs/$R1" -H "$A"
check "running job: cancel requested" [ "$STATUS:$(json_get 'j["cancel_requested"]')" = 202:True ]
wait_job "$R1" 30
check "running job cancelled" [ "$STATE" = cancelled ]
req DELETE "/v1/jobs/$R1" -H "$A"; expect_error 409 job_finished "cancel of a cancelled job"
check "no model from cancelled jobs" [ ! -e "$T/models/never.dyn" ]
# a conversion cancelled in the middle of a layer's fit keeps the progress it had (it used to
# jump to the end of that layer, the fit reporting itself done when it stopped)
req POST "/v1/conversions?steps=100000&force_publish=true&output=never2" -H "$A" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"
CX=$(json_get 'j["id"]')
wait_for "$CX" 'j["state"] == "running" and j["phase"] == "fit" and j["progress"] > 0.06'
P0=$(json_get 'j["progress"]')
req DELETE "/v1/jobs/$CX" -H "$A"
wait_job "$CX" 30
check "cancelled conversion ($STATE): progress $P0 before the cancel, $(json_get 'j["progress"]') after" \
    [ "$STATE:$(json_get "j['progress'] - $P0 < 0.02")" = cancelled:True ]

# ---- kill -9 mid-fine-tune, restart: interrupted, resume completes from the checkpoint ----
req POST /v1/finetunes -H "$A" -H "$J" -d '{"model": "mnist", "data": "mnist", "epochs": 6, "limit": 2000, "val": 300, "output": "mnist_k9"}'
K=$(json_get 'j["id"]')
wait_for "$K" 'len(j["history"]) >= 2 and j["state"] == "running"'
kill -KILL "$DYND_PID"; wait "$DYND_PID" 2>/dev/null || true; DYND_PID=""
cp "$T/dynd.err" "$T/dynd.err.1"
check "a checkpoint was on disk" [ -f "$T/state/jobs/$K/ckpt/state.json" ]
start_dynd "${JOBFLAGS[@]}"
req GET "/v1/jobs/$K" -H "$A"
check "after kill -9: interrupted and resumable" [ "$(json_get 'j["state"], j["resumable"]')" = "('interrupted', True)" ]
req GET /v1/jobs -H "$A"
check "finished jobs listed again" [ "$(json_get 'sorted(x["id"] for x in j["jobs"] if x["state"] == "succeeded") == sorted(["'$C1'", "'$C2'", "'$C3'", "'$C4'", "'$F1'", "'$IMG'"])')" = True ]
req POST "/v1/jobs/$K/resume" -H "$A"
expect_status 202 "resume"
wait_job "$K"
check "resumed job succeeded ($(json_get 'j["error"]'))" [ "$STATE" = succeeded ]
check "resumed from a checkpoint" [ "$(json_get 'j["result"]["resumed_from"] >= 1 and j["attempts"] == 2')" = True ]
check "full history after resume" [ "$(json_get '[h["epoch"] for h in j["history"]]')" = "[1, 2, 3, 4, 5, 6]" ]
req POST /v1/models/mnist_k9/classify -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_status 200 "the resumed job's model is served"
req POST "/v1/jobs/$K/resume" -H "$A"; expect_error 409 not_resumable "resume of a finished job"

# ---- bad inputs: status, code, and the daemon keeps serving ----
req POST /v1/conversions -H "$J" -d '{"model": "mnist"}'; expect_error 401 unauthorized "no token"
req POST /v1/finetunes -H 'Authorization: Bearer nope' -H "$J" -d '{}'; expect_error 403 forbidden "wrong token"
req GET /v1/jobs; expect_error 401 unauthorized "job list without a token"
bad() { # bad STATUS CODE PATH JSON description
    req POST "$3" -H "$A" -H "$J" -d "$4"; expect_error "$1" "$2" "$5"; still_serves "$5"
}
bad 404 model_not_found /v1/conversions '{"model": "ghost"}' "unknown model"
bad 404 model_not_found /v1/finetunes '{"model": "ghost", "data": "mnist"}' "fine-tune of an unknown model"
bad 400 invalid_name /v1/conversions '{"model": "../mnist"}' "../ in a model name"
bad 400 invalid_name /v1/conversions '{"model": "mnist", "output": "../../etc/x"}' "../ in an output name"
bad 400 invalid_name /v1/finetunes '{"model": "mnist", "data": "../mnist"}' "../ in a data set name"
bad 400 invalid_name /v1/finetunes '{"model": "mnist", "data": "/etc"}' "absolute data set path"
bad 404 dataset_not_found /v1/finetunes '{"model": "mnist", "data": "nosuchset"}' "unknown data set"
bad 400 invalid_option /v1/conversions '{"model": "mnist", "ratio": 0.5}' "ratio below 1"
bad 400 invalid_option /v1/conversions '{"model": "mnist", "fit": "magic"}' "bad fit mode"
bad 400 invalid_option /v1/conversions '{"model": "mnist", "steps": "many"}' "steps not a number"
bad 400 unknown_option /v1/conversions '{"model": "mnist", "ratoi": 4}' "misspelt option"
bad 400 invalid_option /v1/finetunes '{"model": "mnist", "data": "mnist", "epochs": 0}' "zero epochs"
bad 400 invalid_option /v1/finetunes '{"model": "mnist", "data": "mnist", "mode": "fast"}' "bad mode"
bad 400 invalid_option /v1/conversions '{"model": "mnist", "preprocess": {"stepz": []}}' "preprocess with an unknown key"
bad 400 invalid_option /v1/conversions '{"model": "mnist", "eval": "mnist", "preprocess": {"steps": [{"resize": [30, 30]}]}}' "preprocess ending at 30x30 for a 28x28 model"
bad 400 invalid_option /v1/conversions '{"model": "mnist", "eval": "mnist", "preprocess": {"color": "rgb"}}' "rgb preprocess for a grey model"
bad 400 missing_option /v1/finetunes '{"model": "mnist"}' "fine-tune without data"
bad 400 missing_option /v1/conversions '{"ratio": 4}' "conversion without input"
bad 400 missing_option /v1/conversions '{"model": "mnist", "output": "nodata"}' "conversion with nothing to verify it on"
check "the refusal says how to give data" grep -q "calib" <<< "$(json_get 'j["error"]')"
bad 400 missing_option /v1/conversions '{"model": "mnist", "target_agreement": 0.99}' "target_agreement without images"
bad 400 missing_option /v1/conversions '{"model": "mnist", "finetune_epochs": 2, "eval": "mnist"}' "finetune_epochs without calib"
bad 400 invalid_option /v1/conversions '{"model": "mnist", "rel_err": 0.3, "target_agreement": 0.99, "calib": "mnist"}' "two budgets"
bad 400 invalid_option /v1/conversions '{"model": "mnist", "min_agreement": 1.5, "calib": "mnist"}' "floor above 1"
bad 409 model_exists /v1/conversions '{"model": "mnist", "output": "mnist"}' "output over an existing model"
bad 400 bad_json /v1/finetunes '{"model": ' "malformed JSON"
req POST /v1/conversions -H "$A" -H 'Content-Type: application/octet-stream' --data-binary 'this is not a model at all, just text'
expect_error 400 bad_model "garbage upload"; still_serves "garbage upload"
head -c 2000000 /dev/urandom > "$T/big.bin"
req POST /v1/conversions -H "$A" -H 'Content-Type: application/octet-stream' --data-binary "@$T/big.bin"
expect_error 413 body_too_large "upload over max_upload_bytes"; still_serves "big upload"
req POST /v1/conversions -H "$A" -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_error 415 unsupported_media_type "a PNG is not a model"
req POST /v1/conversions -H "$A" -H 'Content-Type: multipart/form-data; boundary=xyz' --data-binary $'--xyz\r\nbroken'
expect_error 400 bad_multipart "damaged multipart"; still_serves "damaged multipart"
check "no upload left behind" bash -c "[ -z \"\$(ls -A '$T/state/uploads')\" ]"
# a truncated ONNX passes the upload check; the job fails with the importer's reason
head -c 3000 "$ONNX" > "$T/trunc.onnx"
req POST "/v1/conversions?output=trunc&force_publish=true" -H "$A" -H 'Content-Type: application/octet-stream' --data-binary "@$T/trunc.onnx"
expect_status 202 "truncated ONNX accepted for the job"
TR=$(json_get 'j["id"]'); wait_job "$TR" 30
check "truncated ONNX: job failed with a reason" [ "$STATE:$(json_get 'j["error_code"]')" = failed:job_failed ]
check "failure message names the upload" grep -q "uploaded model" <<< "$(json_get 'j["error"]')"
still_serves "a failed job"
req GET /v1/jobs/..%2F..%2Fetc -H "$A"; expect_error 400 invalid_job_id "../ in a job id"
req GET /v1/jobs/conv-000000000000 -H "$A"; expect_error 404 job_not_found "unknown job"
req DELETE /v1/jobs/conv-000000000000 -H "$A"; expect_error 404 job_not_found "cancel of an unknown job"
req GET "/v1/jobs?state=done" -H "$A"; expect_error 400 invalid_parameter "bad state filter"
req GET "/v1/jobs?state=failed&kind=conversion" -H "$A"
check "filters" [ "$(json_get "[x['id'] for x in j['jobs']]")" = "['$TR']" ]
req GET /v1/jobs -H "$A"; nsucc=$(json_get 'j["counts"]["succeeded"]')
curl -s "$URL/metrics" > "$T/metrics"
check "jobs gauge = the list's counts ($nsucc succeeded)" grep -q "^dynd_jobs{state=\"succeeded\"} $nsucc\$" "$T/metrics"
check "job duration histogram" grep -q '^dynd_job_duration_seconds_count{kind="finetune",state="succeeded"} [1-9]' "$T/metrics"
check "job transitions logged" bash -c "cat '$T/dynd.err.1' '$T/dynd.err' | grep -q '\"msg\":\"job succeeded\"'"

# ---- a second replica on the same state and model dirs: it sees the running job as running
# (the lease is alive), does not take it over, and a DELETE sent to it reaches the holder ----
req POST /v1/finetunes -H "$A" -H "$J" -d "$LONG"; R2=$(json_get 'j["id"]')
wait_for "$R2" 'j["state"] == "running" and j["step"] > 0'
URL1=$URL
"$DYND" --model-dir "$T/models" --state-dir "$T/state" --port 0 "${JOBFLAGS[@]}" \
    > "$T/dynd2.out" 2> "$T/dynd2.err" & PID2=$!
for i in $(seq 1 200); do grep -q "listening on" "$T/dynd2.out" 2>/dev/null && break; sleep 0.05; done
URL=http://127.0.0.1:$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$T/dynd2.out" | head -1)
req GET "/v1/jobs/$R2" -H "$A"
check "replica 2 sees the job running, not interrupted" [ "$(json_get 'j["state"]')" = running ]
req DELETE "/v1/jobs/$R2" -H "$A"
check "replica 2 forwards the cancel" [ "$STATUS:$(json_get 'j["cancel_requested"]')" = 202:True ]
URL=$URL1
wait_job "$R2" 30
check "the holder cancelled it" [ "$STATE" = cancelled ]
kill -TERM "$PID2"; wait "$PID2" || true
cat "$T/dynd2.err" >> "$T/dynd.err.1"

# ---- SIGTERM while a fine-tune runs: interrupted (resumable), not failed; exit 0 ----
req POST /v1/finetunes -H "$A" -H "$J" -d "$LONG"; S=$(json_get 'j["id"]')
wait_for "$S" 'j["state"] == "running" and j["step"] > 0'
kill -TERM "$DYND_PID"; wait "$DYND_PID"; rc=$?; DYND_PID=""
check "exit 0 after SIGTERM with a running job" [ $rc = 0 ]
check "interrupted on disk" $PY -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["state"] == "interrupted", j["state"]' "$T/state/jobs/$S/job.json"
cat "$T/dynd.err.1" >> "$T/dynd.err" # the sanitizer check in finish sees both runs
finish
