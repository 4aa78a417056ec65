#!/usr/bin/env bash
# The curl scripts of clients/examples/ against the real dynd (with a token), each one run and
# its output checked: health, classify (PNG, JPEG), v2 infer with JSON and binary tensors, a
# data set upload, a conversion watched to its end (and one that fails), a fine-tune, model
# unload / load, metrics. Every script in the folder must have been run by the end.
source "$(dirname "$0")/lib.sh"
echo "examples: every script of clients/examples/ against a live dynd"
EX=$ROOT/clients/examples
mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn"
make_digits 4 "$T/digits"
DATA=$T/data
mkdir -p "$DATA" && ln -s "$ROOT/data/mnist" "$DATA/mnist"
start_dynd --auth-tokens tok --data-dir "$DATA" --jobs-max-concurrent 1
export DYND_URL=$URL DYND_TOKEN=tok WATCH_INTERVAL=0.1
label_of() { awk -v i="$1" '$1 == i {print $2}' "$T/digits/labels.txt"; }

: > "$T/ran"
ex() { # ex SCRIPT ARGS...: runs clients/examples/SCRIPT; OUT, ERR, RC
    echo "$1" >> "$T/ran"
    RC=0
    OUT=$("$EX/$1" "${@:2}" 2> "$T/ex.err") || RC=$?
    ERR=$(cat "$T/ex.err")
}
expect_rc() {
    if [ "$RC" = "$1" ]; then ok; else fail "$2: exit $RC, expected $1; out: ${OUT:0:300} err: ${ERR:0:300}"; fi
}
# line N of OUT (N = -1: the last) as JSON, then a python expression on it (j)
pyl() {
    $PY -c 'import json,sys; L=sys.argv[1].splitlines(); j=json.loads(L[int(sys.argv[2])]); print(eval(sys.argv[3]))' \
        "$OUT" "$1" "$2" 2>/dev/null || echo "NOT-JSON"
}

ex health.sh
expect_rc 0 "health.sh"
check "health.sh: live, ready, server metadata" [ "$(pyl 0 'j["live"]'):$(pyl 1 'j["ready"]'):$(pyl 2 'j["name"]')" = "True:True:dynd" ]

ex classify.sh "$T/digits/0.png"
expect_rc 0 "classify.sh PNG"
check "classify.sh: the PNG's label, top 3" [ "$(pyl 0 'j["predictions"][0]["label"], len(j["predictions"])')" = "('$(label_of 0)', 3)" ]
ex classify.sh "$T/digits/1.jpg" mnist
check "classify.sh: the JPEG's label" [ "$RC:$(pyl 0 'j["predictions"][0]["label"]')" = "0:$(label_of 1)" ]
ex classify.sh "$T/digits/0.png" ghost
check "classify.sh of an unknown model fails with the server's error" [ "$RC:$(pyl 0 'j["code"]')" = "22:model_not_found" ]

ex infer_json.sh "$T/digits/2.u8"
expect_rc 0 "infer_json.sh"
check "infer_json.sh: top class and 10 logits" [ "$(pyl 0 'j["outputs"][0]["data"][0].split(":")[2], len(j["outputs"][1]["data"]), j["id"]')" = "('$(label_of 2)', 10, 'example-1')" ]
ex infer_binary.sh "$T/digits/3.u8" mnist 1,1,28,28
expect_rc 0 "infer_binary.sh"
check "infer_binary.sh: top 3 classes, the first right" [ "$(pyl 0 'j["outputs"][0]["shape"], j["outputs"][0]["data"][0].split(":")[2]')" = "([1, 3], '$(label_of 3)')" ]

