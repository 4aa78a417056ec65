#!/usr/bin/env bash
# dynd bad-input suite: every bad request gets its 4xx/5xx status and machine-readable error code,
# and the daemon keeps serving after each one.
source "$(dirname "$0")/lib.sh"
echo "bad input: status + error code + still serving"
mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn" && cp "$T/models/mnist.dyn" "$T/models/mnistq.dyn"
make_digits 2 "$T/digits"
# mnistq: one request at a time and room for one waiting, to show backpressure
cat > "$T/dynd.conf" <<CONF
max_json_depth = 32
[model.mnistq]
batching = false
max_batch = 1
queue_capacity = 1
CONF
start_dynd --config "$T/dynd.conf" --max-body-bytes 1048576 --connection-timeout-s 2 \
    --auth-tokens 's3cret,other' 
J='Content-Type: application/json'
px=$($PY -c 'import sys; print(list(open(sys.argv[1],"rb").read()))' "$T/digits/0.u8")
infer() { req POST /v2/models/mnist/infer -H "$J" -d "$1"; }

infer '{"inputs": [ {"name": "input", '; expect_error 400 bad_json "malformed JSON"; still_serves "malformed JSON"
$PY -c 'print("{\"inputs\": " + "[" * 100000 + "]" * 100000 + "}")' > "$T/deep.json"
req POST /v2/models/mnist/infer -H "$J" --data-binary "@$T/deep.json"
expect_error 400 json_too_deep "deeply nested JSON"; still_serves "deep JSON"
infer '[1, 2, 3]'; expect_error 400 bad_json "JSON that is not an object"
infer "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,28,27],\"datatype\":\"UINT8\",\"data\":$px}]}"
expect_error 400 shape_mismatch "wrong tensor shape"; still_serves "wrong shape"
infer "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,784],\"datatype\":\"UINT8\",\"data\":$px}]}"
expect_error 400 shape_mismatch "flattened shape"
infer "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,28,28],\"datatype\":\"INT64\",\"data\":$px}]}"
expect_error 400 unsupported_datatype "wrong dtype"; still_serves "wrong dtype"
infer '{"inputs":[{"name":"input","shape":[2,1,28,28],"datatype":"FP32","data":[1,2,3]}]}'
expect_error 400 data_size_mismatch "too little data"
infer '{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"UINT8","data":[300]}]}'
expect_error 400 bad_value "UINT8 out of range"
infer '{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":["x"]}]}'
expect_error 400 bad_value "string in FP32 data"
infer "{\"inputs\":[{\"name\":\"pixels\",\"shape\":[1,1,28,28],\"datatype\":\"UINT8\",\"data\":$px}]}"
expect_error 400 unknown_input "wrong input name"
infer "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,28,28],\"datatype\":\"UINT8\",\"data\":$px}],\"outputs\":[{\"name\":\"nope\"}]}"
expect_error 400 unknown_output "unknown output"
infer "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,28,28],\"datatype\":\"UINT8\",\"data\":$px}],\"outputs\":[{\"name\":\"logits\",\"parameters\":{\"classification\":0}}]}"
expect_error 400 invalid_request "classification 0"
req POST /v2/models/mnist/infer -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_error 415 unsupported_media_type "image body on v2 infer"

# binary tensor data extension: $T/bin.body = JSON header ($BH bytes) + the 784 pixel bytes
binreq() { # binreq HEADER_JSON [HEADER_LENGTH (default: the JSON's)]: POST header + pixels
    local h=$1 len=${2:-}
    printf '%s' "$h" > "$T/bin.body"
    [ -n "$len" ] || len=$(wc -c < "$T/bin.body")
    cat "$T/digits/0.u8" >> "$T/bin.body"
    req POST /v2/models/mnist/infer -H "Content-Type: ${BCT:-application/octet-stream}" \
        -H "Inference-Header-Content-Length: $len" --data-binary "@$T/bin.body"
}
BHDR='{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"UINT8","parameters":{"binary_data_size":784}}]}'
binreq "$BHDR"; expect_status 200 "binary request (the good one)"
binreq "$BHDR" 999999; expect_error 400 bad_binary_header "header length past the body"; still_serves "binary header length"
binreq "$BHDR" abc; expect_error 400 bad_binary_header "header length not a number"
binreq "$BHDR" 12; expect_error 400 bad_json "header length cutting the JSON"
binreq "${BHDR/784/100}"; expect_error 400 data_size_mismatch "binary_data_size != bytes sent"; still_serves "binary size"
binreq "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,28,28],\"datatype\":\"UINT8\",\"data\":$px}]}"
expect_error 400 invalid_request "bytes after the header but no binary_data_size"
binreq "${BHDR/\"parameters\"/\"data\":[1],\"parameters\"}"; expect_error 400 invalid_request "both data and binary_data_size"
infer "$BHDR"; expect_error 400 invalid_request "binary_data_size without the header"
printf '%s' "${BHDR/UINT8/FP32}" | sed 's/784/3136/' > "$T/nan.body"; BF=$(wc -c < "$T/nan.body")
head -c 3136 /dev/zero | tr '\0' '\377' >> "$T/nan.body" # all bits set: NaN
req POST /v2/models/mnist/infer -H 'Content-Type: application/octet-stream' \
    -H "Inference-Header-Content-Length: $BF" --data-binary "@$T/nan.body"
