#!/usr/bin/env bash
# The test command. Does every piece of set-up itself, on a fresh Debian
# machine with a Docker engine, then runs every test and cleans up:
#   1. makes the base image from Debian's packages (images/bootstrap-base.sh);
#   2. installs headless Chromium and its driver (for the dashboard test);
#   3. starts a throwaway Postgres on a free port, unless DATABASE_URL is set;
#   4. builds the crate and the runtime images (ol images);
#   5. runs the unit and integration tests (real Docker, real Postgres);
#   6. runs the compose stack offline (scripts/compose-test.sh);
#   7. removes the test containers, network, databases and database cluster.
# The closing line sums only counts that checks printed, and the script
# exits non-zero when any check failed or any step stopped early.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

trap 'ol_cleanup_tests; ol_drop_test_databases; ol_stop_postgres' EXIT

export OL_BASE_IMAGE="${OL_BASE_IMAGE:-$(images/bootstrap-base.sh | tail -n1)}"
if ! command -v chromedriver >/dev/null 2>&1; then
    step "installing Debian's chromium and chromium-driver (dashboard test)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
ol_start_postgres
step "building the crate"
cargo build --all-targets --locked
step "building the runtime images (only when missing)"
./target/debug/ol images
export OL_TEST_NETWORK="openlambda-test"
log=$(mktemp /tmp/ol-test-log.XXXXXX)
status=0
step "running the tests"
cargo test --locked -- --test-threads="${OL_TEST_THREADS:-4}" 2>&1 | tee "$log" || status=$?
step "running the compose stack offline"
bash scripts/compose-test.sh 2>&1 | tee -a "$log" || status=$?
# One closing line for the whole run, summed from the lines the checks print
# (cargo one per test binary, the bench check and the compose test one each).
# A step that stopped without printing its counts (a build error, a crashed
# test binary) leaves status non-zero: it is reported as one more failure.
read -r passed failed < <(awk '
    /^test result:/ || /^compose: [0-9]+ passed, [0-9]+ failed$/ || /^bench check: [0-9]+ passed, [0-9]+ failed$/ {
        for (i = 2; i <= NF; i++) {
            if ($i ~ /^passed/) p += $(i-1)
            if ($i ~ /^failed/) f += $(i-1)
        }
    }
    END { print p + 0, f + 0 }' "$log")
rm -f "$log"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "a step stopped before printing its counts (exit $status)" >&2
    failed=1
fi
printf '\nall tests: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
