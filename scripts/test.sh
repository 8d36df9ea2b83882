#!/usr/bin/env bash
# The test command. Does every piece of set-up itself, on a fresh Debian
# machine with a Docker engine, then runs every test and cleans up:
#   1. makes the base image from Debian's packages (images/bootstrap-base.sh);
#   2. installs headless Chromium and its driver (for the dashboard test);
#   3. starts a throwaway Postgres on a free port, unless DATABASE_URL is set;
#   4. builds the crate and the runtime images (ol images);
#   5. runs the unit and integration tests (real Docker, real Postgres);
#   6. runs the short benchmark check (`ol bench --check --quick`, about a
#      minute: ratios only, bounds loose enough for noise and a debug build,
#      so only a regression of several times fails it);
#   7. runs the compose stack, then the compose cluster, offline
#      (scripts/compose-test.sh);
#   8. removes the test containers, network, databases and database cluster.
# The closing line sums only counts that checks printed, and the script
# exits non-zero when any check failed or any step stopped early.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

trap 'ol_cleanup_tests; ol_cleanup_bench; ol_drop_test_databases; ol_stop_postgres' EXIT

export OL_BASE_IMAGE="${OL_BASE_IMAGE:-$(images/bootstrap-base.sh | tail -n1)}"
if ! command -v chromedriver >/dev/null 2>&1; then
    step "installing Debian's chromium and chromium-driver (dashboard test)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if ! command -v iptables >/dev/null 2>&1; then
    step "installing Debian's iptables (the manager fences the function network)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null
fi
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
    step "installing Debian's haproxy (cluster tests)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi
# Package builders reach the index over HTTPS with the host's CA bundle:
# where the host's own pip finds it (PIP_CERT), unless OL_CA_BUNDLE is set.
if [ -z "${OL_CA_BUNDLE:-}" ] && [ -n "${PIP_CERT:-}" ]; then
    export OL_CA_BUNDLE="$PIP_CERT"
fi
ol_start_postgres
step "building the crate"
cargo build --all-targets --locked
step "building the runtime images (only when missing)"
./target/debug/ol images
export OL_TEST_NETWORK="openlambda-test"
log=$(mktemp /tmp/ol-test-log.XXXXXX)
status=0
aborted=0
# run_step COUNT_LINE_REGEX COMMAND...: runs a step into the log; a step that
# fails without printing its count line (a build error, a crashed binary, a
# scenario that could not run) is counted as one failure of its own.
run_step() {
    local pattern=$1 before after
    shift
    before=$(grep -cE "$pattern" "$log" || true)
    if "$@" 2>&1 | tee -a "$log"; then
        return 0
    fi
    status=1
    after=$(grep -cE "$pattern" "$log" || true)
    if [ "$after" -le "$before" ]; then
        echo "FAIL: '$*' stopped before printing its counts" >&2
        aborted=$((aborted + 1))
    fi
}
step "running the tests"
# --no-fail-fast: a failure in one test binary must not skip the others.
run_step '^test result:' cargo test --locked --no-fail-fast -- --test-threads="${OL_TEST_THREADS:-4}"
step "running the short benchmark check"
bench_json=$(mktemp /tmp/ol-bench-check.XXXXXX)
run_step '^bench check:' ./target/debug/ol bench --check --quick --json "$bench_json"
rm -f "$bench_json"
step "running the compose stack offline"
run_step '^compose: [0-9]+ passed' bash scripts/compose-test.sh
# One closing line for the whole run, summed from the lines the checks print
# (cargo one per test binary, the bench check and the compose test one each),
# plus the steps that stopped before printing theirs.
read -r passed failed < <(awk '
    /^test result:/ || /^compose: [0-9]+ passed, [0-9]+ failed$/ || /^bench check: [0-9]+ passed, [0-9]+ failed$/ {
        for (i = 2; i <= NF; i++) {
            if ($i ~ /^passed/) p += $(i-1)
            if ($i ~ /^failed/) f += $(i-1)
        }
    }
    END { print p + 0, f + 0 }' "$log")
rm -f "$log"
failed=$((failed + aborted))
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1 # a step failed although every count it printed was clean
fi
printf '\nall tests: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
