#!/usr/bin/env python3
"""Measures a cluster behind haproxy/haproxy.cfg: locality, balance, throughput.

Talks only to HAProxy (calls, management) and its statistics page, so it
measures what users see. Every phase is bounded in time. Usage:

    scripts/cluster-bench.py --url http://127.0.0.1:8080 \
        --stats http://127.0.0.1:8404/stats --phases locality,balance,throughput

Prints one line per figure; `scripts/cluster-bench.sh` runs it on the local
compose cluster, with 3 nodes and then with 1.
"""
import argparse
import http.client
import io
import json
import random
import sys
import threading
import time
import urllib.parse
import urllib.request
import zipfile

ECHO = "def f(event):\n    return event\n"


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
    """Per functions-backend server: (in flight, total sent)."""
    status, body = request("GET", url + ";csv")
    if status != 200:
        sys.exit(f"cannot read HAProxy statistics at {url};csv ({status})")
    lines = body.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    col = {name: i for i, name in enumerate(header)}
    out = {}
    for line in lines[1:]:
        f = line.split(",")
        if len(f) > col["stot"] and f[col["pxname"]] == "functions" and f[col["svname"]].startswith("node"):
            out[f[col["svname"]]] = (int(f[col["scur"]] or 0), int(f[col["stot"]] or 0), f[col["status"]])
    return out


def deploy(url, name, token):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("f.py", ECHO)
    headers = {"content-type": "application/zip"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    status, body = request("PUT", f"{url}/api/v1/functions/{name}", buf.getvalue(), headers)
    if status not in (200, 201):
        sys.exit(f"deploy {name}: {status} {body[:300]!r}")


class Caller:
    """One caller on one kept-alive connection, as HTTP clients usually are."""

    def __init__(self, url):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.conn = None

    def call(self, name):
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                self.conn.request("POST", f"/run/{name}", body=b"1")
                response = self.conn.getresponse()
                response.read()
                return response.status
            except (OSError, http.client.HTTPException):
                self.conn = None
        return 0


def call(url, name):
    return request("POST", f"{url}/run/{name}", b"1")[0]


def load(url, workers, seconds, pick):
    """`workers` callers for `seconds`; returns (ok, failed, elapsed)."""
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def worker():
        rng = random.Random()
        caller = Caller(url)
        while time.monotonic() < end:
            status = caller.call(pick(rng))
            with lock:
                counts["ok" if status == 200 else "failed"] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts["ok"], counts["failed"], time.monotonic() - started


def totals(before, after):
    return {n: after[n][1] - before[n][1] for n in after}


def warm(args, workers, pick):
    """The same load, not counted: containers started, caches filled."""
    if args.warmup > 0:
        load(args.url, workers, args.warmup, pick)


def locality(args):
    name = "bench-steady"
    for workers in (1, 4):
        warm(args, workers, lambda _: name)
        before = stats(args.stats)
        ok, failed, took = load(args.url, workers, args.seconds, lambda _: name)
        sent = totals(before, stats(args.stats))
        share = max(sent.values()) / max(1, sum(sent.values()))
        print(f"locality workers={workers}: {share:.1%} of {ok} calls on one node "
              f"({failed} failed) per node {sent}")


def balance(args):
    hot, cool = "bench-hot", [f"bench-cool-{i}" for i in range(args.cool)]
    for name in [hot] + cool:
        call(args.url, name)
    samples = {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for node, (cur, _, _) in stats(args.stats).items():
                samples.setdefault(node, []).append(cur)
            time.sleep(0.1)

    pick = lambda rng: hot if rng.random() < 0.7 else rng.choice(cool)
    warm(args, args.workers, pick)
    sampler = threading.Thread(target=sample)
    sampler.start()
    ok, failed, took = load(args.url, args.workers, args.seconds, pick)
    stop.set()
    sampler.join()
    means = {n: sum(v) / len(v) for n, v in samples.items() if v}
    mean = sum(means.values()) / max(1, len(means))
    worst = max(means.values()) / mean if mean else 0
    print(f"balance: one hot function (70%) and {len(cool)} cool, {args.workers} callers: "
          f"mean in flight per node {({n: round(m, 2) for n, m in means.items()})}, "
          f"max/mean {worst:.2f} ({ok} calls, {failed} failed)")


def throughput(args):
    names = ["bench-hot"] + [f"bench-cool-{i}" for i in range(args.cool)]
    for name in names:
        call(args.url, name)
    up = [n for n, (_, _, s) in stats(args.stats).items() if s.startswith("UP")]
    pick = lambda rng: rng.choice(names)
    warm(args, args.workers, pick)
    ok, failed, took = load(args.url, args.workers, args.seconds, pick)
    print(f"throughput nodes_up={len(up)}: {ok / took:.0f} calls/s "
          f"({ok} calls, {failed} failed, {args.workers} callers, {took:.0f} s)")
    print(json.dumps({"calls": ok, "seconds": round(took, 1)}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--stats", default="http://127.0.0.1:8404/stats")
    p.add_argument("--token", default=None, help="OL_ADMIN_TOKEN, when the nodes need one")
    p.add_argument("--phases", default="locality,balance,throughput")
    p.add_argument("--seconds", type=float, default=10, help="per phase (at most 120)")
    p.add_argument("--warmup", type=float, default=10, help="uncounted load before each phase")
    p.add_argument("--workers", type=int, default=8, help="concurrent callers (at most 64)")
    p.add_argument("--cool", type=int, default=8, help="cool functions")
    args = p.parse_args()
    args.seconds = min(args.seconds, 120)
    args.warmup = min(args.warmup, 120)
    args.workers = min(args.workers, 64)
    args.cool = min(args.cool, 32)
    for name in ["bench-steady", "bench-hot"] + [f"bench-cool-{i}" for i in range(args.cool)]:
        deploy(args.url, name, args.token)
    for phase in args.phases.split(","):
        {"locality": locality, "balance": balance, "throughput": throughput}[phase](args)


if __name__ == "__main__":
    main()
