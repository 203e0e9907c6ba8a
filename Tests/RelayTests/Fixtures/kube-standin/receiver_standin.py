"""A stand-in for a notification-controller Receiver webhook (type generic-hmac): it is NOT
Flux. It checks what notification-controller checks for generic-hmac receivers, the
`X-Signature: sha256=<hex HMAC-SHA256 of the body, keyed with the Secret's token>` header,
and answers 200 on a match, 401 otherwise, like the real handler. Each request is appended
as one JSON line to LOG.

usage: receiver_standin.py TOKEN LOG   (prints "listening <port>", serves on 127.0.0.1)
"""
import hashlib
import hmac
import http.server
import json
import sys

TOKEN, LOG = sys.argv[1].encode(), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        signature = self.headers.get("X-Signature", "")
        expected = "sha256=" + hmac.new(TOKEN, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(signature, expected)
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps({"path": self.path, "valid": ok, "contentType": self.headers.get("Content-Type"),
                                  "body": json.loads(body or b"null")}) + "\n")
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(f"listening {server.server_address[1]}", flush=True)
server.timeout = 1
import time
deadline = time.time() + 300
while time.time() < deadline:
    server.handle_request()
