#!/usr/bin/env bash
# dynd inference over HTTP: >= 500 real MNIST test digits as PNG and JPEG through /v1 classify
# (>= 98 % correct), the same pixels through v2 infer (UINT8: identical scores; FP32: equal to
# float rounding), the classification extension, multipart upload, top_k, request ids,
# statistics and metrics.
source "$(dirname "$0")/lib.sh"
echo "inference: classify + v2 infer on real MNIST digits"
mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn"
make_digits 500 "$T/digits"
unset OMP_WAIT_POLICY
start_dynd
# engine threads sleep while they wait (dyn_threads_policy_init re-executed dynd with
# OMP_WAIT_POLICY=PASSIVE: spinning threads collapse on a busy machine)
check "dynd runs with OMP_WAIT_POLICY=PASSIVE" grep -qx OMP_WAIT_POLICY=PASSIVE <(tr '\0' '\n' < "/proc/$DYND_PID/environ")

check "accuracy and identical scores through HTTP" $PY "$HERE/client.py" accuracy "$URL" "$T/digits" 500
check "binary tensor data extension" $PY "$HERE/client.py" binary "$URL" "$T/digits" 50
req GET /v2
check "server metadata lists binary_tensor_data" grep -q binary_tensor_data <<< "$BODY"

# classification extension: BYTES "score:index:label", shape [1, k]
px=$($PY -c 'import sys; print(list(open(sys.argv[1],"rb").read()))' "$T/digits/0.u8")
req POST /v2/models/mnist/versions/1/infer -H 'Content-Type: application/json' \
    -d "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,28,28],\"datatype\":\"UINT8\",\"data\":$px}],\"outputs\":[{\"name\":\"probabilities\",\"parameters\":{\"classification\":3}}]}"
expect_status 200 "classification extension"
check "classification BYTES" [ "$(json_get 'j["outputs"][0]["datatype"]+str(j["outputs"][0]["shape"])')" = "BYTES[1, 3]" ]
lab0=$(awk 'NR==1{print $2}' "$T/digits/labels.txt")
check "classification top-1 is the label" [ "$(json_get 'j["outputs"][0]["data"][0].split(":")[1:]')" = "['$lab0', '$lab0']" ]

# multipart upload, top_k, request id echo
req POST "/v1/models/mnist/classify?top_k=3" -F "image=@$T/digits/0.png;type=image/png" -H 'X-Request-Id: abc-123'
expect_status 200 "multipart classify"
check "top_k=3" [ "$(json_get 'len(j["predictions"])')" = 3 ]
check "multipart top-1" [ "$(json_get 'j["predictions"][0]["label"]')" = "$lab0" ]
check "X-Request-Id echoed" grep -qi '^X-Request-Id: abc-123' "$T/headers"
req POST /v1/models/mnist/classify --data-binary "@$T/digits/1.jpg" -H 'Content-Type: image/jpeg'
check "generated request id" grep -qi '^X-Request-Id: [0-9a-f]\{16\}' "$T/headers"

# an RGB image of another size is converted and resized
$PY - "$T/big.png" <<'PY'
import struct, sys, zlib
w, h = 56, 40
raw = b"".join(b"\x00" + b"".join(bytes([(x * 4) % 256, (y * 6) % 256, 128]) for x in range(w)) for y in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
req POST /v1/models/mnist/classify --data-binary "@$T/big.png" -H 'Content-Type: image/png'
expect_status 200 "RGB 56x40 PNG resized"

# metadata, readiness, statistics, metrics
req GET /v2/models/mnist/ready; expect_status 200 "model ready"
req GET /v2/models/mnist/versions/1; expect_status 200 "model metadata by version"
req GET /v2/models/mnist/stats
expect_status 200 "stats"
check "stats count successes" $PY -c 'import json,sys; s=json.loads(sys.argv[1])["model_stats"][0]; assert s["inference_stats"]["success"]["count"] >= 2000 and s["execution_count"] >= 1, s' "$BODY"
req GET /metrics
expect_status 200 "metrics"
for m in 'dynd_requests_total{endpoint="classify",model="mnist",code="200"}' \
         'dynd_request_duration_seconds_bucket{endpoint="v2_infer",model="mnist",code="200",le="+Inf"}' \
         'dynd_batch_size_count{model="mnist"}' 'dynd_model_load_seconds{model="mnist",version="1"}' \
         'dynd_queue_depth{model="mnist",version="1"}'; do
    check "metric $m" grep -qF "$m" <<< "$BODY"
done
stop_dynd

# the other socket poller and several HTTP threads serve the same answers
start_dynd --http_poller epoll --http_threads 3
check "epoll, 3 HTTP threads: accuracy and identical scores" $PY "$HERE/client.py" accuracy "$URL" "$T/digits" 100
stop_dynd
finish
