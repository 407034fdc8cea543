#!/usr/bin/env python3
"""How often reptrace's trace of a request is exactly right, on a real three-tier system.

  bench/accuracy_bench.py [--build DIR] [--requests N] [--concurrency C ...]
                          [--modes passive inband] [--backends thread pool]

A hooked client (python3, C threads, one keep-alive connection each, a distinct path per
request) calls nginx (reverse proxy, one worker, keep-alive upstream connections), which
calls a python3 backend (a thread per connection), which reads a key from redis-server for
every request: from the handler's own thread ("thread" backend), or handing the call to a
pool of four worker threads ("pool" backend: work handed between threads, which
thread-pattern causality cannot follow). Everything runs under the hook with a private agent, controller and
PostgreSQL. After the run, every request's trace is fetched with reptracectl and compared
with the true one:

  client  client  GET /item/P
  └ nginx   server  GET /item/P
    └ nginx   client  GET /item/P
      └ backend server  GET /item/P
        └ backend client  (redis GET)
          └ redis   server  (redis GET)

"tree" counts traces with exactly these six spans, parents, kinds and services and the
HTTP names; "names" also requires the two redis spans to be named after the command (GET).
The last column counts the HTTP server spans of the level (nginx's and the backend's, two
per request) whose parent came in a frame header (they carry the attribute
inband.trace_id).
Prints one table row per mode and concurrency level. Each mode runs on a fresh stack:
"passive" links the two ends of a connection by addresses, offsets and fingerprints;
"inband" also sets REPTRACE_INBAND_PORTS in every hooked client (the nginx, backend and
redis ports), so that each request carries its client span's id in a frame header.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reptrace_bench import (ROOT, Stack, free_port, nginx_conf, print_table,  # noqa: E402
                            terminate_all, wait_port)

BACKEND = r'''
import concurrent.futures, http.server, socket, sys, threading

REDIS_PORT = int(sys.argv[2])
# "thread": the handler's own thread calls redis. "pool": it hands the call to a pool of
# four worker threads and waits for the answer (work handed between threads).
POOL = concurrent.futures.ThreadPoolExecutor(4) if sys.argv[3] == "pool" else None
local = threading.local()

def redis_get(key):
    # RESP by hand: the backend needs one command, and no client library is installed.
    if getattr(local, "sock", None) is None:
        local.sock = socket.create_connection(("127.0.0.1", REDIS_PORT))
        local.file = local.sock.makefile("rb")
    k = key.encode()
    local.sock.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k))
    head = local.file.readline()
    if head.startswith(b"$-1"):
        return b""
    return local.file.read(int(head[1:]) + 2)[:-2]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        value = POOL.submit(redis_get, self.path).result() if POOL else redis_get(self.path)
        body = b"value of " + self.path.encode() + b": " + value
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''

CLIENT = r'''
import http.client, sys, threading

port, threads, per_thread, tag = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
failures = []

def run(t):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(per_thread):
        conn.request("GET", "/item/%s-%d-%d" % (tag, t, i))
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            failures.append(response.status)
    conn.close()

workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
sys.exit(1 if failures else 0)
'''


def nginx_proxy_conf(prefix, port, backend_port):
    return nginx_conf(prefix, f"""  upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}""")


def ctl(stack, *args):
    out = subprocess.run([os.path.join(stack.build, "cli/reptracectl"), "--controller",
                          stack.controller_addr, *args, "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def client_traces(stack):
    """Every trace holding a span of service "client": {client span name: trace spans}."""
    by_name = {}
    for summary in ctl(stack, "traces", "--service", "client", "--limit", "1000")["traces"]:
        spans = ctl(stack, "trace", summary["trace_id"])["spans"]
        for span in spans:
            if span["service"] == "client" and span["kind"] == "client":
                by_name.setdefault(span["name"], []).append(spans)
    return by_name


def judge(traces):
    """(tree right, names right too) for the traces found for one request."""
    if len(traces) != 1:
        return False, False
    spans = traces[0]
    if len(spans) != 6:
        return False, False
    children = {}
    for span in spans:
        children.setdefault(span.get("parent_span_id") or "", []).append(span)
    expected = [("client", "client"), ("nginx", "server"), ("nginx", "client"),
                ("backend", "server"), ("backend", "client"), ("redis", "server")]
    chain, parent = [], ""
    for service, kind in expected:
        level = children.get(parent, [])
        if len(level) != 1 or level[0]["service"] != service or level[0]["kind"] != kind:
            return False, False
        chain.append(level[0])
        parent = level[0]["span_id"]
    http_name = chain[0]["name"]
    tree = all(span["name"] == http_name for span in chain[:4])
    names = tree and chain[4]["name"] == "GET" and chain[5]["name"] == "GET"
    return tree, names


def inband_parented(stack, tag):
    """(server spans of this level whose parent came in a frame, server spans of this level),
    read from the database: the proof that in-band mode was at work."""
    out = subprocess.run(
        ["psql", stack.db, "-tAc",
         "SELECT count(*) FILTER (WHERE attributes ? 'inband.trace_id'), count(*) FROM spans "
         f"WHERE kind = 2 AND name LIKE 'GET /item/{tag}-%'"],
        capture_output=True, text=True, check=True).stdout.strip()
    framed, total = out.split("|")
    return int(framed), int(total)


def run_level(stack, client_env, work, nginx_port, concurrency, requests, tag):
    per_thread = max(1, requests // concurrency)
    script = os.path.join(work, "client.py")
    subprocess.run(["/usr/bin/python3", script, str(nginx_port), str(concurrency),
                    str(per_thread), tag], env=client_env, check=True, timeout=600)
    stack.wait_drained()
    found = client_traces(stack)
    tree = names = 0
    total = concurrency * per_thread
    for t in range(concurrency):
        for i in range(per_thread):
            ok_tree, ok_names = judge(found.get(f"GET /item/{tag}-{t}-{i}", []))
            tree += ok_tree
            names += ok_names
    return total, tree, names


def run_mode(args, work, mode, backend):
    """Table rows of one mode and backend, on a stack of its own."""
    name = f"{mode}-{backend}"
    stack = Stack(args.build, os.path.join(work, name)).start()
    procs = []
    try:
        redis_port, backend_port, nginx_port = free_port(), free_port(), free_port()

        def env(service, inband_port):
            e = stack.hook_env(service)
            if mode == "inband" and inband_port:
                e["REPTRACE_INBAND_PORTS"] = str(inband_port)
            return e

        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no",
             "--dir", work], env=env("redis", None), stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            ["/usr/bin/python3", os.path.join(work, "backend.py"), str(backend_port),
             str(redis_port), backend], env=env("backend", redis_port)))
        conf = nginx_proxy_conf(os.path.join(work, name, "nginx"), nginx_port, backend_port)
        procs.append(subprocess.Popen(
            ["nginx", "-p", os.path.join(work, name, "nginx"), "-c", conf],
            env=env("nginx", backend_port), stderr=subprocess.DEVNULL))
        for port in (redis_port, backend_port, nginx_port):
            wait_port(port)
        client_env = env("client", nginx_port)
        rows = []
        for level in args.concurrency:
            tag = f"{mode}{backend}{level}"
            total, tree, names = run_level(stack, client_env, work, nginx_port, level,
                                           args.requests, tag)
            framed, servers = inband_parented(stack, tag)
            rows.append([mode, backend, str(level), str(total),
                         f"{tree} ({100.0 * tree / total:.1f} %)",
                         f"{names} ({100.0 * names / total:.1f} %)", f"{framed} / {servers}"])
        return rows
    finally:
        terminate_all(procs)
        stack.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--requests", type=int, default=320,
                        help="requests per concurrency level (default 320)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--modes", nargs="+", choices=["passive", "inband"],
                        default=["passive", "inband"])
    parser.add_argument("--backends", nargs="+", choices=["thread", "pool"],
                        default=["thread", "pool"])
    args = parser.parse_args()
    args.build = os.path.abspath(args.build)

    work = tempfile.mkdtemp(prefix="reptrace-accuracy-")
    os.chmod(work, 0o755)  # nginx's worker runs as nobody
    with open(os.path.join(work, "backend.py"), "w") as f:
        f.write(BACKEND)
    with open(os.path.join(work, "client.py"), "w") as f:
        f.write(CLIENT)
    rows = []
    for backend in args.backends:
        for mode in args.modes:
            os.makedirs(os.path.join(work, f"{mode}-{backend}"), mode=0o755)
            rows += run_mode(args, work, mode, backend)
    print_table(f"Trace accuracy ({time.strftime('%Y-%m-%d')})",
                ["mode", "backend", "concurrency", "requests",
                 "tree, services, HTTP names right", "and redis spans named",
                 "server spans parented in-band"], rows)


if __name__ == "__main__":
    main()
