#!/usr/bin/env python3
"""Runs OpenLambda's own examples, unchanged, against a running manager.

Usage:
    scripts/upstream-examples.py UPSTREAM_DIR [--only a,b] [--long]

UPSTREAM_DIR is a copy of the open-lambda/open-lambda repository that you
provide (this script neither downloads nor changes it); its `examples/`
folders are deployed as they are with `ol deploy FOLDER --name FOLDER`, then
called the way upstream's `scripts/test.py` and `scripts/package_tests.py`
call them, and the answer is checked against what those tests expect.

The manager is the one at OL_URL (as for every `ol` command; default
http://127.0.0.1:8080), with its key in OL_API_KEY; calls go to its
function listener at OL_FUNCTIONS_URL (default http://127.0.0.1:8081). It needs a
working package index (requirements.txt of the numpy, pandas and flask
examples). The `ol` binary is OL_BIN, else target/debug/ol, else `ol` on PATH.

fbomb checks that a fork bomb stops at the process limit, read from
OL_POOL_PIDS_LIMIT (give the script and the manager the same value). Start
the manager with OL_POOL_PIDS_LIMIT=32, as upstream's tests raise their
worker's limit for numpy: at the default 128 a bomb of Python processes fills
a 128 MB container's memory first, and an OOM-killed child reads as 0 forks.

--long also runs pandas-tests (pandas' own test suite, 30+ minutes). It has
no ol.yaml: upstream's package test raises its worker's default limits to
2000 MB and 3600 s, as a manager started with OL_DEFAULT_MEMORY_MB=2000
OL_DEFAULT_TIMEOUT_S=3600 OL_MAX_TIMEOUT_S=3600 does here; but one of
pandas' tests (test_bytes_exceed_2gb) needs about 11.8 GB, so give it 12288
MB (README, Compatibility). Run it on its own, as upstream does, against
such a manager:
    OL_DEFAULT_MEMORY_MB=12288 OL_MAX_MEMORY_MB=12288 OL_DEFAULT_TIMEOUT_S=3600 \
        OL_MAX_TIMEOUT_S=3600 OL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt ol serve &
    scripts/upstream-examples.py ~/src/open-lambda --only pandas-tests --long

A typical run, from a fresh database:
    OL_POOL_PIDS_LIMIT=32 OL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt ol serve &
    OL_POOL_PIDS_LIMIT=32 scripts/upstream-examples.py ~/src/open-lambda

Prints one Markdown table row per example (the README's compatibility table)
and exits 1 when an example upstream's tests exercise does not pass. Not part
of CI: it needs upstream's repository and network access for packages.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

URL = os.environ.get("OL_URL", "http://127.0.0.1:8080").rstrip("/")
# Calls (/run, /fn) go to the function listener (OL_FUNCTIONS_LISTEN).
FUNCTIONS_URL = os.environ.get("OL_FUNCTIONS_URL", "http://127.0.0.1:8081").rstrip("/")
# The manager's default per-container process limit (OL_POOL_PIDS_LIMIT).
PIDS = int(os.environ.get("OL_POOL_PIDS_LIMIT", "128"))
# A function's memory limit when its ol.yaml sets none.
DEFAULT_MEMORY_MB = 128


class Failed(Exception):
    pass


def request(method, path, body=None, content_type=None, timeout=600):
    """(status, headers, text) of one call; HTTP errors are answers too."""
    data = None if body is None else body.encode()
    base = FUNCTIONS_URL if path.startswith(("/run/", "/fn/")) else URL
    req = urllib.request.Request(base + path, data=data, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")


def run(name, args, as_json=True, timeout=600):
    """OpenLambda's client `run`: POST /run/NAME with the JSON of args."""
    status, _, text = request("POST", "/run/" + name, json.dumps(args),
                              "application/json", timeout)
    if status != 200:
        raise Failed("POST /run/%s: %d %s" % (name, status, text[:300]))
    return json.loads(text) if as_json else text


def expect(condition, message):
    if not condition:
        raise Failed(message)


def get(path, status=200):
    got, headers, text = request("GET", path)
    expect(got == status, "GET %s: %d %s" % (path, got, text[:300]))
    return headers, text


