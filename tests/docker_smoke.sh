#!/usr/bin/env bash
# docker_smoke.sh — `make docker-smoke`: README.md's Docker commands carried out without a Docker
# engine, in debootstrapped Debian 12 roots (the interpreter and its checks: docker_smoke.py).
# Installs debootstrap when missing (apt-get; root).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
    echo "docker-smoke: installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
exec "$PY" tests/docker_smoke.py "$@"
