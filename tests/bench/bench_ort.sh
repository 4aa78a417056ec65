#!/usr/bin/env bash
# dynd against ONNX Runtime on the same ONNX files, side by side in one run (issue 12, item 1).
#   tests/bench/bench_ort.sh [build-dir]          (make bench-ort; make bench runs it last)
# Models: LeNet-5 (tests/fixtures/lenet5.onnx) and, exported once by export_bench_models.py
# (Debian's /usr/bin/python3: torch, torchvision) into BUILD/bench-models/ and reused there,
# torchvision's ResNet-18, ResNet-50 and a ViT-S/16 (random weights, opset 13, 224x224).
# Every file derived from an ONNX file there is made again when the ONNX file is newer.
# dynd runs `dyn bench` on a dense model file imported from the ONNX file (`dyn convert
# --min-saving 1 --force-publish`: every layer kept dense, cached beside it); ONNX Runtime
# (onnxruntime-node from npm in BUILD/ort, `make bench-ort` installs it) runs ort_bench.js on
# the ONNX file itself. Each point runs dynd, then ORT, right after each other.
#  1. dense: every model x batch (1, 8; LeNet also 64) x threads (1, 2): ms per batch,
#     images/s, and ratio = dynd images/s / ORT images/s (> 1: dynd is faster).
#  2. DyN: ResNet-18 and ResNet-50 converted data-free at 4x and 8x (`dyn convert --ratio R
#     --force-publish --threads 2`, cached in BUILD/bench-models/ as <model>.r<R>.auto.dyn; the
#     native copy is the same file with exec=native, set_exec.py), exec auto and native, batch
#     1, 2 threads, against ORT on the dense ONNX original; "x dense" = against dynd dense
#     (section 1's point). ResNet-50's conversions take long (tens of minutes, niced): once.
#  3. busy machine: ResNet-18, batch 1, 2 threads, quiet, then with one CPU-bound process
#     (`sh -c 'while :; do :; done'`, pinned nowhere) running; busy/quiet for each engine.
# Timing: ORT: 3 warm-up session.run calls, then BENCH_RUNS timed ones (more until one second
# has gone), the median. dynd: `dyn bench` itself (one warm-up pass, then passes until one
# second has gone; their mean), min(BENCH_RUNS, 5) such rounds in one process, the median round.
# Environment: BENCH_MODELS (default "lenet5 resnet18 resnet50 vit_s16"; sections 2 and 3 take
# the ResNets among them), BENCH_RUNS (default 20), BENCH_SECTIONS (default "dense dyn busy").
# A model the importer cannot read is reported with its error and left out. Exit status 1 when
# any point failed (its cell says "fail"). The load average is printed before each section:
# numbers from a busy machine say little.
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/tests/bench
DYN=$ROOT/$BUILD/dyn
MD=$ROOT/$BUILD/bench-models
ORT_MODULES=$ROOT/$BUILD/ort/node_modules
MODELS=${BENCH_MODELS:-lenet5 resnet18 resnet50 vit_s16}
RUNS=${BENCH_RUNS:-20}
SECTIONS=${BENCH_SECTIONS:-dense dyn busy}
[ -x "$DYN" ] || { echo "bench_ort: no $DYN (make first)"; exit 1; }
[ -d "$ORT_MODULES/onnxruntime-node" ] ||
    { echo "bench_ort: no onnxruntime-node in $BUILD/ort (make bench-ort installs it)"; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "bench_ort: BENCH_RUNS must be a count, not '$RUNS'"; exit 1; }
ROUNDS=$((RUNS < 5 ? RUNS : 5))
mkdir -p "$MD"
T=$(mktemp -d /tmp/dyn_bench_ort_XXXXXX)
SPIN=""
trap '[ -n "$SPIN" ] && kill "$SPIN" 2>/dev/null; rm -rf "$T"' EXIT
FAILED=0
START=$(date +%s)

load() { cut -d' ' -f1-3 /proc/loadavg; }
has() { [[ " $MODELS " == *" $1 "* ]]; }
onnx_of() { if [ "$1" = lenet5 ]; then echo "$ROOT/tests/fixtures/lenet5.onnx"; else echo "$MD/$1.onnx"; fi; }

