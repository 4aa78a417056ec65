#!/usr/bin/env bash
# Quality at equal settings and cost, before (--algo 1) / after (--algo 0) and the speed options
# (CONVERT.md "Conversion speed"): one layer's data-free fit at 4x, l1, q = 1, default steps.
#   tests/experiments/speed_sweep.sh FIT_SPEED MODEL LAYER [POWERLAW] [THREADS]
# FIT_SPEED: tests/experiments/fit_speed.c built (tests/bench/bench_convert.sh shows how).
set -euo pipefail
FS=$1; M=$2; L=$3; PW=${4:-0}; TH=${5:-1}
echo "# $L of $M, power law $PW, $TH thread(s); load $(cut -d' ' -f1-3 /proc/loadavg)"
run() { /usr/bin/time -f "  cpu %U s user" "$FS" "$M" "$L" --powerlaw "$PW" --threads "$TH" "$@" 2>&1; }
run --algo 1 --label before
run --algo 0 --label after
run --algo 0 --sample 0.5 --label s0.5
run --algo 0 --sample 0.25 --label s0.25
run --algo 0 --plateau 0.001 --label p1e-3
run --algo 0 --steps 1000 --label 1000st
echo "# load $(cut -d' ' -f1-3 /proc/loadavg)"
