# lib.sh — shared by tests/integration/test_*.sh (sourced, not run): build dir, a model, a temp
# repository, starting the real dynd on a free loopback port, curl helpers and assertions.
# Needs bash, curl, python3 (stdlib only), cc with libpng/libjpeg (Debian packages in deps.sh).
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/integration
DYND=$ROOT/$BUILD/dynd
[ -x "$DYND" ] || DYND=$BUILD/dynd
[ -x "$DYND" ] || { echo "FAIL: no dynd binary in $BUILD (run make)"; exit 1; }
T=$(mktemp -d /tmp/dynd_it_XXXXXX)
DYND_PID=""
FAILS=0
CHECKS=0

cleanup() {
    if [ -n "$DYND_PID" ] && kill -0 "$DYND_PID" 2>/dev/null; then kill -KILL "$DYND_PID" 2>/dev/null || true; fi
    rm -rf "$T"
}
trap cleanup EXIT

log() { echo "  $*"; }
fail() { echo "  FAIL: $*"; FAILS=$((FAILS + 1)); }
ok() { CHECKS=$((CHECKS + 1)); }
check() { # check "description" command...
    local what=$1; shift
    if "$@"; then ok; else fail "$what"; fi
}
finish() {
    if grep -qE "Sanitizer|runtime error:" "$T/dynd.err" 2>/dev/null; then
        fail "sanitizer report in the daemon's log"; grep -E -A5 "Sanitizer|runtime error:" "$T/dynd.err" | head -20
    fi
    if [ "$FAILS" -ne 0 ]; then
        echo "  $FAILS failure(s); daemon log tail:"; tail -n 20 "$T/dynd.err" 2>/dev/null | sed 's/^/    /'
        exit 1
    fi
    echo "  ok ($CHECKS checks)"
}

# The demo model (DyN LeNet-5, 10 epochs on MNIST, 99.00 % here): `make models/mnist.dyn` trains it once;
# `make integration` does that before running these tests.
model_path() {
    if [ ! -f "$ROOT/models/mnist.dyn" ]; then
        echo "models/mnist.dyn is missing: run \`make models/mnist.dyn\` (or \`make integration\`)" >&2
        exit 1
    fi
    echo "$ROOT/models/mnist.dyn"
}

# npm_pinned DIR PACKAGE [NAME]: the npm packages pinned in tests/integration/DIR/package-lock.json,
# installed by `npm ci` into $BUILD/NAME-node (NAME defaults to DIR) once and again only when the
# lock changes (or PACKAGE is missing); sets NM to that directory. A failed npm ci fails the test.
npm_pinned() {
    local dir=$1 pkg=$2 name=${3:-$1}
    NM=$ROOT/$BUILD/$name-node
    [ -d "$ROOT/$BUILD" ] || NM=$BUILD/$name-node
    if ! cmp -s "$HERE/$dir/package-lock.json" "$NM/package-lock.json" || [ ! -d "$NM/node_modules/$pkg" ]; then
        log "installing the pinned npm packages into $NM (npm ci)"
        rm -rf "$NM" && mkdir -p "$NM"
        cp "$HERE/$dir/package.json" "$HERE/$dir/package-lock.json" "$NM/"
        (cd "$NM" && npm ci --no-audit --no-fund --loglevel=error >"$T/npm.log" 2>&1) ||
            { echo "  FAIL: npm ci in $NM failed (is the npm registry reachable?):"; tail -n 20 "$T/npm.log"; rm -rf "$NM"; exit 1; }
    fi
}

# Debian's python3 when present (stdlib only; a pyenv shim costs a second per start).
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

