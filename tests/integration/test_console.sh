#!/usr/bin/env bash
# dynd web console, end to end in a real browser: Debian's chromium (headless) driven by
# playwright-core (pinned in tests/integration/console/, no browser download) through
# tests/integration/console_e2e.js against dynd on loopback with the demo model, auth on
# (auth_tokens + auth_inference, so the console must ask for the token and send it).
# The script enters the token, visits every page, classifies an MNIST digit on "Try it" and
# checks the label, starts a small conversion on "Convert" and follows it to 100 % and its
# per-layer chart, checks a phone-width layout, keyboard reach of the nav links and a label on
# every input; any console error, page error, failed request or 4xx/5xx answer fails it.
# Screenshots of each page go to $CONSOLE_E2E_OUT (default <build>/console-e2e); with
# CONSOLE_SCREENSHOTS=docs/console they are also copied there (the README's pictures).
# Skipped (exit 0, "SKIP: ...") when chromium is not installed (`make deps` installs it).
source "$(dirname "$0")/lib.sh"
echo "console: the web console in headless chromium (token, pages, Try it, Convert, phone width)"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
    echo "  SKIP: $CHROMIUM is not installed (Debian package chromium; \`make deps\` installs it)"
    exit 0
fi
command -v node >/dev/null 2>&1 || { echo "  FAIL: node is not installed (\`make deps\`)"; exit 1; }
npm_pinned console playwright-core console-e2e # build/console-node holds the console's own uPlot

mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn"
[ -f "$MNIST/train-images-idx3-ubyte" ] || [ -f "$MNIST/train-images-idx3-ubyte.gz" ] ||
    { echo "FAIL: no MNIST in $ROOT/data (run make data)"; exit 1; }
DATA=$T/data
mkdir -p "$DATA" && ln -s "$MNIST" "$DATA/mnist"
make_digits 20 "$T/digits"
TOKEN=e2e-$$-$RANDOM
# DYND_TEST_PORT: a fixed port instead of a free one (for machines where ports are assigned).
start_dynd --port "${DYND_TEST_PORT:-0}" --auth-tokens "$TOKEN" --auth-inference true --data-dir "$DATA" \
    --jobs-max-concurrent 1

# A digit the model classifies right through the API (the browser must then show the same label).
DIGIT="" LABEL=""
while read -r i lab; do
    req POST /v1/models/mnist/classify -H "Authorization: Bearer $TOKEN" -H 'Content-Type: image/png' \
        --data-binary "@$T/digits/$i.png"
    if [ "$STATUS" = 200 ] && [ "$(json_get 'j["predictions"][0]["label"]')" = "$lab" ]; then
        DIGIT=$T/digits/$i.png LABEL=$lab; break
    fi
done < "$T/digits/labels.txt"
check "the API classifies one of the first 20 test digits right" [ -n "$DIGIT" ]
[ -n "$DIGIT" ] || finish

OUT=${CONSOLE_E2E_OUT:-$ROOT/$BUILD/console-e2e}
[ -d "$ROOT/$BUILD" ] || OUT=${CONSOLE_E2E_OUT:-$BUILD/console-e2e}
rm -rf "$OUT" && mkdir -p "$OUT"
log "browser: $("$CHROMIUM" --version 2>/dev/null | head -1); screenshots in $OUT"
if E2E_URL=$URL E2E_TOKEN=$TOKEN E2E_OUT=$OUT E2E_DIGIT=$DIGIT E2E_LABEL=$LABEL \
    E2E_ONNX=$ROOT/tests/fixtures/lenet5.onnx E2E_CHROMIUM=$CHROMIUM NODE_PATH=$NM/node_modules \
    timeout 180 node "$HERE/console_e2e.js" > "$T/e2e.log" 2>&1; then
    ok
else
    fail "the browser test (node console_e2e.js) failed:"
fi
sed 's/^/    /' "$T/e2e.log"
shots=$(find "$OUT" -name '*.png' | wc -l)
check "screenshots saved ($shots)" [ "$shots" -ge 7 ]
stop_dynd
if [ -n "${CONSOLE_SCREENSHOTS:-}" ] && [ "$FAILS" -eq 0 ]; then
    mkdir -p "$ROOT/$CONSOLE_SCREENSHOTS"
    cp "$OUT"/*.png "$ROOT/$CONSOLE_SCREENSHOTS/"
    log "screenshots copied to $CONSOLE_SCREENSHOTS/"
fi
finish
