#!/usr/bin/env python3
"""s3_fault_proxy.py UPSTREAM_PORT [--fail-manifest STATUS COUNT] [--secret SECRET] [--delay-ms MS]

An HTTP proxy on a free loopback port (printed on stdout as "proxy listening on PORT") in front
of an S3 server on UPSTREAM_PORT (tests/integration/test_store_s3.sh). Stdlib only.

--fail-manifest STATUS COUNT: the first COUNT PUTs of keys ending in /manifest.json answer
  STATUS: 503 SlowDown (a store that takes a model's upload, then fails its manifest write), 412
  PreconditionFailed (another publisher wrote first), 501 NotImplemented (no conditional
  writes). Every manifest PUT appends "manifest <If-Match or If-None-Match value or ->" to
  $PROXY_LOG when set.
--secret SECRET: every request's AWS SigV4 header signature is checked here, independently of
  libcurl (s3rver checks only the access key id); a mismatch answers 403 SignatureDoesNotMatch.
  Each request appends "ok" or "bad" to the file named by $PROXY_LOG when set.
--delay-ms MS: every request waits MS milliseconds first (a slow store)."""
import hashlib
import hmac
import http.client
import http.server
import os
import sys
import time
import urllib.parse

UPSTREAM = int(sys.argv[1])
FAIL = sys.argv[sys.argv.index("--fail-manifest") + 1:][:2] if "--fail-manifest" in sys.argv else None
FAIL_LEFT = [int(FAIL[1]) if FAIL else 0]
DELAY = int(sys.argv[sys.argv.index("--delay-ms") + 1]) / 1000 if "--delay-ms" in sys.argv else 0
CODES = {503: "SlowDown", 412: "PreconditionFailed", 501: "NotImplemented"}
SECRET = sys.argv[sys.argv.index("--secret") + 1] if "--secret" in sys.argv else None


def s3_error(code, msg):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
            '</Error>' % (code, msg)).encode()


def note(line):
    if os.environ.get("PROXY_LOG"):
        with open(os.environ["PROXY_LOG"], "a") as f:
            f.write(line + "\n")


def sigv4_ok(method, path, headers, secret):
    """True when the Authorization header's signature is the one SigV4 gives for this request."""
    auth = headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    _, date, region, service, _ = parts["Credential"].split("/")
    signed = parts["SignedHeaders"].split(";")
    raw_path, _, query = path.partition("?")
    pairs = sorted((urllib.parse.quote(urllib.parse.unquote(k), safe="-_.~"),
                    urllib.parse.quote(urllib.parse.unquote(v), safe="-_.~"))
                   for k, _, v in (q.partition("=") for q in query.split("&") if q))
    canonical = "\n".join([
        method, raw_path, "&".join("%s=%s" % kv for kv in pairs),
        "".join("%s:%s\n" % (h, " ".join(headers.get(h, "").split())) for h in signed),
        ";".join(signed), headers.get("x-amz-content-sha256", "")])
    amz_date = headers.get("x-amz-date", "")
    scope = "/".join([date, region, service, "aws4_request"])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    want = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, parts["Signature"])


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def forward(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        time.sleep(DELAY)
        if SECRET is not None:
            ok = sigv4_ok(self.command, self.path, self.headers, SECRET)
            note("ok" if ok else "bad")
            if not ok:
                return self.answer(403, s3_error("SignatureDoesNotMatch", "The request signature "
                                                 "we calculated does not match the signature "
                                                 "you provided."))
        if self.command == "PUT" and self.path.split("?")[0].endswith("/manifest.json"):
            note("manifest " + (self.headers.get("If-Match") or self.headers.get("If-None-Match") or "-"))
            if FAIL_LEFT[0] > 0:
                FAIL_LEFT[0] -= 1
                st = int(FAIL[0])
                return self.answer(st, s3_error(CODES.get(st, "InternalError"), "injected"))
        c = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=30)
        c.request(self.command, self.path, body=body, headers=dict(self.headers))
        r = c.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        c.close()

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = forward


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
print("proxy listening on %d" % srv.server_address[1], flush=True)
srv.serve_forever()
