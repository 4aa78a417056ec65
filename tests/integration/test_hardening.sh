#!/usr/bin/env bash
# dynd hardening (issue 11): hostile or malformed input is refused with a 4xx naming what is wrong,
# and never stalls other connections — many-part multipart bodies (parsed in one forward scan),
# a truncated JPEG with an end marker, repeated multipart fields, invalid query values,
# conflicting Content-Length headers, Content-Length with Transfer-Encoding.
source "$(dirname "$0")/lib.sh"
echo "hardening: multipart work, truncated JPEG, repeated fields, query values, body framing"
mkdir -p "$T/models" && cp "$(model_path)" "$T/models/mnist.dyn"
make_digits 1 "$T/digits"
# (no tokens: the conversions and data set uploads below test their parsers, so writes are
# allowed explicitly)
start_dynd --max-body-bytes 4194304 --allow-unauthenticated-writes

# ---- defect 1: four 3.8 MB bodies at once, each of 100,000 parts without Content-Disposition
# (the old parser searched the rest of the body once per part: minutes each; one parse is
# linear now, and the unit test test_srv_multipart counts its work). Each is answered (400: the
# first part is not an image) and /v2/health/live answers while they are sent and parsed. The
# bounds (curl -m) are limits against a hang, hundreds of times what the linear parse needs, not
# measurements.
$PY - "$T/many.bin" <<'PY'
import sys
part = b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n"
with open(sys.argv[1], "wb") as f:
    f.write(part * 100000 + b"--XyZ--\r\n")
PY
big=$(stat -c %s "$T/many.bin")
pids=()
for i in 1 2 3 4; do
    curl -sS -m 20 -o "$T/many$i.out" -w '%{http_code}' -H 'Content-Type: multipart/form-data; boundary=XyZ' \
        --data-binary "@$T/many.bin" "$URL/v1/models/mnist/classify" > "$T/many$i.status" 2>&1 &
    pids+=($!)
done
live_ok=0
for i in 1 2 3 4 5; do
    st=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/v2/health/live" || true)
    [ "$st" = 200 ] && live_ok=$((live_ok + 1))
done
wait "${pids[@]}" || true
check "health/live answered 5 of 5 times alongside four $big-byte many-part bodies ($live_ok)" [ "$live_ok" = 5 ]
for i in 1 2 3 4; do
    STATUS=$(cat "$T/many$i.status"); BODY=$(cat "$T/many$i.out" 2>/dev/null || true)
    expect_error 400 bad_image "many-part multipart body $i ($big bytes)"
done
still_serves "many-part multipart bodies"

# ---- defect 5: a JPEG cut inside its scan data with an end marker appended is refused, not
# classified (libjpeg pads it with grey and only warns).
$PY - "$T/digits/0.jpg" "$T/cut.jpg" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
sos = b.index(b"\xff\xda")
scan = sos + 2 + (b[sos + 2] << 8 | b[sos + 3])
cut = scan + (len(b) - 2 - scan) // 3
while b[cut - 1] == 0xFF: cut += 1
open(sys.argv[2], "wb").write(b[:cut] + b"\xff\xd9")
PY
req POST /v1/models/mnist/classify -H 'Content-Type: image/jpeg' --data-binary "@$T/cut.jpg"
expect_error 400 bad_image "JPEG cut in its scan + EOI"
req POST /v1/models/mnist/classify -H 'Content-Type: image/jpeg' --data-binary "@$T/digits/0.jpg"
expect_status 200 "the whole JPEG"

# ---- defect 7: a repeated field is a 400 naming it, on the buffered (classify) and the streamed
# (conversions) multipart parsers.
req POST /v1/models/mnist/classify -F "image=@$T/digits/0.png;type=image/png" \
    -F "image=@$T/digits/0.png;type=image/png"
expect_error 400 duplicate_field "classify: image given twice"
check "classify: the message names the field" grep -q "'image'" <<< "$BODY"
printf 'not really onnx' > "$T/m.onnx"
req POST /v1/conversions -F "file=@$T/m.onnx" -F output=a1 -F output=a2
expect_error 400 duplicate_field "conversion: output given twice"
check "conversion: the message names the field" grep -q "'output'" <<< "$BODY"
req POST /v1/conversions -F "file=@$T/m.onnx" -F ratio=4 -F output=x1 -F ratio=8
expect_error 400 duplicate_field "conversion: ratio given twice (apart)"
check "no job was created" [ ! -e "$T/models/a1a2.dyn" ]
# Many distinct fields (values cut across libmicrohttpd's buffer, reported from offset 0 twice)
# are not repeats: 5,000 fields of 10 bytes reach the options check (unknown option o00000).
# Text fields are capped at 64 KiB in all (names and values, counted as they arrive): 10,000
# are refused.
for n in 5000 10000; do
    $PY - "$T/fields.bin" "$n" <<'PY'
