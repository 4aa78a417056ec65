#!/usr/bin/env bash
# dynd model repository: a model published into the directory is served without a restart,
# versions, replacing a model under load never answers "unknown model", unload / load / index
# with a token, a damaged file is refused while the old version keeps serving, SIGHUP.
source "$(dirname "$0")/lib.sh"
echo "repository: hot publish, versions, reload under load, load/unload"
mkdir -p "$T/models" && MODEL=$(model_path) && cp "$MODEL" "$T/models/mnist.dyn"
make_digits 2 "$T/digits"
start_dynd --auth-tokens tok --repository-poll-ms 500
A='Authorization: Bearer tok'
classify() { req POST "/v1/models/$1/classify" -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"; }

# hot publish: written under a temp name then renamed in (what a job does), picked up by the watch
classify fresh; expect_error 404 model_not_found "before publishing"
cp "$MODEL" "$T/models/.fresh.tmp" && mv "$T/models/.fresh.tmp" "$T/models/fresh.dyn"
for i in $(seq 1 60); do classify fresh; [ "$STATUS" = 200 ] && break; sleep 0.1; done
expect_status 200 "a published model is served without a restart"
log "fresh model served after ~$((i * 100)) ms"

# versions: <name>/<v>.dyn; the highest is the default
mkdir -p "$T/models/.v.tmp" && cp "$MODEL" "$T/models/.v.tmp/1.dyn" && cp "$MODEL" "$T/models/.v.tmp/3.dyn"
mv "$T/models/.v.tmp" "$T/models/multi"
# (versions load one after the other: wait for both)
for i in $(seq 1 60); do req GET /v2/models/multi; [ "$STATUS" = 200 ] && [ "$(json_get 'len(j["versions"])')" = 2 ] && break; sleep 0.1; done
check "versions listed" [ "$(json_get 'j["versions"]')" = "['1', '3']" ]
req GET /v2/models/multi/versions/3/ready; expect_status 200 "version 3 ready"
req POST /v2/models/multi/versions/1/infer -H 'Content-Type: application/json' \
    -d "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,28,28],\"datatype\":\"UINT8\",\"data\":$($PY -c 'import sys; print(list(open(sys.argv[1],"rb").read()))' "$T/digits/0.u8")}]}"
check "infer on version 1" [ "$STATUS:$(json_get 'j["model_version"]')" = "200:1" ]

# replacing mnist under load: load-before-release, no request may fail
$PY "$HERE/client.py" reload "$URL" "$T/digits" 4 > "$T/reload.out" & lp=$!
for k in 1 2 3 4 5 6; do
    cp "$MODEL" "$T/models/.mnist.tmp" && touch -d "@$((1700000000 + k))" "$T/models/.mnist.tmp"
    mv "$T/models/.mnist.tmp" "$T/models/mnist.dyn"; sleep 0.3
    req POST /v2/repository/models/mnist/load -H "$A"; expect_status 200 "explicit reload $k"
done
check "no failed request while mnist was replaced 12 times" wait $lp
log "$(cat "$T/reload.out")"
check "the reloads were logged" bash -c "curl -s $URL/metrics | grep -q 'dynd_model_load_seconds{model=\"mnist\",version=\"1\"}'"

# a damaged replacement is refused; the served version stays
head -c 5000 "$MODEL" > "$T/models/.bad" && mv "$T/models/.bad" "$T/models/mnist.dyn"
req POST /v2/repository/models/mnist/load -H "$A"; expect_error 422 model_load_failed "damaged model file"
classify mnist; expect_status 200 "old version still served after a failed reload"
cp "$MODEL" "$T/models/.ok" && mv "$T/models/.ok" "$T/models/mnist.dyn"

# unload / load / index (tokens)
req POST /v2/repository/models/fresh/unload; expect_error 401 unauthorized "unload without token"
req POST /v2/repository/models/fresh/unload -H "$A"; expect_status 200 "unload"
classify fresh; expect_error 503 model_unavailable "unloaded model"
sleep 1.2 # a poll passes: an unloaded model stays unloaded while its file is unchanged
classify fresh; expect_error 503 model_unavailable "still unloaded after a scan"
req POST /v2/repository/index -H "$A"; expect_status 200 "index"
check "index shows fresh UNAVAILABLE" $PY -c 'import json,sys; j=json.loads(sys.argv[1]); assert {"name":"fresh","state":"UNAVAILABLE","reason":"unloaded by request"} in j, j' "$BODY"
req POST /v2/repository/models/fresh/load -H "$A"; expect_status 200 "load"
classify fresh; expect_status 200 "loaded again"
req POST /v2/repository/models/ghost/load -H "$A"; expect_error 404 model_not_found "load without a file"
rm "$T/models/fresh.dyn"
for i in $(seq 1 60); do classify fresh; [ "$STATUS" = 404 ] && break; sleep 0.1; done
expect_error 404 model_not_found "a removed file is unloaded"

# SIGHUP: settings re-read (a per-model section appears), models reloaded, still serving
printf '[model.mnist]\nmax_batch = 8\n' > "$T/hup.conf"
stop_dynd
start_dynd --config "$T/hup.conf" --auth-tokens tok --log-level info
printf '[model.mnist]\nmax_batch = 16\nbatching = false\n' > "$T/hup.conf"
kill -HUP "$DYND_PID"; sleep 0.5
classify mnist; expect_status 200 "serving after SIGHUP"
check "SIGHUP reload logged" grep -q 'SIGHUP: settings reloaded' "$T/dynd.err"
printf 'max_batch = zero\n' > "$T/hup.conf"
kill -HUP "$DYND_PID"; sleep 0.3
classify mnist; expect_status 200 "a bad config on SIGHUP keeps the old settings"
check "bad SIGHUP config reported" grep -q 'settings not reloaded' "$T/dynd.err"
stop_dynd
finish
