#!/usr/bin/env bash
# Open Inference Protocol with the binary tensor data extension (what Triton's clients send):
# the body is a JSON header, then the tensor's raw bytes; Inference-Header-Content-Length says
# where the header ends. Here raw 8-bit pixels as UINT8; the outputs come back as JSON.
#   DYND_URL=http://127.0.0.1:8080 ./infer_binary.sh digit.u8 [MODEL] [SHAPE]   (mnist, 1,1,28,28)
set -euo pipefail
URL=${DYND_URL:-http://127.0.0.1:8080}
AUTH=(); [ -n "${DYND_TOKEN:-}" ] && AUTH=(-H "Authorization: Bearer $DYND_TOKEN")
RAW=${1:?usage: infer_binary.sh PIXELS.u8 [MODEL] [SHAPE]}
MODEL=${2:-mnist}
SHAPE=${3:-1,1,28,28}
BYTES=$(wc -c < "$RAW")
H='{"inputs":[{"name":"input","shape":['$SHAPE'],"datatype":"UINT8","parameters":{"binary_data_size":'$BYTES'}}],"outputs":[{"name":"probabilities","parameters":{"classification":3}}]}'
{ printf '%s' "$H"; cat "$RAW"; } |
    curl -sS --fail-with-body "${AUTH[@]}" -H 'Content-Type: application/octet-stream' \
         -H "Inference-Header-Content-Length: ${#H}" --data-binary @- "$URL/v2/models/$MODEL/infer"
echo
