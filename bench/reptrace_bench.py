#!/usr/bin/env python3
"""reptrace's benchmarks: A/B runs side by side on this machine, printed as tables.

  bench/reptrace_bench.py [--build DIR] [--rounds N] [--seconds S] WHAT...

WHAT is any of: micro, call-cpu, instructions, server-instructions, nginx, redis, flood, idle, ingest,
pg-floor, all.

- micro: bench/hook_call_bench (Google Benchmark) plain and under LD_PRELOAD, alternating,
  N rounds; the added ns per call on a traced TCP socket and on a non-socket fd (eventfd).
- call-cpu: bench/socket_flood (64-byte request/response on loopback TCP, and the same loop
  on an eventfd) plain and hooked, alternating, N rounds of --seconds: the CPU per call from
  the process's user and system times (the hook works in user space: what it adds is user
  time; the loopback TCP calls' kernel time, which makes wall-clock figures swing, is apart).
- instructions: the same two kinds of call counted in instructions by valgrind's
  callgrind (deterministic, unlike time on a shared 2-core machine): instructions per call
  in the calling thread, plain vs hooked, and in the process's other threads per call (the
  shipper thread of hooks before the shared ring; none now).
- server-instructions: the nginx worker and redis-server under callgrind, plain vs hooked
  (agent running), serving a fixed number of requests on one connection: instructions per
  request of the whole server process (all its threads), taken
  as the difference between a short and a long run so start-up cancels out.
- agent-instructions: the agent's instructions per traced request (callgrind, all its
  threads, a real controller and PostgreSQL behind it): hooked nginx serving N requests on
  a keep-alive connection, hooked redis-server answering N GETs, a short and a long run
  each under a fresh agent. --agents A,B compares agent builds.
- nginx: nginx (1 worker, 612-byte static file) under wrk, plain vs hooked with a running
  agent + controller + PostgreSQL; per request: CPU of the nginx worker (hooked/plain),
  CPU of agent, controller and PostgreSQL (what the node pays), and requests/s.
- redis: redis-server under redis-benchmark GET and SET, the same figures; and a check that
  the server's answers are byte-identical with and without the hook.
  --agents A,B (nginx, redis): every round runs each agent binary in turn on the same
  controller and PostgreSQL, to compare an agent change with its baseline.
- flood: 8 hooked processes flood one agent (socket_flood); the agent's CPU per event,
  its peak RSS, and what the hooks dropped.
- idle: 300 quiet hooked processes (each with its ring) and one busy one; the agent's CPU,
  which is mostly what looking at the quiet rings costs.
- ingest: bench/ingest_load streams agent-like batches (500 spans, mostly standalone nginx
  server spans, some 4-span client/server trees) into reptrace-controller over gRPC, one
  batch in flight per stream as the agent does; the controller's and PostgreSQL's CPU per
  stored span. --controllers A,B alternates two controller binaries (each on its own
  database of one PostgreSQL cluster), to compare a change with its baseline.
- pg-floor: what PostgreSQL alone costs to store span rows, without any linking: the spans
  an ingest run stored are COPYed again (from a client, in the binary format the
  controller sends them in) into
  a bare copy of the spans table, then with each index a span needs added in turn (its id,
  its linking key, the listing of roots by service and time, and the two partial indexes
  of the table as it is); the backend's CPU per row, median of N rounds.

Every A/B figure is the median over rounds of the ratio within a round (plain and hooked
run back to back), so slow drifts of a noisy machine cancel out.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def cpu_seconds(pid):
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0


def postgres_cpu_seconds(postmaster):
    """CPU seconds of a PostgreSQL cluster so far: the postmaster, its live children
    (backends, autovacuum workers, background processes) and, through the postmaster's
    cutime/cstime, every child that has exited (a backend whose connection closed)."""
    try:
        with open(f"/proc/{postmaster}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        reaped = (int(fields[13]) + int(fields[14])) / CLK_TCK
    except (FileNotFoundError, ProcessLookupError, IndexError):
        reaped = 0.0
    return (cpu_seconds(postmaster) + reaped +
            sum(cpu_seconds(c) for c in children(postmaster)))


def wait_child(pid, timeout=20):
    """The first child of `pid`, waiting for it: nginx's master opens its port before it
    forks the worker."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = children(pid)
        if found:
            return found[0]
        time.sleep(0.02)
    raise RuntimeError(f"process {pid} started no child")


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def peak_rss_kib(pid):
    return status_kib(pid, "VmHWM")


