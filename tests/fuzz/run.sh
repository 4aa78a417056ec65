#!/usr/bin/env bash
# run.sh — runs the fuzz harnesses (see README.md). Called by the Makefile:
#   run.sh fuzz   BUILD SECONDS TARGET...  libFuzzer, each target SECONDS in turn (or FUZZ_RUNS
#                                          executions, when set and reached first); new inputs in
#                                          BUILD/corpus/<target>, crashes in BUILD/crashes/<target>
#   run.sh replay BUILD 0 TARGET...        replays tests/fuzz/corpus/<target> (and any
#                                          tests/fuzz/crashes/<target> regression inputs) once
# Prints one line per target; exits non-zero when a target crashed or reported.
set -uo pipefail
mode=$1 build=$2 secs=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
# One thread per process: the kernels' OpenMP and OpenBLAS pools would only add noise.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fail=0
for t in "$@"; do
    bin=$build/fuzz/fuzz_$t
    seeds=$here/corpus/$t
    if [ "$mode" = replay ]; then
        dirs=("$seeds")
        [ -d "$here/crashes/$t" ] && dirs+=("$here/crashes/$t")
        if out=$("$bin" "${dirs[@]}" 2>&1); then
            echo "fuzz-regress $t: ok ($(echo "$out" | tail -1 | sed 's/.*: //'))"
        else
            echo "$out" | tail -40
            echo "fuzz-regress $t: FAILED"
            fail=1
        fi
        continue
    fi
    work=$build/corpus/$t crashes=$build/crashes/$t
    mkdir -p "$work" "$crashes"
    log=$build/fuzz-$t.log
    echo "== fuzz $t for ${secs}s (log: $log)"
    # -timeout: an input running 20 s is reported as a hang; -rss_limit_mb: a memory blow-up.
    # FUZZ_RUNS (optional): also stop after that many executions.
    "$bin" -max_total_time="$secs" ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$crashes/" "$work" "$seeds" >"$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1 | awk '{print $5}')
    [ -n "$took" ] || took="<$secs (stopped by a crash)"

    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    ncrash=$(find "$crashes" -type f | wc -l)
    echo "fuzz $t: rc=$rc executions=${execs:-?} seconds=${took:-?} cov=${cov:-?} corpus=$(ls "$work" | wc -l) crashes=$ncrash"
    if [ $rc -ne 0 ] || [ "$ncrash" -ne 0 ]; then
        grep -E 'ERROR|SUMMARY|runtime error|DYN_ASSERT' "$log" | head -5
        fail=1
    fi
done
exit $fail