import sys
with open(sys.argv[1], "wb") as f:
    f.write(b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\nnot onnx\r\n')
    for i in range(int(sys.argv[2])):
        f.write(b'--XyZ\r\nContent-Disposition: form-data; name="o%05d"\r\n\r\nxxxx\r\n' % i)
    f.write(b"--XyZ--\r\n")
PY
    req POST /v1/conversions -H 'Content-Type: multipart/form-data; boundary=XyZ' --data-binary "@$T/fields.bin"
    if [ "$n" = 5000 ]; then expect_error 400 unknown_option "conversion: $n distinct text fields"
    else expect_error 400 bad_multipart "conversion: $n distinct text fields (over 64 KiB)"; fi
done

# ---- a refused classify of a served model counts as a failure in its v2 statistics
fails() { req GET /v2/models/mnist/stats; json_get 'j["model_stats"][0]["inference_stats"]["fail"]["count"]'; }
f0=$(fails)
req POST /v1/models/mnist/classify -H 'Content-Type: image/png' --data-binary 'not a png'
expect_error 400 bad_image "classify of a damaged PNG"
check "the refused classify counted in inference_stats.fail ($f0 -> $(fails))" [ "$(fails)" = $((f0 + 1)) ]

# ---- defect 8: invalid query values are a 400 naming the parameter: bad escapes, %00, values
# over 32 characters, a key without a value where one is needed, and a key given twice.
long=$(printf '1%.0s' $(seq 1 40))
for q in "top_k=%zz" "top_k=%0" "top_k=3%00" "top_k=$long" "top_k" "top_k=1&top_k=50"; do
    req POST "/v1/models/mnist/classify?$q" -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
    expect_error 400 invalid_parameter "classify ?$q"
    check "classify ?$q names top_k" grep -q "top_k" <<< "$BODY"
done
req POST "/v1/models/mnist/classify?top_k=%32" -H 'Content-Type: image/png' --data-binary "@$T/digits/0.png"
expect_status 200 "top_k=%32 (decodes to 2)"
check "top_k=%32 gives 2 classes" [ "$(json_get 'len(j["predictions"])')" = 2 ]
for q in "state=%zz" "state=$(printf 'queued%.0s' $(seq 1 6))" "kind=a%2" "state"; do
    req GET "/v1/jobs?$q"
    expect_error 400 invalid_parameter "jobs ?$q"
    check "jobs ?$q names the parameter" grep -q "'${q%%=*}'\|${q%%=*} must" <<< "$BODY"
done
req GET "/v1/jobs?state=queued"; expect_status 200 "jobs ?state=queued"
req PUT "/v1/datasets/d?overwrite=%G1" -T "$T/m.onnx"
expect_error 400 invalid_parameter "datasets ?overwrite=%G1"
req POST "/v1/conversions?ratio=%zz&output=q" --data-binary "@$T/m.onnx" -H 'Content-Type: application/octet-stream'
expect_error 400 invalid_parameter "conversion options from the query: ratio=%zz"
check "conversion query: the message names ratio" grep -q "'ratio'" <<< "$BODY"
# a conversion option given twice in the query (also once percent-encoded) is refused naming it,
# not the last value taken
req GET /v1/jobs; njobs=$(json_get 'len(j["jobs"])')
for q in "ratio=4&output=q&ratio=8" "output=q1&outpu%74=q2"; do
    req POST "/v1/conversions?$q" --data-binary "@$T/m.onnx" -H 'Content-Type: application/octet-stream'
    expect_error 400 invalid_parameter "conversion options from the query: ?$q"
    k=${q%%=*}
    check "conversion query ?$q: the message names $k" grep -q "'$k' is given more than once" <<< "$BODY"
done
req GET /v1/jobs
check "no job was created for a repeated query option ($njobs -> $(json_get 'len(j["jobs"])'))" \
    [ "$(json_get 'len(j["jobs"])')" = "$njobs" ]

# ---- defect 9: two different Content-Length headers (request smuggling) are refused, and the
# connection is closed: the bytes after the shorter body are never read as a second request.
# Content-Length and Transfer-Encoding together (RFC 9112 6.3) likewise: libmicrohttpd framed
# such a body as chunked and kept the connection, so a proxy framing it by the length would see
# the request after it differently (with a coding it does not know, such as "gzip, chunked", it
# sent no reply at all). A chunked body alone is still read (the handler's
# own 400 for the empty inputs).
$PY - "$PORT" > "$T/cl.out" <<'PY'
import socket, sys
port = int(sys.argv[1])
body = b'{"inputs":[]}'
chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
smuggled = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
def exchange(raw):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(raw)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d: break
            out += d
    except socket.timeout:
        out += b"TIMEOUT"
    s.close()
    return out
def refused(head, payload, code):
    out = exchange(req + head + b"\r\n" + payload + smuggled)
    print(out.count(b"HTTP/1.1 "), out.split(b"\r\n")[0].decode(), code in out, b"TIMEOUT" in out)
req = b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
for a, b in ((b"13", b"5"), (b"5", b"13")):
    refused(b"Content-Length: " + a + b"\r\nContent-Length: " + b + b"\r\n", body,
            b"conflicting_content_length")
for head in (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
             b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(chunked),
             b"Content-Length: 13\r\nTransfer-Encoding: gzip, chunked\r\n"):
    refused(head, chunked, b'"conflicting_framing"')
out = exchange(req + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked)
print(out.split(b"\r\n")[0].decode(), b'"invalid_request"' in out)
PY
check "two different Content-Length headers: one 400 reply, closed ($(head -2 "$T/cl.out" | tr '\n' '|'))" \
    [ "$(head -2 "$T/cl.out")" = $'1 HTTP/1.1 400 Bad Request True False\n1 HTTP/1.1 400 Bad Request True False' ]
check "Content-Length with Transfer-Encoding: one 400 conflicting_framing each, closed ($(sed -n 3,5p "$T/cl.out" | tr '\n' '|'))" \
    [ "$(sed -n 3,5p "$T/cl.out")" = $'1 HTTP/1.1 400 Bad Request True False\n1 HTTP/1.1 400 Bad Request True False\n1 HTTP/1.1 400 Bad Request True False' ]
check "a chunked body alone reaches the handler ($(tail -1 "$T/cl.out"))" \
    [ "$(tail -1 "$T/cl.out")" = "HTTP/1.1 400 Bad Request True" ]
req POST /v2/models/mnist/infer -H 'Content-Type: application/json' -H 'Content-Length: 13' -d '{"inputs":[]}'
expect_error 400 invalid_request "one Content-Length header still works"
still_serves "conflicting Content-Length, Content-Length with Transfer-Encoding"

stop_dynd

# Job errors show no server paths: a fine-tune on a data set whose file is damaged fails with
# "data_dir/..." in its error, never the absolute path (which the log keeps).
mkdir -p "$T/data/broken"
printf 'junk' > "$T/data/broken/train-images-idx3-ubyte"
cp "$T/data/broken/train-images-idx3-ubyte" "$T/data/broken/train-labels-idx1-ubyte"
# a copy of the model whose preprocess metadata is unusable (an unknown resize mode)
$PY - "$T/models/mnist.dyn" "$T/models/badpp.dyn" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
pp = json.loads(h["__metadata__"]["preprocess"])
pp["resize"] = "banana"
h["__metadata__"]["preprocess"] = json.dumps(pp)
hb = json.dumps(h).encode()
hb += b" " * (-len(hb) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
start_dynd --log-level info --data-dir "$T/data" --auth-tokens tok
req POST /v1/finetunes -H 'Authorization: Bearer tok' -H 'Content-Type: application/json' \
    -d '{"model": "mnist", "data": "broken", "epochs": 1, "output": "ft1"}'
JOB=$(json_get 'j["id"]' || true)
for _ in $(seq 1 100); do
    req GET "/v1/jobs/$JOB" -H "Authorization: Bearer tok"
    [ "$(json_get 'j["state"]')" = failed ] && break
    sleep 0.2
done
ERR=$(json_get 'j["error"]' || true)
log "failed job's error: $ERR"
check "job error names data_dir, not the server's path" bash -c "[[ '$ERR' == *data_dir/broken/* && '$ERR' != *'$T'* ]]"
check "the log keeps the full path" grep -q "job failed (the full message.*$T/data/broken" "$T/dynd.err"
check "unusable preprocess metadata is logged with the reason" \
    grep -q '"msg":"model.s preprocess metadata refused.*"model":"badpp".*"error":"preprocess.resize' "$T/dynd.err"
stop_dynd
finish
