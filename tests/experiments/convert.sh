#!/bin/bash
# convert.sh — reruns the experiments of tests/experiments/CONVERT.md (issue 3: dyn convert /
# dyn finetune). Everything it writes goes to $OUT (default models/convert/, git-ignored).
#
#   tests/experiments/convert.sh [DYN] [SECTION...]     sections: init a b c vit (default all)
#
# Runs on the CPU, one thread per command (the development machine has 2 cores shared with
# other work); about 15 minutes for a, b and init, and a few minutes per model for c.
set -euo pipefail
DYN=${1:-build/dyn}
shift || true
SECTIONS=${*:-init a b c vit}
OUT=${OUT:-models/convert}
PY=/usr/bin/python3
T="--threads 1"
# conversions: report agreement, never refuse (the issue-9 floor), classifier as before (converted)
TC="$T --min-agreement 0 --no-keep-last"
mkdir -p "$OUT"
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
say() { echo; echo "### $*"; }

# The torch LeNet-5 models (a, b): 4 epochs on MNIST, 6 on Fashion-MNIST, seed 1, exported.
lenets() {
    [ -f "$OUT/lenet_torch.onnx" ] ||
        $PY tests/experiments/train_lenet_torch.py data/mnist "$OUT/lenet_torch.onnx" --epochs 4 --seed 1
    [ -f "$OUT/f_lenet_torch.onnx" ] ||
        $PY tests/experiments/train_lenet_torch.py data/fashion "$OUT/f_lenet_torch.onnx" --epochs 6 \
            --seed 1 --fashion
}

if has init; then
    say "init: one layer's fit (fc1 / conv2 of the engine's dense LeNet-5), options compared"
    BUILD=$(dirname "$DYN")
    cc -std=c17 -D_GNU_SOURCE -O2 -fopenmp -Iengine -I. -I"$BUILD/gen" \
        $(pkg-config --cflags jansson) -I/usr/include/x86_64-linux-gnu/openblas-openmp \
        tests/experiments/fit_sweep.c -o "$OUT/fit_sweep" "$BUILD/libdyn.a" -ljansson -lz -lpng16 \
        -L/usr/lib/x86_64-linux-gnu/openblas-openmp -Wl,-rpath,/usr/lib/x86_64-linux-gnu/openblas-openmp \
        -lopenblas -lprotobuf-c -ljpeg -lm -lpthread
    M=tests/experiments/runs/lenet-dense-s1.dyn
    export OMP_NUM_THREADS=1
    # MODEL LAYER RATIO STEPS INIT RESTARTS LR Q [KERNEL]
    for init in random lsq svd; do "$OUT/fit_sweep" $M fc1 4 1000 $init 1 0.02 1; done
    for lr in 0.01 0.05 0.1 0.2; do "$OUT/fit_sweep" $M fc1 4 2000 svd 1 $lr 1; done
    "$OUT/fit_sweep" $M fc1 4 2000 random 4 0.1 1
    for q in 2 4; do "$OUT/fit_sweep" $M fc1 4 2000 svd 1 0.1 $q; done
    for k in l2 inv; do "$OUT/fit_sweep" $M fc1 4 1000 svd 1 0.05 1 $k; done
    for init in random svd; do "$OUT/fit_sweep" $M conv2 4 2000 $init 1 0.1 1; done
    for r in 8 10; do "$OUT/fit_sweep" $M fc1 $r 2000 svd 1 0.1 1; done
    unset OMP_NUM_THREADS
fi

