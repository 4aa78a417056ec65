#!/usr/bin/env bash
# dynd data sets over HTTP: a zip of MNIST digits in class folders, the same as a tar.gz with
# train/ + test/ under a wrapper folder, and a flat zip (unlabeled) are uploaded (curl -T, raw
# --data-binary, multipart), listed, described, stored as the engine's loader reads them, and
# used as "calib" of a conversion job; hostile archives (path traversal, absolute path,
# symbolic / hard links, a device, too many entries, a decompression bomb, over the upload
# limit, not an archive, no images, a broken image, a mixed layout) are refused with 4xx JSON
# errors and leave nothing behind; built-in names are refused; delete removes a set.
source "$(dirname "$0")/lib.sh"
echo "datasets: upload, list, use as calibration, hostile archives, delete"
mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn"
N=40
make_digits $N "$T/digits"
DATA=$T/data
mkdir -p "$DATA" "$T/arch"
[ -d "$ROOT/data/mnist" ] && ln -s "$ROOT/data/mnist" "$DATA/mnist"
$PY "$HERE/mkarchives.py" "$T/digits" $N "$T/arch"
start_dynd --auth-tokens tok --data-dir "$DATA" --dataset-max-entries 100 \
    --dataset-max-upload-bytes 200000 --jobs-max-concurrent 1
A='Authorization: Bearer tok'

# nothing but the sets named in $1 (sorted, space-separated) in data_dir; no temporaries; no
# upload left in state_dir
left_clean() {
    local want=$1 got ups
    got=$(ls -A "$DATA" | sort | tr '\n' ' ' | sed 's/ $//')
    ups=$(ls -A "$T/state/uploads" 2>/dev/null | wc -l)
    [ "$got" = "$want" ] && [ "$ups" = 0 ] || { echo "    data_dir: '$got' (want '$want'), uploads: $ups"; return 1; }
}

# ---- a labeled zip (curl -T: no media type), what was skipped, where files went ----
req PUT /v1/datasets/digits -H "$A" -T "$T/arch/labeled.zip"
expect_status 201 "labeled zip stored"
check "Location header" grep -qi '^Location: /v1/datasets/digits' "$T/headers"
check "manifest: labeled, $N images" [ "$(json_get 'j["labeled"], j["images"]')" = "(True, $N)" ]
check "manifest: skipped hidden (.DS_Store, __MACOSX) and not-image files" \
    [ "$(json_get 'j["skipped"]["hidden"], j["skipped"]["not_image"]')" = "(2, 1)" ]
classes=$(cut -d' ' -f2 "$T/digits/labels.txt" | head -$N | sort -u | tr -d '\n')
check "manifest: classes = the digit folders" [ "$(json_get '"".join(j["classes"])')" = "$classes" ]
check "stored as DIR/<class>/ (PNG and JPEG)" [ "$(find "$DATA/digits" -name '*.png' -o -name '*.jpg' | wc -l)" = $N ]
check "manifest on disk" [ -f "$DATA/digits/.dataset.json" ]
check "nothing else left" left_clean "digits mnist"
req PUT /v1/datasets/digits -H "$A" -T "$T/arch/labeled.zip"
expect_error 409 dataset_exists "the same name again"
req PUT "/v1/datasets/digits?overwrite=true" -H "$A" -T "$T/arch/labeled.zip"
expect_status 200 "overwrite=true replaces it"
check "replaced, not merged" [ "$(find "$DATA/digits" -type f | wc -l)" = $((N + 1)) ]

# ---- tar.gz with train/ + test/ under a wrapper folder, raw body ----
req PUT /v1/datasets/split -H "$A" -H 'Content-Type: application/gzip' --data-binary "@$T/arch/split.tar.gz"
expect_status 201 "tar.gz with splits stored"
check "two splits, labeled" [ "$(json_get 'sorted(j["splits"]), j["labeled"], j["splits"]["train"]["images"]')" = "(['test', 'train'], True, $N)" ]
check "stored as DIR/train/<class>/ and DIR/test/<class>/" [ -d "$DATA/split/train" ] && [ -d "$DATA/split/test" ]

# ---- flat zip (unlabeled), multipart ----
req PUT /v1/datasets/flat -H "$A" -F "file=@$T/arch/flat.zip"
expect_status 201 "flat zip stored"
check "unlabeled, $((N + 1)) images, no classes" [ "$(json_get 'j["labeled"], j["images"], j["classes"]')" = "(False, $((N + 1)), [])" ]
check "stored as DIR/_unlabeled/, the file without extension named .png" \
    [ "$(ls "$DATA/flat/_unlabeled" | wc -l):$(ls "$DATA/flat/_unlabeled" | grep -c '^noext.png$')" = "$((N + 1)):1" ]

# ---- list and describe ----
req GET /v1/datasets -H "$A"
expect_status 200 "list"
check "listed: digits, flat, split (managed) and mnist (built-in)" \
    [ "$(json_get '[(d["name"], d["managed"], d["builtin"]) for d in j["datasets"]]')" = \
      "[('digits', True, False), ('flat', True, False), ('mnist', False, True), ('split', True, False)]" ]
