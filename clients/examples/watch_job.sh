#!/usr/bin/env bash
# Watch a job (conversion or fine-tune) until it ends: one line per poll with its state, phase,
# progress and ETA; then its record. Exit 0 when it succeeded, 1 otherwise.
#   DYND_URL=http://127.0.0.1:8080 DYND_TOKEN=... ./watch_job.sh JOB_ID
set -euo pipefail
URL=${DYND_URL:-http://127.0.0.1:8080}
AUTH=(); [ -n "${DYND_TOKEN:-}" ] && AUTH=(-H "Authorization: Bearer $DYND_TOKEN")
ID=${1:?usage: watch_job.sh JOB_ID}
field() { grep -o "\"$1\":[^,}]*" <<< "$REC" | head -1 | cut -d: -f2- | tr -d '"'; }
while :; do
    REC=$(curl -sS --fail-with-body "${AUTH[@]}" "$URL/v1/jobs/$ID") || { rc=$?; echo "$REC" >&2; exit $rc; }
    STATE=$(field state)
    echo "$ID $STATE phase=$(field phase) progress=$(field progress) eta_s=$(field eta_s)"
    case "$STATE" in queued|running) sleep "${WATCH_INTERVAL:-1}";; *) break;; esac
done
echo "$REC"
[ "$STATE" = succeeded ]