if has a; then
    lenets
    say "a: torch LeNet-5 (MNIST) -> ONNX -> dyn convert (choices on the validation split)"
    for st in 2000 6000; do
        $DYN convert "$OUT/lenet_torch.onnx" "$OUT/a_lenet_s$st.dyn" --preprocess-from mnist \
            --keep-last --ratio 4.4 --steps $st --fit activation --calib mnist --calib-n 1024 \
            --eval mnist --eval-split val --report "$OUT/a_lenet_s$st.json" $T --min-agreement 0
    done
    say "a: data-free (fixed) at the same budget, validation split"
    $DYN convert "$OUT/lenet_torch.onnx" "$OUT/a_lenet_fixed.dyn" --preprocess-from mnist \
        --keep-last --ratio 4.4 --steps 6000 --fit fixed --eval mnist --eval-split val $T --min-agreement 0
    say "a: the chosen conversion (6000 steps), test set once"
    cp "$OUT/a_lenet_s6000.dyn" "$OUT/lenet_torch_dyn.dyn"
    $DYN eval "$OUT/lenet_torch_dyn.dyn" --data mnist
    $DYN inspect "$OUT/lenet_torch_dyn.dyn"
    say "a: fine-tuning (12 epochs each, best epoch on the validation split, test once)"
    for mode in native unfixed; do
        rm -rf "$OUT/ck_$mode"
        $DYN finetune "$OUT/lenet_torch_dyn.dyn" --data mnist --mode $mode --epochs 12 --lr 5e-4 \
            --no-augment --fit-steps 1000 --out "$OUT/a_ft_$mode.dyn" --ckpt "$OUT/ck_$mode" $T --json
    done
fi

if has b; then
    lenets
    say "b: DyN (data-free fit) vs truncated SVD at equal stored floats, per layer"
    for m in lenet_torch f_lenet_torch; do
        pp=mnist
        [ $m = f_lenet_torch ] && pp=fashion
        for r in 2 4 8; do
            echo "-- $m, ratio $r"
            $DYN convert "$OUT/$m.onnx" "$OUT/b_${m}_r$r.dyn" --preprocess-from $pp --ratio $r \
                --fit fixed $TC --report "$OUT/b_${m}_r$r.json"
        done
    done
    for m in lenet-dense-s1 f-lenet-dense-s1; do
        echo "-- engine-trained $m, ratio 4"
        $DYN convert tests/experiments/runs/$m.dyn "$OUT/b_$m.dyn" --ratio 4 --fit fixed $TC
    done
fi

if has c; then
    say "c: torchvision architectures with random weights (structure only), 10 fitting steps"
    for m in resnet18 resnet50 densenet121; do
        [ -f "$OUT/$m.onnx" ] || $PY tests/experiments/export_torchvision.py "$OUT" $m
        /usr/bin/time -f "$m: %e s wall, %M KB max RSS" $DYN convert "$OUT/$m.onnx" "$OUT/c_$m.dyn" \
            --ratio 4 --steps 10 $TC --report "$OUT/c_$m.json" | tail -3
    done
    echo "-- ResNet-50 at the paper's ResNet-152 float ratio (9.3x)"
    /usr/bin/time -f "resnet50 r9.3: %e s wall, %M KB max RSS" $DYN convert "$OUT/resnet50.onnx" \
        "$OUT/c_resnet50_r9.dyn" --ratio 9.3 --steps 10 $TC --report "$OUT/c_resnet50_r9.json" | tail -3
fi

if has vit; then
    if [ -f tests/fixtures/export_vit_s.py ]; then
        say "vit: ViT-S (random weights) through the transformer importer"
        V="$OUT/vit/vit_s_timm_op17.onnx"
        mkdir -p "$OUT/vit"
        [ -f "$V" ] || $PY tests/fixtures/export_vit_s.py "$OUT/vit" --opsets 17 --attn timm || true
        [ -f "$V" ] && /usr/bin/time -f "vit_s: %e s wall, %M KB max RSS" \
            $DYN convert "$V" "$OUT/c_vit_s.dyn" --ratio 4 --steps 10 $TC \
            --report "$OUT/c_vit_s.json" | tail -3 || true
    fi
fi

if has c || has vit; then
    say "summary of the structure-scale reports"
    $PY tests/experiments/convert_summary.py "$OUT"
fi