def status_kib(pid, field):
    """A kB figure of /proc/PID/status (VmHWM, RssAnon, RssShmem...), 0 if absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def terminate_all(procs):
    """SIGTERM to each process (last started first), SIGKILL after 10 s."""
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def stop_cluster(pg_dir):
    subprocess.run(["bash", os.path.join(ROOT, "deploy/local/pg-cluster.sh"), "stop", pg_dir],
                   capture_output=True)


class Stack:
    """PostgreSQL + reptrace-controller + reptrace-agent, private to one benchmark run."""

    def __init__(self, build, workdir, agent_flags=()):
        self.build = build
        self.dir = workdir
        self.agent_flags = list(agent_flags)
        self.procs = []

    def start(self):
        pg_dir = os.path.join(self.dir, "pg")
        conninfo = subprocess.run(
            ["bash", os.path.join(ROOT, "deploy/local/pg-cluster.sh"), "start", pg_dir],
            check=True, capture_output=True, text=True,
            env=dict(os.environ, REPTRACE_PG_FSYNC="on")).stdout.strip()
        self.pg_dir = pg_dir
        subprocess.run(["psql", conninfo, "-qc", "CREATE DATABASE bench"], check=True,
                       capture_output=True)
        db = conninfo.replace("dbname=postgres", "dbname=bench")
        self.db = db
        log = open(os.path.join(self.dir, "controller.log"), "w")
        self.controller = subprocess.Popen(
            [os.path.join(self.build, "controller/reptrace-controller"), "--listen",
             "127.0.0.1:0", "--db", db], stderr=log)
        self.procs.append(self.controller)
        deadline = time.time() + 30
        while time.time() < deadline:
            m = re.search(r"listening on ([0-9.]+:[0-9]+)",
                          open(os.path.join(self.dir, "controller.log")).read())
            if m:
                self.controller_addr = m.group(1)
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("controller did not start")
        self.socket = os.path.join(self.dir, "agent.sock")
        self.agent_log = os.path.join(self.dir, "agent.log")
        self.agent = None
        self.start_agent(os.path.join(self.build, "agent/reptrace-agent"))
        return self

    def start_agent(self, binary, wrapper=()):
        """(Re)starts the agent from `binary` on the same socket and controller, run by
        `wrapper` (e.g. valgrind) if given."""
        self.stop_agent()
        self.agent = subprocess.Popen(
            list(wrapper) + [binary, "--socket", self.socket, "--controller",
                             self.controller_addr, "--node", "bench"] + self.agent_flags,
            stderr=open(self.agent_log, "a"))
        self.procs.append(self.agent)
        deadline = time.time() + (120 if wrapper else 20)
        while not os.path.exists(self.socket):
            if time.time() > deadline:
                raise RuntimeError("agent did not start")
            time.sleep(0.05)

    def stop_agent(self):
        if self.agent is None:
            return
        self.agent.terminate()
        self.agent.wait()
        self.procs.remove(self.agent)
        self.agent = None
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    def postmaster_pid(self):
        with open(os.path.join(self.pg_dir, "data", "postmaster.pid")) as f:
            return int(f.readline())

    def node_cpu(self):
        """CPU seconds so far of agent, controller and PostgreSQL (postmaster + backends)."""
        pg = postgres_cpu_seconds(self.postmaster_pid())
        return {"agent": cpu_seconds(self.agent.pid),
                "controller": cpu_seconds(self.controller.pid), "postgres": pg}

    def agents(self):
        out = subprocess.run(
            [os.path.join(self.build, "cli/reptracectl"), "--controller",
             self.controller_addr, "agents", "--json"], capture_output=True, text=True)
        return json.loads(out.stdout)["agents"] if out.returncode == 0 else []

    def spans_stored(self):
        return sum(int(a.get("spans_stored", 0)) for a in self.agents())

    def wait_drained(self, timeout=120):
        """Waits until the stored span count stops growing (the pipeline caught up)."""
        last, stable_since = -1, time.time()
        deadline = time.time() + timeout
        while time.time() < deadline:
            n = self.spans_stored()
            if n != last:
                last, stable_since = n, time.time()
            elif time.time() - stable_since > 3:
                return n
            time.sleep(0.5)
        return last

    def hook_env(self, service=None):
        env = dict(os.environ)
        env["LD_PRELOAD"] = os.path.join(self.build, "hook/libreptrace.so")
        env["REPTRACE_SOCKET"] = self.socket
        if service:
            env["REPTRACE_SERVICE"] = service
        return env

    def stop(self):
        terminate_all(self.procs)
        stop_cluster(self.pg_dir)


class IngestStack:
    """One private PostgreSQL cluster and, per controller binary, a database and a running
    controller (no agent: bench/ingest_load plays the agents)."""

    def __init__(self, workdir, controllers):
        self.dir = workdir
        self.binaries = controllers
        self.procs = []

    def start(self):
        self.pg_dir = os.path.join(self.dir, "pg")
        conninfo = subprocess.run(
            ["bash", os.path.join(ROOT, "deploy/local/pg-cluster.sh"), "start", self.pg_dir],
            check=True, capture_output=True, text=True,
            env=dict(os.environ, REPTRACE_PG_FSYNC="on")).stdout.strip()
        self.addrs = []
        for i, binary in enumerate(self.binaries):
            subprocess.run(["psql", conninfo, "-qc", f"CREATE DATABASE ingest{i}"],
                           check=True, capture_output=True)
            log_path = os.path.join(self.dir, f"controller{i}.log")
            proc = subprocess.Popen(
                [binary, "--listen", "127.0.0.1:0", "--db",
                 conninfo.replace("dbname=postgres", f"dbname=ingest{i}")],
                stderr=open(log_path, "w"))
            self.procs.append(proc)
            deadline = time.time() + 30
            while True:
                m = re.search(r"listening on ([0-9.]+:[0-9]+)", open(log_path).read())
                if m:
                    self.addrs.append(m.group(1))
                    break
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"controller {binary} did not start")
                time.sleep(0.05)
        return self

    def cpu(self, i):
        with open(os.path.join(self.pg_dir, "data", "postmaster.pid")) as f:
            pm = int(f.readline())
        pg = postgres_cpu_seconds(pm)
        return {"controller": cpu_seconds(self.procs[i].pid), "postgres": pg}

    def stop(self):
        terminate_all(self.procs)
        stop_cluster(self.pg_dir)


def run_ingest(args):
    binaries = (args.controllers.split(",") if args.controllers else
                [os.path.join(args.build, "controller/reptrace-controller")])
    load = os.path.join(args.build, "bench/ingest_load")
    work = tempfile.mkdtemp(prefix="reptrace-ingest.")
    os.chmod(work, 0o755)
    stack = IngestStack(work, binaries).start()
    seed = 1
    results = [[] for _ in binaries]

    def one_run(i, batches):
        nonlocal seed
        seed += 1
        time.sleep(1)  # let the last run's after-work (autovacuum, checkpoint) settle
        before = stack.cpu(i)
        out = subprocess.run([load, "--controller", stack.addrs[i], "--batches",
                              str(batches), "--streams", str(args.streams), "--seed",
                              str(seed)], check=True, capture_output=True, text=True).stdout
        after = stack.cpu(i)
        m = re.search(r"spans (\d+) seconds ([0-9.]+)", out)
        spans, seconds = int(m.group(1)), float(m.group(2))
        return {k: (after[k] - before[k]) / spans * 1e6 for k in after} | {
            "spans/s": spans / seconds}

    try:
        for i in range(len(binaries)):
            if args.prefill > 0:
                # A database that already holds spans, as a running one does: its indexes
                # are bigger than the caches, and an insert lands where the cache misses.
                print(f"(prefilling database {i} with {args.prefill} batches)", flush=True)
                subprocess.run([load, "--controller", stack.addrs[i], "--batches",
                                str(args.prefill), "--seed", str(1000 + i)], check=True,
                               capture_output=True)
            one_run(i, 20)  # warm-up: connections, prepared statements, caches
        for _ in range(args.rounds):
            for i in range(len(binaries)):
                results[i].append(one_run(i, args.batches))
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for i, binary in enumerate(binaries):
        r = results[i]
        ctl = median([x["controller"] for x in r])
        pg = median([x["postgres"] for x in r])
        rows.append([binary, f"{ctl:.2f}", f"{pg:.2f}",
                     f"{median([x['controller'] + x['postgres'] for x in r]):.2f}",
                     f"{median([x['spans/s'] for x in r]):.0f}"])
    into = (f"a database holding {args.prefill * 500} spans" if args.prefill
            else "an empty database")
    print_table(f"ingest: CPU per stored span, µs (median of {args.rounds} rounds of "
                f"{args.batches} batches of 500 spans, {args.streams} stream(s), into {into})",
                ["controller binary", "controller", "PostgreSQL", "total", "spans/s"], rows)


def backend_copy_cpu(conninfo, table, path):
    """COPYs the file `path` into `table` from a psql client; returns the CPU seconds the
    database backend spent (its /proc times, read around the COPY)."""
    psql = subprocess.Popen(["psql", conninfo, "-qAtX", "-v", "ON_ERROR_STOP=1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        psql.stdin.write("SELECT pg_backend_pid();\n")
        psql.stdin.flush()
        backend = int(psql.stdout.readline())
        before = cpu_seconds(backend)
        psql.stdin.write(f"\\copy {table} from '{path}' with (format binary)\nSELECT 'done';\n")
        psql.stdin.flush()
        while psql.stdout.readline().strip() != "done":
            pass
        return cpu_seconds(backend) - before
    finally:
        psql.stdin.close()
        psql.wait()


def run_pg_floor(args):
    work = tempfile.mkdtemp(prefix="reptrace-pgfloor.")
    os.chmod(work, 0o755)
    stack = IngestStack(work, [os.path.join(args.build, "controller/reptrace-controller")])
    stack.start()
    load = os.path.join(args.build, "bench/ingest_load")
    rows_path = os.path.join(work, "spans.copy")  # COPY's binary format, as the controller sends
    try:
        subprocess.run([load, "--controller", stack.addrs[0], "--batches", str(args.batches),
                        "--seed", "1"], check=True, capture_output=True)
        conninfo = subprocess.run(
            ["bash", os.path.join(ROOT, "deploy/local/pg-cluster.sh"), "conninfo",
             stack.pg_dir], check=True, capture_output=True, text=True).stdout.strip()
        db = conninfo.replace("dbname=postgres", "dbname=ingest0")
        subprocess.run(["psql", db, "-qc", f"\\copy spans to '{rows_path}' with (format binary)"],
                       check=True)
        rows = int(subprocess.run(["psql", db, "-qAtc", "SELECT count(*) FROM spans"],
                                  check=True, capture_output=True, text=True).stdout)
        steps = [
            ("heap only: the span row (no index)", ""),
            ("+ its id (primary key)", "ALTER TABLE floor_spans ADD PRIMARY KEY (span_id);"),
            ("+ its linking key (client_key)",
             "CREATE INDEX ON floor_spans (client_key) WHERE client_key IS NOT NULL;"),
            ("+ roots by service and time (listing)",
             'CREATE INDEX ON floor_spans (service COLLATE "C", start_ns, span_id) '
             "WHERE trace_id = span_id;"),
            ("+ trace members and children (partial): the spans table as it is",
             "CREATE INDEX ON floor_spans (trace_id) WHERE trace_id <> span_id; "
             "CREATE INDEX ON floor_spans (parent_span_id) WHERE parent_span_id IS NOT NULL;"),
        ]
        subprocess.run(["psql", db, "-qc", "DROP TABLE IF EXISTS floor_spans; "
                        "CREATE TABLE floor_spans (LIKE spans INCLUDING DEFAULTS)"],
                       check=True, capture_output=True)
        table_rows = []
        previous = None
        for label, ddl in steps:
            if ddl:
                subprocess.run(["psql", db, "-qc", ddl], check=True, capture_output=True)
            per_row = []
            for _ in range(args.rounds):
                subprocess.run(["psql", db, "-qc", "TRUNCATE floor_spans", "-c", "CHECKPOINT"],
                               check=True, capture_output=True)
                per_row.append(backend_copy_cpu(db, "floor_spans", rows_path) / rows * 1e6)
            us = median(per_row)
            table_rows.append([label, f"{us:.2f}",
                               "" if previous is None else f"{us - previous:+.2f}",
                               " ".join(f"{x:.2f}" for x in per_row)])
            previous = us
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_table(f"pg-floor: PostgreSQL backend CPU per span row, µs, COPY of {rows} spans "
                f"(median of {args.rounds} rounds)",
                ["table", "µs per row", "added", "rounds"], table_rows)


def median(values):
    return statistics.median(values) if values else float("nan")


def start_bare_agent(build, work):
    """A running agent with no controller (it buffers), so hooked programs really ship
    their events; returns (process, socket path)."""
    sock = os.path.join(work, "agent.sock")
    agent = subprocess.Popen([os.path.join(build, "agent/reptrace-agent"), "--socket", sock,
                              "--controller", f"127.0.0.1:{free_port()}"],
                             stderr=subprocess.DEVNULL)
    while not os.path.exists(sock):
        time.sleep(0.05)
    return agent, sock


# ----------------------------------------------------------------------------------------
# micro

def run_micro(args):
    binary = os.path.join(args.build, "bench/hook_call_bench")
    hook = os.path.join(args.build, "hook/libreptrace.so")
    work = tempfile.mkdtemp(prefix="reptrace-micro.")
    agent, agent_sock = start_bare_agent(args.build, work)
    results = {"plain": {}, "hooked": {}}
    try:
        for _ in range(args.rounds):
            for mode in ("plain", "hooked"):
                env = dict(os.environ)
                env.pop("LD_PRELOAD", None)
                if mode == "hooked":
                    env["LD_PRELOAD"] = hook
                    env["REPTRACE_SOCKET"] = agent_sock
                out = subprocess.run([binary, "--benchmark_format=json"], env=env,
                                     capture_output=True, text=True, check=True).stdout
                for b in json.loads(out)["benchmarks"]:
                    per_call = b["real_time"] / 2  # two calls per iteration
                    results[mode].setdefault(b["name"].split("/")[0], []).append(per_call)
    finally:
        agent.terminate()
        agent.wait()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, label, target in (("BM_TracedTcpWriteRead", "traced TCP socket", 100),
                                ("BM_EventfdWriteRead", "non-socket fd (eventfd)", 5)):
        plain = results["plain"][name]
        hooked = results["hooked"][name]
        added = [h - p for p, h in zip(plain, hooked)]
        rows.append([label, f"{median(plain):.1f}", f"{median(hooked):.1f}",
                     f"{median(added):+.1f}", f"≤ {target}"])
    print_table("hook: time per call, ns (median of %d alternating rounds)" % args.rounds,
                ["call on", "plain", "hooked", "added", "target"], rows)


def run_call_cpu(args):
    """The CPU a traced call costs, from the process's own user and system times rather
    than wall time: the hook works in user space and makes no system call per call, so
    what it adds shows in user time, apart from the kernel's loopback TCP time that makes
    wall-clock figures swing by hundreds of ns here."""
    flood = os.path.join(args.build, "bench/socket_flood")
    hook = os.path.join(args.build, "hook/libreptrace.so")
    work = tempfile.mkdtemp(prefix="reptrace-callcpu.")
    agent, agent_sock = start_bare_agent(args.build, work)
    kinds = (("traced TCP socket (64 B request/response)", ["64"], 4, 100),
             ("non-socket fd (eventfd)", ["eventfd"], 2, 5))
    per_call = {(label, mode): [] for label, *_ in kinds for mode in ("plain", "hooked")}
    try:
        for _ in range(args.rounds):
            for label, extra, calls_per_iteration, _target in kinds:
                for mode in ("plain", "hooked"):
                    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
                    if mode == "hooked":
                        env["LD_PRELOAD"] = hook
                        env["REPTRACE_SOCKET"] = agent_sock
                    proc = subprocess.Popen([flood, str(args.seconds)] + extra, env=env,
                                            stdout=subprocess.PIPE, text=True)
                    out = proc.stdout.read()
                    _, status, usage = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    if proc.returncode != 0:
                        raise RuntimeError(f"socket_flood failed ({proc.returncode})")
                    calls = int(out.split()[1]) * calls_per_iteration
                    per_call[(label, mode)].append(
                        (usage.ru_utime * 1e9 / calls, usage.ru_stime * 1e9 / calls))
    finally:
        agent.terminate()
        agent.wait()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for label, _extra, _calls, target in kinds:
        plain, hooked = per_call[(label, "plain")], per_call[(label, "hooked")]
        added_user = [h[0] - p[0] for p, h in zip(plain, hooked)]
        added_sys = [h[1] - p[1] for p, h in zip(plain, hooked)]
        rows.append([label, f"{median([p[0] for p in plain]):.1f}",
                     f"{median([h[0] for h in hooked]):.1f}", f"{median(added_user):+.1f}",
                     " ".join(f"{x:+.0f}" for x in added_user),
                     f"{median(added_sys):+.1f}", f"≤ {target}"])
    print_table(f"hook: CPU per call, ns (user time; median of {args.rounds} alternating "
                f"rounds of {args.seconds:g} s)",
                ["call on", "plain user", "hooked user", "added user", "added, each round",
                 "added system", "target"], rows)


def callgrind_totals(prefix):
    """Instruction totals per thread file callgrind wrote for `prefix` (thread 1 first)."""
    totals = []
    for name in sorted(os.listdir(os.path.dirname(prefix))):
        path = os.path.join(os.path.dirname(prefix), name)
        if not path.startswith(prefix + "-"):
            continue
        with open(path) as f:
            for line in f:
                if line.startswith("totals:") or line.startswith("summary:"):
                    totals.append(int(line.split()[1]))
                    break
    return totals


def run_instructions(args):
    if shutil.which("valgrind") is None:
        print("\n(instructions: valgrind is not installed; skipped)")
        return
    flood = os.path.join(args.build, "bench/socket_flood")
    hook = os.path.join(args.build, "hook/libreptrace.so")
    work = tempfile.mkdtemp(prefix="reptrace-instr.")
    agent, agent_sock = start_bare_agent(args.build, work)
    rows = []
    try:
        page = agent_sock + ".config"
        publish = os.path.join(args.build, "bench/publish_config")
        # In-band: every port framed (both ends are in the one hooked process). Off: the
        # config page says enabled=false (the connections are kept, counting bytes).
        for label, extra, calls_per_iteration, inband, off in (
                ("traced TCP socket (64 B request/response)", ["64"], 4, False, False),
                ("the same, in-band (framed both ways)", ["64"], 4, True, False),
                ("the same, tracing switched off (enabled=false)", ["64"], 4, False, True),
                ("non-socket fd (eventfd)", ["eventfd"], 2, False, False)):
            per_call = {}
            shipper = None
            subprocess.run([publish, page, "2" if off else "3",
                            '{"enabled": false}' if off else "{}"], check=True)
            for mode in ("plain", "hooked"):
                env = {k: v for k, v in os.environ.items()
                       if k != "LD_PRELOAD" and not k.startswith("REPTRACE_")}
                if mode == "hooked":
                    env["LD_PRELOAD"] = hook
                    env["REPTRACE_SOCKET"] = agent_sock
                    if inband:
                        env["REPTRACE_INBAND_PORTS"] = "1-65535"
                # A short and a long run: their difference leaves out start-up (loading,
                # the hook's constructor), which would otherwise count as per-call cost.
                runs = []
                for seconds in ("0.5", "2"):
                    prefix = os.path.join(work, f"cg-{mode}-{extra[0]}-{inband}-{seconds}")
                    out = subprocess.run(["valgrind", "--tool=callgrind",
                                          "--separate-threads=yes",
                                          f"--callgrind-out-file={prefix}", flood, seconds]
                                         + extra, env=env, capture_output=True, text=True,
                                         check=True)
                    calls = int(out.stdout.split()[1]) * calls_per_iteration
                    totals = callgrind_totals(prefix)
                    runs.append((calls, totals[0], sum(totals[1:])))
                (c1, main1, ship1), (c2, main2, ship2) = runs
                per_call[mode] = (main2 - main1) / (c2 - c1)
                if mode == "hooked" and ship2 > 0:
                    shipper = (ship2 - ship1) / (c2 - c1)
            rows.append([label, f"{per_call['plain']:.0f}", f"{per_call['hooked']:.0f}",
                         f"{per_call['hooked'] - per_call['plain']:+.0f}",
                         "-" if shipper is None else f"{shipper:.0f}"])
    finally:
        agent.terminate()
        agent.wait()
        shutil.rmtree(work, ignore_errors=True)
    print_table("hook: instructions per call (callgrind), calling thread; the process's other "
                "threads per call", ["call on", "plain", "hooked", "added", "other threads"], rows)


def server_instructions(argv, env, port, client, prefix):
    """Runs argv under callgrind, lets `client()` load it, stops it; returns the instruction
    total of its busiest process (nginx's worker, or redis-server itself), all threads."""
    server = subprocess.Popen(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                               f"--callgrind-out-file={prefix}.%p"] + argv, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=120)
        client()
    finally:
        server.send_signal(signal.SIGQUIT if argv[0] == "nginx" else signal.SIGTERM)
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    per_pid = {}
    directory = os.path.dirname(prefix)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if not path.startswith(prefix + "."):
            continue
        pid = name[len(os.path.basename(prefix)) + 1:].split("-")[0]
        with open(path) as f:
            for line in f:
                if line.startswith("totals:") or line.startswith("summary:"):
                    per_pid[pid] = per_pid.get(pid, 0) + int(line.split()[1])
                    break
        os.remove(path)
    return max(per_pid.values())


