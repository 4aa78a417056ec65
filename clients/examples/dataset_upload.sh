#!/usr/bin/env bash
# Upload a data set for jobs (calib, eval, data): a zip or tar(.gz) of PNG / JPEG images as
# <class>/<img>, train|test/<class>/<img>, or images alone (unlabeled); then list the sets.
#   DYND_URL=... DYND_TOKEN=... ./dataset_upload.sh NAME images.zip
set -euo pipefail
URL=${DYND_URL:-http://127.0.0.1:8080}
AUTH=(); [ -n "${DYND_TOKEN:-}" ] && AUTH=(-H "Authorization: Bearer $DYND_TOKEN")
NAME=${1:?usage: dataset_upload.sh NAME ARCHIVE}
ARCHIVE=${2:?usage: dataset_upload.sh NAME ARCHIVE}
curl -sS --fail-with-body "${AUTH[@]}" -T "$ARCHIVE" "$URL/v1/datasets/$NAME?overwrite=true"; echo
curl -sS --fail-with-body "${AUTH[@]}" "$URL/v1/datasets"; echo
