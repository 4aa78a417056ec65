#!/usr/bin/env bash
# tests/gpu/run.sh — every GPU check in one run, for a machine with an NVIDIA GPU (H100 / H200):
# prints the device, builds the CUDA backend (make CUDA=1, all cores, CUDA_ARCH from the GPU's
# compute capability unless set), then runs each GPU test program and the CUDA API unit test,
# one PASS/FAIL line per program (the programs print one line per check), whole models on the
# GPU against the CPU (test_train: one DyN LeNet-5 training step; an MNIST epoch's accuracy;
# dynd serving over HTTP with device = cuda), then, when all passed, the first timings
# (bench_native: native l1 vs cuBLAS; not a check). A few minutes. Needs data/mnist (make data).
# Needs the Debian build dependencies (`make deps`, or tests/deps.sh) and the CUDA Toolkit
# (CUDA_HOME or /usr/local/cuda). Exit status 0 when everything passed.
#   tests/gpu/run.sh            # from the repository root or anywhere
#   tests/gpu/run.sh --prebuilt gpu-pack   # programs built elsewhere by tests/gpu/pack.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
t0=$(date +%s)
prebuilt=
[ "${1:-}" = --prebuilt ] && prebuilt=${2:?usage: run.sh [--prebuilt DIR]}

echo "== device"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total --format=csv,noheader
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
else
    echo "nvidia-smi not found: no NVIDIA driver here (the tests will say whether CUDA sees a GPU)"
    cap=
fi
export CUDA_ARCH=${CUDA_ARCH:-${cap:-90}}
nvcc=${CUDA_HOME:-/usr/local/cuda}/bin/nvcc
[ -x "$nvcc" ] || nvcc=$(command -v nvcc || true)
[ -n "$nvcc" ] && "$nvcc" --version | tail -1

if [ -n "$prebuilt" ]; then
    echo "== prebuilt programs ($prebuilt, from tests/gpu/pack.sh)"
    tar -C "$prebuilt" -xJf "$PWD/$prebuilt/bin.tar.xz" && tar -xf "$prebuilt/progs.tar" || exit 1
    for f in mnist models; do [ -f "$prebuilt/$f.tar.xz" ] && tar -xJf "$prebuilt/$f.tar.xz"; done
    cudalib=${CUDA_HOME:-/usr/local/cuda}/lib64
    export LD_LIBRARY_PATH="$PWD/$prebuilt/lib:$cudalib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if ldd build-cuda/dyn | grep 'not found'; then echo "PREBUILT PROGRAMS CANNOT LOAD (above)"; exit 1; fi
else
    missing=
    for p in jansson libprotobuf-c check libpng zlib; do pkg-config --exists "$p" || missing="$missing $p"; done
    [ -e /usr/include/oneapi/dnnl/dnnl.h ] || missing="$missing libdnnl-dev"
    if [ -n "$missing" ]; then
        echo "BUILD NOT POSSIBLE: missing build dependencies:$missing (install them: make deps)"
        exit 1
    fi

    echo "== build (make CUDA=1 CUDA_ARCH=$CUDA_ARCH)"
    mkdir -p build-cuda
    if ! make -j"$(nproc)" CUDA=1 gpu-bins build-cuda/tests/test_cuda_api build-cuda/dyn build-cuda/dynd >build-cuda/gpu-build.log 2>&1; then
        tail -40 build-cuda/gpu-build.log
        echo "BUILD FAILED (log: build-cuda/gpu-build.log)"
        exit 1
    fi
    echo "built in $(( $(date +%s) - t0 )) s"
fi

fail=0
summary=()
step() { # step NAME CMD...: one summary line per step
    local name=$1 s r
    shift
    echo "== $name"
    s=$(date +%s)
    if "$@"; then r=PASS; else r=FAIL; fail=1; fi
    summary+=("$r $name ($(( $(date +%s) - s )) s)")
    [ $r = PASS ]
}
# The kernel programs (test_device first: without a GPU nothing else runs), then whole models.
step build-cuda/gpu/test_device timeout 300 build-cuda/gpu/test_device ||
    { echo "no usable GPU: the other checks were not run"; printf '%s\n' "${summary[@]}"; exit 1; }
for t in build-cuda/tests/test_cuda_api build-cuda/gpu/test_*; do
    case $t in */test_device|*/test_train) continue ;; esac
    step "$t" timeout 300 "$t"
done
step build-cuda/gpu/test_train timeout 300 build-cuda/gpu/test_train

# DyN LeNet-5 trained on MNIST, one epoch on the GPU and one on the CPU (2 threads: the CI
# machine's cores): the GPU reaches the CPU's accuracy (within 0.5 points; the runs round
# differently) and the epoch times are printed (bench-gpu records them).
train_compare() {
    [ -f data/mnist/train-images-idx3-ubyte ] || { echo "data/mnist missing (make data, or carry it)"; return 1; }
    local a="--arch lenet5 --dyn --epochs 1 --seed 3 --json"
    build-cuda/dyn train $a --device cuda > build-cuda/train-gpu.json || return 1
    build-cuda/dyn train $a --device cpu --threads 2 > build-cuda/train-cpu.json || return 1
    python3 - build-cuda/train-gpu.json build-cuda/train-cpu.json <<'PY'
import json, sys
g, c = (json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:3])
print("GPU %s: test %.2f%%, %.1f s (layers on the CPU: %d); CPU 2 threads: test %.2f%%, %.1f s; "
      "epoch %.1fx faster" % (g["device"], 100 * g["test_acc"], g["seconds"], g["layers_on_cpu"],
                               100 * c["test_acc"], c["seconds"], c["seconds"] / g["seconds"]))
sys.exit(0 if g["test_acc"] >= c["test_acc"] - 0.005 else 1)
PY
}
step "DyN LeNet-5 on MNIST: GPU vs CPU accuracy" train_compare

# dynd serving the demo model on the GPU: the HTTP inference tests (accuracy over PNG, JPEG and
# v2 tensors, identical scores between them) with device = cuda.
dynd_gpu() {
    [ -f models/mnist.dyn ] || build-cuda/dyn train --arch lenet5 --epochs 2 --out models/mnist.dyn >/dev/null || return 1
    DYND_DEVICE=cuda timeout 600 tests/integration/test_inference.sh build-cuda
}
step "dynd on the GPU: tests/integration/test_inference.sh (DYND_DEVICE=cuda)" dynd_gpu

if [ $fail -eq 0 ]; then
    echo "== timings (build-cuda/gpu/bench_native: printed, not judged)"
    timeout 300 build-cuda/gpu/bench_native || echo "bench_native did not finish (not a check)"
fi
echo "== summary"
printf '%s\n' "${summary[@]}"
echo "total $(( $(date +%s) - t0 )) s"
if [ $fail -ne 0 ]; then echo "GPU CHECKS FAILED"; exit 1; fi
echo "all GPU checks passed"
