#!/usr/bin/env bash
# Job records are kept within jobs_keep (issue 11: a long-running dynd must not grow with every
# job it ever ran): finished records beyond it, oldest first, leave memory (GET answers 404, the
# list drops them) and state_dir; interrupted ones stay; a restart with a lower jobs_keep prunes
# what is already on disk.
source "$(dirname "$0")/lib.sh"
echo "job retention: jobs_keep bounds the finished job records"
mkdir -p "$T/models" "$T/state"
cp "$(model_path)" "$T/models/mnist.dyn"
A='Authorization: Bearer tok'; J='Content-Type: application/json'
start_dynd --auth-tokens tok --jobs-keep 3
submit() { # a conversion of a model that is DyN already: it ends at once
    req POST /v1/conversions -H "$A" -H "$J" -d '{"model": "mnist", "output": "k'"$1"'", "force_publish": true}'
    json_get 'j["id"]'
}
wait_done() {
    local t0=$SECONDS st
    while :; do
        req GET "/v1/jobs/$1" -H "$A"; st=$(json_get 'j["state"]' || echo "?")
        case "$st" in queued|running) ;; *) echo "$st"; return;; esac
        [ $((SECONDS - t0)) -lt 60 ] || { echo "$st"; return; }
        sleep 0.1
    done
}
IDS=()
for i in 1 2 3 4 5; do
    id=$(submit "$i"); IDS+=("$id")
    st=$(wait_done "$id")
    check "job $i ($id) succeeded ($st)" [ "$st" = succeeded ]
done
req GET /v1/jobs -H "$A"
check "the list holds the newest 3: $(json_get '[x["id"] for x in j["jobs"]]')" \
    [ "$(json_get '[x["id"] for x in j["jobs"]]')" = "['${IDS[4]}', '${IDS[3]}', '${IDS[2]}']" ]
for i in 0 1; do
    req GET "/v1/jobs/${IDS[$i]}" -H "$A"; expect_error 404 job_not_found "the oldest record $((i + 1)) is gone"
    check "its directory is gone" [ ! -e "$T/state/jobs/${IDS[$i]}" ]
done
req GET "/v1/jobs/${IDS[2]}" -H "$A"
check "a kept record is served" [ "$STATUS:$(json_get 'j["state"]')" = 200:succeeded ]
check "the models the jobs made stay" [ -e "$T/models/k1.dyn" ] && [ -e "$T/models/k5.dyn" ]

# an interrupted record (a job whose holder is gone) is not pruned: it may be resumed
mkdir -p "$T/state/jobs/conv-00000000abcd"
cat > "$T/state/jobs/conv-00000000abcd/job.json" <<'JSON'
{"id": "conv-00000000abcd", "kind": "conversion", "state": "running", "created_at": "2020-01-01T00:00:00.000Z", "started_at": "2020-01-01T00:00:01.000Z", "finished_at": null, "attempts": 1, "options": {"model": "mnist", "output": "old"}, "progress": 0.5, "phase": "fit"}
JSON
stop_dynd
start_dynd --auth-tokens tok --jobs-keep 1
req GET /v1/jobs -H "$A"
check "a restart with jobs_keep 1 prunes on disk: $(json_get '[(x["id"], x["state"]) for x in j["jobs"]]')" \
    [ "$(json_get 'sorted((x["id"], x["state"]) for x in j["jobs"])')" = "[('conv-00000000abcd', 'interrupted'), ('${IDS[4]}', 'succeeded')]" ]
check "pruned directories gone" [ ! -e "$T/state/jobs/${IDS[2]}" ] && [ ! -e "$T/state/jobs/${IDS[3]}" ]
# a cancel of a queued job is a finished job too: it pushes the oldest out
req POST /v1/finetunes -H "$A" -H "$J" -d '{"model": "mnist", "data": "mnist", "epochs": 200, "limit": 2000, "val": 200, "output": "never"}'
R=$(json_get 'j["id"]')
req POST /v1/finetunes -H "$A" -H "$J" -d '{"model": "mnist", "data": "mnist", "epochs": 200, "limit": 2000, "val": 200, "output": "never"}'
Q=$(json_get 'j["id"]')
req DELETE "/v1/jobs/$Q" -H "$A"
check "queued job cancelled" [ "$STATUS:$(json_get 'j["state"]')" = 200:cancelled ]
req GET "/v1/jobs/${IDS[4]}" -H "$A"; expect_error 404 job_not_found "the older finished record made room for the cancelled one"
req DELETE "/v1/jobs/$R" -H "$A"
[ "$(wait_done "$R")" = cancelled ] || fail "the running fine-tune did not end cancelled"
req GET "/v1/jobs/$Q" -H "$A"; expect_error 404 job_not_found "then the cancelled running job replaced it"
req GET "/v1/jobs/conv-00000000abcd" -H "$A"
check "the interrupted record stays through it all" [ "$STATUS:$(json_get 'j["state"]')" = 200:interrupted ]
stop_dynd
finish
