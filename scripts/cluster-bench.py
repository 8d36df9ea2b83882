#!/usr/bin/env python3
"""Measures a cluster behind haproxy/haproxy.cfg: locality, balance, throughput.

Talks to HAProxy only (function calls on its function frontend, management
on its management frontend, and its statistics page), so it measures what
users see; HAProxy names the node that served each call (`X-Ol-Node`).
Every phase is bounded in time. Usage:

    scripts/cluster-bench.py --url http://127.0.0.1:8080 --fn-url http://127.0.0.1:8081 \
        --stats http://127.0.0.1:8404/stats --token KEY --phases locality,balance,throughput

With --instance (the nodes' OL_INSTANCE prefix) and --project (the compose
project), the throughput phase also says where the time went: the calls'
records (cold starts, waits, time in the container), the Docker actions on
function containers, the CPU each part of the cluster used, and Postgres'
writes. `scripts/cluster-bench.sh` runs it on the local compose cluster.

With --stand-ins it measures the routing alone: Debian's HAProxy on
loopback with the shipped haproxy/haproxy.cfg, before three stand-in nodes
in this process that answer every call after the time it asks for (no
containers, no Postgres), so that the machine's noise barely moves it:

    scripts/cluster-bench.py --stand-ins --factor 125 --phases locality,balance
"""
import argparse
import http.client
import http.server
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from datetime import datetime, timezone

# Echoes the event; {"sleep": S} holds the call S seconds (at most 1) first,
# so that the time calls are in flight is the handler's, not the noise of a
# busy machine (the balance phase).
HANDLER = (
    "import time\n"
    "def f(event):\n"
    "    if isinstance(event, dict):\n"
    "        time.sleep(min(float(event.get('sleep', 0)), 1))\n"
    "    return event\n"
)


def request(method, url, body=None, headers=None, timeout=60):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def stats(url):
    """Per server of the functions backend: (calls in flight, status)."""
    status, body = request("GET", url + ";csv")
    if status != 200:
        sys.exit(f"cannot read HAProxy statistics at {url};csv ({status})")
    lines = body.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    col = {name: i for i, name in enumerate(header)}
    out = {}
    for line in lines[1:]:
        f = line.split(",")
        if len(f) > col["status"] and f[col["pxname"]] == "functions" and f[col["svname"]].startswith("node"):
            out[f[col["svname"]]] = (int(f[col["scur"]] or 0), f[col["status"]])
    return out


