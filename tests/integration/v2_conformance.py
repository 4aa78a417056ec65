#!/usr/bin/env python3
"""Open Inference Protocol / Triton conformance checks against a running dynd (stdlib only).

  v2_conformance.py URL DIGITS_DIR MAX_BODY_BYTES MAX_BATCH

Speaks the protocol the way third-party clients do (aiohttp's octet-stream label, compressed
bodies, Accept-Encoding, Triton's repository / statistics / configuration requests) and prints
one line per check: "PASS name" or "FAIL name: detail". Exit status 0 (the shell counts).
The daemon must serve the demo model as "mnist" and have a model "broken" whose file does not
load.
"""
import gzip
import http.client
import json
import os
import sys
import zlib
from urllib.parse import urlparse

URL, DIGITS, MAX_BODY, MAX_BATCH = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
U = urlparse(URL)


def call(method, path, body=None, headers=None):
    """(status, raw body bytes, response headers as a dict with lower-case names)."""
    c = http.client.HTTPConnection(U.hostname, U.port, timeout=30)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, data, hdrs


def jcall(method, path, body=None, headers=None):
    """Like call, the reply parsed as JSON (None when it is not)."""
    st, data, h = call(method, path, body, headers)
    try:
        return st, json.loads(data), h
    except ValueError:
        return st, None, h


def report(name, ok, detail=""):
    print(("PASS %s" % name) if ok else ("FAIL %s: %s" % (name, detail)), flush=True)


def pixels(i):
    with open(os.path.join(DIGITS, "%d.u8" % i), "rb") as f:
        return list(f.read())


def infer_body(n=1, rid=None, shape=None, outputs=None):
    px = []
    for i in range(n):
        px += pixels(i)
    req = {"inputs": [{"name": "input", "shape": shape or [n, 1, 28, 28], "datatype": "UINT8",
                       "data": px}]}
    if rid is not None:
        req["id"] = rid
    if outputs is not None:
        req["outputs"] = outputs
    return json.dumps(req).encode()


def err_code(j):
    return j.get("code") if isinstance(j, dict) and isinstance(j.get("error"), str) else None


INFER = "/v2/models/mnist/infer"
JSON = {"Content-Type": "application/json"}


def octet_stream_json():
    """A JSON body labelled application/octet-stream without Inference-Header-Content-Length
    (Triton's aiohttp client) is JSON."""
    st, j, _ = jcall("POST", INFER, infer_body(rid="o1"), {"Content-Type": "application/octet-stream"})
    report("octet-stream JSON without the header: 200", st == 200, "%s %s" % (st, str(j)[:200]))
    report("octet-stream JSON: outputs", st == 200 and j and len(j.get("outputs", [])) == 2
           and j.get("id") == "o1", str(j)[:200])


