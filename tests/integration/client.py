#!/usr/bin/env python3
"""HTTP client for the dynd integration tests (python3 stdlib only).

  client.py accuracy URL DIGITS_DIR N        classify N digits as PNG and JPEG, v2 infer UINT8
                                             and FP32; checks accuracy and identical scores
  client.py drain URL DIGITS_DIR PID N       N concurrent requests in flight, SIGTERM, all 200;
                                             meanwhile ready 503, live 200 (on connections
                                             opened before) and new connections refused
  client.py fresh URL DIGITS_DIR PID THREADS
                                             THREADS clients classify, a new connection per
                                             request; SIGTERM after 0.5 s; runs until dynd
                                             refuses connections: none may be reset or unanswered
  client.py reload URL DIGITS_DIR SECONDS    classify in a loop; prints non-200 statuses
  client.py slow URL                         a client that sends half a request and stalls
  client.py binary URL DIGITS_DIR N          v2 infer with the binary tensor data extension
                                             (UINT8 and FP32 in, FP32 and BYTES out) agrees
                                             with the JSON form
"""
import http.client
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from urllib.parse import urlparse

MEAN, STD = 0.1307, 0.3081


def conn_for(url):
    u = urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def post(conn, path, body, ctype):
    conn.request("POST", path, body=body, headers={"Content-Type": ctype})
    r = conn.getresponse()
    data = r.read()
    return r.status, data, r


def load_labels(d):
    out = []
    with open(os.path.join(d, "labels.txt")) as f:
        for line in f:
            i, lab = line.split()
            out.append((int(i), int(lab)))
    return out


def v2_body(pixels, dtype, rid):
    if dtype == "UINT8":
        data = list(pixels)
    else:  # the model input as the server would compute it (float32 rounding may differ)
        data = [(p / 255.0 - MEAN) / STD for p in pixels]
    return json.dumps({"id": rid, "inputs": [{"name": "input", "shape": [1, 1, 28, 28],
                                              "datatype": dtype, "data": data}],
                       "outputs": [{"name": "probabilities"}]})


