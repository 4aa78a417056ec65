#!/usr/bin/env bash
# Conversion speed (issue 9, item 6): `dyn convert` with default settings and --threads 2 on
# ResNet-18- and ResNet-50-shaped models (torchvision architectures, random weights, exported
# once to models/ by tests/experiments/export_torchvision.py with /usr/bin/python3 and reused),
# printing per model the wall time, the CPU time, the load average around the run and the mean
# relative weight error of the converted layers against the truncated SVD's at equal floats.
# Then one big layer's error-vs-time curve, before (--algo 1, the reference path) and after
# (--algo 0, the default) side by side, on a decaying spectrum (power law 0.5; random weights
# have a flat one), written to $BUILD/bench/convert_curve.txt ("label step seconds rel_err").
#   tests/bench/bench_convert.sh [build-dir] [models...]     (default: resnet18 resnet50)
# Environment: CURVE_LAYER (default /layer3/layer3.1/conv2/Conv of resnet18), CURVE_STEPS
# (default 2000), NO_CURVE=1 to skip the curve; STEPS=N runs the conversions with --steps N
# instead of the default (a quick check of the script, not the benchmark: it says so).
# Target: ResNet-50 in <= 10 minutes on 2 cores. This machine is shared: the load average is
# printed next to every time; CPU seconds / 2 bound what a quiet 2-core machine would take.
set -euo pipefail
BUILD=${1:-build}
shift || true
MODELS=${*:-resnet18 resnet50}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DYN=$ROOT/$BUILD/dyn
[ -x "$DYN" ] || { echo "bench_convert: no $DYN (make first)"; exit 1; }
mkdir -p "$ROOT/models" "$ROOT/$BUILD/bench"
T=$(mktemp -d /tmp/dyn_bench_convert_XXXXXX)
trap 'rm -rf "$T"' EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }

printf '%-10s %9s %9s %-16s %-16s %6s %9s %9s %7s\n' model wall_s cpu_s load_before load_after \
    layers rel_err svd_err ratio
for name in $MODELS; do
    onnx=$ROOT/models/$name.onnx
    if [ ! -f "$onnx" ]; then
        [ -x /usr/bin/python3 ] || { echo "bench_convert: no /usr/bin/python3 to export $name"; exit 1; }
        /usr/bin/python3 "$ROOT/tests/experiments/export_torchvision.py" "$ROOT/models" "$name" >&2
    fi
    l0=$(load)
    t0=$(date +%s.%N)
    c0=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
    "$DYN" convert "$onnx" "$T/$name.dyn" --threads 2 ${STEPS:+--steps $STEPS} \
        --report "$T/$name.json" > "$T/$name.log" 2>&1 ||
        { cat "$T/$name.log"; exit 1; }
    t1=$(date +%s.%N)
    c1=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
    l1=$(load)
    read -r n rel svd < <(python3 - "$T/$name.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
L = [l for l in r["layers"] if l.get("converted")]
n = len(L)
print(n, sum(l["rel_err"] for l in L) / n, sum(l["svd_rel_err"] for l in L) / n)
EOF
)
    tck=$(getconf CLK_TCK)
    printf '%-10s %9.1f %9.1f %-16s %-16s %6d %9.4f %9.4f %7.3f\n' "$name" \
        "$(echo "$t1 - $t0" | bc)" "$(echo "($c1 - $c0) / $tck" | bc -l)" "$l0" "$l1" "$n" \
        "$rel" "$svd" "$(echo "$rel / $svd" | bc -l)"
    cp "$T/$name.json" "$ROOT/$BUILD/bench/convert_$name.json"
done
echo "(rel_err, svd_err: means over the converted layers; ratio = rel_err / svd_err; reports in $BUILD/bench/convert_<model>.json)"
[ -n "${STEPS:-}" ] && echo "(STEPS=$STEPS: --steps $STEPS, not the default settings)"

[ "${NO_CURVE:-0}" = 1 ] && exit 0
LAYER=${CURVE_LAYER:-/layer3/layer3.1/conv2/Conv}
CSTEPS=${CURVE_STEPS:-2000}
BLAS=/usr/lib/x86_64-linux-gnu/openblas-openmp
cc -std=c17 -D_GNU_SOURCE -O2 -fopenmp -I"$ROOT/engine" -I"$ROOT" -I"$ROOT/$BUILD/gen" \
    $(pkg-config --cflags jansson) -I/usr/include/x86_64-linux-gnu/openblas-openmp \
    "$ROOT/tests/experiments/fit_speed.c" -o "$T/fit_speed" "$ROOT/$BUILD/libdyn.a" -ljansson \
    -lz -lpng16 -L$BLAS -Wl,-rpath,$BLAS -lopenblas -lprotobuf-c -ljpeg -lm -lpthread
CURVE=$ROOT/$BUILD/bench/convert_curve.txt
: > "$CURVE"
echo "error vs time, $LAYER of resnet18 (power law 0.5), $CSTEPS steps, 2 threads; load $(load)"
for algo in 1 0; do
    "$T/fit_speed" "$ROOT/models/resnet18.onnx" "$LAYER" --steps "$CSTEPS" --algo $algo \
        --powerlaw 0.5 --threads 2 --trace "$CURVE" --label algo$algo
done
echo "load $(load); curve in $CURVE"
python3 - "$CURVE" <<'EOF'
import sys
rows = {}
for line in open(sys.argv[1]):
    lab, step, sec, err = line.split()
    rows.setdefault(lab, []).append((float(sec), float(err)))
print("seconds  " + "  ".join(f"{k:>8}" for k in sorted(rows)))
tmax = max(r[-1][0] for r in rows.values())
for f in (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0):
    t = f * tmax
    vals = []
    for k in sorted(rows):
        past = [e for s, e in rows[k] if s <= t]
        vals.append(f"{past[-1]:8.4f}" if past else "       -")
    print(f"{t:7.1f}  " + "  ".join(vals))
EOF