# a zip of the digits, one folder per class
while read -r i lab; do mkdir -p "$T/set/$lab" && cp "$T/digits/$i.png" "$T/set/$lab/"; done < "$T/digits/labels.txt"
(cd "$T/set" && $PY -m zipfile -c "$T/set.zip" ./*)
ex dataset_upload.sh digits "$T/set.zip"
expect_rc 0 "dataset_upload.sh"
check "dataset_upload.sh: stored, then listed" [ "$(pyl 0 'j["name"], j["images"]'):$(pyl 1 'sorted(d["name"] for d in j["datasets"])')" = "('digits', 4):['digits', 'mnist']" ]

ex convert.sh "$ROOT/tests/fixtures/lenet5.onnx" 'output=lenet&steps=100&preprocess_from=mnist&calib=mnist&calib_n=64&holdout_n=64&min_agreement=0'
expect_rc 0 "convert.sh"
CONV=$(sed -n 's/^submitted //p' <<< "$OUT")
check "convert.sh: submitted a job" grep -q '^conv-' <<< "$CONV"
check "convert.sh: a line per poll" grep -qE "^$CONV (queued|running|succeeded) phase=[a-z]+ progress=[0-9.]+ eta_s=" <<< "$OUT"
check "convert.sh: the final record" [ "$(pyl -1 'j["id"], j["state"], j["model"], j["options"]["steps"]')" = "('$CONV', 'succeeded', 'lenet', 100)" ]
ex classify.sh "$T/digits/0.png" lenet
expect_rc 0 "classify.sh on the converted model"
head -c 3000 "$ROOT/tests/fixtures/lenet5.onnx" > "$T/trunc.onnx"
ex convert.sh "$T/trunc.onnx" 'output=trunc&force_publish=true'
expect_rc 1 "convert.sh of a truncated model: the job fails"
check "convert.sh: the failed record" [ "$(pyl -1 'j["state"], j["error_code"]')" = "('failed', 'job_failed')" ]

ex finetune.sh mnist mnist mnist_ft 2 '"limit": 500, "val": 100'
expect_rc 0 "finetune.sh"
FT=$(sed -n 's/^submitted //p' <<< "$OUT")
check "finetune.sh: the final record" [ "$(pyl -1 'j["state"], j["model"], [h["epoch"] for h in j["history"]], j["options"]["limit"]')" = "('succeeded', 'mnist_ft', [1, 2], 500)" ]
ex watch_job.sh "$FT"
check "watch_job.sh of a finished job: one line, then the record" [ "$RC:$(wc -l <<< "$OUT"):$(pyl 1 'j["id"]')" = "0:2:$FT" ]
RC=0; ERR=$(env -u DYND_TOKEN "$EX/watch_job.sh" "$FT" 2>&1 >/dev/null) || RC=$?
check "watch_job.sh without the token: refused, the server's error on stderr" [ "$RC:$(OUT=$ERR pyl -1 'j["code"]')" = "22:unauthorized" ]

ex load_unload.sh mnist_ft
expect_rc 0 "load_unload.sh"
check "load_unload.sh: unloaded, in the index as such, loaded, ready" [ "$(pyl 0 'j["state"]'):$(pyl 1 '[m["state"] for m in j if m["name"] == "mnist_ft"]'):$(pyl 2 'j["state"]'):$(pyl 3 'j["ready"]')" = "UNAVAILABLE:['UNAVAILABLE']:READY:True" ]
ex classify.sh "$T/digits/0.png" mnist_ft
expect_rc 0 "the reloaded model classifies"

ex metrics.sh
expect_rc 0 "metrics.sh"
n=$(awk '/^dynd_requests_total\{endpoint="classify",model="mnist",code="200"\}/ {print $NF}' <<< "$OUT")
check "metrics.sh: the classify requests counted ($n)" [ "$n" = 2 ]
check "metrics.sh: models ready (mnist, lenet, mnist_ft)" grep -q '^dynd_models_ready 3$' <<< "$OUT"
check "metrics.sh: jobs by state" grep -q '^dynd_jobs{state="failed"} 1$' <<< "$OUT"
check "metrics.sh: only the selected series" bash -c '! grep -qv "^dynd_\(requests_total\|errors_total\|models_ready\|jobs\|inflight_requests\)[{ ]" <<< "$1"' _ "$OUT"

for f in "$EX"/*; do
    check "example $(basename "$f") is run by this test" grep -qx "$(basename "$f")" "$T/ran"
done
stop_dynd
finish
