"""openlambda package installer, run in a short-lived builder container.

Resolves the requirements in OL_REQUIREMENTS to exact versions, then installs
each package version that is not in the shared cache yet into its own
directory, /packages/{name}-{version}/: first into a temporary directory,
then renamed into place, so no one ever sees half an install. Prints one JSON
line per step (the manager shows them as progress) and exits non-zero with
pip's own error when something fails.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

CACHE = "/packages"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def emit(**fields):
    print(json.dumps(fields), flush=True)


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def fail(stage, package, result):
    lines = [l for l in (result.stderr or result.stdout or "").strip().splitlines() if l.strip()]
    message = "\n".join(lines[-12:]) or "pip failed with exit code %d" % result.returncode
    emit(event="error", stage=stage, package=package, message=message)
    sys.exit(2)


def main():
    os.environ.setdefault("PIP_BREAK_SYSTEM_PACKAGES", "1")
    os.environ.setdefault("PIP_CACHE_DIR", "/pip-cache")
    with open("/tmp/requirements.txt", "w") as f:
        f.write(os.environ.get("OL_REQUIREMENTS", ""))
    started = time.monotonic()
    result = subprocess.run(
        PIP + ["install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", "/tmp/report.json", "-r", "/tmp/requirements.txt"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        fail("resolve", None, result)
    with open("/tmp/report.json") as f:
        report = json.load(f)
    wanted = [(i["metadata"]["name"], i["metadata"]["version"]) for i in report.get("install", [])]
    emit(event="resolved", packages=["%s==%s" % p for p in wanted],
         ms=round((time.monotonic() - started) * 1000))
    dirs = []
    for name, version in wanted:
        target = "%s-%s" % (normalize(name), version)
        final = os.path.join(CACHE, target)
        dirs.append(target)
        if os.path.isdir(final):
            emit(event="cached", name=name, version=version, ms=0)
            continue
        began = time.monotonic()
        tmp = tempfile.mkdtemp(prefix=".tmp-%s-" % target, dir=CACHE)
        result = subprocess.run(
            PIP + ["install", "--no-deps", "--quiet", "--no-compile", "--target", tmp,
                   "%s==%s" % (name, version)],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            fail("install", name, result)
        for root, subdirs, files in os.walk(tmp):
            for entry in subdirs + files:
                path = os.path.join(root, entry)
                if not os.path.islink(path):
                    os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, final)
            event = "installed"
        except OSError:
            # Someone else installed it meanwhile: the same files.
            shutil.rmtree(tmp, ignore_errors=True)
            event = "cached"
        emit(event=event, name=name, version=version,
             ms=round((time.monotonic() - began) * 1000))
    emit(event="done", dirs=dirs)


if __name__ == "__main__":
    main()
