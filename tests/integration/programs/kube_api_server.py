#!/usr/bin/env python3
"""A stand-in for the Kubernetes API server's pod listing, for the agent's pod naming tests.

No kube-apiserver can run here (Debian ships none, and it needs etcd and certificates of
its own), so this serves the one request the agent makes, as the API server answers it:

  GET /api/v1/pods?fieldSelector=spec.nodeName=NODE   with  Authorization: Bearer TOKEN

over HTTPS (the certificate and key given), with a PodList of the pods in PODS_FILE whose
spec.nodeName is NODE (the file is read again for every request, so a test can add pods),
or a Status with 401 (wrong token), 400 (no or another field selector) or 404 (another
path), as the API server's JSON. Prints "listening on PORT" once it accepts, and appends
one line per request ("GET <path> <status>") to the log file given.

usage: kube_api_server.py CERT KEY TOKEN PODS_FILE REQUEST_LOG
"""
import http.server
import json
import ssl
import sys
import urllib.parse


def status(code, reason, message):
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                  "status": "Failure", "message": message, "reason": reason, "code": code}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if self.headers.get("Authorization") != "Bearer " + self.server.token:
            return status(401, "Unauthorized", "Unauthorized")
        if url.path != "/api/v1/pods":
            return status(404, "NotFound", "the server could not find the requested resource")
        selector = query.get("fieldSelector", [""])[0]
        if not selector.startswith("spec.nodeName="):
            return status(400, "BadRequest",
                          "this stand-in lists pods by spec.nodeName only, got %r" % selector)
        node = selector[len("spec.nodeName="):]
        with open(self.server.pods_file) as f:
            pods = json.load(f)
        items = [p for p in pods if p.get("spec", {}).get("nodeName") == node]
        return 200, {"kind": "PodList", "apiVersion": "v1",
                     "metadata": {"resourceVersion": "1"}, "items": items}

    def do_GET(self):
        code, body = self.answer()
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        with open(self.server.request_log, "a") as log:
            log.write("GET %s %d\n" % (self.path, code))

    def log_message(self, *args):
        pass


def main():
    cert, key, token, pods_file, request_log = sys.argv[1:6]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.token = token
    server.pods_file = pods_file
    server.request_log = request_log
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("listening on %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