req GET /v1/datasets/flat -H "$A"
check "describe" [ "$STATUS:$(json_get 'j["labeled"]')" = "200:False" ]
req GET /v1/datasets/nope -H "$A"; expect_error 404 dataset_not_found "unknown set"
req GET /v1/datasets; expect_error 401 unauthorized "no token"
req PUT /v1/datasets/x -T "$T/arch/flat.zip"; expect_error 401 unauthorized "upload without a token"

# ---- used as calibration data by a conversion (labeled and unlabeled) ----
wait_job() { # wait_job ID: polls until finished; sets STATE
    local id=$1 t0=$SECONDS
    while :; do
        req GET "/v1/jobs/$id" -H "$A"
        STATE=$(json_get 'j["state"]' || echo "?")
        case "$STATE" in queued|running) ;; *) return 0;; esac
        [ $((SECONDS - t0)) -lt 300 ] || { fail "job $id still $STATE"; return 1; }
        sleep 0.2
    done
}
for set in digits flat; do
    req POST /v1/conversions -H "$A" -H 'Content-Type: application/json' \
        -d "{\"model\": \"mnist\", \"steps\": 30, \"fit\": \"activation\", \"calib\": \"$set\", \"calib_n\": 32, \"output\": \"cal_$set\"}"
    expect_status 202 "conversion with calib = $set"
    id=$(json_get 'j["id"]')
    wait_job "$id"
    check "conversion calibrated on '$set' succeeded ($(json_get 'j.get("error")'))" [ "$STATE" = succeeded ]
    req POST "/v1/models/cal_$set/classify" -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
    expect_status 200 "the model calibrated on '$set' classifies"
done

# ---- hostile or broken archives: 4xx JSON, nothing left behind ----
SETS="digits flat mnist split"
hostile() { # hostile FILE STATUS CODE what
    req PUT /v1/datasets/h -H "$A" -T "$T/arch/$1"
    expect_error "$2" "$3" "$4"
    check "$4: nothing left behind" left_clean "$SETS"
    still_serves "$4"
}
hostile traversal.zip 400 unsafe_entry "path traversal (../evil.png)"
check "traversal: nothing written outside data_dir" [ ! -e "$T/evil.png" ] && [ ! -e "$DATA/../evil.png" ]
hostile absolute.tar 400 unsafe_entry "absolute path"
check "absolute: /tmp/evil-abs.png not written" [ ! -e /tmp/evil-abs.png ]
hostile symlink.tar 400 unsafe_entry "symbolic link (tar)"
hostile symlink.zip 400 unsafe_entry "symbolic link (zip)"
hostile hardlink.tar 400 unsafe_entry "hard link"
hostile device.tar 400 unsafe_entry "character device"
hostile many.zip 413 too_many_entries "150 entries over dataset_max_entries = 100"
hostile bomb.zip 413 expansion_ratio "zip bomb (8 MiB of zeros behind a PNG signature)"
hostile big.zip 413 body_too_large "over dataset_max_upload_bytes"
hostile notarchive.bin 400 not_an_archive "random bytes"
cp "$T/digits/0.png" "$T/arch/one.png"
hostile one.png 400 not_an_archive "a lone PNG"
hostile noimages.zip 400 no_images "no images"
hostile badimage.zip 422 bad_image "a broken PNG"
check "bad image: the message names the entry" grep -q 'broken.png' <<< "$BODY"
hostile mixed.zip 400 bad_layout "images at two depths"
hostile nonutf8.tar 400 unsafe_entry "a name that is not UTF-8"
hostile longname.zip 400 unsafe_entry "a 600-byte UTF-8 name (over dataset_max_path)"
req PUT /v1/datasets/h -H "$A" --data-binary ''; expect_error 400 missing_archive "empty body"
req PUT /v1/datasets/mnist -H "$A" -T "$T/arch/labeled.zip"; expect_error 403 builtin_dataset "built-in name"
req PUT /v1/datasets/fashion-mnist -H "$A" -T "$T/arch/labeled.zip"; expect_error 403 builtin_dataset "built-in alias"
req PUT /v1/datasets/.hidden -H "$A" -T "$T/arch/labeled.zip"; expect_error 400 invalid_name "hidden name"
req PUT /v1/datasets/..%2Fx -H "$A" -T "$T/arch/labeled.zip"; expect_error 400 invalid_name "encoded traversal in the name"
req PUT "/v1/datasets/h?overwrite=maybe" -H "$A" -T "$T/arch/labeled.zip"; expect_error 400 invalid_parameter "bad overwrite"
check "after all refusals: nothing left" left_clean "$SETS"

# ---- delete ----
req DELETE /v1/datasets/digits -H "$A"
check "delete" [ "$STATUS:$(json_get 'j["deleted"]')" = "200:True" ]
check "gone from disk" [ ! -e "$DATA/digits" ]
req GET /v1/datasets/digits -H "$A"; expect_error 404 dataset_not_found "deleted set"
req DELETE /v1/datasets/digits -H "$A"; expect_error 404 dataset_not_found "delete twice"
req DELETE /v1/datasets/mnist -H "$A"; expect_error 403 builtin_dataset "delete a built-in"
if [ -L "$DATA/mnist" ]; then check "the built-in set is untouched" [ -d "$DATA/mnist/" ]; fi
stop_dynd
finish
