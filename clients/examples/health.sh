#!/usr/bin/env bash
# Liveness, readiness and the server's metadata (what a load balancer or orchestrator probes):
# exits non-zero when dynd is not ready.
#   DYND_URL=http://127.0.0.1:8080 ./health.sh
set -euo pipefail
URL=${DYND_URL:-http://127.0.0.1:8080}
curl -sS --fail-with-body "$URL/v2/health/live"; echo
curl -sS --fail-with-body "$URL/v2/health/ready"; echo
curl -sS --fail-with-body "$URL/v2"; echo