MNIST=$ROOT/data/mnist
# Test digits as PNG / JPEG / raw bytes, written by an independent helper (libpng / libjpeg).
make_digits() { # make_digits N dir
    local n=$1 dir=$2
    mkdir -p "$dir"
    if [ ! -x "$T/mkdigits" ]; then
        cc -O2 -Wall -Werror -o "$T/mkdigits" "$HERE/mkdigits.c" -lpng -ljpeg -lz
    fi
    local img=$MNIST/t10k-images-idx3-ubyte lab=$MNIST/t10k-labels-idx1-ubyte
    [ -f "$img" ] || { gunzip -c "$img.gz" > "$T/img.idx"; img=$T/img.idx; }
    [ -f "$lab" ] || { gunzip -c "$lab.gz" > "$T/lab.idx"; lab=$T/lab.idx; }
    "$T/mkdigits" "$img" "$lab" "$dir" "$n" 95
}

# start_dynd [flags...]: starts dynd on a free port with model_dir $T/models; sets PORT, URL;
# returns once it is ready (its first repository scan ended: dynd listens before it), or once
# it listens when NO_READY_WAIT=1.
start_dynd() {
    : > "$T/dynd.out"
    "$DYND" --model-dir "$T/models" --state-dir "$T/state" --port 0 --log-level warn "$@" \
        > "$T/dynd.out" 2> "$T/dynd.err" &
    DYND_PID=$!
    local i
    for i in $(seq 1 200); do
        if grep -q "listening on" "$T/dynd.out" 2>/dev/null; then break; fi
        kill -0 "$DYND_PID" 2>/dev/null || { echo "FAIL: dynd exited at start:"; cat "$T/dynd.err"; exit 1; }
        sleep 0.05
    done
    PORT=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$T/dynd.out" | head -1)
    [ -n "$PORT" ] || { echo "FAIL: dynd did not report its port"; cat "$T/dynd.err"; exit 1; }
    URL=http://127.0.0.1:$PORT
    [ "${NO_READY_WAIT:-0}" = 1 ] && return 0
    for i in $(seq 1 1200); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$URL/v2/health/ready")" = 200 ] && return 0
        kill -0 "$DYND_PID" 2>/dev/null || { echo "FAIL: dynd exited at start:"; cat "$T/dynd.err"; exit 1; }
        sleep 0.05
    done
    echo "FAIL: dynd did not become ready"; cat "$T/dynd.err"; exit 1
}

stop_dynd() {
    if [ -n "$DYND_PID" ]; then
        kill -TERM "$DYND_PID" 2>/dev/null || true
        wait "$DYND_PID" 2>/dev/null || true
        DYND_PID=""
    fi
}

# req METHOD PATH [curl args...]: sets STATUS, BODY (and HEADERS in $T/headers).
req() {
    local method=$1 path=$2; shift 2
    BODY=$(curl -sS --path-as-is -m 20 -X "$method" -D "$T/headers" -o - -w '\n%{http_code}' "$@" "$URL$path" || true)
    STATUS=${BODY##*$'\n'}
    BODY=${BODY%$'\n'*}
}

json_get() { # json_get 'python expression on j' — reads BODY
    $PY -c 'import json,sys; j=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$BODY" "$1" 2>/dev/null
}

# expect_error STATUS CODE description: BODY must be {"error": ..., "code": CODE} with STATUS.
expect_error() {
    local st=$1 code=$2 what=$3
    local got
    got=$(json_get 'j["code"] if isinstance(j.get("error"), str) and j["error"] else "NO-ERROR-FIELD"' || echo "NOT-JSON")
    if [ "$STATUS" = "$st" ] && [ "$got" = "$code" ]; then ok; else
        fail "$what: expected $st/$code, got $STATUS/$got: ${BODY:0:200}"; fi
}

expect_status() {
    if [ "$STATUS" = "$1" ]; then ok; else fail "$2: expected $1, got $STATUS: ${BODY:0:200}"; fi
}

# The daemon still answers (after each bad input).
still_serves() {
    local st
    st=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$URL/v2/health/live" || true)
    if [ "$st" = 200 ] && kill -0 "$DYND_PID" 2>/dev/null; then ok; else fail "daemon stopped serving after: $1"; fi
}