def run_server_instructions(args):
    if shutil.which("valgrind") is None:
        print("\n(server-instructions: valgrind is not installed; skipped)")
        return
    work = tempfile.mkdtemp(prefix="reptrace-sinstr.")
    os.chmod(work, 0o1777)  # nginx's worker runs as nobody and writes its callgrind file here
    hook = os.path.join(args.build, "hook/libreptrace.so")
    agent, agent_sock = start_bare_agent(args.build, work)
    short, long = 200, 2200
    rows = []
    try:
        def env_for(mode):
            env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            if mode == "hooked":
                env["LD_PRELOAD"] = hook
                env["REPTRACE_SOCKET"] = agent_sock
            return env

        def nginx_run(mode, n):
            port = free_port()
            prefix = os.path.join(work, f"ngx-{port}")
            conf = static_nginx_conf(prefix, port)
            url = f"http://127.0.0.1:{port}/index.html"
            client = lambda: subprocess.run(["curl", "-s"] + [url] * n,
                                            stdout=subprocess.DEVNULL, check=True)
            return server_instructions(["nginx", "-p", prefix, "-c", conf], env_for(mode),
                                       port, client, os.path.join(work, f"cg-ngx-{port}"))

        def redis_run(mode, n):
            port = free_port()
            client = lambda: subprocess.run(
                ["redis-benchmark", "-p", str(port), "-q", "-t", "get", "-n", str(n), "-c",
                 "1"], capture_output=True, check=True)
            # --hz 1: redis's timer work scales with the run's wall time (long under
            # valgrind, and longer on a busy machine), not with requests; at the default
            # 10 Hz it made the per-GET figure wander between runs.
            return server_instructions(
                ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                 "--hz", "1", "--dir", work], env_for(mode), port, client,
                os.path.join(work, f"cg-redis-{port}"))

        for name, run in (("nginx worker (static 612 B, keep-alive)", nginx_run),
                          ("redis-server (GET)", redis_run)):
            per_request = {}
            for mode in ("plain", "hooked"):
                per_request[mode] = (run(mode, long) - run(mode, short)) / (long - short)
            rows.append([name, f"{per_request['plain']:.0f}", f"{per_request['hooked']:.0f}",
                         f"{per_request['hooked'] / per_request['plain']:.3f}", "≤ 1.02"])
    finally:
        agent.terminate()
        agent.wait()
        shutil.rmtree(work, ignore_errors=True)
    print_table("server instructions per request (callgrind, whole process, all threads)", ["server", "plain", "hooked", "hooked/plain", "target"],
                rows)


