#!/usr/bin/env python3
"""A registry token service (the distribution spec's token authentication), for the CNCF
distribution registry's `auth: token` mode: GET /token?service=S&scope=repository:NAME:pull
with HTTP Basic credentials returns {"token": JWT, "access_token": JWT, "expires_in": 300};
wrong or missing credentials get 401. The JWT is ES256-signed, its key's self-signed
certificate in the `x5c` header and written to CERT_OUT (the registry's rootcertbundle).

usage: token_server.py PORT_FILE CERT_OUT USER PASSWORD SERVICE ISSUER
GET /stats -> {"issued": n, "refused": m}
Needs `cryptography` (the interop venv, Fixtures/interop/requirements.txt).
"""
import base64, datetime, http.server, json, os, sys, threading, urllib.parse
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

port_file, cert_out, user, password, service, issuer = sys.argv[1:7]
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay-test-token-issuer")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
with open(cert_out, "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
der = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
stats = {"issued": 0, "refused": 0}
lock = threading.Lock()

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def token(scope):
    access = []
    for item in filter(None, scope.split(" ")):
        kind, _, rest = item.partition(":")
        repository, _, actions = rest.rpartition(":")
        access.append({"type": kind, "name": repository, "actions": [a for a in actions.split(",") if a]})
    t = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
    header = {"typ": "JWT", "alg": "ES256", "x5c": [der]}
    claims = {"iss": issuer, "sub": user, "aud": service, "exp": t + 300, "nbf": t - 10, "iat": t,
              "jti": base64.b16encode(os.urandom(8)).decode(), "access": access}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="token"')
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/stats":
            with lock:
                return self.reply(200, dict(stats))
        if url.path != "/token":
            return self.reply(404, {"error": "not found"})
        query = urllib.parse.parse_qs(url.query)
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if self.headers.get("Authorization") != expected or query.get("service", [""])[0] != service:
            with lock:
                stats["refused"] += 1
            return self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "wrong credentials"}]})
        jwt = token(" ".join(query.get("scope", [])))
        with lock:
            stats["issued"] += 1
        self.reply(200, {"token": jwt, "access_token": jwt, "expires_in": 300})

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