# median of the numbers on stdin (one per line)
median() {
    sort -g | awk '{v[NR] = $1} END {if (NR == 0) exit 1
                                     printf "%.3f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# dyn_ms MODEL.dyn BATCH THREADS: the median round of `dyn bench` (ms per batch), else "fail"
dyn_ms() {
    local bs=() i
    for ((i = 0; i < ROUNDS; i++)); do bs+=("$2"); done
    if "$DYN" bench "$1" "${bs[@]}" --threads "$3" > "$T/dyn.out" 2>&1; then
        awk 'NR > 1 {print $2}' "$T/dyn.out" | median && return
    fi
    sed 's/^/    /' "$T/dyn.out" | tail -3 >&2
    echo fail
}

# ort_ms MODEL.onnx BATCH THREADS: ONNX Runtime's median ms per session.run, else "fail"
ort_ms() {
    if NODE_PATH=$ORT_MODULES node "$HERE/ort_bench.js" "$1" "$2" "$3" "$RUNS" > "$T/ort.out" 2>&1; then
        awk '$1 == "median_ms" {print $2}' "$T/ort.out" && return
    fi
    sed 's/^/    /' "$T/ort.out" | tail -3 >&2
    echo fail
}

# ips MS BATCH: images/s;  ratio A_MS B_MS: B / A (A's images/s over B's at one batch)
ips() { [ "$1" = fail ] && { echo -; return; }; awk -v t="$1" -v b="$2" 'BEGIN {printf "%.1f", 1000 * b / t}'; }
ratio() {
    if [ "$1" = fail ] || [ "$2" = fail ] || [ -z "$2" ]; then echo -; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN {r = b / a; printf r < 0.1 ? "%.2g" : "%.2f", r}'
}
note_fail() { for v in "$@"; do [ "$v" = fail ] && FAILED=1; done; return 0; }

echo "bench_ort: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $("$DYN" --version)," \
     "onnxruntime-node $(node -p "require('$ORT_MODULES/onnxruntime-node/package.json').version")," \
     "BENCH_RUNS=$RUNS, models: $MODELS"

# ---- models: ONNX exports and dense dynd imports, cached in $MD ----
need=()
for m in $MODELS; do
    case $m in
    lenet5) ;;
    resnet18 | resnet50 | vit_s16) [ -f "$MD/$m.onnx" ] || need+=("$m") ;;
    *) echo "bench_ort: unknown model '$m' (lenet5 resnet18 resnet50 vit_s16)"; exit 1 ;;
    esac