PACED_REDIS_GETS = r"""
import socket, sys, time
port, n, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
c = socket.create_connection(("127.0.0.1", port))
c.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nabc\r\n"); c.recv(64)
start = time.time()
for i in range(n):
    c.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
    if c.recv(64) != b"$3\r\nabc\r\n":
        sys.exit("unexpected answer")
    delay = start + (i + 1) / rate - time.time()
    if delay > 0:
        time.sleep(delay)
"""


def run_agent_instructions(args):
    """The agent's instructions per traced request (callgrind, all its threads), with a
    real controller and PostgreSQL behind it: a hooked nginx serving N requests on one
    keep-alive connection, and a hooked redis-server answering N GETs, each run under a
    fresh agent; the difference between a short and a long run leaves out start-up and
    the idle time of waiting for the spans to be stored. Deterministic where the timed
    `nginx`/`redis` figures swing with the machine."""
    if shutil.which("valgrind") is None:
        print("\n(agent-instructions: valgrind is not installed; skipped)")
        return
    work = tempfile.mkdtemp(prefix="reptrace-ainstr.")
    os.chmod(work, 0o755)
    stack = Stack(args.build, work).start()
    agents = (args.agents.split(",") if args.agents
              else [os.path.join(args.build, "agent/reptrace-agent")])
    short, long = 300, 3300
    # Paced: under valgrind the agent drains ~50 times slower, and unpaced load would fill
    # the hooked process's ring (the records beyond it dropped, as the hook must).
    rate = 1000
    rows = []

    def nginx_load(n):
        port = free_port()
        prefix = os.path.join(work, f"nginx-{port}")
        conf = static_nginx_conf(prefix, port)
        server = subprocess.Popen(["nginx", "-p", prefix, "-c", conf], env=stack.hook_env(),
                                  stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            subprocess.run(["curl", "-s", "--rate", f"{rate}/s"] +
                           [f"http://127.0.0.1:{port}/index.html"] * n,
                           stdout=subprocess.DEVNULL, check=True)
        finally:
            server.send_signal(signal.SIGQUIT)
            server.wait()

    def redis_load(n):
        port = free_port()
        server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                                   "--appendonly", "no", "--dir", work], env=stack.hook_env(),
                                  stdout=subprocess.DEVNULL)
        try:
            wait_port(port)
            subprocess.run([sys.executable, "-c", PACED_REDIS_GETS, str(port), str(n),
                            str(rate)], check=True)
        finally:
            server.terminate()
            server.wait()

    try:
        for i, binary in enumerate(agents):
            for name, load in (("nginx (static 612 B, keep-alive)", nginx_load),
                               ("redis-server (GET)", redis_load)):
                runs = []
                for n in (short, long):
                    prefix = os.path.join(work, f"cg-agent-{i}-{len(rows)}-{n}")
                    stack.start_agent(binary, ["valgrind", "--tool=callgrind",
                                               "--separate-threads=yes",
                                               f"--callgrind-out-file={prefix}"])
                    before = stack.spans_stored()
                    load(n)
                    stored = stack.wait_drained() - before
                    stack.stop_agent()
                    runs.append((sum(callgrind_totals(prefix)), stored))
                (i1, s1), (i2, s2) = runs
                rows.append([name + ("" if len(agents) == 1 else f" [agent {i + 1}]"),
                             f"{(i2 - i1) / (long - short):.0f}",
                             f"{(s2 - s1) / (long - short):.2f}",
                             f"{(i2 - i1) / max(s2 - s1, 1):.0f}"])
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    for i, a in enumerate(agents):
        if len(agents) > 1:
            print(f"agent {i + 1}: {a}")
    print_table(f"agent: instructions per traced request (callgrind, all threads; {rate} "
                "requests/s; controller and PostgreSQL running)", ["server", "instructions/request",
                                            "spans stored/request", "instructions/span"], rows)


