#!/usr/bin/env bash
# dynd process lifecycle: --help / --version / --check-config / --print-config (and
# config/dynd.conf kept equal to it), device = cuda refused clearly (also per model), auto
# choosing the CPU with its reason, device memory in /metrics, roles (serve / jobs), SIGTERM during load drains
# (readiness false at once, liveness true, every accepted request answered 200, exit 0).
source "$(dirname "$0")/lib.sh"
echo "lifecycle: flags, config, SIGTERM drain"
mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn"
make_digits 1 "$T/digits"

check "--help lists every setting" bash -c "'$DYND' --help | grep -q -- '--max_body_bytes'"
check "--version" bash -c "'$DYND' --version | grep -q '^dynd [0-9]'"
"$DYND" --print-config > "$T/print.conf"
check "config/dynd.conf is what --print-config generates (regenerate: build/dynd --print-config > config/dynd.conf)" \
    diff -u "$ROOT/config/dynd.conf" "$T/print.conf"
check "--check-config accepts config/dynd.conf" "$DYND" --log-level warn --config "$ROOT/config/dynd.conf" --model-dir "$T/models" --check-config
set +e
out=$("$DYND" --model-dir "$T/models" --device cuda --check-config 2>&1); rc=$?
check "device = cuda refused with exit 2" [ $rc = 2 ]
check "device = cuda message" grep -q "not built with CUDA" <<< "$out"
printf '[model.mnist]\ndevice = cuda\n' > "$T/gpu.conf"
out=$("$DYND" --config "$T/gpu.conf" --model-dir "$T/models" --device cpu --check-config 2>&1); rc=$?
check "a model section's device = cuda refused, the section named" \
    bash -c "[ $rc = 2 ] && grep -q 'model.mnist.*not built with CUDA' <<< '$out'"
out=$("$DYND" --model-dir "$T/models" --device auto --check-config 2>&1); rc=$?
check "device = auto: the CPU, and why" \
    bash -c "[ $rc = 0 ] && grep -q 'device auto -> cpu (device auto: this build has no CUDA' <<< '$out'"
out=$(DYND_MAX_BATCH=0 "$DYND" --model-dir "$T/models" --check-config 2>&1); rc=$?
check "bad env value refused" [ $rc = 2 ]
check "bad env value named" grep -q 'DYND_MAX_BATCH' <<< "$out"
out=$("$DYND" --model-dir "$T/models" --no-such-flag 2>&1); rc=$?
check "unknown flag refused" [ $rc = 2 ]
printf 'port = 80\nbogus = 1\n' > "$T/bad.conf"
out=$("$DYND" --config "$T/bad.conf" --check-config 2>&1); rc=$?
check "unknown setting in the file: line named" grep -q 'bad.conf:2' <<< "$out"
out=$("$DYND" --model-dir "$T/nonexistent" --check-config 2>&1); rc=$?
check "missing model_dir refused" [ $rc = 2 ]
set -e
check "env overrides the file, flags override env" bash -c \
    "printf 'max_batch = 5\n' > '$T/p.conf'; DYND_MAX_BATCH=7 '$DYND' --config '$T/p.conf' --max-batch 9 --print-config | grep -q '^max_batch = 9' && DYND_MAX_BATCH=7 '$DYND' --config '$T/p.conf' --print-config | grep -q '^max_batch = 7'"

# SIGTERM during load: 24 requests of 256 digits each are in flight; all must be answered 200,
# and while they drain readiness answers 503 and liveness 200 (checked by the client).
start_dynd --log-level info --shutdown-grace-s 20
req GET /v2/health/ready; expect_status 200 "ready before SIGTERM"
check "/metrics: device memory (none on the CPU)" \
    bash -c "curl -s '$URL/metrics' | grep -q '^dynd_device_memory_bytes{kind=\"reserved\"} 0$'"
$PY "$HERE/client.py" drain "$URL" "$T/digits" "$DYND_PID" 24 > "$T/drain.out" & dp=$!
check "drain: every accepted request answered 200, ready 503 and live 200 meanwhile" wait $dp
log "$(cat "$T/drain.out")"
kill -TERM "$DYND_PID" 2>/dev/null || true # (the client sent it; a second one is ignored)
rc=0; wait "$DYND_PID" || rc=$?; DYND_PID=""
# after the exit: the client's last answer can come before dynd logs the end of the drain
if grep -q '"msg":"drained"' "$T/dynd.err"; then ok; else fail "no drained log line"; fi
check "exit status 0 after the drain (status $rc)" [ $rc = 0 ]
[ $rc = 0 ] || grep -v '"msg":"request"' "$T/dynd.err" | tail -8 | sed 's/^/    /'

# A second SIGTERM during the teardown (after "drained": the signal watchers are closed) is
# ignored, not fatal (it killed dynd with status 143 before).
bad=0
for k in $(seq 1 10); do
    start_dynd --log-level info
    kill -TERM "$DYND_PID"
    for _ in $(seq 1 400); do grep -q '"msg":"drained"' "$T/dynd.err" && break; sleep 0.005; done
    kill -TERM "$DYND_PID" 2>/dev/null || true
    rc=0; wait "$DYND_PID" || rc=$?; DYND_PID=""
    [ $rc = 0 ] || bad=$((bad + 1))
done
check "a second SIGTERM during the teardown is ignored ($bad of 10 exits not 0)" [ $bad = 0 ]

# Roles: a serving replica refuses to start jobs, a jobs replica refuses inference; both say
# where to go, and both stay ready.
start_dynd --role serve --allow-unauthenticated-writes true
req POST /v1/finetunes -H 'Content-Type: application/json' -d '{"model":"mnist","data":"mnist"}'
expect_error 503 jobs_unavailable "role = serve: a fine-tune refused"
check "role = serve: the message names the role" grep -q 'role = serve' <<< "$BODY"
req POST /v1/models/mnist/classify -H 'Content-Type: image/png' --data-binary @"$T/digits/0.png"
expect_status 200 "role = serve: classify"
stop_dynd
start_dynd --role jobs
req POST /v1/models/mnist/classify -H 'Content-Type: image/png' --data-binary @"$T/digits/0.png"
expect_error 503 inference_unavailable "role = jobs: classify refused"
req GET /v2/health/ready; expect_status 200 "role = jobs: ready"
stop_dynd

# SIGTERM under load with a new connection per request: dynd stops accepting at once (later
# connections are refused), serves every connection the kernel had already completed (none is
# reset or left unanswered), and only then exits.
start_dynd --log-level info --shutdown-grace-s 20
check "new connection per request, SIGTERM: no accepted request lost, all 200" \
    $PY "$HERE/client.py" fresh "$URL" "$T/digits" "$DYND_PID" 16
line=$(grep '"msg":"stopped accepting connections"' "$T/dynd.err" || true)
log "${line:-no 'stopped accepting connections' log line}"
check "the drain filtered new handshakes before taking the backlog" grep -q '"syn_filter":true' <<< "$line"
kill -TERM "$DYND_PID" 2>/dev/null || true # (the client sent it; a second one is ignored)
rc=0; wait "$DYND_PID" || rc=$?; DYND_PID=""
check "exit status 0 after the drain (new connections per request; status $rc)" [ $rc = 0 ]
[ $rc = 0 ] || grep -v '"msg":"request"' "$T/dynd.err" | tail -8 | sed 's/^/    /' 
finish