expect_error 400 bad_value "FP32 NaN in binary data"; still_serves "binary NaN"
req POST /v2/models/mnist/infer -H 'Content-Type: application/vnd.sagemaker-triton.binary+json' --data-binary "@$T/bin.body"
expect_error 400 bad_binary_header "SageMaker media type without json-header-size"
BCT=image/png binreq "$BHDR"; expect_error 415 unsupported_media_type "binary request as image/png"

# images
C() { req POST /v1/models/mnist/classify "$@"; }
head -c 200 "$T/digits/0.png" > "$T/trunc.png"; C -H 'Content-Type: image/png' --data-binary "@$T/trunc.png"
expect_error 400 bad_image "truncated PNG"; still_serves "truncated PNG"
head -c 300 "$T/digits/0.jpg" > "$T/trunc.jpg"; C -H 'Content-Type: image/jpeg' --data-binary "@$T/trunc.jpg"
expect_error 400 bad_image "truncated JPEG"; still_serves "truncated JPEG"
$PY - "$T/bomb.png" <<'PY'
import struct, sys, zlib
ihdr = b"IHDR" + struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr)))
PY
C -H 'Content-Type: image/png' --data-binary "@$T/bomb.png"
expect_error 413 image_too_large "PNG header 100000x100000"; still_serves "PNG bomb"
C -H 'Content-Type: image/png' --data-binary 'GIF89a not an image'
expect_error 400 bad_image "not a PNG"
C -H 'Content-Type: text/plain' --data-binary "@$T/digits/0.png"
expect_error 415 unsupported_media_type "text/plain image"
C --data-binary "@$T/digits/0.png"
expect_error 415 unsupported_media_type "no content type (curl's form default)"
C -H 'Content-Type: multipart/form-data; boundary=xyz' --data-binary 'garbage'
expect_error 400 bad_multipart "broken multipart"
req POST "/v1/models/mnist/classify?top_k=abc" -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_error 400 invalid_parameter "top_k=abc"

# size limits
head -c 2000000 /dev/urandom > "$T/big.bin"
C -H 'Content-Type: image/png' --data-binary "@$T/big.bin"
expect_error 413 body_too_large "body over the limit (Content-Length)"; still_serves "big body"
C -H 'Content-Type: image/png' -H 'Transfer-Encoding: chunked' --data-binary "@$T/big.bin"
expect_error 413 body_too_large "chunked body over the limit"; still_serves "chunked big body"

# names and routes
req POST /v1/models/nosuch/classify -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_error 404 model_not_found "unknown model"
req GET /v2/models/nosuch; expect_error 404 model_not_found "unknown model metadata"
req GET /v2/models/mnist/versions/7; expect_error 404 version_not_found "unknown version"
req GET /v2/models/mnist/versions/x1; expect_error 400 invalid_version "bad version"
req POST /v1/models/../classify -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_error 400 invalid_name "'..' as a model name"
req POST '/v1/models/..%2F..%2Fetc%2Fpasswd/classify' -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_error 400 invalid_name "encoded ../ in a model name"
req POST '/v2/repository/models/..%2Fmnist/load' -H 'Authorization: Bearer s3cret'
expect_error 400 invalid_name "../ in a repository load"
req POST '/v2/models/%00x/infer' -H "$J" -d '{}'
expect_error 400 invalid_name "encoded NUL in a name"
req GET /v2/nothing/here; expect_error 404 not_found "unknown route"
req DELETE /v2/models/mnist/infer; expect_error 405 method_not_allowed "wrong method"

# auth on repository endpoints
req POST /v2/repository/index; expect_error 401 unauthorized "missing token"
check "WWW-Authenticate" grep -qi '^WWW-Authenticate: Bearer' "$T/headers"
req POST /v2/repository/index -H 'Authorization: Bearer wrong'; expect_error 403 forbidden "wrong token"
req POST /v2/repository/models/mnist/unload -H 'Authorization: Basic czNjcmV0'; expect_error 401 unauthorized "not a bearer token"
req POST /v2/repository/index -H 'Authorization: Bearer other'; expect_status 200 "second token"
req GET /v2/models/mnist; expect_status 200 "inference metadata open (auth_inference=false)"

# backpressure and deadlines
out=$($PY "$HERE/client.py" burst "$URL" "$T/digits" mnistq 48 0 0)
log "burst of 48 classify requests, batching off, queue_capacity 1: $out"
check "queue full answers 503 queue_full with Retry-After" $PY -c '
import json,sys; c=json.loads(sys.argv[1]); assert c.get("503/queue_full",0) >= 1 and c.get("200",0) >= 1 and set(c) <= {"200","503/queue_full"}, c' "$out"
out=$($PY "$HERE/client.py" burst "$URL" "$T/digits" mnist 4 128 1)
log "4 x 128 digits with a 1 ms deadline: $out"
check "deadline answers 504 deadline_exceeded" $PY -c '
import json,sys; c=json.loads(sys.argv[1]); assert c.get("504/deadline_exceeded",0) >= 1 and set(c) <= {"200","504/deadline_exceeded","503/queue_full"}, c' "$out"
still_serves "bursts"

# a slow client is cut off after connection_timeout_s while others are served
$PY "$HERE/client.py" slow "$URL" > "$T/slow.out" 2>&1 & slow_pid=$!
sleep 0.5
req POST /v1/models/mnist/classify -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_status 200 "served while a slow client stalls"
check "slow client closed" wait $slow_pid
log "$(cat "$T/slow.out")"
still_serves "slow client"
check "errors counted in metrics" bash -c "curl -s $URL/metrics | grep -q 'dynd_errors_total{code=\"json_too_deep\"} 1'"
stop_dynd
finish