# ----------------------------------------------------------------------------------------
# nginx and redis

def nginx_conf(prefix, http_body):
    """Writes an nginx.conf under `prefix` (one worker, in the foreground, temp paths and
    logs inside `prefix`) with `http_body` inside http {}; returns its path."""
    os.makedirs(prefix, exist_ok=True)
    conf = f"""worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
{http_body}
}}
"""
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def static_nginx_conf(prefix, port):
    """nginx serving a 612-byte index.html (like nginx's own) on 127.0.0.1:`port`."""
    os.makedirs(os.path.join(prefix, "www"), exist_ok=True)
    with open(os.path.join(prefix, "www", "index.html"), "w") as f:
        f.write("<html><body>" + "x" * 586 + "</body></html>\n")  # 612 bytes, like nginx's
    return nginx_conf(prefix, f"""  keepalive_requests 100000000;
  server {{ listen 127.0.0.1:{port}; location / {{ root {prefix}/www; }} }}""")


def wrk(port, seconds, connections):
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          f"http://127.0.0.1:{port}/index.html"],
                         capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError("wrk saw errors: " + out)
    return requests


def measure_load(stack, hooked, server_pid, load):
    """Runs load() (which returns how many requests it made) against a server; returns
    requests, requests/s, the server's CPU seconds, and for a hooked run what the node
    (agent, controller, PostgreSQL) spent until it had stored the run's spans."""
    stored_before = stack.spans_stored() if hooked else 0
    before = cpu_seconds(server_pid)
    before_node = stack.node_cpu()
    children_before = children_cpu_seconds()
    t0 = time.time()
    requests = load()
    elapsed = time.time() - t0
    client_cpu = children_cpu_seconds() - children_before  # the load generator, reaped
    server_cpu = cpu_seconds(server_pid) - before
    during = stack.node_cpu()
    node = {}
    node_during = sum(during.values()) - sum(before_node.values())
    if hooked:
        stack.wait_drained()
        after = stack.node_cpu()
        node = {k: after[k] - before_node[k] for k in after}
        node["spans"] = stack.spans_stored() - stored_before
    return {"requests": requests, "rps": requests / elapsed, "elapsed": elapsed,
            "worker_cpu": server_cpu, "client_cpu": client_cpu, "node_during": node_during,
            "node": node}


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_nginx_run(args, stack, hooked, work):
    port = free_port()
    prefix = os.path.join(work, f"nginx-{port}")
    conf = static_nginx_conf(prefix, port)
    env = stack.hook_env() if hooked else {k: v for k, v in os.environ.items()
                                           if k != "LD_PRELOAD"}
    master = subprocess.Popen(["nginx", "-p", prefix, "-c", conf], env=env,
                              stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        worker = wait_child(master.pid)
        wrk(port, 1, args.connections)  # warm-up
        if hooked:
            stack.wait_drained()  # the warm-up's spans are not counted
        return measure_load(stack, hooked, worker,
                            lambda: wrk(port, args.seconds, args.connections))
    finally:
        master.terminate()
        master.wait()


def redis_cli(port, *cmd):
    return subprocess.run(["redis-cli", "-p", str(port), *cmd], capture_output=True,
                          check=True).stdout


def one_redis_run(args, stack, hooked, test, work):
    port = free_port()
    env = stack.hook_env() if hooked else {k: v for k, v in os.environ.items()
                                           if k != "LD_PRELOAD"}
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", work], env=env,
                              stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        answers = b"".join([
            redis_cli(port, "SET", "k", "v" * 1000), redis_cli(port, "GET", "k"),
            redis_cli(port, "INCR", "n"), redis_cli(port, "RPUSH", "l", "a", "b", "c"),
            redis_cli(port, "LRANGE", "l", "0", "-1"), redis_cli(port, "GET", "missing")])
        n = int(args.seconds * 15000)
        subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-t", test, "-n",
                        str(n // 4), "-c", str(args.connections)], capture_output=True,
                       check=True)  # warm-up
        if hooked:
            stack.wait_drained()  # the warm-up's spans are not counted
        def load():
            subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-t", test, "-n",
                            str(n), "-c", str(args.connections)], capture_output=True,
                           check=True)
            return n

        return dict(measure_load(stack, hooked, server.pid, load), answers=answers)
    finally:
        server.terminate()
        server.wait()


