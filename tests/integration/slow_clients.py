#!/usr/bin/env python3
"""Slow and greedy clients for tests/integration/test_slow_clients.sh (python3 stdlib only,
loopback only). Each prints one JSON line and exits 0 when dynd behaved as the guard promises
(server/guard.h), 1 otherwise.

  slow_clients.py headers HOST PORT LIMIT_S    trickles a request's headers a byte at a time
                                               (0.2 s apart): dynd must close the connection,
                                               and not before LIMIT_S seconds
  slow_clients.py body HOST PORT LIMIT_S       sends headers, then a 100 kB body at 20 bytes
                                               per 0.2 s: dynd must close the connection, and
                                               not before LIMIT_S seconds
  slow_clients.py hold HOST PORT N SRC_IP STOPFILE
                                               keeps N connections from SRC_IP trickling
                                               headers (a byte every 2 s), opening a new one for
                                               each dynd drops, until STOPFILE exists; prints
                                               how many dynd dropped
  slow_clients.py flood HOST PORT N OTHER_IP   opens N connections from 127.0.0.1 that trickle
                                               headers; then a client from OTHER_IP (another
                                               loopback address) asks /v2/health/live: it must
                                               be answered 200 while the N still trickle
"""
import json
import socket
import sys
import time

BOUND_S = 60  # a bound against hanging, not a measurement


def trickle(sock, data, chunk, pause, deadline):
    """Sends data chunk bytes at a time; returns the seconds until the peer closed, or None."""
    t0 = time.monotonic()
    sock.settimeout(pause)
    i = 0
    while time.monotonic() < deadline:
        try:
            if i < len(data):
                sock.sendall(data[i:i + chunk])
                i += chunk
            got = sock.recv(4096)  # waits `pause`; b"" = closed
            if not got:
                return time.monotonic() - t0
            # an answer (e.g. 408/400) then close also counts as closed by the server
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - t0
    return None


def headers(host, port, limit):
    s = socket.create_connection((host, int(port)), timeout=5)
    req = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 4000 + b"\r\n\r\n"
    t = trickle(s, req, 1, 0.2, time.monotonic() + BOUND_S)
    s.close()
    ok = t is not None and t >= float(limit)
    print(json.dumps({"case": "headers", "closed_after_s": t, "limit_s": float(limit)}))
    return 0 if ok else 1


def body(host, port, limit):
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100000\r\n\r\n")
    t = trickle(s, b" " * 100000, 20, 0.2, time.monotonic() + BOUND_S)
    s.close()
    ok = t is not None and t >= float(limit)
    print(json.dumps({"case": "body", "closed_after_s": t, "limit_s": float(limit)}))
    return 0 if ok else 1


def flood(host, port, n, other_ip):
    socks, refused = [], 0
    for _ in range(int(n)):
        try:
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
            socks.append(s)
        except OSError:
            refused += 1
    time.sleep(0.5)
    # how many of them dynd closed at once (over the per-IP cap)
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(10)
    status = None
    try:
        c.bind((other_ip, 0))
        c.connect((host, int(port)))
        c.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        line = c.makefile("rb").readline()
        status = int(line.split()[1]) if line else None
    except OSError as e:
        status = repr(e)
    c.close()
    for s in socks:
        s.close()
    print(json.dumps({"case": "flood", "opened": len(socks), "refused_at_connect": refused,
                      "closed_by_server": closed, "other_client_status": status}))
    return 0 if status == 200 else 1


def hold(host, port, n, src_ip, stopfile):
    import os
    n = int(n)
    socks, dropped, opened = [], 0, 0

    def open_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.bind((src_ip, 0))
        s.connect((host, int(port)))
        s.setblocking(False)
        return s
    while not os.path.exists(stopfile):
        while len(socks) < n:
            try:
                socks.append(open_one())
                opened += 1
            except OSError:
                time.sleep(0.1)
                break
        keep = []
        for s in socks:
            try:
                s.send(b"X")
                try:
                    if s.recv(4096) == b"":
                        raise OSError("closed")
                except BlockingIOError:
                    pass
                keep.append(s)
            except OSError:
                dropped += 1
                s.close()
        socks = keep
        time.sleep(2)
    for s in socks:
        s.close()
    print(json.dumps({"case": "hold", "connections": n, "opened": opened, "dropped_by_server": dropped}))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "hold":
        sys.exit(hold(*sys.argv[2:7]))
    cmd = sys.argv[1]
    if cmd == "headers":
        sys.exit(headers(*sys.argv[2:5]))
    if cmd == "body":
        sys.exit(body(*sys.argv[2:5]))
    if cmd == "flood":
        sys.exit(flood(*sys.argv[2:6]))
    sys.exit(__doc__)
