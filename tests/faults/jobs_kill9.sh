#!/usr/bin/env bash
# jobs_kill9.sh [BUILD] [ROUNDS]: kill -9 dynd at a random point of a running job, ROUNDS times
# (default 20), conversions and fine-tunes in turn. After each kill dynd starts again on the same
# directories and must report the job truthfully: succeeded if it had published before the
# kill, else interrupted (never running, never failed); an interrupted job resumes to the end;
# its model then classifies; model_dir never holds a file dynd refuses (nothing half-written is
# ever published) and no temporary file outlives the restart's resume.
source "$(dirname "$0")/../integration/lib.sh"
N=${2:-20}
echo "kill -9 during jobs: $N rounds (conversions and fine-tunes in turn)"
mkdir -p "$T/models" "$T/state" "$T/data"
cp "$(model_path)" "$T/models/mnist.dyn"
ln -s "$MNIST" "$T/data/mnist"
make_digits 20 "$T/digits"
ONNX=$ROOT/tests/fixtures/lenet5.onnx
A='Authorization: Bearer tok'
start() { start_dynd --log-level info --auth-tokens tok --data-dir "$T/data" --jobs-lease-s 3 "$@"; }
kill9() { kill -KILL "$DYND_PID"; wait "$DYND_PID" 2>/dev/null || true; DYND_PID=""; }
job_state() { req GET "/v1/jobs/$1" -H "$A"; json_get 'j["state"]'; }
wait_state() { # wait_state ID STATE...: until the job is in one of the states (60 s bound)
    local id=$1 st k; shift
    for k in $(seq 1 300); do
        st=$(job_state "$id")
        for s in "$@"; do [ "$st" = "$s" ] && { echo "$st"; return 0; }; done
        sleep 0.2
    done
    echo "$st"; return 1
}
declare -A SEEN=()
for n in $(seq 1 "$N"); do
    start
    out=m$n
    if [ $((n % 2)) = 1 ]; then
        kind=conversion
        req POST "/v1/conversions?output=$out&force_publish=true&steps=3000&ratio=2" -H "$A" \
            -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"
    else
        kind=finetune
        req POST /v1/finetunes -H "$A" -H 'Content-Type: application/json' \
            -d "{\"model\": \"mnist\", \"data\": \"mnist\", \"epochs\": 2, \"limit\": 6000, \"output\": \"$out\"}"
    fi
    id=$(json_get 'j["id"]' || true)
    [ -n "$id" ] || { fail "round $n: no job ($STATUS ${BODY:0:200})"; stop_dynd; continue; }
    # kill at a random point of the job: 0.00 to 1.99 s after submission (load, fit / train,
    # evaluate, publish; the jobs take 1.5-4 s here)
    sleep "$((RANDOM % 2)).$((RANDOM % 10))$((RANDOM % 10))"
    phase=$(req GET "/v1/jobs/$id" -H "$A"; json_get 'j["phase"]' || echo "?")
    kill9
    start
    st=$(wait_state "$id" succeeded interrupted failed) || true
    SEEN["$kind:$phase:$st"]=$(( ${SEEN["$kind:$phase:$st"]:-0} + 1 ))
    case "$st" in
    succeeded) ok ;;
    interrupted)
        ok
        req POST "/v1/jobs/$id/resume" -H "$A"
        [ "$STATUS" = 200 ] || [ "$STATUS" = 202 ] || fail "round $n: resume answered $STATUS: ${BODY:0:200}"
        st=$(wait_state "$id" succeeded failed) || true
        if [ "$st" = succeeded ]; then ok; else
            req GET "/v1/jobs/$id" -H "$A"
            fail "round $n ($kind killed in $phase): resumed job ended $st: $(json_get 'j["error"]')"
            grep -v '"msg":"request"' "$T/dynd.err" | grep "$id" | tail -5 | sed 's/^/    /'
        fi ;;
    *)  req GET "/v1/jobs/$id" -H "$A"
        fail "round $n ($kind killed in $phase): after the restart the job reads '$st': $(json_get 'j["error"]')" ;;
    esac
    req POST "/v1/models/$out/classify" -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
    expect_status 200 "round $n: the job's model $out classifies"
    # every model file in model_dir loads (a half-written one would be refused and logged)
    if grep -q '"msg":"model load failed"' "$T/dynd.err"; then
        fail "round $n: a model file in model_dir was refused:"; grep '"msg":"model load failed"' "$T/dynd.err" | tail -3
    else ok; fi
    stop_dynd
done
left=$(find "$T/models" -name '.*' -type f | wc -l)
check "no temporary file left in model_dir ($left)" [ "$left" = 0 ]
log "where the kills landed (kind:phase:state after restart): $(for k in "${!SEEN[@]}"; do printf '%s=%s ' "$k" "${SEEN[$k]}"; done)"
finish
