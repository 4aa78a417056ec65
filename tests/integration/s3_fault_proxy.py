#!/usr/bin/env python3
"""s3_fault_proxy.py UPSTREAM_PORT — an HTTP proxy on a free loopback port (printed on stdout as
"proxy listening on PORT") in front of an S3 server on UPSTREAM_PORT that forwards every request
but refuses PUTs of keys ending in /manifest.json with 503 SlowDown: a store that takes a model's
upload and then fails its manifest write (tests/integration/test_store_s3.sh). Stdlib only."""
import http.client
import http.server
import sys

UPSTREAM = int(sys.argv[1])
ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
         b'<Message>injected: manifest writes refused</Message></Error>')


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        if self.command == "PUT" and self.path.split("?")[0].endswith("/manifest.json"):
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(ERROR)))
            self.end_headers()
            self.wfile.write(ERROR)
            return
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
