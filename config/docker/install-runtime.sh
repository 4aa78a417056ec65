#!/usr/bin/env bash
# install-runtime.sh — the runtime stage of the Docker images (also run by tests/docker_smoke.sh):
# installs the packages listed in $1 (the runtime-packages.txt install-build.sh derived from the
# built programs) plus curl for the HEALTHCHECK, then creates the unprivileged user `dynd`
# (uid/gid 10001) and its directories /var/lib/dynd/{models,state,data} (the image's volumes).
set -euo pipefail
list=${1:?usage: install-runtime.sh RUNTIME-PACKAGES.txt}
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2046
apt-get install -y -qq --no-install-recommends curl \
    $(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$list")
rm -rf /var/lib/apt/lists/*
groupadd --system --gid 10001 dynd
useradd --system --uid 10001 --gid dynd --home-dir /var/lib/dynd --no-create-home \
    --shell /usr/sbin/nologin dynd
install -d -o dynd -g dynd -m 0755 /var/lib/dynd /var/lib/dynd/models /var/lib/dynd/state \
    /var/lib/dynd/data
