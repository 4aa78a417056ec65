#!/usr/bin/env bash
# dynctl (clients/) against the real dynd: every subcommand in human and --json form (parsed
# here), its documented exit codes (usage error with nothing sent, connection refused, not
# found, unauthorized, server error, job failed), the convert / finetune options taken from the
# engine's table, an upload streamed (the client's memory stays far below the file's size), and
# the job progress bar: redrawn with '\r' on a terminal (driven through a pty with `script`),
# plain lines otherwise.
source "$(dirname "$0")/lib.sh"
echo "dynctl: subcommands, exit codes, --json, streamed uploads, progress bar through a pty"
CTL=$ROOT/$BUILD/dynctl
[ -x "$CTL" ] || CTL=$BUILD/dynctl
[ -x "$CTL" ] || { echo "FAIL: no dynctl in $BUILD (run make)"; exit 1; }
DYN=$(dirname "$CTL")/dyn
mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn"
make_digits 4 "$T/digits"
ONNX=$ROOT/tests/fixtures/lenet5.onnx
DATA=$T/data
mkdir -p "$DATA" && ln -s "$ROOT/data/mnist" "$DATA/mnist"
FLAGS=(--auth-tokens tok --data-dir "$DATA" --jobs-max-concurrent 1 --jobs-lease-s 3)
start_dynd "${FLAGS[@]}"
export DYND_URL=$URL DYND_TOKEN=tok

# ctl ARGS...: runs dynctl; OUT = stdout, ERR = stderr, RC = exit status
ctl() {
    RC=0
    OUT=$("$CTL" "$@" 2> "$T/ctl.err") || RC=$?
    ERR=$(cat "$T/ctl.err")
    cat "$T/ctl.err" >> "$T/ctl.allerr"
}
expect_rc() { # expect_rc N description
    if [ "$RC" = "$1" ]; then ok; else fail "$2: exit $RC, expected $1; out: ${OUT:0:200} err: ${ERR:0:300}"; fi
}
pyj() { # pyj 'python expression on j': j is OUT parsed as JSON
    $PY -c 'import json,sys; j=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$OUT" "$1" 2>/dev/null || echo "NOT-JSON"
}
label_of() { awk -v i="$1" '$1 == i {print $2}' "$T/digits/labels.txt"; }
# requests the daemon has answered (the metrics endpoint itself left out)
served() { curl -s "$URL/metrics" | awk '/^dynd_requests_total/ && !/endpoint="metrics"/ {s += $NF} END {print s + 0}'; }
# the peak resident memory (KiB) of a command that must exit with status $1 ("exit N" if not)
peak_kib() {
    local want=$1; shift
    $PY -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode == int(sys.argv[1])
      else "exit %d" % r.returncode)' "$want" "$@"
}
below() { [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]] && [ $(($1 - $2)) -lt "$3" ]; } # below A B D: A - B < D
no_cr() { ! grep -q $'\r' <<< "$1"; }

# ---- help: every subcommand; the job options are the engine table's ----
ctl --help
expect_rc 0 "--help"
for s in health models load unload classify infer convert finetune jobs cancel resume datasets; do
    check "--help lists $s" grep -q "^  dynctl $s" <<< "$OUT"
done
check "--help documents the exit codes" bash -c 'for c in 0 1 2 3 4 5 6 7; do grep -q "^  $c  " <<< "$1" || exit 1; done' _ "$OUT"
for s in health models load unload classify infer convert finetune jobs cancel resume datasets; do
    ctl "$s" --help
    check "$s --help (exit $RC)" [ "$RC" = 0 ]
    check "$s --help shows its usage" grep -q "^usage: dynctl $s" <<< "$OUT"
done
for k in convert finetune; do # every option of a job request (dyn options: the job API's names)
    ctl "$k" --help
    missing=$("$DYN" options "$k" | awk '{print $1}' | while read -r o; do
        grep -q -- "--${o//_/-} " <<< "$OUT" || echo "$o"; done)
    check "$k --help lists every option of the table (missing: $missing)" [ -z "$missing" ]
