#!/usr/bin/env bash
# dynd model edits: PATCH /v1/models/{name} with new labels and / or preprocessing publishes a
# new version (a single-file model becomes <name>/1.dyn + <name>/2.dyn, a versioned model gets
# <max + 1>.dyn); /v2/models/{name} and classify show the new labels, version 1 keeps the old;
# bad labels / preprocess / fields answer 400 and change nothing; 16 version files refuse more.
source "$(dirname "$0")/lib.sh"
echo "model edit: labels and preprocessing as a new version"
MODEL=$(model_path)
mkdir -p "$T/models/ver" "$T/models/full" && cp "$MODEL" "$T/models/edit.dyn" && cp "$MODEL" "$T/models/ver/3.dyn"
for v in $(seq 1 16); do ln "$MODEL" "$T/models/full/$v.dyn" 2>/dev/null || cp "$MODEL" "$T/models/full/$v.dyn"; done
make_digits 3 "$T/digits"
start_dynd --auth-tokens tok
A='Authorization: Bearer tok'
J='Content-Type: application/json'
NAMES='["zero","one","two","three","four","five","six","seven","eight","nine"]'
classify() { req POST "/v1/models/$1/classify" -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"; }
for i in $(seq 1 100); do req GET /v2/models/full; [ "$STATUS" = 200 ] && [ "$(json_get 'len(j["versions"])')" = 16 ] && break; sleep 0.1; done

req GET /v2/models/edit
OLD=$(json_get 'j["parameters"]["labels"]')
OLDPP=$(json_get 'json.dumps(j["parameters"].get("preprocess"), sort_keys=True)')
check "the demo model has 10 outputs" [ "$(json_get 'j["outputs"][0]["shape"]')" = "[-1, 10]" ]

# ---- new labels on a single-file model: it becomes versioned ----
req PATCH /v1/models/edit -H "$A" -H "$J" -d "{\"labels\": $NAMES}"
expect_status 200 "labels edited"
check "the reply is the new version's metadata" [ "$(json_get 'j["version"], j["previous_version"], j["versions"]')" = "('2', '1', ['2'])" ]
check "the reply shows the new labels" [ "$(json_get 'j["parameters"]["labels"][3]')" = three ]
check "Location names the version" grep -qi '^Location: /v2/models/edit/versions/2' "$T/headers"
check "edit.dyn became edit/1.dyn + edit/2.dyn" [ ! -e "$T/models/edit.dyn" ] && [ -f "$T/models/edit/1.dyn" ] && [ -f "$T/models/edit/2.dyn" ]
check "version 1 is the original file" cmp -s "$MODEL" "$T/models/edit/1.dyn"
check "no temporary left in model_dir" bash -c "! ls -A '$T/models' '$T/models/edit' | grep -q '^\.'"
req GET /v2/models/edit
check "/v2/models/edit: both versions, new labels" [ "$(json_get 'j["versions"], j["parameters"]["labels"][9]')" = "(['1', '2'], 'nine')" ]
check "the edit is noted in info" [ "$(json_get 'j["parameters"]["info"]["edit"]["from_version"], j["parameters"]["info"]["edit"]["fields"]')" = "(1, ['labels'])" ]
check "preprocess kept" [ "$(json_get 'json.dumps(j["parameters"].get("preprocess"), sort_keys=True)')" = "$OLDPP" ]
req GET /v2/models/edit/versions/1
check "version 1 keeps the old labels" [ "$(json_get 'j["parameters"]["labels"]')" = "$OLD" ]
classify edit
check "classify answers with the new label names" [ "$STATUS:$(json_get 'all(p["label"] in '"$NAMES"' for p in j["predictions"])')" = "200:True" ]
req POST /v1/models/edit/versions/1/classify -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
check "classify on version 1: the old label names" [ "$STATUS:$(json_get 'all(p["label"] in "0123456789" for p in j["predictions"])')" = "200:True" ]

# ---- refused: the model stays as it is ----
bad() { # bad BODY CODE what
    req PATCH /v1/models/edit -H "$A" -H "$J" -d "$1"
    expect_error 400 "$2" "$3"
}
bad '{"labels": ["a", "b", "c"]}' invalid_labels "3 labels for 10 outputs"
bad '{"labels": [1,2,3,4,5,6,7,8,9,10]}' invalid_labels "labels that are not strings"
bad '{"labels": ["","1","2","3","4","5","6","7","8","9"]}' invalid_labels "an empty label"
bad '{"labels": "0,1"}' invalid_labels "labels not an array"
bad '{"preprocess": {"channels": 3}}' invalid_preprocess "3 channels for a 1-channel model"
bad '{"preprocess": {"height": 32}}' invalid_preprocess "a height that is not the model's"
bad '{"preprocess": {"std": [0]}}' invalid_preprocess "std 0"
bad '{"preprocess": {"stpes": [{"pad": 2}]}}' invalid_preprocess "a misspelt key"
bad '{"preprocess": {"steps": [{"resize": [32, 32]}]}}' invalid_preprocess "steps ending at 32x32 for a 28x28 model"
bad '{"preprocess": "bilinear"}' invalid_preprocess "preprocess not an object"
bad "{\"labels\": $NAMES, \"preprocess\": {\"scale\": -1}}" invalid_preprocess "good labels with a bad preprocess"
bad '{"label": ["x"]}' unknown_field "an unknown field"
bad '{}' nothing_to_change "nothing to change"
req PATCH /v1/models/edit -H "$A" -H "$J" -d '[1'; expect_error 400 bad_json "broken JSON"
req PATCH /v1/models/edit -H "$J" -d "{\"labels\": $NAMES}"; expect_error 401 unauthorized "no token"
req PATCH /v1/models/nope -H "$A" -H "$J" -d "{\"labels\": $NAMES}"; expect_error 404 model_not_found "unknown model"
req GET /v2/models/edit
check "after the refusals: still versions 1 and 2 with the new labels" [ "$(json_get 'j["versions"], j["parameters"]["labels"][0]')" = "(['1', '2'], 'zero')" ]
check "after the refusals: two files" [ "$(ls -A "$T/models/edit" | wc -l)" = 2 ]

# ---- preprocessing, then removing the labels ----
req PATCH /v1/models/edit -H "$A" -H "$J" -d '{"preprocess": {"channels": 1, "height": 28, "width": 28, "mean": [0.5], "std": [0.25], "scale": 255}}'
check "preprocess edited: version 3" [ "$STATUS:$(json_get 'j["version"], j["parameters"]["preprocess"]["std"], j["parameters"]["labels"][1]')" = "200:('3', [0.25], 'one')" ]
classify edit; expect_status 200 "classify with the new preprocessing"
req PATCH /v1/models/edit -H "$A" -H "$J" -d '{"labels": []}'
check "labels removed: version 4" [ "$STATUS:$(json_get 'j["version"], j["parameters"]["labels"]')" = "200:('4', [])" ]

# ---- a versioned model gets max + 1 ----
req PATCH /v1/models/ver -H "$A" -H "$J" -d "{\"labels\": $NAMES}"
check "versioned model: 3 → 4" [ "$STATUS:$(json_get 'j["version"], j["previous_version"]')" = "200:('4', '3')" ] && [ -f "$T/models/ver/4.dyn" ]
req GET /v2/models/ver; check "both served" [ "$(json_get 'j["versions"]')" = "['3', '4']" ]
# two edits at once compose: the second starts from the version the first published
curl -s -o /dev/null -X PATCH -H "$A" -H "$J" -d '{"labels": ["a","b","c","d","e","f","g","h","i","j"]}' "$URL/v1/models/ver" &
P1=$!
curl -s -o /dev/null -X PATCH -H "$A" -H "$J" -d '{"preprocess": {"mean": [0.1], "std": [0.3]}}' "$URL/v1/models/ver" &
P2=$!
wait $P1 $P2
req GET /v2/models/ver
check "two concurrent edits: versions 5 and 6, the last holds both changes" \
    [ "$(json_get 'j["versions"], j["parameters"]["labels"][0], j["parameters"]["preprocess"]["std"]')" = "(['3', '4', '5', '6'], 'a', [0.3])" ]
req PATCH /v1/models/full -H "$A" -H "$J" -d "{\"labels\": $NAMES}"
expect_error 409 too_many_versions "16 version files"
check "no 17th file" [ "$(ls -A "$T/models/full" | wc -l)" = 16 ]

stop_dynd
finish
