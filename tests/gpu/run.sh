#!/usr/bin/env bash
# tests/gpu/run.sh — every GPU check in one run, for a machine with an NVIDIA GPU (H100 / H200):
# prints the device, builds the CUDA backend (make CUDA=1, all cores, CUDA_ARCH from the GPU's
# compute capability unless set), then runs each GPU test program and the CUDA API unit test,
# one PASS/FAIL line per program (the programs print one line per check), then, when all
# passed, the first timings (bench_native: native l1 vs cuBLAS; not a check). A few minutes.
# Needs the Debian build dependencies (`make deps`, or tests/deps.sh) and the CUDA Toolkit
# (CUDA_HOME or /usr/local/cuda). Exit status 0 when everything passed.
#   tests/gpu/run.sh            # from the repository root or anywhere
set -uo pipefail
cd "$(dirname "$0")/../.."
t0=$(date +%s)

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

missing=
for p in jansson libprotobuf-c check libpng zlib; do pkg-config --exists "$p" || missing="$missing $p"; done
[ -e /usr/include/oneapi/dnnl/dnnl.h ] || missing="$missing libdnnl-dev"
if [ -n "$missing" ]; then
    echo "BUILD NOT POSSIBLE: missing build dependencies:$missing (install them: make deps)"
    exit 1
fi

echo "== build (make CUDA=1 CUDA_ARCH=$CUDA_ARCH)"
mkdir -p build-cuda
if ! make -j"$(nproc)" CUDA=1 gpu-bins build-cuda/tests/test_cuda_api >build-cuda/gpu-build.log 2>&1; then
    tail -40 build-cuda/gpu-build.log
    echo "BUILD FAILED (log: build-cuda/gpu-build.log)"
    exit 1
fi
echo "built in $(( $(date +%s) - t0 )) s"

fail=0
summary=()
for t in build-cuda/gpu/test_device build-cuda/tests/test_cuda_api build-cuda/gpu/test_materialize \
         build-cuda/gpu/test_linear build-cuda/gpu/test_native build-cuda/gpu/test_ops_dyn \
         build-cuda/gpu/test_fit; do
    echo "== $t"
    s=$(date +%s)
    if timeout 300 "$t"; then r=PASS; else r=FAIL; fail=1; fi
    summary+=("$r $t ($(( $(date +%s) - s )) s)")
    if [ "$t" = build-cuda/gpu/test_device ] && [ $r = FAIL ]; then
        echo "no usable GPU: the other checks were not run"
        break
    fi
done
if [ $fail -eq 0 ]; then
    echo "== timings (build-cuda/gpu/bench_native: printed, not judged)"
    timeout 300 build-cuda/gpu/bench_native || echo "bench_native did not finish (not a check)"
fi
echo "== summary"
printf '%s\n' "${summary[@]}"
echo "total $(( $(date +%s) - t0 )) s"
if [ $fail -ne 0 ]; then echo "GPU CHECKS FAILED"; exit 1; fi
echo "all GPU checks passed"
