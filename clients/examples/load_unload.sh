#!/usr/bin/env bash
# Model repository: unload a model (it stops serving; its file stays), show the index, load it
# again (a new or replaced file is picked up the same way).
#   DYND_URL=... DYND_TOKEN=... ./load_unload.sh MODEL
set -euo pipefail
URL=${DYND_URL:-http://127.0.0.1:8080}
AUTH=(); [ -n "${DYND_TOKEN:-}" ] && AUTH=(-H "Authorization: Bearer $DYND_TOKEN")
MODEL=${1:?usage: load_unload.sh MODEL}
curl -sS --fail-with-body "${AUTH[@]}" -X POST "$URL/v2/repository/models/$MODEL/unload"; echo
curl -sS --fail-with-body "${AUTH[@]}" -X POST "$URL/v2/repository/index"; echo
curl -sS --fail-with-body "${AUTH[@]}" -X POST "$URL/v2/repository/models/$MODEL/load"; echo
curl -sS --fail-with-body "${AUTH[@]}" "$URL/v2/models/$MODEL/ready"; echo