def summarize(name, runs, target_ratio=1.02):
    """runs: list of (plain, hooked) dicts. Prints and returns the rows."""
    cpu_ratio = [h["worker_cpu"] / h["requests"] / (p["worker_cpu"] / p["requests"])
                 for p, h in runs]
    rps_ratio = [h["rps"] / p["rps"] for p, h in runs]
    per_req = lambda key: [h["node"][key] / h["requests"] * 1e6 for _, h in runs]
    node_total = [sum(h["node"][k] for k in ("agent", "controller", "postgres")) /
                  h["requests"] * 1e6 for _, h in runs]
    stored = [h["node"]["spans"] / h["requests"] for _, h in runs]
    plain_us = median([p["worker_cpu"] / p["requests"] * 1e6 for p, _ in runs])
    hooked_us = median([h["worker_cpu"] / h["requests"] * 1e6 for _, h in runs])
    # What the machine did during the load: the server, the load generator and (hooked)
    # the node, per request and in cores. If the plain run keeps both cores busy, requests/s
    # hooked/plain should come out near the ratio of those CPU totals per request.
    busy = lambda r: r["worker_cpu"] + r["client_cpu"] + r["node_during"]
    client_us = lambda r: r["client_cpu"] / r["requests"] * 1e6
    cores = lambda r: busy(r) / r["elapsed"]
    predicted = [(busy(p) / p["requests"]) / (busy(h) / h["requests"]) for p, h in runs]
    return [
        [name, "server CPU/request, µs (plain → hooked)", f"{plain_us:.2f} → {hooked_us:.2f}", ""],
        [name, "server CPU/request, hooked/plain", f"{median(cpu_ratio):.3f}",
         f"≤ {target_ratio}"],
        [name, "agent CPU/request, µs", f"{median(per_req('agent')):.2f}", "≤ 2"],
        [name, "controller CPU/request, µs", f"{median(per_req('controller')):.2f}", ""],
        [name, "PostgreSQL CPU/request, µs", f"{median(per_req('postgres')):.2f}", ""],
        [name, "agent+controller+PostgreSQL CPU/request, µs", f"{median(node_total):.2f}",
         "≤ 10"],
        [name, "load generator CPU/request, µs (plain → hooked)",
         f"{median([client_us(p) for p, _ in runs]):.2f} → "
         f"{median([client_us(h) for _, h in runs]):.2f}", ""],
        [name, "cores busy during the load (plain → hooked)",
         f"{median([cores(p) for p, _ in runs]):.2f} → {median([cores(h) for _, h in runs]):.2f}",
         "(of 2)"],
        [name, "requests/s, hooked/plain", f"{median(rps_ratio):.3f}",
         f"(plain {median([p['rps'] for p, _ in runs]):.0f}/s)"],
        [name, "requests/s, hooked/plain, predicted from CPU per request", f"{median(predicted):.3f}",
         "(if CPU-bound)"],
        [name, "spans stored per request", f"{median(stored):.2f}", "1"],
    ]