def compressed_requests():
    plain_st, plain, _ = jcall("POST", INFER, infer_body(rid="p"), JSON)
    body = infer_body(rid="p")
    cases = [("gzip", gzip.compress(body)), ("x-gzip", gzip.compress(body)),
             ("deflate", zlib.compress(body))]
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    cases.append(("deflate", raw.compress(body) + raw.flush()))  # raw deflate, as some send
    for i, (enc, data) in enumerate(cases):
        st, j, _ = jcall("POST", INFER, data, {"Content-Type": "application/json",
                                               "Content-Encoding": enc})
        same = st == 200 and plain_st == 200 and j["outputs"] == plain["outputs"]
        report("Content-Encoding %s (case %d): 200 and the plain body's outputs" % (enc, i),
               same, "%s %s" % (st, str(j)[:200]))
    # two gzip members, one after the other (RFC 1952)
    half = len(body) // 2
    st, j, _ = jcall("POST", INFER, gzip.compress(body[:half]) + gzip.compress(body[half:]),
                     {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    report("gzip of two members", st == 200 and j["outputs"] == plain["outputs"], "%s %s" % (st, str(j)[:200]))
    # unsupported and doubled codings: 415
    for enc in ("br", "compress", "gzip, gzip", "zstd"):
        st, j, h = jcall("POST", INFER, body, {"Content-Type": "application/json",
                                               "Content-Encoding": enc})
        report("Content-Encoding %r: 415 unsupported_encoding" % enc,
               st == 415 and err_code(j) == "unsupported_encoding", "%s %s" % (st, str(j)[:200]))
    report("415 names the codings accepted (Accept-Encoding)",
           "gzip" in h.get("accept-encoding", ""), str(h))
    st, j, _ = jcall("POST", INFER, body, {"Content-Type": "application/json",
                                           "Content-Encoding": "identity"})
    report("Content-Encoding identity: 200", st == 200, "%s %s" % (st, str(j)[:200]))
    # damaged data: 400 bad_encoding
    for enc, data in (("gzip", gzip.compress(body)[:-12]), ("gzip", b"not gzip at all"),
                      ("deflate", zlib.compress(body)[:20]), ("gzip", gzip.compress(body) + b"xx")):
        st, j, _ = jcall("POST", INFER, data, {"Content-Type": "application/json",
                                               "Content-Encoding": enc})
        report("damaged %s body (%d bytes): 400 bad_encoding" % (enc, len(data)),
               st == 400 and err_code(j) == "bad_encoding", "%s %s" % (st, str(j)[:200]))
    # a decompression bomb: small on the wire, over max_body_bytes once inflated
    for enc, comp in (("gzip", gzip.compress), ("deflate", zlib.compress)):
        bomb = comp(b"{" + b" " * (MAX_BODY * 20) + b"}")
        st, j, _ = jcall("POST", INFER, bomb, {"Content-Type": "application/json",
                                               "Content-Encoding": enc})
        report("%s bomb (%d bytes on the wire, %d inflated): 413 body_too_large"
               % (enc, len(bomb), MAX_BODY * 20 + 2), len(bomb) < MAX_BODY and st == 413
               and err_code(j) == "body_too_large", "%s %s" % (st, str(j)[:200]))
    # just over / at the limit, decoded: the limit is on the decoded size
    pad = lambda n: (b'{"id":"x","pad":"' + b" " * n + b'"}')
    over = pad(MAX_BODY)
    st, j, _ = jcall("POST", INFER, gzip.compress(over), {"Content-Type": "application/json",
                                                          "Content-Encoding": "gzip"})
    report("decoded body one past max_body_bytes: 413", st == 413 and err_code(j) == "body_too_large",
           "%s %s" % (st, str(j)[:200]))
    # a JSON body that decodes within the limit reaches the handler (400 for its content)
    within = pad(MAX_BODY - 40)
    st, j, _ = jcall("POST", INFER, gzip.compress(within), {"Content-Type": "application/json",
                                                            "Content-Encoding": "gzip"})
    report("decoded body within max_body_bytes reaches the handler", st == 400
           and err_code(j) == "invalid_request", "%s %s" % (st, str(j)[:200]))
    # the binary extension: the header length is the decoded JSON part's
    hdr = json.dumps({"id": "b", "inputs": [{"name": "input", "shape": [1, 1, 28, 28],
                      "datatype": "UINT8", "parameters": {"binary_data_size": 784}}]}).encode()
    st, j, _ = jcall("POST", INFER, gzip.compress(hdr + bytes(pixels(0))),
                     {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip",
                      "Inference-Header-Content-Length": str(len(hdr))})
    report("gzip'd binary tensor request: 200, the plain body's outputs", st == 200 and
           j["outputs"] == plain["outputs"], "%s %s" % (st, str(j)[:200]))
    # an image for /v1 classify, gzip'd
    with open(os.path.join(DIGITS, "0.png"), "rb") as f:
        png = f.read()
    st0, j0, _ = jcall("POST", "/v1/models/mnist/classify", png, {"Content-Type": "image/png"})
    st, j, _ = jcall("POST", "/v1/models/mnist/classify", gzip.compress(png),
                     {"Content-Type": "image/png", "Content-Encoding": "gzip"})
    report("gzip'd PNG on classify: the plain PNG's predictions", st0 == 200 and st == 200 and
           j["predictions"] == j0["predictions"], "%s %s" % (st, str(j)[:200]))
    # a streamed upload is stored as it comes: a coded one is refused before its body
    st, j, _ = jcall("POST", "/v1/conversions", gzip.compress(b"an ONNX file"),
                     {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"})
    report("gzip'd streamed upload: 415 unsupported_encoding", st == 415 and
           err_code(j) == "unsupported_encoding", "%s %s" % (st, str(j)[:200]))
    # other JSON endpoints decode too
    st, j, _ = jcall("POST", "/v2/repository/index", gzip.compress(b'{"ready": true}'),
                     {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    report("gzip body on the repository index", st == 200 and isinstance(j, list), "%s %s" % (st, str(j)[:200]))


def compressed_replies():
    body = infer_body(n=8, outputs=[{"name": "logits"}, {"name": "probabilities"}])
    st, plain, h0 = call("POST", INFER, body, JSON)
    report("large reply without Accept-Encoding: not compressed", st == 200 and
           "content-encoding" not in h0 and len(plain) > 1024, "%s %s %d" % (st, h0, len(plain)))
    st, data, h = call("POST", INFER, body, {"Content-Type": "application/json",
                                             "Accept-Encoding": "gzip"})
    ok = st == 200 and h.get("content-encoding") == "gzip"
    report("large reply with Accept-Encoding: gzip is gzip", ok, "%s %s" % (st, h))
    try:
        same = ok and json.loads(gzip.decompress(data)) == json.loads(plain) and len(data) < len(plain)
    except (OSError, ValueError) as e:
        same = False
        h = "%s (%s)" % (h, e)
    report("gzip reply decodes to the plain reply, smaller", same, "%s" % h)
    report("gzip reply: Vary: Accept-Encoding", "accept-encoding" in h.get("vary", "").lower()
           if isinstance(h, dict) else False, str(h))
    for ae in ("deflate;q=0.4, gzip;q=0.5", "gzip, deflate", "*", "br, *;q=0.1", "GZIP"):
        st, data, h = call("POST", INFER, body, {"Content-Type": "application/json",
                                                 "Accept-Encoding": ae})
        report("Accept-Encoding %r: gzip" % ae, st == 200 and h.get("content-encoding") == "gzip", str(h))
    # deflate is the zlib format (RFC 9110 8.4.1.2): zlib.decompress with its default window bits
    # reads only that (not raw deflate, not gzip); the coding of the higher q wins, and a coding
    # not named takes the q of "*"
    for ae in ("deflate", "gzip;q=0, deflate", "gzip;q=0.5, deflate", "*, gzip;q=0",
               "*;q=0.1, deflate;q=0.2", "br, Deflate"):
        st, data, h = call("POST", INFER, body, {"Content-Type": "application/json",
                                                 "Accept-Encoding": ae})
        ok = st == 200 and h.get("content-encoding") == "deflate" and \
            "accept-encoding" in h.get("vary", "").lower()
        detail = str(h)
        try:
            ok = ok and json.loads(zlib.decompress(data)) == json.loads(plain) and len(data) < len(plain)
        except (zlib.error, ValueError) as e:
            ok = False
            detail += " (%s)" % e
        report("Accept-Encoding %r: deflate (zlib), decodes to the plain reply, smaller" % ae, ok,
               detail)
    for ae in ("gzip;q=0", "identity", "*;q=0", "*, gzip;q=0, deflate;q=0", "gzip;q=0, deflate;q=0",
               "br, identity"):
        st, data, h = call("POST", INFER, body, {"Content-Type": "application/json",
                                                 "Accept-Encoding": ae})
        report("Accept-Encoding %r: not compressed" % ae, st == 200 and "content-encoding" not in h
               and data == plain, str(h))
    st, data, h = call("GET", "/v2/health/live", None, {"Accept-Encoding": "gzip"})
    report("small reply (%d bytes) not compressed" % len(data), st == 200 and
           "content-encoding" not in h, str(h))
    # binary tensor data in the reply: compressed whole, the header length still the JSON part's
    hdr = json.dumps({"inputs": [{"name": "input", "shape": [32, 1, 28, 28], "datatype": "UINT8",
                                  "parameters": {"binary_data_size": 32 * 784}}],
                      "parameters": {"binary_data_output": True}}).encode()
    px = b"".join(bytes(pixels(i % 8)) for i in range(32))
    st, data, h = call("POST", INFER, hdr + px, {"Content-Type": "application/octet-stream",
                                                 "Inference-Header-Content-Length": str(len(hdr)),
                                                 "Accept-Encoding": "gzip"})
    ok = st == 200 and h.get("content-encoding") == "gzip"
    if ok:
        raw = gzip.decompress(data)
        hl = int(h.get("inference-header-content-length", "-1"))
        meta = json.loads(raw[:hl])
        ok = len(raw) == hl + sum(o["parameters"]["binary_data_size"] for o in meta["outputs"])
    report("binary reply gzip'd whole, Inference-Header-Content-Length of the decoded JSON", ok, str(h))


def ids():
    st, j, _ = jcall("POST", INFER, infer_body(), JSON)
    report("no id in the request: no \"id\" in the reply", st == 200 and "id" not in j, str(j)[:200])
    st, j, _ = jcall("POST", INFER, infer_body(rid="req-7"), JSON)
    report("id echoed", st == 200 and j.get("id") == "req-7", str(j)[:200])
    st, j, _ = jcall("POST", INFER, infer_body(rid=""), JSON)
    report("empty id echoed", st == 200 and j.get("id") == "", str(j)[:200])


def repository():
    st, j, _ = jcall("POST", "/v2/repository/index", b"", {})
    names = {(e["name"], e["state"]) for e in j} if st == 200 else set()
    report("index without a body lists the broken model", ("broken", "UNAVAILABLE") in names
           and ("mnist", "READY") in names, str(j)[:300])
    st, j, _ = jcall("POST", "/v2/repository/index", b'{"ready": true}', JSON)
    report("index {\"ready\": true}: only READY models", st == 200 and j and
           all(e["state"] == "READY" for e in j) and any(e["name"] == "mnist" for e in j),
           "%s %s" % (st, str(j)[:300]))
    st, j, _ = jcall("POST", "/v2/repository/index", b'{"ready": false}', JSON)
    report("index {\"ready\": false}: every model", st == 200 and
           any(e["name"] == "broken" for e in j), "%s %s" % (st, str(j)[:300]))
    st, j, _ = jcall("POST", "/v2/repository/index", b'{"ready": "yes"}', JSON)
    report("index {\"ready\": \"yes\"}: 400", st == 400 and err_code(j) == "invalid_request", "%s %s" % (st, j))
    st, j, _ = jcall("POST", "/v2/repository/index", b'{"readdy": true}', JSON)
    report("index with an unknown field: 400 naming it", st == 400 and err_code(j) == "unknown_field"
           and "readdy" in j["error"], "%s %s" % (st, j))
    load = "/v2/repository/models/mnist/load"
    st, j, _ = jcall("POST", load, json.dumps({"parameters": {"config": "{\"max_batch_size\": 8}"}}).encode(), JSON)
    report("load with a config parameter: 400 naming it", st == 400 and
           err_code(j) == "unsupported_parameter" and "'config'" in j["error"], "%s %s" % (st, j))
    st, j, _ = jcall("POST", load, json.dumps({"parameters": {"file:1/model.onnx": "AAAA"}}).encode(), JSON)
    report("load with a file: parameter: 400 naming it", st == 400 and
           err_code(j) == "unsupported_parameter" and "file:1/model.onnx" in j["error"], "%s %s" % (st, j))
    st, j, _ = jcall("POST", load, b'{"other": 1}', JSON)
    report("load with an unknown field: 400 naming it", st == 400 and err_code(j) == "unknown_field"
           and "other" in j["error"], "%s %s" % (st, j))
    for body in (b"", b"{}", b'{"parameters": {}}'):
        st, j, _ = jcall("POST", load, body, JSON if body else {})
        report("load with body %r: 200" % body, st == 200 and j.get("state") == "READY", "%s %s" % (st, j))


def stats_of(path="/v2/models/mnist/stats"):
    st, j, _ = jcall("GET", path)
    return j["model_stats"][0] if st == 200 else None


def statistics():
    for n in (1, 3, 2):
        jcall("POST", INFER, infer_body(n=n), JSON)
    s0 = stats_of()
    inf = s0["inference_stats"]
    for k in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
              "cache_hit", "cache_miss"):
        report("inference_stats.%s is {count, ns}" % k, isinstance(inf.get(k), dict)
               and set(inf[k]) == {"count", "ns"}, str(inf.get(k)))
    cnt = lambda k: inf.get(k, {}).get("count")
    report("cache_hit count 0 (no cache)", cnt("cache_hit") == 0 and cnt("cache_miss") == 0, str(inf))
    for k in ("compute_input", "compute_infer", "compute_output", "queue"):
        report("%s counts every successful request" % k, cnt(k) == cnt("success") > 0, str(inf))
    report("compute_infer takes time", inf.get("compute_infer", {}).get("ns", 0) > 0, str(inf))
    b = s0.get("batch_stats")
    ok = isinstance(b, list) and b and all(
        isinstance(e.get("batch_size"), int) and all(
            isinstance(e.get(k), dict) and set(e[k]) == {"count", "ns"}
            for k in ("compute_input", "compute_infer", "compute_output")) for e in b)
    report("batch_stats: [{batch_size, compute_input, compute_infer, compute_output}]", ok, str(b)[:300])
    if ok:
        report("batch_stats counts add up to execution_count",
               sum(e["compute_infer"]["count"] for e in b) == s0["execution_count"], str(s0)[:400])
        report("batch_stats has sizes 1 and 3 (requests run alone)",
               {1, 3} <= {e["batch_size"] for e in b}, str(b)[:300])
        report("batch sizes ascending, at most max_batch", [e["batch_size"] for e in b] ==
               sorted(e["batch_size"] for e in b) and all(0 < e["batch_size"] <= MAX_BATCH for e in b), str(b))


def failures():
    """A bad request for a served model counts in fail, not in success."""
    s0 = stats_of()
    f0 = s0["inference_stats"]["fail"]["count"]
    st, _, _ = jcall("POST", INFER, infer_body(shape=[1, 1, 28, 27]), JSON)
    st2, _, _ = jcall("POST", INFER, b'{"inputs": [{"name": "nope"}]}', JSON)
    s1 = stats_of()
    report("two failed requests counted in fail", st == 400 and st2 == 400 and
           s1["inference_stats"]["fail"]["count"] == f0 + 2, "%s %s %s" % (st, st2, s1["inference_stats"]["fail"]))
    report("failures are not successes", s1["inference_stats"]["success"]["count"] ==
           s0["inference_stats"]["success"]["count"], str(s1["inference_stats"]))
    report("fail ns counted", s1["inference_stats"]["fail"]["ns"] > s0["inference_stats"]["fail"]["ns"],
           str(s1["inference_stats"]["fail"]))
    s2 = stats_of("/v2/models/mnist/versions/1/stats")
    report("stats by version carry batch_stats", s2 is not None and "batch_stats" in s2, str(s2)[:200])


def config():
    st, j, _ = jcall("GET", "/v2/models/mnist/config")
    report("GET /v2/models/mnist/config: 200", st == 200, "%s %s" % (st, str(j)[:300]))
    if st != 200:
        return
    report("config name and platform", j.get("name") == "mnist" and j.get("platform") == "dynd", str(j))
    report("config max_batch_size = max_batch", j.get("max_batch_size") == MAX_BATCH, str(j))
    report("config input dims (without the batch dimension)", j.get("input") == [
        {"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NONE", "dims": [1, 28, 28]}], str(j.get("input")))
    outs = j.get("output") or []
    report("config outputs logits and probabilities, dims [10]",
           [(o["name"], o["data_type"], o["dims"]) for o in outs] ==
           [("logits", "TYPE_FP32", [10]), ("probabilities", "TYPE_FP32", [10])], str(outs))
    db = j.get("dynamic_batching")
    report("config dynamic_batching settings", isinstance(db, dict) and
           db.get("max_queue_delay_microseconds") == 500 and
           db.get("default_queue_policy", {}).get("max_queue_size") == 256, str(db))
    report("config instance_group", j.get("instance_group", [{}])[0].get("kind") == "KIND_CPU", str(j))
    st, j2, _ = jcall("GET", "/v2/models/mnist/versions/1/config")
    report("config of version 1", st == 200 and j2 == j, "%s %s" % (st, str(j2)[:200]))
    st, j3, _ = jcall("GET", "/v2/models/nosuch/config")
    report("config of an unknown model: 404", st == 404 and err_code(j3) == "model_not_found", "%s %s" % (st, j3))
    st, j4, _ = jcall("GET", "/v2")
    report("server metadata advertises model_configuration", st == 200 and
           "model_configuration" in j4.get("extensions", []), str(j4))


def shape_message():
    st, j, _ = jcall("POST", INFER, infer_body(shape=[1, 1, 28, 27]), JSON)
    msg = j.get("error", "") if j else ""
    report("shape mismatch: 400 shape_mismatch", st == 400 and err_code(j) == "shape_mismatch", "%s %s" % (st, j))
    report("shape mismatch message: [N, 1, 28, 28] without a doubled bracket",
           "[N, 1, 28, 28] " in msg and "]]" not in msg, msg)
    st, j, _ = jcall("POST", INFER, infer_body(shape=[1, 28, 28, 1, 1]), JSON)
    msg = j.get("error", "") if j else ""
    report("wrong rank message without a doubled bracket", st == 400 and "[N, 1, 28, 28] " in msg
           and "]]" not in msg, msg)


for f in (octet_stream_json, compressed_requests, compressed_replies, ids, repository, statistics,
          failures, config, shape_message):
    try:
        f()
    except Exception as e:  # a crash of a group is a failure of that group, not of the script
        report(f.__name__, False, "%s: %s" % (type(e).__name__, e))
