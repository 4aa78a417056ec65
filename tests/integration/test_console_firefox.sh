#!/usr/bin/env bash
# dynd web console in a second browser: Debian's firefox-esr (headless), driven by puppeteer-core
# (pinned in tests/integration/console-firefox/, no browser download) over WebDriver BiDi through
# tests/integration/console_firefox.js, against dynd on loopback with the demo model and auth on
# (auth_tokens + auth_inference). The script enters the token, visits every page and classifies
# an MNIST digit on "Try it"; any console error, page error, failed request or 4xx/5xx answer
# fails it (the same rules as test_console.sh, which runs the longer flow in chromium).
# Skipped (exit 0, "SKIP: ...") when firefox-esr is not installed (`make deps` installs it).
source "$(dirname "$0")/lib.sh"
echo "console-firefox: the web console in headless firefox-esr (token, pages, Try it)"
FIREFOX=${FIREFOX:-/usr/bin/firefox-esr}
if [ ! -x "$FIREFOX" ]; then
    echo "  SKIP: $FIREFOX is not installed (Debian package firefox-esr; \`make deps\` installs it)"
    exit 0
fi
command -v node >/dev/null 2>&1 || { echo "  FAIL: node is not installed (\`make deps\`)"; exit 1; }
export PUPPETEER_SKIP_DOWNLOAD=1
npm_pinned console-firefox puppeteer-core console-firefox

mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn"
[ -f "$MNIST/t10k-images-idx3-ubyte" ] || [ -f "$MNIST/t10k-images-idx3-ubyte.gz" ] ||
    { echo "FAIL: no MNIST in $ROOT/data (run make data)"; exit 1; }
make_digits 20 "$T/digits"
TOKEN=e2e-$$-$RANDOM
# DYND_TEST_PORT: a fixed port instead of a free one (for machines where ports are assigned).
start_dynd --port "${DYND_TEST_PORT:-0}" --auth-tokens "$TOKEN" --auth-inference true

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

OUT=${CONSOLE_E2E_OUT:-$ROOT/$BUILD/console-e2e-firefox}
[ -d "$ROOT/$BUILD" ] || OUT=${CONSOLE_E2E_OUT:-$BUILD/console-e2e-firefox}
rm -rf "$OUT" && mkdir -p "$OUT"
log "browser: $("$FIREFOX" --version 2>/dev/null | head -1); screenshot in $OUT"
# HOME: firefox writes a few files there even with puppeteer's temporary profile
if HOME=$T E2E_URL=$URL E2E_TOKEN=$TOKEN E2E_OUT=$OUT E2E_DIGIT=$DIGIT E2E_LABEL=$LABEL \
    E2E_FIREFOX=$FIREFOX NODE_PATH=$NM/node_modules \
    timeout 120 node "$HERE/console_firefox.js" > "$T/e2e.log" 2>&1; then
    ok
else
    fail "the browser test (node console_firefox.js) failed:"
fi
sed 's/^/    /' "$T/e2e.log"
stop_dynd
finish
