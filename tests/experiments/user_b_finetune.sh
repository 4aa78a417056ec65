#!/usr/bin/env bash
# Issue 9, fixture (b) through curl alone, the long way (about 35 minutes on 2 cores; not part of
# `make test`): the small Fashion-MNIST ResNet trained outside dynd (tests/fixtures/user/
# fashion_resnet.onnx, Normalize(0.5, 0.5)) converted by ONE conversion job with a fidelity
# target that ends by training the chosen model on the user's own labelled images, then
# classified as PNG and JPEG.
#
#   1. PUT /v1/datasets/user_b: a zip of NCAL labelled training images (train/<label>/) and
#      NTEST test images (test/<label>/), as a user would upload them;
#   2. POST /v1/conversions: the ONNX file, its preprocessing, calibration on the upload,
#      target_agreement TARGET (the smallest allocation whose fit alone agrees with the
#      original on TARGET of held-out images, 95 % lower bound), then finetune_epochs EPOCHS
#      at finetune_lr LR on the labels of the uploaded images not held out (a fifth, at most
#      2,000, validate), and an explicit agreement floor MIN_AGREE (a model trained on the
#      labels agrees with the original on ~90 %: it corrects some of the original's mistakes
#      and makes others; the default floor, 0.95, would refuse it);
#   3. the dense original imported the same way (min_saving 1);
#   4. every test image classified through /v1/models/{name}/classify, PNG and JPEG, for the
#      converted model and the dense one; the converted model must keep >= 4x fewer stored
#      floats and lose at most 1.0 point.
# Usage: tests/experiments/user_b_finetune.sh [build dir]   (env: NCAL NTEST EPOCHS LR MIN_AGREE TARGET)
source "$(dirname "$0")/../integration/lib.sh"
source "$HERE/user_models_lib.sh"
echo "user model (b): Fashion ResNet, one conversion job (target, then training on the user's labels), by curl alone"
NCAL=${NCAL:-60000}
NTEST=${NTEST:-1000}
EPOCHS=${EPOCHS:-15}
LR=${LR:-0.0005}
MIN_AGREE=${MIN_AGREE:-0.85}
TARGET=${TARGET:-0.79}
DATA=$T/data
mkdir -p "$DATA" "$T/models"
cc -O2 -Wall -Werror -o "$T/mkdigits" "$HERE/mkdigits.c" -lpng -ljpeg -lz
start_dynd --auth-tokens tok --data-dir "$DATA" --jobs-max-concurrent 1
A='Authorization: Bearer tok'
ONNX=$ROOT/tests/fixtures/user/fashion_resnet.onnx
PP='{"color": "gray", "scale": 255, "mean": [0.5], "std": [0.5]}'
t0=$(date +%s)

images "$ROOT/data/fashion" b train
req PUT /v1/datasets/user_b -H "$A" -T "$T/b.zip"
expect_status 201 "labelled zip of $NCAL + $NTEST images stored"
log "uploaded $(du -m "$T/b.zip" | cut -f1) MB"

opts=$($PY -c 'import json,sys; print(json.dumps({"output": "b4ft", "calib": "user_b", "eval": "user_b",
    "preprocess": json.loads(sys.argv[1]), "target_agreement": float(sys.argv[3]), "steps": 1000,
    "calib_n": 2048, "holdout_n": 2048, "min_agreement": float(sys.argv[2]),
    "finetune_epochs": int(sys.argv[4]), "finetune_lr": float(sys.argv[5])}))' \
    "$PP" "$MIN_AGREE" "$TARGET" "$EPOCHS" "$LR")
req POST /v1/conversions -H "$A" -F "file=@$ONNX;filename=fashion_resnet.onnx" -F "options=$opts"
expect_status 202 "conversion accepted"
CID=$(json_get 'j["id"]')
wait_done "$CID" 14400 || fail "the conversion did not end within 4 hours"
check "conversion succeeded ($STATE: $(json_get 'j.get("error")'))" [ "$STATE" = succeeded ]
if [ "$STATE" != succeeded ]; then stop_dynd; finish; fi # nothing to classify
json_get '"\n".join("    explored: " + json.dumps(e, separators=(",", ":"))[:160] for e in j["result"]["explored"] if "floats" in e)' || true
json_get '"\n".join("    epoch %d: train %.4f val %.4f" % (h["epoch"], h["train_acc"], h["val_acc"]) for h in j["result"]["finetune"]["history"])' || true
read -r comp agree0 agree acc0 acc_conv ftsec <<< "$(json_get '"%.4f %.4f %.4f %.4f %.4f %.0f" % (j["result"]["compression"], j["result"]["finetune"]["agree_top1_before"], j["result"]["fidelity"]["agree_top1"], j["result"]["finetune"]["acc_before"], j["result"]["acc_after"], j["result"]["finetune"]["seconds"])')"
log "converted: ${comp}x fewer stored floats; held-out agreement $agree0 before the training, $agree after; accuracy on the test images $acc0 -> $acc_conv (training $ftsec s; $(($(date +%s) - t0)) s so far)"
check "the job's report: fidelity after the training, the target recorded" \
    [ "$(json_get 'j["result"]["target_agreement"], j["result"]["fidelity"]["verified"], j["epochs"]')" = "($TARGET, True, $EPOCHS)" ]

opts=$($PY -c 'import json,sys; print(json.dumps({"output": "b_dense", "calib": "user_b",
    "preprocess": json.loads(sys.argv[1]), "min_saving": 1}))' "$PP")
req POST /v1/conversions -H "$A" -F "file=@$ONNX;filename=fashion_resnet.onnx" -F "options=$opts"
wait_done "$(json_get 'j["id"]')" || fail "the dense import did not end"
check "dense original imported ($STATE)" [ "$STATE:$(json_get 'j["result"]["layers_converted"]')" = succeeded:0 ]

req GET /v1/models -H "$A"
floats=$(json_get 'next(m.get("stored_floats", 0) for m in j["models"] if m["name"] == "b4ft")')
dfloats=$(json_get 'next(m.get("stored_floats", 0) for m in j["models"] if m["name"] == "b_dense")')
png=$(accuracy b b4ft png)
jpg=$(accuracy b b4ft jpg)
dpng=$(accuracy b b_dense png)
djpg=$(accuracy b b_dense jpg)
log "through /v1 classify on $NTEST test images: converted PNG $png, JPEG $jpg; dense PNG $dpng, JPEG $djpg; stored floats $floats vs $dfloats ($(($(date +%s) - t0)) s in all)"
check ">= 4x fewer stored floats ($floats vs $dfloats)" $PY -c "import sys; sys.exit(not ($floats > 0 and $dfloats >= 4 * $floats))"
check "PNG within 1.0 point of dense ($png vs $dpng)" $PY -c "import sys; sys.exit(not $png >= $dpng - 0.01 - 1e-9)"
check "JPEG within 1.0 point of dense ($jpg vs $djpg)" $PY -c "import sys; sys.exit(not $jpg >= $djpg - 0.01 - 1e-9)"
stop_dynd
finish
