"""openlambda package builder, run in a short-lived, unprivileged container.

The manager checked /build/requirements.txt line by line before this starts
(package requirements only) and mounts nothing of the shared cache here.

    install.py resolve   resolve the requirements to exact versions
    install.py install   install the one pinned requirement into /build/out

Prints one JSON line per step for the manager, and an "error" event with
pip's own last lines when pip fails. The manager, not this script, checks the
result and moves it into the cache.
"""

import json
import subprocess
import sys
import time

REQUIREMENTS = "/build/requirements.txt"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def emit(**fields):
    print(json.dumps(fields), flush=True)


def pip(args, stage):
    result = subprocess.run(PIP + args, capture_output=True, text=True)
    if result.returncode != 0:
        text = (result.stderr or result.stdout or "").strip()
        lines = [l for l in text.splitlines() if l.strip()]
        message = "\n".join(lines[-12:]) or "pip failed with exit code %d" % result.returncode
        emit(event="error", stage=stage, message=message)
        sys.exit(2)


def resolve():
    started = time.monotonic()
    pip(["install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", "/build/report.json", "-r", REQUIREMENTS], "resolve")
    with open("/build/report.json") as f:
        report = json.load(f)
    packages = [{"name": i["metadata"]["name"], "version": i["metadata"]["version"]}
                for i in report.get("install", [])]
    emit(event="resolved", packages=packages, ms=round((time.monotonic() - started) * 1000))


def install():
    started = time.monotonic()
    pip(["install", "--no-deps", "--quiet", "--no-compile", "--target", "/build/out",
         "-r", REQUIREMENTS], "install")
    emit(event="installed", ms=round((time.monotonic() - started) * 1000))


if __name__ == "__main__":
    {"resolve": resolve, "install": install}[sys.argv[1]]()