# Each check calls the example as upstream's test of it does.
def echo():
    got = run("echo", "hello world")
    expect(got == "hello world", "echo answered %r" % got)


def install(name):
    def check():
        got = run(name, {})
        expect(got == "imported", "%s answered %r" % (name, got))
    return check


def numpy_sum(name, event, total, version_ok):
    def check():
        got = run(name, event)
        expect(got["result"] == total, "%s summed to %r" % (name, got))
        expect(version_ok(got["numpy-version"]), "numpy %s" % got["numpy-version"])
    return check


def fbomb():
    got = int(run("fbomb", {"times": PIDS * 2}, as_json=False))
    expect(1 <= got <= PIDS, "forked %d with a limit of %d" % (got, PIDS))


def max_mem_alloc():
    got = int(run("max_mem_alloc", None))
    limit = DEFAULT_MEMORY_MB
    expect(limit - 16 <= got <= limit, "allocated %d MB with a limit of %d" % (got, limit))


def flask_test():
    headers, text = get("/run/flask-test", 418)
    expect(headers.get("A") == "B" and text == "hi\n", "headers %s, text %r" % (dict(headers), text))


def wsgi_post_echo():
    for body, kind in [("hello world", "text/plain"), ('{"key": "value"}', "application/json")]:
        status, _, text = request("POST", "/run/wsgi-post-echo", body, kind)
        expect(status == 200 and text == body, "%s: %d %r" % (kind, status, text))


def entry_test(name, entry_file, entry_point=None):
    def check():
        get("/run/" + name)
        _, text = get("/run/%s/info" % name)
        info = json.loads(text)
        expect(info.get("entry_file") == entry_file, "info %r" % info)
        if entry_point:
            expect(info.get("entry_point") == entry_point, "info %r" % info)
    return check


def lambda_config_test():
    status, headers, text = request("POST", "/run/lambda-config-test")
    expect(status == 418 and headers.get("A") == "B" and text == "hi\n",
           "POST: %d %r" % (status, text))
    status, _, text = request("PUT", "/run/lambda-config-test")
    wanted = "HTTP method not allowed. Sent: PUT, Allowed: [GET POST]\n"
    expect(status == 405 and text == wanted, "PUT: %d %r" % (status, text))


def fastapi_test():
    _, text = get("/run/fastapi-test")
    expect(json.loads(text) == {"message": "hello world"}, "answered %r" % text)


def env_test():
    got = run("env-test", {})
    wanted = {"MY_ENV_VAR": "Hello from environment",
              "DATABASE_URL": "postgresql://user:pass@localhost/db", "DEBUG_MODE": "true",
              "API_KEY": "secret-key-789", "CUSTOM_PATH": "/usr/local/bin"}
    configured = got.get("configured_env_vars", {})
    expect(all(configured.get(k) == v for k, v in wanted.items()), "env %r" % configured)
    expect("all_env_vars" in got, "DEBUG_MODE did not return all_env_vars")


def pandas_tests():
    got = run("pandas-tests", None, timeout=3700)
    expect(got is True, "answered %r" % got)


# Examples no upstream test calls: one call each, the answer the code gives.
def answers(name, event, wanted):
    def check():
        got = run(name, event)
        expect(got == wanted, "%s answered %r" % (name, got))
    return check


def version():
    got = run("version", None)
    expect(isinstance(got, str) and got.startswith("3."), "answered %r" % got)


def wsgi_test():
    _, text = get("/run/wsgi-test/home/button")
    expect(text == "You clicked the button!\n", "answered %r" % text)
    get("/run/wsgi-test/home")


def syslog():
    run("syslog", None)


def pip_compile():
    _, text = get("/run/pip-compile")
    expect("pip-compile" in text, "docs page %r" % text[:200])
    status, _, text = request("POST", "/run/pip-compile/text", "six\n", "text/plain")
    expect(status == 200 and "six==" in text, "POST /text: %d %r" % (status, text[:300]))


