#!/usr/bin/env bash
# Prometheus metrics (GET /metrics, no token needed): requests by route and status, errors by
# code, models ready, jobs by state. Scrape the same URL from Prometheus.
#   DYND_URL=http://127.0.0.1:8080 ./metrics.sh
set -euo pipefail
URL=${DYND_URL:-http://127.0.0.1:8080}
curl -sS --fail-with-body "$URL/metrics" |
    grep -E '^dynd_(requests_total|errors_total|models_ready|jobs|inflight_requests)[{ ]'
