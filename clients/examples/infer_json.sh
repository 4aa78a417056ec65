#!/usr/bin/env bash
# Open Inference Protocol (KServe v2) with a JSON tensor: raw 8-bit pixels (e.g. the 784 bytes
# of a 28x28 MNIST digit, `make run` writes digit.u8) as a UINT8 tensor; the reply has the
# probabilities as the top-3 "score:index:label" (classification extension) and the logits.
#   DYND_URL=http://127.0.0.1:8080 ./infer_json.sh digit.u8 [MODEL] [SHAPE]   (mnist, 1,1,28,28)
set -euo pipefail
URL=${DYND_URL:-http://127.0.0.1:8080}
AUTH=(); [ -n "${DYND_TOKEN:-}" ] && AUTH=(-H "Authorization: Bearer $DYND_TOKEN")
RAW=${1:?usage: infer_json.sh PIXELS.u8 [MODEL] [SHAPE]}
MODEL=${2:-mnist}
SHAPE=${3:-1,1,28,28}
DATA=$(od -An -v -tu1 "$RAW" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
curl -sS --fail-with-body "${AUTH[@]}" -H 'Content-Type: application/json' "$URL/v2/models/$MODEL/infer" -d @- <<JSON
{"id": "example-1",
 "inputs": [{"name": "input", "shape": [$SHAPE], "datatype": "UINT8", "data": [$DATA]}],
 "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}, {"name": "logits"}]}
JSON
echo