def accuracy(url, d, n):
    labels = load_labels(d)[:n]
    results = {}
    lock = threading.Lock()
    errors = []

    def work(part):
        c = conn_for(url)
        for i, lab in part:
            rec = {"label": lab}
            for ext, ctype in (("png", "image/png"), ("jpg", "image/jpeg")):
                with open(os.path.join(d, "%d.%s" % (i, ext)), "rb") as f:
                    st, data, _ = post(c, "/v1/models/mnist/classify?top_k=10", f.read(), ctype)
                if st != 200:
                    errors.append("classify %s %d: %d %s" % (ext, i, st, data[:200]))
                    continue
                preds = json.loads(data)["predictions"]
                rec[ext] = int(preds[0]["label"])
                rec[ext + "_scores"] = {p["index"]: p["score"] for p in preds}
            with open(os.path.join(d, "%d.u8" % i), "rb") as f:
                px = f.read()
            for dt in ("UINT8", "FP32"):
                rid = "req-%d-%s" % (i, dt)
                st, data, _ = post(c, "/v2/models/mnist/infer", v2_body(px, dt, rid), "application/json")
                if st != 200:
                    errors.append("v2 %s %d: %d %s" % (dt, i, st, data[:200]))
                    continue
                j = json.loads(data)
                if j.get("id") != rid:
                    errors.append("v2 id not echoed: %r" % j.get("id"))
                out = j["outputs"][0]
                if out["name"] != "probabilities" or out["shape"] != [1, 10]:
                    errors.append("v2 output %r" % out)
                rec[dt] = out["data"]
            with lock:
                results[i] = rec

    parts = [labels[k::4] for k in range(4)]
    ts = [threading.Thread(target=work, args=(p,)) for p in parts]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.time() - t0
    if errors:
        print("errors (%d): %s" % (len(errors), errors[:5]))
        return 1
    png = sum(r["png"] == r["label"] for r in results.values()) / n
    jpg = sum(r["jpg"] == r["label"] for r in results.values()) / n
    # Concurrent requests are batched, and a sample's scores can differ in the last bits with the
    # batch it ran in: the engine picks its implementation per batch size (GEMM blocking, oneDNN
    # layouts, the fused graph or layer by layer: engine/README.md), so the sums run in another
    # order. Measured up to 1.2e-5 on these probabilities; compare with a tolerance here ...
    batched_diff = max(abs(r["UINT8"][k] - r["png_scores"][k]) for r in results.values() for k in range(10))
    # ... and bit for bit when each request runs alone (sequential: batches of one). UINT8
    # tensors go through the same preprocessing code as the PNG, so the scores are identical.
    c = conn_for(url)
    same = 0
    nseq = min(n, 100)
    for i, _ in labels[:nseq]:
        with open(os.path.join(d, "%d.png" % i), "rb") as f:
            st, data, _ = post(c, "/v1/models/mnist/classify?top_k=10", f.read(), "image/png")
        png_scores = {p["index"]: p["score"] for p in json.loads(data)["predictions"]}
        with open(os.path.join(d, "%d.u8" % i), "rb") as f:
            st2, data2, _ = post(c, "/v2/models/mnist/infer", v2_body(f.read(), "UINT8", "s"), "application/json")
        v2 = json.loads(data2)["outputs"][0]["data"]
        same += st == 200 and st2 == 200 and all(v2[k] == png_scores[k] for k in range(10))
    maxdiff = max(abs(r["FP32"][k] - r["UINT8"][k]) for r in results.values() for k in range(10))
    v2acc = sum(max(range(10), key=lambda k: r["UINT8"][k]) == r["label"] for r in results.values()) / n
    print("digits %d: PNG %.2f%%  JPEG %.2f%%  v2 UINT8 %.2f%%  (%.1f s, %d concurrent requests)\n"
          "  scores: v2 UINT8 vs PNG identical %d/%d (sequential), max diff batched %.2e; "
          "max |FP32 - UINT8| %.2e"
          % (n, 100 * png, 100 * jpg, 100 * v2acc, dt, 4 * n, same, nseq, batched_diff, maxdiff))
    bad = []
    if png < 0.98:
        bad.append("PNG accuracy %.4f < 0.98" % png)
    if jpg < 0.98:
        bad.append("JPEG accuracy %.4f < 0.98" % jpg)
    if same != nseq:
        bad.append("v2 UINT8 scores differ from classify PNG scores for %d digits" % (nseq - same))
    if batched_diff > 1e-4:
        bad.append("batched v2 UINT8 and PNG scores differ by %.2e" % batched_diff)
    if maxdiff > 1e-4:
        bad.append("v2 FP32 scores differ from UINT8 by %.2e" % maxdiff)
    for b in bad:
        print("FAIL:", b)
    return 1 if bad else 0


