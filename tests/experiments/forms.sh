#!/bin/sh
# forms.sh — CONVERT.md "Data-free forms vs truncated SVD vs int8/int4": trains the three models
# and runs tests/experiments/forms_table.c on each (about 10 minutes per model on one thread).
# usage: tests/experiments/forms.sh [OUTDIR=build/forms]   (from the repository root, after make)
set -e
OUT=${1:-build/forms}
PY=/usr/bin/python3
mkdir -p "$OUT"
make build/forms_table build/dyn
[ -f "$OUT/lenet-dense.dyn" ] ||
    build/dyn train --arch lenet5 --epochs 3 --data mnist --threads 1 --out "$OUT/lenet-dense.dyn"
[ -f "$OUT/lenet-mnist.onnx" ] ||
    $PY tests/experiments/train_lenet_torch.py data/mnist "$OUT/lenet-mnist.onnx" --epochs 4
[ -f "$OUT/lenet-fashion.onnx" ] ||
    $PY tests/experiments/train_lenet_torch.py data/fashion "$OUT/lenet-fashion.onnx" --epochs 3 \
        --fashion
export OMP_NUM_THREADS=1
# ratios, l1 steps, RieM steps, restarts, D, lr
for m in "lenet-dense.dyn mnist" "lenet-mnist.onnx mnist" "lenet-fashion.onnx fashion"; do
    set -- $m
    build/forms_table "$OUT/$1" "$2" 4,8 2000 4000 1 8 0.03 | tee "$OUT/forms_$1.txt"
done
