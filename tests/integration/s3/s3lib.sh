# s3lib.sh — s3rver for the store tests (sourced after lib.sh; BUCKET set before start_s3):
# install it, start it, talk to it as an operator's tool would, wait for conditions.

# s3_prepare: skips the test (a SKIP line, exit 0) without node / npm, installs the pinned s3rver
# (npm_pinned: tests/integration/s3/package-lock.json), fails the test without MNIST (make data).
s3_prepare() {
    local tool
    for tool in node npm; do
        command -v "$tool" >/dev/null 2>&1 ||
            { echo "  SKIP: $tool not found: this test needs Node.js and npm for s3rver (make deps installs Debian's npm)"; exit 0; }
    done
    npm_pinned s3 s3rver
    [ -f "$ROOT/data/mnist/train-images-idx3-ubyte" ] || [ -f "$ROOT/data/mnist/train-images-idx3-ubyte.gz" ] ||
        { echo "  FAIL: no MNIST in $ROOT/data (run make data)"; exit 1; }
}

# start_s3 [port]: s3rver on loopback (port 0 or none: any free one), data in $T/s3 (kept across
# restarts); sets S3_PID and S3_PORT.
start_s3() {
    mkdir -p "$T/s3"
    : > "$T/s3.log"
    node "$NM/node_modules/s3rver/bin/s3rver.js" -d "$T/s3" -a 127.0.0.1 -p "${1:-0}" -s \
        --configure-bucket "$BUCKET" > "$T/s3.log" 2>&1 &
    S3_PID=$!
    local i
    for i in $(seq 1 200); do
        S3_PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$T/s3.log" | head -1)
        [ -n "$S3_PORT" ] && return 0
        kill -0 "$S3_PID" 2>/dev/null || { echo "  FAIL: s3rver exited:"; cat "$T/s3.log"; exit 1; }
        sleep 0.05
    done
    echo "  FAIL: s3rver did not report its port"; cat "$T/s3.log"; exit 1
}
# s3 METHOD KEY [curl args]: a signed request to the store (curl's own SigV4, not dynd's).
s3() {
    local m=$1 k=$2; shift 2
    curl -sS -m 10 -X "$m" --aws-sigv4 "aws:amz:us-east-1:s3" -u S3RVER:S3RVER \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@" "http://127.0.0.1:$S3_PORT/$BUCKET/$k"
}
# s3_keys PREFIX: the keys under PREFIX, one a line, sorted.
s3_keys() { s3 GET "?list-type=2&prefix=$1" | grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g' | sort; }
# until_true SECONDS command...: retries the command every 0.1 s; 1 when it never held.
until_true() {
    local limit=$1 t0=$SECONDS; shift
    until "$@"; do [ $((SECONDS - t0)) -lt "$limit" ] || return 1; sleep 0.1; done
}