done
ctl convert --help
check "CLI-only options are not a request's" bash -c '! grep -qE -- "--(threads|report|json) " <<< "$1"' _ "$OUT"

# ---- usage errors: exit 2, nothing sent ----
before=$(served)
usage() { ctl "$@"; expect_rc 2 "usage error: dynctl $*"; check "a usage error says how to get help: dynctl $*" grep -q "help" <<< "$ERR"; }
usage
usage frobnicate
usage load
usage load a b
usage classify
usage classify --top 0 "$T/digits/0.png"
usage infer
usage convert
usage convert "$ONNX" --ratoi 4
usage convert "$ONNX" --ratio 0.5
usage convert "$ONNX" --threads 2
usage convert "$ONNX" --model mnist
usage convert "$ONNX" --fit best
usage finetune mnist
usage finetune --data mnist
usage finetune mnist --data mnist --epochs 2.5
usage jobs a b
usage jobs --watch
usage jobs x --interval 0
usage cancel
usage resume a b
usage datasets frob
usage datasets put onlyname
check "the range error names the option" grep -q "ratio" <<< "$(ctl convert "$ONNX" --ratio 0.5; echo "$ERR")"
check "no request reached the server for usage errors" [ "$(served)" = "$before" ]

# ---- connection refused: exit 3 ----
DEAD=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ctl --url "http://127.0.0.1:$DEAD" health
expect_rc 3 "connection refused (--url)"
check "says it cannot reach the server" grep -q "cannot reach" <<< "$ERR"
RC=0; DYND_URL=http://127.0.0.1:$DEAD "$CTL" models > /dev/null 2>&1 || RC=$?
expect_rc 3 "connection refused (DYND_URL)"

# ---- health, models ----
ctl health
expect_rc 0 "health"
check "health: live, ready" grep -q "live, ready" <<< "$OUT"
ctl --json health
check "health --json" [ "$(pyj 'j["live"], j["ready"], j["server"]["name"], j["url"]')" = "(True, True, 'dynd', '$URL')" ]
ctl models
expect_rc 0 "models"
check "models: mnist ready, 10 classes" grep -qE '^mnist +yes +1 .* 10$' <<< "$OUT"
ctl models --json
check "models --json" [ "$(pyj '[(m["name"], m["ready"], m["classes"]) for m in j["models"]]')" = "[('mnist', True, 10)]" ]

# ---- classify: the only model by default, --top, --json, a failed image among good ones ----
ctl classify "$T/digits/0.png" "$T/digits/1.jpg" --top 2
expect_rc 0 "classify a PNG and a JPEG"
check "classify: the PNG's label first" grep -q "^$T/digits/0.png: $(label_of 0) (" <<< "$OUT"
check "classify: the JPEG's label first" grep -q "^$T/digits/1.jpg: $(label_of 1) (" <<< "$OUT"
check "classify --top 2: two labels per image" [ "$(grep -c '), [0-9]* (' <<< "$OUT")" = 2 ]
ctl --json classify --model mnist "$T/digits/2.png" "$T/digits/labels.txt" "$T/digits/3.png" --top 3
expect_rc 5 "classify with a non-image among the images"
check "classify --json: every image has its result" [ "$(pyj '[len(r.get("predictions", [])) for r in j["results"]], j["results"][1]["code"], j["results"][1]["status"]')" = "([3, 0, 3], 'bad_image', 400)" ]
check "classify --json: labels" [ "$(pyj 'j["results"][0]["predictions"][0]["label"] + j["results"][2]["predictions"][0]["label"]')" = "$(label_of 2)$(label_of 3)" ]
ctl classify --model ghost "$T/digits/0.png"
expect_rc 4 "classify with an unknown model"
ctl classify "$T/nosuch.png"
expect_rc 1 "classify a missing file"