def drain(url, d, pid, n):
    """n requests with 256 digits each are sent and fully written; then SIGTERM; all must be 200."""
    with open(os.path.join(d, "0.u8"), "rb") as f:
        px = list(f.read())
    body = json.dumps({"inputs": [{"name": "input", "shape": [256, 1, 28, 28], "datatype": "UINT8",
                                   "data": px * 256}]}).encode()
    u = urlparse(url)
    socks = []
    for _ in range(n):
        s = socket.create_connection((u.hostname, u.port), timeout=60)
        s.sendall(b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        socks.append(s)
    # two keep-alive connections for the health probes, opened before the drain: once it has
    # begun, dynd refuses new connections (it no longer accepts)
    probes = {}
    for path in ("/v2/health/ready", "/v2/health/live"):
        probes[path] = conn_for(url)
        probes[path].request("GET", "/v2/health/live")
        probes[path].getresponse().read()
    time.sleep(0.3)  # the server has read them (accepted), most are queued behind the worker
    os.kill(pid, signal.SIGTERM)
    t0 = time.time()
    time.sleep(0.05)
    health = {}
    for path, c in probes.items():  # while the queue drains
        c.request("GET", path)
        health[path] = c.getresponse().status
        c.close()
    try:
        socket.create_connection((u.hostname, u.port), timeout=5).close()
        health["new connection"] = "accepted"
    except ConnectionRefusedError:
        health["new connection"] = "refused"
    statuses = []
    for s in socks:
        f = s.makefile("rb")
        line = f.readline()
        statuses.append(int(line.split()[1]) if line else -1)
        s.close()
    good = statuses.count(200)
    print("drain: %d requests in flight at SIGTERM, %d answered 200, statuses %s, %.2f s; "
          "during the drain ready -> %d, live -> %d, a new connection %s"
          % (n, good, sorted(set(statuses)), time.time() - t0, health["/v2/health/ready"],
             health["/v2/health/live"], health["new connection"]))
    return 0 if (good == n and health["/v2/health/ready"] == 503 and health["/v2/health/live"] == 200
                 and health["new connection"] == "refused") else 1


def fresh(url, d, pid, nthreads):
    """A new connection per request (no keep-alive), as many clients and load balancer health
    probes do, while dynd gets SIGTERM. A connection refused is fine (dynd stopped accepting);
    a connection the kernel accepted must get an answer: a reset or an empty reply is a lost
    request. Every answer must be 200 (dynd serves what it accepted while it drains)."""
    with open(os.path.join(d, "0.png"), "rb") as f:
        img = f.read()
    u = urlparse(url)
    lock = threading.Lock()
    st = {"answered": {}, "refused": 0, "lost": 0, "after_term": 0, "errors": []}
    term_sent = threading.Event()

    def worker():
        refused_in_row = 0
        t_end = time.monotonic() + 60  # a bound, not a measurement
        while refused_in_row < 20 and time.monotonic() < t_end:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            try:
                c.connect()
            except ConnectionRefusedError:
                with lock:
                    st["refused"] += 1
                refused_in_row += 1
                time.sleep(0.01)
                continue
            refused_in_row = 0
            after = term_sent.is_set()
            try:
                c.request("POST", "/v1/models/mnist/classify", body=img,
                          headers={"Content-Type": "image/png", "Connection": "close"})
                r = c.getresponse()
                r.read()
                with lock:
                    st["answered"][str(r.status)] = st["answered"].get(str(r.status), 0) + 1
                    st["after_term"] += after
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    st["lost"] += 1
                    if len(st["errors"]) < 5:
                        st["errors"].append(repr(e))
            finally:
                c.close()

    threads = [threading.Thread(target=worker) for _ in range(nthreads)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGTERM)
    term_sent.set()
    for t in threads:
        t.join()
    print("new connection per request, SIGTERM at 0.5 s: %s" % json.dumps(st))
    bad = st["lost"] or set(st["answered"]) != {"200"} or st["refused"] == 0
    return 1 if bad else 0


def reload_loop(url, d, seconds):
    with open(os.path.join(d, "0.png"), "rb") as f:
        img = f.read()
    c = conn_for(url)
    end = time.time() + seconds
    bad, total = {}, 0
    while time.time() < end:
        st, data, _ = post(c, "/v1/models/mnist/classify", img, "image/png")
        total += 1
        if st != 200:
            bad[st] = data[:120]
    print("reload loop: %d requests, non-200: %r" % (total, bad))
    return 0 if not bad and total > 0 else 1


def burst(url, d, model, n, samples, timeout_ms):
    """n concurrent requests to model (samples = 0: classify a PNG, else v2 infer of that many
    digits); prints {status[/code]: count} as JSON."""
    with open(os.path.join(d, "0.u8"), "rb") as f:
        px = list(f.read())
    if samples:
        path, ctype = "/v2/models/%s/infer" % model, "application/json"
        body = json.dumps({"inputs": [{"name": "input", "shape": [samples, 1, 28, 28],
                                       "datatype": "UINT8", "data": px * samples}]})
    else:
        path, ctype = "/v1/models/%s/classify" % model, "image/png"
        with open(os.path.join(d, "0.png"), "rb") as f:
            body = f.read()
    counts = {}
    lock = threading.Lock()
    start = threading.Barrier(n)

    def one():
        c = conn_for(url)
        hdr = {"Content-Type": ctype}
        if timeout_ms > 0:
            hdr["X-Request-Timeout-Ms"] = str(timeout_ms)
        start.wait()
        c.request("POST", path, body=body, headers=hdr)
        r = c.getresponse()
        data = r.read()
        key = str(r.status)
        if r.status != 200:
            key += "/" + json.loads(data)["code"]
            if r.status == 503 and not r.getheader("Retry-After"):
                key += "/no-retry-after"
        with lock:
            counts[key] = counts.get(key, 0) + 1

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps(counts, sort_keys=True))
    return 0


def slow(url):
    u = urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    s.sendall(b"POST /v1/models/mnist/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
              b"Content-Length: 1000\r\n\r\n\x89PNG")
    t0 = time.time()
    try:
        data = s.recv(100)  # the server closes the stalled connection after connection_timeout_s
    except (ConnectionResetError, socket.timeout):
        data = b""
    print("slow client: closed by the server after %.1f s" % (time.time() - t0))
    return 0 if time.time() - t0 < 20 else 1


