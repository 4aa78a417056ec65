#!/usr/bin/env bash
# Fine-tune a served model on a data set of data_dir (mnist, fashion, or one uploaded with
# dataset_upload.sh), then watch the job (watch_job.sh). More options: `dyn options finetune`.
#   DYND_URL=... DYND_TOKEN=... ./finetune.sh MODEL DATASET [OUTPUT] [EPOCHS] [EXTRA_JSON]
#   e.g. ./finetune.sh mnist mnist mnist_ft 3 '"limit": 5000, "batch": 128'
set -euo pipefail
URL=${DYND_URL:-http://127.0.0.1:8080}
AUTH=(); [ -n "${DYND_TOKEN:-}" ] && AUTH=(-H "Authorization: Bearer $DYND_TOKEN")
MODEL=${1:?usage: finetune.sh MODEL DATASET [OUTPUT] [EPOCHS] [EXTRA_JSON]}
DATA=${2:?usage: finetune.sh MODEL DATASET [OUTPUT] [EPOCHS] [EXTRA_JSON]}
OUT=${3:-$MODEL-ft}
EPOCHS=${4:-3}
EXTRA=${5:+, $5}
REC=$(curl -sS --fail-with-body "${AUTH[@]}" -H 'Content-Type: application/json' \
           -d "{\"model\": \"$MODEL\", \"data\": \"$DATA\", \"output\": \"$OUT\", \"epochs\": $EPOCHS$EXTRA}" \
           "$URL/v1/finetunes") || { rc=$?; echo "$REC" >&2; exit $rc; }
ID=$(grep -o '"id":"[^"]*"' <<< "$REC" | head -1 | cut -d'"' -f4)
echo "submitted $ID"
exec "$(dirname "$0")/watch_job.sh" "$ID"
