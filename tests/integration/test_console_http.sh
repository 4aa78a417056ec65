#!/usr/bin/env bash
# The web console over HTTP (curl; the browser test is test_console.sh): / and every embedded
# file served byte for byte with its media type, an ETag (If-None-Match -> 304 with no body),
# Cache-Control and a strict Content-Security-Policy, without a token on a dynd that has
# tokens; every file index.html loads is embedded; an unknown file is the API's 404 JSON
# error; classify ?input_image=true returns a PNG data: URL of the model's input size whose
# pixels are the digit sent (the MNIST model's normalization undone).
source "$(dirname "$0")/lib.sh"
echo "console: embedded files, caching headers, CSP, classify input_image"
mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn"
make_digits 3 "$T/digits"
start_dynd --auth-tokens tok
UPLOT=$ROOT/$BUILD/console-node/node_modules/uplot/dist
[ -d "$UPLOT" ] || UPLOT=$BUILD/console-node/node_modules/uplot/dist

hdr() { # hdr NAME: the value of reply header NAME in $T/headers ("" when absent)
    grep -i "^$1:" "$T/headers" | head -1 | sed 's/^[^:]*: *//; s/\r$//'
}

# serves PATH SOURCE TYPE: GET PATH answers SOURCE's bytes with TYPE and the caching/CSP headers
serves() {
    local path=$1 src=$2 type=$3
    curl -sS -m 20 -D "$T/headers" -o "$T/got" "$URL$path" || true
    check "$path: 200" grep -q "^HTTP/1.1 200" "$T/headers"
    check "$path: the embedded bytes of $src" cmp -s "$T/got" "$src"
    check "$path: Content-Type $type (got '$(hdr Content-Type)')" [ "$(hdr Content-Type)" = "$type" ]
    local etag csp
    etag=$(hdr ETag)
    check "$path: an ETag" grep -qE '^W/"[0-9a-f]{32}"$' <<< "$etag"
    check "$path: Cache-Control no-cache" [ "$(hdr Cache-Control)" = no-cache ]
    check "$path: nosniff" [ "$(hdr X-Content-Type-Options)" = nosniff ]
    csp=$(hdr Content-Security-Policy)
    check "$path: CSP: scripts from this origin only ($csp)" grep -q "script-src 'self';" <<< "$csp"
    check "$path: CSP: nothing by default, no inline, no eval" \
        bash -c "grep -q \"default-src 'none'\" <<< \"\$1\" && ! grep -qE 'unsafe-|\\*|http' <<< \"\$1\"" _ "$csp"
    # conditional requests: the same tag (also weak-compared, in a list) -> 304, no body
    req GET "$path" -H "If-None-Match: $etag"
    check "$path: If-None-Match -> 304 (got $STATUS)" [ "$STATUS" = 304 ]
    check "$path: 304 has no body" [ -z "$BODY" ]
    check "$path: 304 repeats the ETag" [ "$(hdr ETag)" = "$etag" ]
    req GET "$path" -H "If-None-Match: \"other\", ${etag#W/}"
    check "$path: a list holding the tag -> 304 (got $STATUS)" [ "$STATUS" = 304 ]
    req GET "$path" -H "If-None-Match: *"
    check "$path: If-None-Match * -> 304 (got $STATUS)" [ "$STATUS" = 304 ]
    req GET "$path" -H 'If-None-Match: W/"0123456789abcdef0123456789abcdef"'
    check "$path: another tag -> 200 (got $STATUS)" [ "$STATUS" = 200 ]
    # compressed when asked for, same bytes once decoded
    curl -sS -m 20 --compressed -o "$T/gz" "$URL$path" || true
    check "$path: gzip'd reply decodes to the same bytes" cmp -s "$T/gz" "$src"
}

H='text/html; charset=utf-8' J='text/javascript; charset=utf-8' C='text/css; charset=utf-8'
serves / "$ROOT/clients/console/index.html" "$H"
serves /console/index.html "$ROOT/clients/console/index.html" "$H"
serves /console/app.js "$ROOT/clients/console/app.js" "$J"
serves /console/style.css "$ROOT/clients/console/style.css" "$C"
serves /console/uPlot.iife.min.js "$UPLOT/uPlot.iife.min.js" "$J"
serves /console/uPlot.min.css "$UPLOT/uPlot.min.css" "$C"

