#!/usr/bin/env bash
# run.sh [BUILD]: the fault suite (make faults). Each script prints its own figures; this runs
# them in turn and fails if any fails. Loopback only; about 6 minutes on 2 cores.
#   jobs_kill9.sh     kill -9 at random points of conversion and fine-tune jobs (20 rounds)
#   disk_full.sh      model_dir and state_dir on full tmpfs mounts
#   model_swap.sh     the served model file truncated / overwritten / replaced under load
#   shutdown_race.sh  SIGTERM under keep-alive load, 100 rounds
#   pg_outage.sh      PostgreSQL frozen 10 s under two replicas' jobs (jobs_backend = postgres)
# (SIGTERM under load with a new connection per request is in tests/integration/test_lifecycle.sh,
# part of make test.)
set -u
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
fail=0
for t in jobs_kill9.sh disk_full.sh model_swap.sh shutdown_race.sh pg_outage.sh; do
    echo "== tests/faults/$t"
    "$HERE/$t" "$BUILD" || fail=1
done
[ $fail = 0 ] && echo "fault suite passed" || { echo "FAULT SUITE FAILED"; exit 1; }
