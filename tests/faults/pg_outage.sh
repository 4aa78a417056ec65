#!/usr/bin/env bash
# pg_outage.sh [BUILD] [SECONDS]: PostgreSQL stops answering for SECONDS (default 10) while two
# replicas (jobs_backend = postgres, jobs_lease_s 3, models and job files in s3rver) run a
# fine-tune and a conversion: its processes are frozen with SIGSTOP, as a network partition looks
# to the replicas (queries neither fail nor answer). Each holder must stop its job itself once its
# last renewal is jobs_lease_s old (self-fencing), and once the database answers again the jobs
# must be claimed and finished — the fine-tune from its last checkpoint in the store — with no
# job lost and no job running on two replicas at once (each replica's log shows it stopped
# before the next start). Prints the delays.
source "$(dirname "$0")/../integration/lib.sh"
OUTAGE=${2:-10}
echo "PostgreSQL frozen for $OUTAGE s under running jobs (two replicas, jobs_lease_s 3)"
source "$HERE/cluster_lib.sh"
pg_signal() { # pg_signal STOP|CONT: the postmaster and its children
    local pid
    pid=$(head -1 "$PGH_DIR/data/postmaster.pid")
    pkill "-$1" -P "$pid"; kill "-$1" "$pid"
}
# Seconds since the epoch of the first log line of replica $1 matching $2 (after line $3).
log_time() {
    logs "$1" | grep -F -- "$2" | head -1 |
        $PY -c 'import json,sys,datetime
l=sys.stdin.readline()
print(datetime.datetime.strptime(json.loads(l)["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp() if l else "")'
}
start_s3
replica A 3
replica B 3
convert_upload "$A_URL" lenet_base 50 # the fine-tune's base model, published to the store
check "the base model converts" until_true 60 eval 'state_is "$A_URL" "$ID" succeeded'
check "A serves it" until_true 20 classifies "$A_URL" lenet_base
submit "$A_URL" /v1/finetunes -H 'Content-Type: application/json' \
    -d '{"model": "lenet_base", "data": "mnist", "epochs": 6, "limit": 20000, "val": 500, "output": "ft_out"}'
F=$ID
convert_upload "$B_URL" conv_out 60000
C=$ID
check "the fine-tune runs on A" until_true 60 eval 'held_by "$A_URL" "$F" A && state_is "$A_URL" "$F" running'
check "the conversion runs on B" until_true 60 eval 'held_by "$B_URL" "$C" B && state_is "$B_URL" "$C" running'
check "A's fine-tune has a checkpoint" until_true 120 eval '[ "$(field "$A_URL" "$F" "len(j.get(\"history\") or [])")" -ge 1 ]'
T0=$(now)
pg_signal STOP
log "PostgreSQL frozen"
check "A stops its fine-tune (self-fencing)" until_true 30 eval 'logs A | grep -q "lease not renewed for jobs_lease_s.*\"job\":\"$F\""'
FENCE_A=$(since "$T0")
check "B stops its conversion (self-fencing)" until_true 30 eval 'logs B | grep -q "lease not renewed for jobs_lease_s.*\"job\":\"$C\""'
FENCE_B=$(since "$T0")
log "self-fenced after ${FENCE_A} s (A) and ${FENCE_B} s (B)"
sleep "$($PY -c 'import sys; print("%.2f" % max(0.0, float(sys.argv[1]) - float(sys.argv[2])))' "$OUTAGE" "$(since "$T0")")"
pg_signal CONT
T1=$(now)
OUT_S=$($PY -c "import sys; print('%.1f' % (float(sys.argv[1]) - float(sys.argv[2])))" "$T1" "$T0")
log "PostgreSQL answering again after ${OUT_S} s"
both_ended() { ended "$A_URL" "$F" && ended "$A_URL" "$C"; }
check "both jobs end" until_true 300 both_ended
DONE_S=$(since "$T1")
check "the fine-tune succeeded" state_is "$B_URL" "$F" succeeded
check "the conversion succeeded" state_is "$A_URL" "$C" succeeded
RF=$(field "$A_URL" "$F" '(j.get("result") or {}).get("resumed_from", 0)')
check "the fine-tune continued from its checkpoint (resumed_from $RF >= 1)" [ "${RF:-0}" -ge 1 ] 2>/dev/null
check "the fine-tune's history has its 6 epochs" [ "$(field "$A_URL" "$F" 'len(j.get("history") or [])')" = 6 ]
SF=$(starts "$F") SC=$(starts "$C")
check "each job started twice in all (before and after the outage): $SF, $SC" [ "$SF:$SC" = 2:2 ]
# never on two replicas at once: the second start comes after the first holder stopped
for pair in "$F:A" "$C:B"; do
    id=${pair%:*} r=${pair#*:}
    stop_t=$(log_time "$r" "\"msg\":\"job taken over by another replica; stopped here\",\"job\":\"$id\"")
    start2=$({ logs A; logs B; } | grep -F "\"msg\":\"job started\",\"job\":\"$id\"" | sed -n 2p |
        $PY -c 'import json,sys,datetime
l=sys.stdin.readline()
print(datetime.datetime.strptime(json.loads(l)["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp() if l else "")')
    check "$id: the first holder ($r) stopped before the second start" \
        $PY -c 'import sys; sys.exit(not (sys.argv[1] and sys.argv[2] and float(sys.argv[1]) <= float(sys.argv[2])))' "$stop_t" "$start2"
done
log "both jobs finished ${DONE_S} s after the database came back (fine-tune resumed from epoch $RF)"
check "the fine-tuned model is served by A" until_true 20 classifies "$A_URL" ft_out
check "and by B" until_true 20 classifies "$B_URL" ft_out
stop_replica A
stop_replica B
if [ "$FAILS" -ne 0 ]; then
    for r in A B; do echo "  $r's log tail:"; logs $r | tail -n 15 | sed 's/^/    /'; done
fi
finish
