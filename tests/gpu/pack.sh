#!/usr/bin/env bash
# tests/gpu/pack.sh — prepares a GPU machine that cannot install anything: builds the CUDA tree
# here (make CUDA=1: the GPU programs, dyn, dynd), and packs into gpu-pack/ (ignored by git)
#   bin.tar.xz   build-cuda/ programs (gpu/test_*, gpu/bench_*, tests/test_cuda_api, dyn, dynd)
#                and every shared library they load that is not the C runtime or CUDA's
#                (libdnnl, libopenblas, libjansson, libmicrohttpd, ...: ldd's closure), in lib/;
#   mnist.tar.xz data/mnist (the training-step, MNIST-epoch and dynd checks need it);
#   models.tar.xz models/mnist.dyn when present (dynd's check trains one otherwise).
# On the GPU machine (its own CUDA runtime and cuBLAS: the toolkit's, same major version as
# the nvcc used here), from the repository root with gpu-pack/ carried along:
#   tests/gpu/run.sh --prebuilt gpu-pack
# which unpacks them, points LD_LIBRARY_PATH at lib/ and runs every check without building.
# Prints the sizes (the device tool carries at most 64 MiB with the working tree).
set -euo pipefail
cd "$(dirname "$0")/../.."
CUDA_ARCH=${CUDA_ARCH:-90}
make -j"$(nproc)" CUDA=1 CUDA_ARCH="$CUDA_ARCH" gpu-bins build-cuda/tests/test_cuda_api build-cuda/dyn \
    build-cuda/dynd >/dev/null
rm -rf gpu-pack && mkdir -p gpu-pack/stage/lib
grep -qx '/gpu-pack/' .git/info/exclude 2>/dev/null || echo '/gpu-pack/' >> .git/info/exclude
progs=(build-cuda/gpu/test_* build-cuda/gpu/bench_* build-cuda/tests/test_cuda_api build-cuda/dyn
       build-cuda/dynd)
tar -cf gpu-pack/stage/progs.tar "${progs[@]}"
# The libraries to carry: not glibc's, the compiler runtime's or CUDA's (the machine has its own).
ldd "${progs[@]}" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
    grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt)\.so' |
    while read -r l; do cp -L "$l" gpu-pack/stage/lib/; done
tar -C gpu-pack/stage -cJf gpu-pack/bin.tar.xz progs.tar lib
rm -rf gpu-pack/stage
tar -cJf gpu-pack/mnist.tar.xz data/mnist
[ -f models/mnist.dyn ] && tar -cJf gpu-pack/models.tar.xz models/mnist.dyn
du -h gpu-pack/*
echo "gpu-pack: $(du -sh gpu-pack | cut -f1) (with the working tree: at most 64 MiB per device call)"