def binary_post(conn, header, payload, ctype="application/octet-stream", sagemaker=False):
    """POST a binary-extension request; returns (status, reply JSON, {output: bytes})."""
    js = json.dumps(header).encode()
    headers = {"Content-Type": ctype}
    if sagemaker:
        headers["Content-Type"] = ("application/vnd.sagemaker-triton.binary+json;"
                                   "json-header-size=%d" % len(js))
    else:
        headers["Inference-Header-Content-Length"] = str(len(js))
    conn.request("POST", "/v2/models/mnist/infer", body=js + payload, headers=headers)
    r = conn.getresponse()
    data = r.read()
    hl = r.getheader("Inference-Header-Content-Length")
    if hl is None:
        return r.status, json.loads(data), {}
    assert r.getheader("Content-Type") == "application/octet-stream", r.getheader("Content-Type")
    reply = json.loads(data[:int(hl)])
    blobs, at = {}, int(hl)
    for o in reply["outputs"]:
        size = o.get("parameters", {}).get("binary_data_size")
        if size is not None:
            assert "data" not in o, o
            blobs[o["name"]] = data[at:at + size]
            at += size
    assert at == len(data), (at, len(data))
    return r.status, reply, blobs


def binary(url, d, n):
    """The binary tensor data extension gives the same scores as the JSON form."""
    conn = conn_for(url)
    labels = load_labels(d)[:n]
    fails = 0
    for k, (i, lab) in enumerate(labels):
        px = open(os.path.join(d, "%d.u8" % i), "rb").read()
        st, ref, _ = post(conn, "/v2/models/mnist/infer", v2_body(px, "UINT8", "j%d" % i),
                          "application/json")
        ref = json.loads(ref)["outputs"][0]["data"]
        # UINT8 in, probabilities out as FP32 bytes and top-3 as BYTES; every other request
        # through the SageMaker media type instead of the header
        hdr = {"id": "b%d" % i,
               "inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "UINT8",
                           "parameters": {"binary_data_size": len(px)}}],
               "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                           {"name": "logits", "parameters": {"classification": 3,
                                                             "binary_data": True}}]}
        st, rep, blobs = binary_post(conn, hdr, px, sagemaker=k % 2 == 1)
        if st != 200 or rep.get("id") != "b%d" % i:
            print("binary UINT8: status %d %s" % (st, rep))
            return 1
        probs = list(struct.unpack("<10f", blobs["probabilities"]))
        if probs != [struct.unpack("<f", struct.pack("<f", v))[0] for v in ref]:
            fails += 1
        cls, at = [], 0
        raw = blobs["logits"]
        while at < len(raw):
            (ln,) = struct.unpack("<I", raw[at:at + 4])
            cls.append(raw[at + 4:at + 4 + ln].decode())
            at += 4 + ln
        if len(cls) != 3 or cls[0].split(":")[1] != str(probs.index(max(probs))):
            print("binary BYTES output: %s vs %s" % (cls, probs))
            return 1
        # FP32 in (the normalized pixels), JSON out
        x = [(p / 255.0 - MEAN) / STD for p in px]
        hdr = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                           "parameters": {"binary_data_size": 4 * len(x)}}],
               "outputs": [{"name": "probabilities"}]}
        st, rep, blobs = binary_post(conn, hdr, struct.pack("<%df" % len(x), *x))
        if st != 200 or blobs or max(abs(a - b) for a, b in
                                     zip(rep["outputs"][0]["data"], ref)) > 1e-4:
            print("binary FP32 in: status %d %s" % (st, str(rep)[:200]))
            return 1
    print("binary tensor data: %d digits, UINT8 scores identical to JSON in %d/%d, "
          "FP32 in within 1e-4" % (n, n - fails, n))
    return 0 if fails == 0 else 1


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "accuracy":
        sys.exit(accuracy(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    if cmd == "drain":
        sys.exit(drain(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
    if cmd == "fresh":
        sys.exit(fresh(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
    if cmd == "reload":
        sys.exit(reload_loop(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    if cmd == "burst":
        sys.exit(burst(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]),
                       int(sys.argv[7])))
    if cmd == "slow":
        sys.exit(slow(sys.argv[2]))
    if cmd == "binary":
        sys.exit(binary(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    sys.exit("unknown command " + cmd)
