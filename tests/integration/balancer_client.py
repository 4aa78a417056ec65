#!/usr/bin/env python3
"""Helpers for tests/integration/test_balancer.sh (python3 stdlib only, loopback only).

  balancer_client.py load URL DIGITS_DIR STOPFILE PROGRESSFILE THREADS MAX_SECONDS
      THREADS clients classify the PNG digits of DIGITS_DIR through URL (the balancer) in a
      loop, each on its own keep-alive connection, until STOPFILE exists or MAX_SECONDS pass
      (a bound, not a measurement). The number of requests answered so far is rewritten into
      PROGRESSFILE as they go. At the end one JSON line on stdout: {"total", "failed",
      "by_replica": {X-Dynd-Replica: n}, "retried": n (answers whose X-Served-By names more
      than one replica), "errors": [the first few failures]}. A request fails when it gets no
      answer, a status other than 200, or a body without predictions.

  balancer_client.py blackhole PORTFILE COUNTFILE
      A stand-in for a replica that dies with the request in hand: it listens on a free
      loopback port (written to PORTFILE), reads each request's head and closes the
      connection without answering. "METHOD PATH" of every request read is appended to
      COUNTFILE. Runs until killed.
"""
import http.client
import json
import os
import socket
import struct
import sys
import threading
import time
from urllib.parse import urlparse


def load(url, digits_dir, stopfile, progressfile, nthreads, max_seconds):
    u = urlparse(url)
    pngs = []
    with open(os.path.join(digits_dir, "labels.txt")) as f:
        for line in f:
            i, _ = line.split()
            with open(os.path.join(digits_dir, i + ".png"), "rb") as g:
                pngs.append(g.read())
    lock = threading.Lock()
    stats = {"total": 0, "failed": 0, "by_replica": {}, "retried": 0, "errors": []}
    stop = threading.Event()
    t_end = time.monotonic() + max_seconds

    def fail(msg):
        with lock:
            stats["failed"] += 1
            if len(stats["errors"]) < 10:
                stats["errors"].append(msg)

    def worker(k):
        conn = None
        n = k
        while not stop.is_set():
            body = pngs[n % len(pngs)]
            n += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
                conn.request("POST", "/v1/models/mnist/classify", body=body,
                             headers={"Content-Type": "image/png"})
                r = conn.getresponse()
                data = r.read()
                replica = r.getheader("X-Dynd-Replica") or "?"
                served_by = r.getheader("X-Served-By") or ""
                if r.status != 200 or b'"predictions"' not in data:
                    fail("status %d from %s (%s): %s" % (r.status, replica, served_by, data[:200]))
                else:
                    with lock:
                        stats["by_replica"][replica] = stats["by_replica"].get(replica, 0) + 1
                        if "," in served_by:
                            stats["retried"] += 1
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                fail("no answer: %r" % e)
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                stats["total"] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
    for t in threads:
        t.start()
    while not os.path.exists(stopfile) and time.monotonic() < t_end:
        with lock:
            done = stats["total"]
        with open(progressfile + ".tmp", "w") as f:
            f.write("%d\n" % done)
        os.replace(progressfile + ".tmp", progressfile)
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    with open(progressfile, "w") as f:
        f.write("%d\n" % stats["total"])
    print(json.dumps(stats))


def blackhole(portfile, countfile):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    with open(portfile + ".tmp", "w") as f:
        f.write("%d\n" % s.getsockname()[1])
    os.replace(portfile + ".tmp", portfile)
    while True:
        c, _ = s.accept()
        c.settimeout(5)
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = c.recv(4096)
                if not chunk:
                    break
                head += chunk
        except OSError:
            pass
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        if line:
            method, path = (line.split(" ") + ["", ""])[:2]
            with open(countfile, "a") as f:
                f.write("%s %s\n" % (method, path))
        # the connection goes without an answer: to nginx, a replica that died mid-request
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "load" and len(sys.argv) == 8:
        load(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]),
             float(sys.argv[7]))
    elif cmd == "blackhole" and len(sys.argv) == 4:
        blackhole(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
