#!/usr/bin/env bash
# Protocol conformance (issue 11): what unmodified Triton / KServe clients send and expect.
# A JSON body labelled application/octet-stream without Inference-Header-Content-Length,
# compressed request bodies (gzip, deflate; bombs stop at max_body_bytes; 415 for other
# codings), gzip replies for Accept-Encoding, no "id" in a reply to a request without one, the
# repository index with {"ready": true}, load parameters refused by name, the statistics
# extension's batch_stats / compute_input / compute_output / cache_hit and failure counts, the
# model configuration, and the shape-mismatch message. The checks are in v2_conformance.py.
source "$(dirname "$0")/lib.sh"
echo "v2 conformance: third-party client behaviour"
mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn"
printf 'not a model file' > "$T/models/broken.dyn"
make_digits 8 "$T/digits"
MAX_BODY=200000
# (no tokens: a conversion upload and model loads are sent without one, so writes are allowed)
start_dynd --max-body-bytes "$MAX_BODY" --max-batch 16 --max-queue-delay-us 500 --allow-unauthenticated-writes

$PY "$HERE/v2_conformance.py" "$URL" "$T/digits" "$MAX_BODY" 16 > "$T/conformance.out" 2>&1 || true
while IFS= read -r line; do
    case $line in
        PASS\ *) ok ;;
        FAIL\ *) fail "${line#FAIL }" ;;
        *) fail "unexpected output: $line" ;;
    esac
done < "$T/conformance.out"
log "$(grep -c '^PASS' "$T/conformance.out" || true) protocol checks passed"
check "the checks ran (at least 80)" [ "$(grep -c '^\(PASS\|FAIL\)' "$T/conformance.out")" -ge 80 ]
still_serves "the conformance checks"
stop_dynd
finish
