#!/usr/bin/env bash
# Convert an ONNX (or .dyn) model into DyN: upload it as the body of POST /v1/conversions with
# the options in the query string (names: `dyn options convert`, api/openapi.yaml), then watch
# the job to its end (watch_job.sh). dynd checks a conversion against the original before it
# publishes it, so give calibration images (calib=DATASET) or force_publish=true.
#   DYND_URL=... DYND_TOKEN=... ./convert.sh model.onnx 'output=mine&calib=digits&target_agreement=0.98'
set -euo pipefail
URL=${DYND_URL:-http://127.0.0.1:8080}
AUTH=(); [ -n "${DYND_TOKEN:-}" ] && AUTH=(-H "Authorization: Bearer $DYND_TOKEN")
MODEL=${1:?usage: convert.sh MODEL.onnx [OPTIONS_QUERY]}
OPTS=${2:-}
REC=$(curl -sS --fail-with-body "${AUTH[@]}" -H 'Content-Type: application/octet-stream' \
           --data-binary "@$MODEL" "$URL/v1/conversions?$OPTS") || { rc=$?; echo "$REC" >&2; exit $rc; }
ID=$(grep -o '"id":"[^"]*"' <<< "$REC" | head -1 | cut -d'"' -f4)
echo "submitted $ID"
exec "$(dirname "$0")/watch_job.sh" "$ID"