done
if [ ${#need[@]} -gt 0 ]; then
    [ -x /usr/bin/python3 ] || { echo "bench_ort: no /usr/bin/python3 (torch) to export ${need[*]}"; exit 1; }
    if ! /usr/bin/python3 -c 'import torch, torchvision' 2> /dev/null; then
        # Debian's PyTorch (about 1 GB installed), needed once to export the models.
        if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
            echo "bench_ort: installing python3-torch python3-torchvision (once, to export ${need[*]})"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch python3-torchvision > /dev/null ||
                { echo "bench_ort: apt-get install python3-torch python3-torchvision failed"; exit 1; }
        else
            echo "bench_ort: exporting ${need[*]} needs Debian's PyTorch:" \
                 "sudo apt-get install python3-torch python3-torchvision"
            exit 1
        fi
    fi
    echo "exporting ${need[*]} to $BUILD/bench-models/ (once)"
    nice -n 10 /usr/bin/python3 -W ignore "$HERE/export_bench_models.py" "$MD" "${need[@]}"
fi
OK_MODELS=""
for m in $MODELS; do
    dense=$MD/$m.dense.dyn
    if ! [ "$dense" -nt "$(onnx_of "$m")" ] &&
        ! "$DYN" convert "$(onnx_of "$m")" "$dense" --min-saving 1 --force-publish > "$T/imp.log" 2>&1; then
        echo "bench_ort: dynd cannot import $m, left out: $(grep -m1 'dyn convert' "$T/imp.log" || tail -1 "$T/imp.log")"
        continue
    fi
    OK_MODELS="$OK_MODELS $m"
done
declare -A DENSE_MS

# ---- 1. dense ----
if [[ " $SECTIONS " == *" dense "* ]]; then
    echo
    echo "1. dense, the same ONNX file; ratio = dynd images/s / ORT images/s   (load $(load))"
    printf '%-9s %5s %7s %11s %11s %11s %11s %7s\n' model batch threads dynd_ms dynd_img/s \
        ort_ms ort_img/s ratio
    for m in $OK_MODELS; do
        batches="1 8"
        [ "$m" = lenet5 ] && batches="1 8 64"
        for b in $batches; do
            for t in 1 2; do
                d=$(dyn_ms "$MD/$m.dense.dyn" "$b" "$t")
                o=$(ort_ms "$(onnx_of "$m")" "$b" "$t")
                note_fail "$d" "$o"
                DENSE_MS[$m.$b.$t]=$d
                printf '%-9s %5d %7d %11s %11s %11s %11s %7s\n' "$m" "$b" "$t" "$d" \
                    "$(ips "$d" "$b")" "$o" "$(ips "$o" "$b")" "$(ratio "$d" "$o")"
            done
        done
    done
fi

# ---- 2. DyN conversions vs ORT on the dense original ----
DYN_MODELS=""
for m in resnet18 resnet50; do [[ " $OK_MODELS " == *" $m "* ]] && DYN_MODELS="$DYN_MODELS $m"; done
if [[ " $SECTIONS " == *" dyn "* ]] && [ -n "$DYN_MODELS" ]; then
    for m in $DYN_MODELS; do
        for r in 4 8; do
            f=$MD/$m.r$r.auto.dyn
            [ "$f" -nt "$MD/$m.onnx" ] && continue
            echo "converting $m at ${r}x, data-free, niced (once; cached as $BUILD/bench-models/$m.r$r.auto.dyn)"
            t0=$(date +%s)
            nice -n 10 "$DYN" convert "$MD/$m.onnx" "$f" --ratio "$r" --force-publish --threads 2 \
                --report "$MD/$m.r$r.report.json" > "$T/conv.log" 2>&1 ||
                { tail -5 "$T/conv.log"; echo "bench_ort: converting $m failed"; exit 1; }
            echo "  $(grep -m1 '^total:' "$T/conv.log" | cut -c1-110); $(($(date +%s) - t0)) s"
        done
    done
    echo
    echo "2. DyN, batch 1, 2 threads; vs ORT = dynd images/s / ORT's on the dense ONNX original;" \
         "x dense = / dynd dense (section 1)   (load $(load))"
    printf '%-9s %5s %7s %11s %11s %11s %11s %7s %8s\n' model ratio exec dynd_ms dynd_img/s \
        ort_ms ort_img/s vs_ORT x_dense
    for m in $DYN_MODELS; do
        for r in 4 8; do
            [ "$MD/$m.r$r.native.dyn" -nt "$MD/$m.r$r.auto.dyn" ] ||
                python3 "$HERE/set_exec.py" "$MD/$m.r$r.auto.dyn" "$MD/$m.r$r.native.dyn" native > /dev/null
            for ex in auto native; do
                d=$(dyn_ms "$MD/$m.r$r.$ex.dyn" 1 2)
                o=$(ort_ms "$MD/$m.onnx" 1 2)
                note_fail "$d" "$o"
                printf '%-9s %5s %7s %11s %11s %11s %11s %7s %8s\n' "$m" "${r}x" "$ex" "$d" \
                    "$(ips "$d" 1)" "$o" "$(ips "$o" 1)" "$(ratio "$d" "$o")" \
                    "$(ratio "$d" "${DENSE_MS[$m.1.2]:-}")"
            done
        done
    done
fi

# ---- 3. a busy machine ----
if [[ " $SECTIONS " == *" busy "* ]] && [[ " $OK_MODELS " == *" resnet18 "* ]]; then
    echo
    echo "3. busy machine: ResNet-18 dense, batch 1, 2 threads, quiet then with one CPU-bound process"
    echo "   (load before $(load))"
    qd=$(dyn_ms "$MD/resnet18.dense.dyn" 1 2)
    qo=$(ort_ms "$MD/resnet18.onnx" 1 2)
    sh -c 'while :; do :; done' &
    SPIN=$!
    bd=$(dyn_ms "$MD/resnet18.dense.dyn" 1 2)
    bo=$(ort_ms "$MD/resnet18.onnx" 1 2)
    kill "$SPIN"
    wait "$SPIN" 2>/dev/null || true
    SPIN=""
    note_fail "$qd" "$qo" "$bd" "$bo"
    printf '%-6s %10s %10s %11s\n' engine quiet_ms busy_ms busy/quiet
    printf '%-6s %10s %10s %11s\n' dynd "$qd" "$bd" "$(ratio "$qd" "$bd")"
    printf '%-6s %10s %10s %11s\n' ORT "$qo" "$bo" "$(ratio "$qo" "$bo")"
    echo "   busy/quiet: ms busy / ms quiet (1 = no slowdown); dynd/ORT images/s busy: $(ratio "$bd" "$bo")"
fi

echo
echo "bench_ort: $(($(date +%s) - START)) s in all (load $(load))"
[ "$FAILED" = 0 ] || { echo "bench_ort: some points failed (cells 'fail')"; exit 1; }