def run_servers(args, which):
    work = tempfile.mkdtemp(prefix="reptrace-bench.")
    os.chmod(work, 0o755)
    stack = Stack(args.build, work).start()
    # --agents A,B: each round runs every agent binary in turn (plain and hooked, back to
    # back), so the agents are compared under the same drifts of a noisy machine.
    agents = args.agents.split(",") if args.agents else [None]
    label = lambda i: "" if len(agents) == 1 else f" [agent {i + 1}]"
    rows = []
    per_run = []

    def for_agent(i):
        if agents[i] is not None:
            stack.start_agent(agents[i])

    try:
        if "nginx" in which:
            runs = [[] for _ in agents]
            for _ in range(args.rounds):
                for i in range(len(agents)):
                    for_agent(i)
                    plain = one_nginx_run(args, stack, False, work)
                    hooked = one_nginx_run(args, stack, True, work)
                    runs[i].append((plain, hooked))
                    per_run.append(["nginx" + label(i), hooked])
            for i in range(len(agents)):
                rows += summarize("nginx" + label(i), runs[i])
        if "redis" in which:
            for test in ("get", "set"):
                runs = [[] for _ in agents]
                for _ in range(args.rounds):
                    for i in range(len(agents)):
                        for_agent(i)
                        plain = one_redis_run(args, stack, False, test, work)
                        hooked = one_redis_run(args, stack, True, test, work)
                        if plain["answers"] != hooked["answers"]:
                            raise RuntimeError("redis answered differently under the hook")
                        runs[i].append((plain, hooked))
                        per_run.append([f"redis {test.upper()}" + label(i), hooked])
                for i in range(len(agents)):
                    rows += summarize(f"redis {test.upper()}" + label(i), runs[i])
                    rows.append([f"redis {test.upper()}" + label(i),
                                 "answers byte-identical with hook", "yes", "yes"])
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_table(f"servers under load, hooked vs plain (median of {args.rounds} A/B rounds, "
                f"{args.seconds:g} s each, {args.connections} client connections)",
                ["server", "figure", "value", "target"], rows)
    if len(agents) > 1:
        for i, a in enumerate(agents):
            print(f"agent {i + 1}: {a}")
        print_table("every hooked run, in the order run", ["server", "agent µs/req",
                                                             "node µs/req", "requests"],
                    [[name, f"{h['node']['agent'] / h['requests'] * 1e6:.2f}",
                      f"{sum(h['node'][k] for k in ('agent', 'controller', 'postgres')) / h['requests'] * 1e6:.2f}",
                      str(h["requests"])] for name, h in per_run])


# ----------------------------------------------------------------------------------------
# idle: many quiet hooked processes and one busy one

IDLE_SCRIPT = r"""
import os, signal, socket, sys, time
n, secs = int(sys.argv[1]), float(sys.argv[2])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1024)
kids = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:  # a traced connection: the child makes its own ring, then stays quiet
        c = socket.create_connection(srv.getsockname()); c.send(b"x")
        time.sleep(secs); os._exit(0)
    kids.append(pid)
held = [srv.accept()[0] for _ in range(n)]
signal.signal(signal.SIGTERM, lambda *_: [os.kill(k, signal.SIGKILL) for k in kids] and os._exit(0))
print("ready", flush=True)
for k in kids: os.waitpid(k, 0)
"""