# ---- infer: a v2 request from a JSON file ----
$PY - "$T/digits/0.u8" "$T/req.json" <<'PYEOF'
import json, sys
px = list(open(sys.argv[1], "rb").read())
json.dump({"id": "r1", "inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "UINT8", "data": px}],
           "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}, {"name": "logits"}]},
          open(sys.argv[2], "w"))
PYEOF
ctl infer "$T/req.json"
expect_rc 0 "infer"
check "infer: the top class first" grep -qE "^probabilities BYTES \[1,2\]: [0-9.]+:$(label_of 0):$(label_of 0) " <<< "$OUT"
check "infer: logits" grep -qE '^logits FP32 \[1,10\]:( -?[0-9.e+-]+){10}$' <<< "$OUT"
ctl --json infer --model mnist "$T/req.json"
check "infer --json" [ "$(pyj 'j["id"], j["outputs"][0]["data"][0].split(":")[1], len(j["outputs"][1]["data"])')" = "('r1', '$(label_of 0)', 10)" ]
echo '{"inputs": []}' > "$T/bad.json"
ctl --json infer "$T/bad.json"
expect_rc 5 "infer of a bad request: server error"
check "infer --json error object on stdout" [ "$(pyj 'j["code"]')" = invalid_request ]
ctl infer "$T/nosuch.json"
expect_rc 1 "infer of a missing file"

# ---- unload / load; a model that is not served answers 503 (server error) ----
ctl unload mnist
expect_rc 0 "unload"
check "unload says UNAVAILABLE" [ "$OUT" = "mnist: UNAVAILABLE" ]
ctl classify --model mnist "$T/digits/0.png"
expect_rc 5 "classify on an unloaded model: server error"
check "the server's code on stderr" grep -q "model_unavailable, HTTP 503" <<< "$ERR"
ctl --json load mnist
expect_rc 0 "load"
check "load --json" [ "$(pyj 'j["name"], j["state"]')" = "('mnist', 'READY')" ]
ctl load ghost
expect_rc 4 "load of an unknown model"
ctl --token wrong load mnist
expect_rc 7 "a wrong token"
RC=0; env -u DYND_TOKEN "$CTL" load mnist > /dev/null 2>&1 || RC=$?
expect_rc 7 "no token"

# ---- data sets ----
# a zip of the digits, one folder per class
while read -r i lab; do mkdir -p "$T/set/$lab" && cp "$T/digits/$i.png" "$T/set/$lab/"; done < "$T/digits/labels.txt"
(cd "$T/set" && $PY -m zipfile -c "$T/set.zip" ./*)
ctl datasets put digits "$T/set.zip"
expect_rc 0 "datasets put"
check "datasets put: 4 images, labelled" grep -qE '^digits +4 +[0-9]+ +yes +train$' <<< "$OUT"
ctl datasets put digits "$T/set.zip"
expect_rc 5 "datasets put over an existing set"
ctl --json datasets put digits "$T/set.zip" --overwrite
check "datasets put --overwrite --json" [ "$RC:$(pyj 'j["name"], j["images"]')" = "0:('digits', 4)" ]
ctl --json datasets
check "datasets --json lists it and mnist" [ "$(pyj 'sorted(d["name"] for d in j["datasets"])')" = "['digits', 'mnist']" ]
ctl datasets list
check "datasets list" grep -q '^mnist ' <<< "$OUT"
ctl --json datasets show digits
check "datasets show --json" [ "$RC:$(pyj 'j["labeled"]')" = "0:True" ]
ctl datasets delete digits
check "datasets delete" [ "$RC:$OUT" = "0:digits: deleted" ]
ctl datasets show digits
expect_rc 4 "datasets show of a deleted set"

# ---- uploads are streamed: dynctl's peak memory stays far below the file's size ----
truncate -s 96M "$T/big.onnx"
base=$(peak_kib 0 "$CTL" health)
conv=$(peak_kib 5 "$CTL" convert "$T/big.onnx" --force-publish)
put=$(peak_kib 5 "$CTL" datasets put big "$T/big.onnx")
log "peak memory (KiB): health $base, 96 MiB convert upload $conv, 96 MiB data set upload $put"
check "convert streams its upload ($conv KiB vs $base KiB)" below "$conv" "$base" 49152
check "datasets put streams its upload ($put KiB vs $base KiB)" below "$put" "$base" 49152
rm -f "$T/big.onnx"

# ---- convert (upload, --wait, stdout not a tty: plain lines) ----
ctl convert "$ONNX" --output lenet --steps 100 --preprocess-from mnist --calib mnist --calib-n 64 \
    --holdout-n 64 --min-agreement 0 --wait --interval 0.1
expect_rc 0 "convert --wait"
CONV=$(sed -n 's/^\(conv-[a-z0-9]*\) submitted.*/\1/p' <<< "$OUT")
check "convert --wait: the job's id" [ -n "$CONV" ]
check "convert --wait: plain lines, no carriage return" no_cr "$OUT"
check "convert --wait: progress lines" grep -qE "^$CONV +[0-9.]+% " <<< "$OUT"
check "convert --wait: ends succeeded" [ "$(tail -1 <<< "$OUT")" = "$CONV succeeded: model lenet" ]
ctl --json jobs "$CONV"
check "the options reached the job" [ "$(pyj 'j["options"]["steps"], j["options"]["calib_n"], j["options"]["upload"]["format"], j["state"]')" = "(100, 64, 'onnx', 'succeeded')" ]
ctl jobs "$CONV"
check "jobs ID: human form" grep -qE '^state +succeeded$' <<< "$OUT"
ctl classify --model lenet "$T/digits/0.png"
expect_rc 0 "the converted model classifies"
ctl classify "$T/digits/0.png"
expect_rc 2 "classify without --model when several models are served"
check "names the models" grep -q "lenet" <<< "$ERR"
# a repository model, --json submit, then jobs --watch --json
ctl --json convert --model mnist --steps 50 --force-publish --output mnist_c
check "convert --json: the submitted record" [ "$RC:$(pyj 'j["kind"], j["state"] in ("queued", "running"), j["options"]["model"]')" = "0:('conversion', True, 'mnist')" ]
C2=$(pyj 'j["id"]')
ctl --json jobs "$C2" --watch --interval 0.1
check "jobs --watch --json: the final record" [ "$RC:$(pyj 'j["state"], j["model"]')" = "0:('succeeded', 'mnist_c')" ]
ctl jobs "$C2" --watch
check "jobs --watch of a finished job: one line and the summary" [ "$RC:$(wc -l <<< "$OUT")" = "0:2" ]
ctl convert --model ghost --force-publish
expect_rc 4 "convert of an unknown model"
ctl convert --model mnist --output mnist --force-publish
expect_rc 5 "convert onto an existing model (409)"
# job failed: a truncated ONNX passes the upload check and fails in the job
head -c 3000 "$ONNX" > "$T/trunc.onnx"
ctl convert "$T/trunc.onnx" --force-publish --output trunc --wait --interval 0.1
expect_rc 6 "a job that fails"
check "the failure is reported" grep -qE "^conv-[a-z0-9]+ failed: .*uploaded model" <<< "$OUT"

# ---- finetune through a pty: the bar is redrawn in place ----
script -qfec "'$CTL' finetune mnist --data mnist --epochs 2 --limit 500 --val 100 --output ft1 --wait --interval 0.1" \
    /dev/null > "$T/tty.out" 2>&1 || true
FT=$(sed -n 's/^\(ft-[a-z0-9]*\) submitted.*/\1/p' "$T/tty.out" | tr -d '\r')
check "finetune through a pty: submitted" [ -n "$FT" ]
frames=$({ grep -o $'\r'"$FT \[[#-]*\]" "$T/tty.out" || true; } | wc -l)
check "progress bar redrawn with carriage returns ($frames frames)" [ "$frames" -ge 2 ]
check "a frame shows percent, epoch, loss and accuracy" grep -qE $'\r'"$FT \[#+-*\] +[0-9.]+% .*epoch [12]/2 loss [0-9.]+ val acc [0-9.]+%" "$T/tty.out"
check "the last frame is full" grep -q "\[########################\] 100.0% succeeded" "$T/tty.out"
check "the terminal line is cleared after each frame" grep -q $'\e\[K' "$T/tty.out"
check "finetune through a pty: succeeded" grep -q "^$FT succeeded: model ft1" <(tr -d '\r' < "$T/tty.out")
ctl --json jobs "$FT"
check "the fine-tune's options" [ "$(pyj 'j["options"]["epochs"], j["options"]["limit"], len(j["history"])')" = "(2, 500, 2)" ]
ctl --json finetune --model mnist --data nosuchset
expect_rc 4 "finetune on an unknown data set"
check "finetune --json error object" [ "$(pyj 'j["code"]')" = dataset_not_found ]

# ---- jobs list ----
ctl jobs
for id in "$CONV" "$C2" "$FT"; do check "jobs lists $id" grep -q "^$id " <<< "$OUT"; done
ctl --json jobs --state succeeded --kind finetune
check "jobs --state --kind --json" [ "$(pyj '[x["id"] for x in j["jobs"]]')" = "['$FT']" ]
ctl jobs --state done
expect_rc 5 "jobs with a bad state filter"
ctl --json jobs conv-000000000000
check "jobs of an unknown id: not found, error JSON" [ "$RC:$(pyj 'j["code"]')" = "4:job_not_found" ]

# ---- cancel: a queued job at once, a running one with --wait ----
LONG=(mnist --data mnist --epochs 200 --limit 3000 --val 300)
ctl --json finetune "${LONG[@]}" --output never1; L1=$(pyj 'j["id"]')
ctl --json finetune "${LONG[@]}" --output never2; L2=$(pyj 'j["id"]')
ctl cancel "$L2"
check "cancel of a queued job" [ "$RC:$OUT" = "0:$L2: cancelled" ]
ctl cancel "$L1" --wait --interval 0.1
check "cancel --wait of a running job" [ "$RC:$(tail -1 <<< "$OUT")" = "0:$L1 cancelled: cancelled by request" ]
ctl --json cancel "$L1"
check "cancel of a cancelled job: server error, error JSON" [ "$RC:$(pyj 'j["code"]')" = "5:job_finished" ]
ctl jobs "$L1" --watch
expect_rc 6 "watching a cancelled job"

# ---- resume: SIGTERM mid-fine-tune leaves it interrupted; resume --wait completes it ----
ctl --json finetune mnist --data mnist --epochs 6 --limit 2000 --val 200 --output ft_r; R=$(pyj 'j["id"]')
for i in $(seq 1 600); do
    ctl --json jobs "$R"
    [ "$(pyj 'j["state"] == "running" and len(j["history"]) >= 1')" = True ] && break
    sleep 0.1
done
check "the fine-tune ran an epoch" [ "$(pyj 'len(j["history"]) >= 1')" = True ]
stop_dynd
cp "$T/dynd.err" "$T/dynd.err.1"
start_dynd "${FLAGS[@]}"
export DYND_URL=$URL
ctl jobs "$R" --watch
expect_rc 6 "watching an interrupted job"
check "says how to continue it" grep -q "interrupted.*dynctl resume" <<< "$OUT"
ctl --json resume "$R"
check "resume --json" [ "$RC:$(pyj 'j["state"] in ("queued", "running")')" = "0:True" ]
ctl jobs "$R" --watch --interval 0.1
check "the resumed job succeeded" [ "$RC:$(tail -1 <<< "$OUT")" = "0:$R succeeded: model ft_r" ]
ctl resume "$R"
expect_rc 5 "resume of a finished job"

check "no sanitizer report from dynctl" bash -c '! grep -qE "Sanitizer|runtime error:" "$1"' _ "$T/ctl.allerr"
stop_dynd
cat "$T/dynd.err.1" >> "$T/dynd.err"
finish
