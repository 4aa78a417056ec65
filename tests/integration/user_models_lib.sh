# user_models_lib.sh — sourced by test_user_models.sh and tests/experiments/user_b_finetune.sh
# (after lib.sh): the user's images as PNG/JPEG and a labelled zip, their accuracy through
# /v1/models/{name}/classify, and polling a job.

idx() { # idx DIR STEM -> the IDX file (raw or .gz, unpacked into $T)
    local f=$1/$2
    if [ -f "$f" ]; then echo "$f"; else gunzip -c "$f.gz" > "$T/$2" && echo "$T/$2"; fi
}

# images SET_DIR NAME [CAL_STEM]: the user's images as PNG/JPEG and a zip of them (PNG) in
# $T/NAME.zip: train/<label>/ for calibration, NCAL images the model never trained on (test
# images 2000 on: images from its own training set overstate agreement, see CONVERT.md; with
# CAL_STEM = train, the first NCAL images of the training split instead), test/<label>/ the
# first NTEST test images for the evaluation. Needs $T/mkdigits.
images() {
    local src=$1 name=$2 cal=${3:-t10k}
    mkdir -p "$T/$name-train" "$T/$name-test"
    local ti tl first=2000
    [ "$cal" = t10k ] || first=0
    ti=$(idx "$src" "$cal-images-idx3-ubyte")
    tl=$(idx "$src" "$cal-labels-idx1-ubyte")
    "$T/mkdigits" "$ti" "$tl" "$T/$name-train" "$NCAL" 95 "$first" > /dev/null
    ti=$(idx "$src" t10k-images-idx3-ubyte)
    tl=$(idx "$src" t10k-labels-idx1-ubyte)
    "$T/mkdigits" "$ti" "$tl" "$T/$name-test" "$NTEST" 95 > /dev/null
    $PY - "$T" "$name" <<'PY'
import os, sys, zipfile
t, name = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(f"{t}/{name}.zip", "w", zipfile.ZIP_DEFLATED) as z:
    for split in ("train", "test"):
        d = f"{t}/{name}-{split}"
        for line in open(f"{d}/labels.txt"):
            i, lab = line.split()
            z.write(f"{d}/{i}.png", f"{split}/{lab}/{i}.png")
PY
}

# accuracy NAME MODEL EXT: classifies every test image of NAME as EXT (png|jpg) through
# /v1/models/MODEL/classify and prints the accuracy (0..1)
accuracy() {
    local name=$1 model=$2 ext=$3 ctype=image/png
    [ "$ext" = jpg ] && ctype=image/jpeg
    mkdir -p "$T/out-$model-$ext"
    while read -r i lab; do
        curl -sS -m 20 -o "$T/out-$model-$ext/$i.json" -H "Content-Type: $ctype" \
            --data-binary "@$T/$name-test/$i.$ext" "$URL/v1/models/$model/classify?top_k=1" || true
    done < "$T/$name-test/labels.txt"
    $PY - "$T/$name-test/labels.txt" "$T/out-$model-$ext" <<'PY'
import json, sys
ok = n = 0
for line in open(sys.argv[1]):
    i, lab = line.split()
    n += 1
    try:
        ok += json.load(open(f"{sys.argv[2]}/{i}.json"))["predictions"][0]["label"] == lab
    except Exception:
        pass
print(ok / n)
PY
}

wait_done() { # wait_done JOB_ID [MAX_SECONDS=1500]: polls until the job ends; sets STATE and BODY
    for _ in $(seq $((${2:-1500} * 2))); do
        req GET "/v1/jobs/$1" -H "$A"
        STATE=$(json_get 'j["state"]')
        case $STATE in succeeded|failed|cancelled) return 0 ;; esac
        sleep 0.5
    done
    return 1
}