class Management:
    """The management API through HAProxy, with the bench's key."""

    def __init__(self, url, token):
        self.url, self.token = url, token

    def call(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return request(method, self.url + path, body, headers)

    def deploy(self, name):
        """Deploys `name` unless it is there: a deploy retires the
        function's containers on the node that takes it, even for the same
        code, and each run of this script would start cold."""
        if self.call("GET", f"/api/v1/functions/{name}")[0] == 200:
            return
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            # A fixed date: the same code is the same zip, the same version.
            z.writestr(zipfile.ZipInfo("f.py", date_time=(2020, 1, 1, 0, 0, 0)), HANDLER)
        status, body = self.call("PUT", f"/api/v1/functions/{name}", buf.getvalue(),
                                 {"content-type": "application/zip"})
        if status not in (200, 201):
            sys.exit(f"deploy {name}: {status} {body[:300]!r}")

    def records(self, name, since):
        """`name`'s call records that started at or after `since` (UTC)."""
        out, before = [], None
        while True:
            query = "limit=1000" + (f"&before={urllib.parse.quote(before)}" if before else "")
            status, body = self.call("GET", f"/api/v1/functions/{name}/invocations?{query}")
            if status != 200:
                sys.exit(f"records of {name}: {status} {body[:300]!r}")
            page = json.loads(body)
            for r in page["invocations"]:
                if parse_time(r["started_at"]) < since:
                    return out
                out.append(r)
            before = page.get("next_before")
            if not before:
                return out


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Caller:
    """One caller on one kept-alive connection, as HTTP clients usually are."""

    def __init__(self, url, event=b"1"):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.event = event
        self.conn = None

    def call(self, name):
        """(status, node that served it, seconds)."""
        started = time.monotonic()
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                self.conn.request("POST", f"/run/{name}", body=self.event)
                response = self.conn.getresponse()
                response.read()
                return response.status, response.getheader("x-ol-node"), time.monotonic() - started
            except (OSError, http.client.HTTPException):
                self.conn = None
        return 0, None, time.monotonic() - started


class Load:
    """What a load saw: per function, the nodes that served it; latencies."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = Counter()
        self.nodes = {}
        self.latencies = []

    def add(self, name, status, node, took):
        with self.lock:
            if status == 200:
                self.ok += 1
                self.latencies.append(took)
                self.nodes.setdefault(name, Counter())[node] += 1
            else:
                self.failed[status] += 1

    def locality(self, name):
        """Share of `name`'s calls on the node that served most of them."""
        seen = self.nodes.get(name, Counter())
        return max(seen.values(), default=0) / max(1, sum(seen.values()))


def failed(seen):
    """The calls that failed, by status (0: no answer)."""
    return f"{sum(seen.failed.values())} failed" + (f" {dict(seen.failed)}" if seen.failed else "")


def run_load(url, workers, seconds, pick, event=b"1", pause=0.0):
    """`workers` callers for `seconds`, each sending `event` and waiting
    `pause` between calls; returns the threads, already started, and what
    they see."""
    seen = Load()
    end = time.monotonic() + seconds

    def worker():
        rng = random.Random()
        caller = Caller(url, event)
        while time.monotonic() < end:
            name = pick(rng)
            seen.add(name, *caller.call(name))
            if pause:
                time.sleep(pause)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    return threads, seen


def load(url, workers, seconds, pick, event=b"1"):
    """`workers` callers for `seconds`; returns (what they saw, elapsed)."""
    started = time.monotonic()
    threads, seen = run_load(url, workers, seconds, pick, event)
    for t in threads:
        t.join()
    return seen, time.monotonic() - started


def warm(args, workers, pick, event=b"1"):
    """The same load, not counted: containers started, caches filled."""
    if args.warmup > 0:
        load(args.fn_url, workers, args.warmup, pick, event)


def locality(args):
    name = "bench-steady"
    for workers in (1, 4):
        warm(args, workers, lambda _: name)
        seen, took = load(args.fn_url, workers, args.seconds, lambda _: name)
        print(f"locality workers={workers}: {seen.locality(name):.1%} of {seen.ok} calls on one node "
              f"({failed(seen)}) per node {dict(seen.nodes.get(name, {}))}")


def balance(args):
    """One hot function (70% of the calls) and cool ones, with one steady
    caller besides: calls in flight per node as HAProxy counts them (the
    count its bounded load is computed from), and where the steady
    function's calls landed meanwhile. Every call holds 50 ms, so that
    calls are in flight for the handler's time more than for the machine's
    noise; the steady caller waits 200 ms between its calls."""
    hot, cool, steady = "bench-hot", [f"bench-cool-{i}" for i in range(args.cool)], "bench-steady"
    pick = lambda rng: hot if rng.random() < 0.7 else rng.choice(cool)
    event = b'{"sleep": 0.05}'
    warm(args, args.workers, pick, event)
    samples = {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for node, (cur, _) in stats(args.stats).items():
                samples.setdefault(node, []).append(cur)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    steady_threads, steady_seen = run_load(args.fn_url, 1, args.seconds, lambda _: steady, event, 0.2)
    seen, took = load(args.fn_url, args.workers, args.seconds, pick, event)
    for t in steady_threads:
        t.join()
    stop.set()
    sampler.join()
    means = {n: sum(v) / len(v) for n, v in sorted(samples.items()) if v}
    mean = sum(means.values()) / max(1, len(means))
    worst = max(means.values()) / mean if mean else 0
    print(f"balance: one hot function (70%) and {len(cool)} cool, {args.workers} callers, "
          f"hash-balance-factor {args.factor}: mean in flight per node "
          f"{ {n: round(m, 2) for n, m in means.items()} }, max/mean {worst:.2f} "
          f"({len(next(iter(samples.values()), []))} samples of HAProxy's count; "
          f"{seen.ok} calls, {failed(seen)}); hot function per node {dict(seen.nodes.get(hot, {}))}")
    print(f"balance: steady function beside that load: {steady_seen.locality(steady):.1%} of "
          f"{steady_seen.ok} calls on one node, per node {dict(steady_seen.nodes.get(steady, {}))}")


def throughput(args, management):
    names = ["bench-hot"] + [f"bench-cool-{i}" for i in range(args.cool)]
    up = [n for n, (_, s) in stats(args.stats).items() if s.startswith("UP")]
    pick = lambda rng: rng.choice(names)
    warm(args, args.workers, pick)
    profile = Profile(args) if args.instance else None
    since = datetime.now(timezone.utc)
    seen, took = load(args.fn_url, args.workers, args.seconds, pick)
    profiled = profile.stop(seen.ok, took) if profile else []
    p50 = statistics.median(seen.latencies) * 1000 if seen.latencies else 0
    print(f"throughput nodes_up={len(up)}: {seen.ok / took:.0f} calls/s "
          f"({seen.ok} calls, {failed(seen)}, {args.workers} callers, {took:.0f} s; "
          f"client p50 {p50:.1f} ms; load average {os.getloadavg()[0]:.1f})")
    if profile:
        print("  " + records_summary([r for n in names for r in management.records(n, since)]))
        for line in profiled:
            print("  " + line)
    print(json.dumps({"calls": seen.ok, "seconds": round(took, 1), "nodes": len(up)}))


def records_summary(records):
    """Where a call's time went on its node, from the calls' own records."""
    if not records:
        return "records: none"
    mean = lambda key: sum(r[key] or 0 for r in records) / len(records)
    cold = sum(1 for r in records if r["cold"])
    return (f"records: {len(records)} calls, {cold} cold; per call on the node: waited "
            f"{mean('wait_ms'):.1f} ms for a container, init {mean('init_ms'):.1f} ms, "
            f"in the container {mean('duration_ms'):.1f} ms (p50 "
            f"{statistics.median(r['duration_ms'] for r in records)} ms)")


class Profile:
    """CPU per part of the cluster (cgroup counters of its containers),
    Docker actions on function containers and Postgres' write counters,
    from now until `stop`."""

    def __init__(self, args):
        self.args = args
        self.postgres = None
        self.before = self.cpu()
        self.writes = self.pg_writes()
        self.machine = machine_busy()
        self.engine = engine_cpu()
        self.mine = os.times()
        self.events = subprocess.Popen(
            ["docker", "events", "--filter", "type=container", "--format",
             '{{.Action}}\t{{index .Actor.Attributes "openlambda.instance"}}'],
            stdout=subprocess.PIPE, text=True)

    def cpu(self):
        """CPU seconds used so far, by part: the managers, HAProxy,
        Postgres, function containers."""
        out = subprocess.run(
            ["docker", "ps", "--no-trunc", "--format",
             '{{.ID}}\t{{.Label "com.docker.compose.project"}}\t{{.Label "com.docker.compose.service"}}'
             '\t{{.Label "openlambda.instance"}}'],
            capture_output=True, text=True, check=True).stdout
        used = {}
        for line in out.splitlines():
            cid, project, service, instance = (line.split("\t") + ["", "", ""])[:4]
            if project == self.args.project:
                part = "managers" if service.startswith("node") else service
                if service == "postgres":
                    self.postgres = cid
            elif instance.startswith(self.args.instance):
                part = "functions"
            else:
                continue
            used[(part, cid)] = container_cpu(cid)
        return used

    def pg_writes(self):
        """Postgres' counters: transactions committed, rows inserted into
        the records, bytes of WAL written (all of them writes but the
        first, which also counts reads)."""
        if not self.postgres:
            return None
        query = ("SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),"
                 " (SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'invocations'),"
                 " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
        out = subprocess.run(
            ["docker", "exec", self.postgres, "psql", "-U", "openlambda", "-d", "openlambda", "-tAc", query],
            capture_output=True, text=True).stdout.strip()
        return [float(v) for v in out.split("|")] if out.count("|") == 2 else None

    def stop(self, calls, seconds):
        writes = self.pg_writes()
        after = self.cpu()
        busy = machine_busy() - self.machine
        engine = engine_cpu() - self.engine
        mine = sum(os.times()[:2]) - sum(self.mine[:2])
        self.events.terminate()
        actions = Counter()
        for line in self.events.communicate()[0].splitlines():
            action, _, instance = line.partition("\t")
            if instance.startswith(self.args.instance) and ":" not in action:
                actions[action] += 1
        parts = Counter()
        for (part, cid), seconds in after.items():
            parts[part] += seconds - self.before.get((part, cid), 0.0)
        ours = sum(parts.values()) + engine + mine
        shown = ", ".join(f"{part} {s:.1f}" for part, s in sorted(parts.items()))
        lines = [f"cpu seconds: {shown}, docker engine {engine:.1f} (for everyone), this load generator "
                 f"{mine:.1f}; whole machine busy {busy:.1f}, of which other work {max(0.0, busy - ours):.1f}",
                 f"docker actions on function containers {dict(sorted(actions.items()))}"]
        if self.writes and writes:
            commits, rows, wal = (b - a for a, b in zip(self.writes, writes))
            lines.append(f"postgres: {commits / seconds:.0f} commits/s, {rows / seconds:.0f} records "
                         f"inserted/s, {wal / seconds / 1024:.0f} KiB WAL/s; per call {commits / max(1, calls):.2f} "
                         f"commits, {wal / max(1, calls) / 1024:.2f} KiB WAL")
        return lines


def container_cpu(cid):
    """A container's CPU seconds so far (cgroup v1 or v2); 0 when unreadable."""
    for path, scale, key in (
        (f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage", 1e9, None),
        (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat", 1e6, "usage_usec"),
    ):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if key is None:
            return int(text) / scale
        for line in text.splitlines():
            if line.startswith(key + " "):
                return int(line.split()[1]) / scale
    return 0.0


def engine_cpu():
    """CPU seconds the Docker engine's processes (dockerd, containerd and
    its shims, with the runc runs they waited for) used so far."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if name in ("dockerd", "containerd", "containerd-shim"):
            total += sum(int(v) for v in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy():
    """CPU seconds the whole machine spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class StandIn(http.server.BaseHTTPRequestHandler):
    """A node that does no work: a call answers its event after the sleep
    it asks for; deploys and health checks answer at once."""

    protocol_version = "HTTP/1.1"

    def answer(self, status, body=b"ok\n"):
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(200)

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.answer(201)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            event = json.loads(body)
            time.sleep(min(float(event.get("sleep", 0)), 1) if isinstance(event, dict) else 0)
        except ValueError:
            pass
        self.answer(200, body)

    def log_message(self, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # HAProxy closing a health check's connection early


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_stand_ins(args):
    """Three stand-in nodes and HAProxy before them; points `args` at it and
    returns the HAProxy process."""
    env = dict(os.environ)
    for i in (1, 2, 3):
        server = QuietServer(("127.0.0.1", 0), StandIn)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        address = f"127.0.0.1:{server.server_address[1]}"
        env[f"OL_NODE{i}_API"] = env[f"OL_NODE{i}_FUNCTIONS"] = address
    ports = [free_port() for _ in range(3)]
    env.update(OL_HAPROXY_BIND=f"127.0.0.1:{ports[0]}", OL_HAPROXY_FUNCTIONS_BIND=f"127.0.0.1:{ports[1]}",
               OL_HAPROXY_STATS=f"127.0.0.1:{ports[2]}")
    if args.factor:
        env["OL_HASH_BALANCE_FACTOR"] = args.factor
    config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "haproxy", "haproxy.cfg")
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", config], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    args.url, args.fn_url = f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    args.stats = f"http://127.0.0.1:{ports[2]}/stats"
    for _ in range(100):
        if request("GET", args.url + "/healthz")[0] == 200:
            return haproxy
        time.sleep(0.1)
    haproxy.kill()
    sys.exit("HAProxy did not start (is Debian's haproxy installed? `haproxy -c -f haproxy/haproxy.cfg`)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="HAProxy's management frontend")
    p.add_argument("--fn-url", default="http://127.0.0.1:8081", help="HAProxy's function frontend")
    p.add_argument("--stats", default="http://127.0.0.1:8404/stats")
    p.add_argument("--token", default=os.environ.get("OL_API_KEY"), help="an admin key (default: OL_API_KEY)")
    p.add_argument("--phases", default="locality,balance,throughput")
    p.add_argument("--seconds", type=float, default=10, help="per phase (at most 120)")
    p.add_argument("--warmup", type=float, default=10, help="uncounted load before each phase")
    p.add_argument("--workers", type=int, default=8, help="concurrent callers (at most 64)")
    p.add_argument("--cool", type=int, default=8, help="cool functions")
    p.add_argument("--factor", help="HAProxy's hash-balance-factor: set with --stand-ins, else printed")
    p.add_argument("--stand-ins", action="store_true", help="routing alone: HAProxy before stand-in nodes")
    p.add_argument("--instance", help="the nodes' OL_INSTANCE prefix: profile the throughput phase")
    p.add_argument("--project", help="the compose project of the cluster (with --instance)")
    args = p.parse_args()
    args.seconds = min(args.seconds, 120)
    args.warmup = min(args.warmup, 120)
    args.workers = min(args.workers, 64)
    args.cool = min(args.cool, 32)
    haproxy = start_stand_ins(args) if args.stand_ins else None
    args.factor = args.factor or "of haproxy.cfg"
    try:
        run_phases(args)
    finally:
        if haproxy:
            haproxy.kill()


def run_phases(args):
    management = Management(args.url, args.token)
    names = ["bench-steady", "bench-hot"] + [f"bench-cool-{i}" for i in range(args.cool)]
    for name in names:
        management.deploy(name)
    for name in names:
        Caller(args.fn_url).call(name)
    for phase in args.phases.split(","):
        if phase == "throughput":
            throughput(args, management)
        else:
            {"locality": locality, "balance": balance}[phase](args)


if __name__ == "__main__":
    main()