# every script and stylesheet index.html names is served (no CDN: all under /console/), and it
# has no inline script (the CSP would block it)
refs=$($PY - "$ROOT/clients/console/index.html" <<'PY'
import re, sys
html = open(sys.argv[1]).read()
for m in re.finditer(r'<(script|link)\b([^>]*)>', html):
    tag, attrs = m.group(1), m.group(2)
    src = re.search(r'(?:src|href)="([^"]*)"', attrs)
    if tag == "script" and not src:
        print("INLINE-SCRIPT")
    elif src and not src.group(1).startswith("data:"):
        print(src.group(1))
PY
)
check "index.html loads files (found: $(echo $refs))" [ "$(wc -w <<< "$refs")" -ge 4 ]
for ref in $refs; do
    if [ "$ref" = INLINE-SCRIPT ]; then fail "index.html has an inline script"; continue; fi
    check "index.html's $ref is under /console/" grep -q '^/console/' <<< "$ref"
    req GET "$ref"; check "index.html's $ref is served (got $STATUS)" [ "$STATUS" = 200 ]
done
check "app.js writes no persistent storage" bash -c "! grep -qE 'localStorage\.|document\.cookie' '$ROOT/clients/console/app.js'"

# an unknown file, and a name that tries to leave the table: the API's 404 error
req GET /console/nope.js; expect_error 404 not_found "unknown console file"
req GET /console/..%2Fapi%2Fmain.c; expect_error 404 not_found "encoded ../ in a console file name"
req GET /console/; expect_error 404 not_found "/console/ with no file"
req POST /; check "POST / is 405 (got $STATUS)" [ "$STATUS" = 405 ]

# what the console reads to ask for the token before its first call (no secret in it)
req GET /v2
check "GET /v2 says what needs a token: $BODY" [ "$(json_get 'j["auth"]')" = "{'admin': True, 'inference': False, 'writes': True}" ]

# ---- classify ?input_image=true ----
req POST "/v1/models/mnist/classify?top_k=3" -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_status 200 "classify without input_image"
check "no input_image unless asked for" [ "$(json_get '"input_image" in j')" = False ]
req POST "/v1/models/mnist/classify?input_image=maybe" -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_error 400 invalid_parameter "input_image=maybe"
for i in 0 1 2; do
    req POST "/v1/models/mnist/classify?input_image=true&top_k=5" -H 'Content-Type: image/png' \
        --data-binary "@$T/digits/$i.png"
    expect_status 200 "classify with input_image (digit $i)"
    check "digit $i: top-5 predictions beside the image" [ "$(json_get 'len(j["predictions"])')" = 5 ]
    # the data: URL is a 28 x 28 grey PNG whose pixels are the digit's (normalization undone:
    # within 1 of the 8-bit original, which mkdigits wrote raw to <i>.u8)
    out=$(printf '%s' "$BODY" | $PY -c '
import base64, json, struct, sys, zlib
j = json.load(sys.stdin)
url = j["input_image"]
prefix = "data:image/png;base64,"
assert url.startswith(prefix), url[:40]
png = base64.b64decode(url[len(prefix):], validate=True)
assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, ihdr = 8, b"", None
while pos < len(png):
    n, typ = struct.unpack(">I4s", png[pos:pos + 8])
    data = png[pos + 8:pos + 8 + n]
    if typ == b"IHDR": ihdr = struct.unpack(">IIBBBBB", data)
    if typ == b"IDAT": idat += data
    pos += 12 + n
w, h, depth, ctype = ihdr[:4]
assert depth == 8 and ctype in (0, 2), ihdr
c = 1 if ctype == 0 else 3
raw, rows, prev, k = zlib.decompress(idat), [], bytearray(w * c), 0
for y in range(h):  # undo the PNG row filters
    f, line = raw[k], bytearray(raw[k + 1:k + 1 + w * c]); k += 1 + w * c
    for x in range(len(line)):
        a = line[x - c] if x >= c else 0; b = prev[x]; cc = prev[x - c] if x >= c else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - cc; pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else cc)) & 255
    rows.append(line); prev = line
px = b"".join(rows)
ref = open(sys.argv[1], "rb").read()
assert len(px) == len(ref), (len(px), len(ref))
print(w, h, c, max(abs(p - q) for p, q in zip(px, ref)))
' "$T/digits/$i.u8" 2>&1 || true)
    check "digit $i: input_image is a 28x28 grey PNG (got: $out)" [ "${out% *}" = "28 28 1" ]
    check "digit $i: its pixels are the digit's, within 1 (max diff: ${out##* })" [ "${out##* }" -le 1 ] 2>/dev/null
done
still_serves "the console tests"
finish
