#!/usr/bin/env bash
# install-cuda.sh — the CUDA part of Dockerfile.cuda: NVIDIA's apt repository for Debian 12 (the
# cuda-keyring package given as $1), then for `devel` the compiler (nvcc) and the CUDA runtime
# and cuBLAS headers, for `runtime` only the CUDA runtime and cuBLAS libraries — the packages
# NVIDIA's nvidia/cuda images are made of, on the Debian 12 the programs are built and tested on.
#   install-cuda.sh CUDA-KEYRING.deb devel|runtime      ($CUDA: the version, e.g. 12-6)
set -euo pipefail
keyring=${1:?usage: install-cuda.sh CUDA-KEYRING.deb devel|runtime}
kind=${2:?usage: install-cuda.sh CUDA-KEYRING.deb devel|runtime}
v=${CUDA:-12-6}
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates
dpkg -i "$keyring"
apt-get update -qq
case "$kind" in
devel) pkgs=(cuda-nvcc-"$v" cuda-cudart-dev-"$v" libcublas-dev-"$v") ;;
runtime) pkgs=(cuda-cudart-"$v" libcublas-"$v") ;;
*) echo "install-cuda: devel or runtime, not '$kind'" >&2; exit 2 ;;
esac
apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
rm -rf /var/lib/apt/lists/*
