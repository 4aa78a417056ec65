# cluster_lib.sh — replicas sharing only PostgreSQL and an S3 store (sourced after lib.sh by
# test_cluster.sh and tests/faults/pg_outage.sh): skips without node / npm or PostgreSQL, starts
# a throwaway PostgreSQL (tests/pg_harness.sh), installs an EXIT trap that stops it, s3rver and
# the replicas, and defines the helpers below. The caller runs start_s3 and then replica NAME ...
source "$HERE/s3/s3lib.sh"
s3_prepare
# shellcheck source=../pg_harness.sh
source "$ROOT/tests/pg_harness.sh"
rc=0
PGH_NO_TRAP=1 pgh_start || rc=$?
if [ "$rc" -eq 77 ]; then echo "  SKIP: no PostgreSQL server binaries (make deps installs Debian's postgresql)"; exit 0; fi
[ "$rc" -eq 0 ] || { echo "  FAIL: PostgreSQL did not start"; exit 1; }
make_digits 1 "$T/digits"
ONNX=$ROOT/tests/fixtures/lenet5.onnx
BUCKET=dynd-models
S3_PID="" PIDS=()
cleanup_cluster() {
    for p in "${PIDS[@]}" $S3_PID; do kill -KILL "$p" 2>/dev/null || true; done
    pgh_stop
    cleanup
}
trap cleanup_cluster EXIT
trap "exit 143" TERM INT # the EXIT trap then stops PostgreSQL, s3rver and the replicas


# replica NAME LEASE_S [flags]: dynd NAME (replica_id NAME) with its own $T/NAME/{models,state,data},
# jobs on PostgreSQL, models in the store; sets <NAME>_URL, <NAME>_PID. Its log: $T/NAME/dynd.err
# (appended to $T/NAME.log across restarts).
replica() {
    local name=$1 lease=$2 t0=$T; shift 2
    T=$t0/$name
    mkdir -p "$T/models" "$T/data"
    [ -e "$T/data/mnist" ] || ln -s "$ROOT/data/mnist" "$T/data/mnist"
    [ -f "$T/dynd.err" ] && cat "$T/dynd.err" >> "$t0/$name.log"
    AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1 \
        start_dynd --log-level info --replica-id "$name" --data-dir "$T/data" \
        --jobs-backend postgres --jobs-db "$PGH_CONNINFO" --jobs-lease-s "$lease" \
        --model-store "s3://$BUCKET/team/models" --store-endpoint "http://127.0.0.1:$S3_PORT" \
        --store-poll-ms 300 --allow-unauthenticated-writes "$@"
    PIDS+=("$DYND_PID")
    printf -v "${name}_URL" '%s' "$URL"
    printf -v "${name}_PID" '%s' "$DYND_PID"
    DYND_PID=""
    T=$t0
}
kill9() { local p=${1}_PID; kill -KILL "${!p}" 2>/dev/null || true; wait "${!p}" 2>/dev/null || true; }
stop_replica() { local p=${1}_PID; kill -TERM "${!p}" 2>/dev/null || true; wait "${!p}" 2>/dev/null || true; }
# Every log line a replica wrote (earlier runs and this one).
logs() { cat "$T/$1.log" "$T/$1/dynd.err" 2>/dev/null || true; }
# How many times job $1 started, over both replicas' logs.
starts() { { logs A; logs B; } | grep -c "\"msg\":\"job started\",\"job\":\"$1\"" || true; }

# submit URL PATH [curl args]: sets ID (or fails).
submit() {
    URL=$1
    local path=$2; shift 2
    req POST "$path" "$@"
    ID=""
    if [ "$STATUS" = 202 ]; then ID=$(json_get 'j["id"]'); else fail "submit $path: $STATUS ${BODY:0:200}"; fi
}
convert_upload() { # convert_upload URL OUTPUT STEPS
    submit "$1" "/v1/conversions?steps=$3&force_publish=true&preprocess_from=mnist&output=$2" \
        -H 'Content-Type: application/octet-stream' --data-binary "@$ONNX"
}
# field URL ID EXPR: a Python expression on the job's JSON (j), as GET URL/v1/jobs/ID shows it.
field() {
    URL=$1
    req GET "/v1/jobs/$2"
    [ "$STATUS" = 200 ] || { echo "?"; return 0; }
    json_get "$3" || echo "?"
}
state_is() { [ "$(field "$1" "$2" 'j["state"]')" = "$3" ]; }
ended() { case "$(field "$1" "$2" 'j["state"]')" in succeeded|failed|cancelled) return 0;; esac; return 1; }
held_by() { [ "$(field "$1" "$2" '(j.get("holder") or "").split(":")[0]')" = "$3" ]; }
classifies() {
    [ "$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST -H 'Content-Type: image/png' \
        --data-binary "@$T/digits/0.png" "$1/v1/models/$2/classify")" = 200 ]
}
now() { date +%s.%N; }
since() { $PY -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(now)"; }