BUSY_SCRIPT = r"""
import socket, sys, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
cli = socket.create_connection(srv.getsockname()); conn, _ = srv.accept()
end, n = time.time() + float(sys.argv[1]), 0
while time.time() < end:
    cli.send(b"ping"); conn.recv(4); conn.send(b"pong"); cli.recv(4); n += 1
    time.sleep(0.0005)
print(n)
"""


def run_idle(args, idle=300):
    """The agent's CPU while `idle` hooked processes sit quiet (each with its ring) and one
    makes ~1500 request/response exchanges a second: what polling the quiet rings costs."""
    work = tempfile.mkdtemp(prefix="reptrace-idle.")
    agent, agent_sock = start_bare_agent(args.build, work)
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["LD_PRELOAD"] = os.path.join(args.build, "hook/libreptrace.so")
    env["REPTRACE_SOCKET"] = agent_sock
    quiet = subprocess.Popen(["/usr/bin/python3", "-c", IDLE_SCRIPT, str(idle),
                              str(args.seconds + 30)], env=env, stdout=subprocess.PIPE,
                             text=True)
    try:
        if quiet.stdout.readline().strip() != "ready":
            raise RuntimeError("the idle processes did not start")
        time.sleep(1)
        before = cpu_seconds(agent.pid)
        busy = subprocess.run(["/usr/bin/python3", "-c", BUSY_SCRIPT, str(args.seconds)],
                              env=env, capture_output=True, text=True, check=True)
        agent_cpu = cpu_seconds(agent.pid) - before
        exchanges = int(busy.stdout.split()[0])
    finally:
        terminate_all([quiet])
        agent.terminate()
        agent.wait()
        shutil.rmtree(work, ignore_errors=True)
    print_table(f"agent with {idle} quiet hooked processes and one busy one, {args.seconds:g} s",
                ["figure", "value"],
                [["exchanges of the busy process", f"{exchanges}"],
                 ["agent CPU, % of a core", f"{agent_cpu / args.seconds * 100:.1f}"],
                 ["agent CPU per exchange, µs", f"{agent_cpu / max(exchanges, 1) * 1e6:.1f}"]])


# ----------------------------------------------------------------------------------------
# flood

def run_flood(args):
    work = tempfile.mkdtemp(prefix="reptrace-flood.")
    os.chmod(work, 0o755)
    stack = Stack(args.build, work).start()
    try:
        flood = os.path.join(args.build, "bench/socket_flood")
        before = cpu_seconds(stack.agent.pid)
        procs = [subprocess.Popen([flood, str(args.seconds)], env=stack.hook_env(f"flood{i}"),
                                  stdout=subprocess.PIPE, text=True) for i in range(8)]
        # What of the agent's memory is the hooked processes' rings, mapped by the agent
        # too (shared memory, counted in both RSS figures), read while they run.
        time.sleep(args.seconds / 2)
        shmem = status_kib(stack.agent.pid, "RssShmem")
        iterations = 0
        for p in procs:
            out, _ = p.communicate()
            if p.returncode != 0:
                raise RuntimeError("socket_flood failed")
            iterations += int(out.split()[1])
        time.sleep(1)
        agent_cpu = cpu_seconds(stack.agent.pid) - before
        rss = peak_rss_kib(stack.agent.pid)
        stack.agent.terminate()
        stack.agent.wait()
        summary = open(stack.agent_log).read()
        m = re.search(r"stopped: (\d+) events", summary)
        events = int(m.group(1)) if m else 0
        calls = iterations * 4
        dropped = max(calls - events, 0)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        ["socket calls made by the 8 processes", f"{calls}", ""],
        ["events received by the agent", f"{events} ({events / max(calls, 1):.1%})", ""],
        ["dropped in the hooks (ring full), never blocking", f"{dropped}", "counted"],
        ["agent CPU per event, µs", f"{agent_cpu / max(events, 1) * 1e6:.2f}", "≤ 2"],
        ["agent peak RSS, MiB", f"{rss / 1024:.1f}", "≤ 64"],
        ["  of which the rings it shares with the hooked processes, MiB",
         f"{shmem / 1024:.1f}", ""],
    ]
    print_table(f"agent flooded by 8 hooked processes for {args.seconds:g} s",
                ["figure", "value", "target"], rows)


def print_table(title, header, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="+",
                        choices=["micro", "call-cpu", "instructions", "server-instructions",
                                 "agent-instructions", "nginx",
                                 "redis", "flood", "idle", "ingest", "pg-floor", "all"])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=8,
                        help="client connections of wrk / redis-benchmark (default 8)")
    parser.add_argument("--controllers", default="",
                        help="ingest: controller binaries to alternate, comma-separated "
                             "(default: the build's)")
    parser.add_argument("--agents", default="",
                        help="nginx, redis, agent-instructions: agent binaries to alternate in "
                             "every round, "
                             "comma-separated (default: the build's)")
    parser.add_argument("--batches", type=int, default=100,
                        help="ingest, pg-floor: batches of 500 spans per stream and run "
                             "(default 100)")
    parser.add_argument("--prefill", type=int, default=0,
                        help="ingest: batches of 500 spans stored into each database before "
                             "the measured rounds (default 0: an empty database)")
    parser.add_argument("--streams", type=int, default=1,
                        help="ingest: concurrent ingest streams (default 1)")
    args = parser.parse_args()
    what = set(args.what)
    if "all" in what:
        what = {"micro", "call-cpu", "instructions", "server-instructions", "agent-instructions",
                "nginx", "redis", "flood"}
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if "micro" in what:
        run_micro(args)
    if "call-cpu" in what:
        run_call_cpu(args)
    if "instructions" in what:
        run_instructions(args)
    if "server-instructions" in what:
        run_server_instructions(args)
    if "agent-instructions" in what:
        run_agent_instructions(args)
    if what & {"nginx", "redis"}:
        run_servers(args, what)
    if "flood" in what:
        run_flood(args)
    if "idle" in what:
        run_idle(args)
    if "ingest" in what:
        run_ingest(args)
    if "pg-floor" in what:
        run_pg_floor(args)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
