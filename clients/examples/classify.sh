#!/usr/bin/env bash
# Classify a PNG or JPEG image: its top 3 labels and scores.
#   DYND_URL=http://127.0.0.1:8080 ./classify.sh digit.png [MODEL]     (MODEL: mnist)
set -euo pipefail
URL=${DYND_URL:-http://127.0.0.1:8080}
AUTH=(); [ -n "${DYND_TOKEN:-}" ] && AUTH=(-H "Authorization: Bearer $DYND_TOKEN")
IMAGE=${1:?usage: classify.sh IMAGE [MODEL]}
MODEL=${2:-mnist}
TYPE=image/png
case "$IMAGE" in *.jpg|*.jpeg|*.JPG|*.JPEG) TYPE=image/jpeg;; esac
curl -sS --fail-with-body "${AUTH[@]}" -H "Content-Type: $TYPE" --data-binary "@$IMAGE" \
     "$URL/v1/models/$MODEL/classify?top_k=3"
echo