# (example, check, whether upstream's tests exercise it)
EXAMPLES = [
    ("echo", echo, True),
    ("install1", install("install1"), True),
    ("install2", install("install2"), True),
    ("install3", install("install3"), True),
    ("numpy21", numpy_sum("numpy21", [1, 2], 3, lambda v: v.startswith("2.1")), True),
    ("numpy22", numpy_sum("numpy22", [[1, 2], [3, 4]], 10, lambda v: v.startswith("2.2")), True),
    ("pandas", numpy_sum("pandas", [[0, 1, 2], [3, 4, 5]], 15,
                         lambda v: tuple(map(int, v.split(".")[:2])) >= (2, 2)), True),
    ("pandas-v1", numpy_sum("pandas-v1", [[1, 2, 3], [1, 2, 3]], 12,
                            lambda v: v.startswith("1.26")), True),
    ("fbomb", fbomb, True),
    ("max_mem_alloc", max_mem_alloc, True),
    ("flask-test", flask_test, True),
    ("wsgi-post-echo", wsgi_post_echo, True),
    ("flask-entry-test", entry_test("flask-entry-test", "app.py"), True),
    ("wsgi-entry-test", entry_test("wsgi-entry-test", "main.py", "my_wsgi_app"), True),
    ("lambda-config-test", lambda_config_test, True),
    ("fastapi-test", fastapi_test, True),
    ("env-test", env_test, True),
    ("version", version, True),
    ("pandas-tests", pandas_tests, True),
    ("hello", answers("hello", {}, "hello"), False),
    ("hello2", answers("hello2", {}, "hello"), False),
    ("timeout", answers("timeout", 1, "slept 1 second\n"), False),
    ("syslog", syslog, False),
    ("wsgi-test", wsgi_test, False),
    ("thread_counter", answers("thread_counter", {}, "Background thread started"), False),
    ("pip-compile", pip_compile, False),
]
# Need a Kafka broker, which the platform has no trigger for.
KAFKA = ("kafka-basic", "kafka-db-sum", "kafka-metadata")


def ol_binary():
    if os.environ.get("OL_BIN"):
        return os.environ["OL_BIN"]
    local = os.path.join(os.path.dirname(__file__), "..", "target", "debug", "ol")
    return local if os.path.exists(local) else shutil.which("ol") or "ol"


def deploy(ol, folder, name):
    done = subprocess.run([ol, "deploy", folder, "--name", name], capture_output=True,
                          text=True, timeout=1800)
    if done.returncode != 0:
        raise Failed("deploy: " + (done.stderr or done.stdout).strip().splitlines()[-1][:300])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("upstream", help="a copy of the open-lambda/open-lambda repository")
    parser.add_argument("--only", default="", help="comma-separated examples to run")
    parser.add_argument("--long", action="store_true", help="also run pandas-tests")
    args = parser.parse_args()
    examples_dir = os.path.join(args.upstream, "examples")
    if not os.path.isdir(examples_dir):
        sys.exit("%s has no examples/ folder; pass a copy of open-lambda/open-lambda" % args.upstream)
    only = {n for n in args.only.split(",") if n}
    ol = ol_binary()
    failures = 0
    print("| example | result | detail |\n| --- | --- | --- |")
    for name in sorted(os.listdir(examples_dir)):
        folder = os.path.join(examples_dir, name)
        if not os.path.isdir(folder) or (only and name not in only):
            continue
        entry = next((e for e in EXAMPLES if e[0] == name), None)
        if name in KAFKA:
            print("| %s | skipped | needs a Kafka broker |" % name, flush=True)
            continue
        if entry is None or entry[1] is None:
            print("| %s | skipped | no upstream test calls it; no check written |" % name, flush=True)
            continue
        _, check, exercised = entry
        if name == "pandas-tests" and not args.long:
            print("| %s | skipped | pandas' own test suite (20+ min), with limits set by "
                  "upstream's worker config: run with --long |" % name, flush=True)
            continue
        try:
            deploy(ol, folder, name)
            check()
            print("| %s | pass | %s |" % (name, "as upstream's test expects" if exercised
                                          else "one call, the answer its code gives"), flush=True)
        except Exception as exc:  # noqa: BLE001 - report every failure and go on
            failures += exercised
            detail = str(exc).replace("|", "\\|").replace("\n", " ")[:300]
            print("| %s | FAIL | %s |" % (name, detail), flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
