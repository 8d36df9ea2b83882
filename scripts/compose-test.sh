#!/usr/bin/env bash
# The compose stack as a new user meets it, offline: up, deploy, call,
# billing, restart, data still there, down and up again, data still there.
# Then the local cluster as README's "Run on several hosts" starts it: three
# managers and HAProxy, a call on the function's node, the same call on
# another once that node stops, down.
# Uses docker-compose.yml + docker-compose.offline.yml (and the cluster's
# pair) with the debug binary. Called by scripts/test.sh; cleans up after
# itself even when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
else
    compose_cmd=(docker-compose)
fi
id="$(date +%s)$$"
export COMPOSE_PROJECT_NAME="oltest${id}"
export OL_PORT OL_FUNCTIONS_PORT OL_BIND OL_ALLOWED_HOSTS OL_DATA_DIR OL_INSTANCE OL_BINARY \
    OL_NETWORK OL_MANAGER_IMAGE OL_POSTGRES_IMAGE OL_HAPROXY_IMAGE OL_STATS_PORT
# Its own image tags, removed at the end.
OL_MANAGER_IMAGE="openlambda-test/manager:${id}"
OL_POSTGRES_IMAGE="openlambda-test/postgres:${id}"
OL_HAPROXY_IMAGE="openlambda-test/haproxy:${id}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
OL_PORT=$(free_port)
OL_FUNCTIONS_PORT=$(free_port)
OL_STATS_PORT=$(free_port)
# Published on every interface, so that a request from this host's own
# non-loopback address is a request from outside (no key, no entry).
OL_BIND=0.0.0.0
host_ip=$(hostname -I | awk '{print $1}')
OL_ALLOWED_HOSTS="$host_ip"
OL_DATA_DIR="/tmp/oltest-compose-${id}"
OL_INSTANCE="test-compose-${id}"
OL_NETWORK="openlambda-test"
OL_BINARY="${OL_BINARY:-target/debug/ol}"
export OL_BASE_IMAGE="${OL_BASE_IMAGE:-openlambda/base:bookworm}"
export OL_URL="http://127.0.0.1:${OL_PORT}"
fn_url="http://127.0.0.1:${OL_FUNCTIONS_PORT}"
# No .env and no OL_ADMIN_TOKEN: the manager makes its first admin key.
unset OL_ADMIN_TOKEN OL_API_KEY
ol="$(pwd)/${OL_BINARY}"
compose() { "${compose_cmd[@]}" -f docker-compose.yml -f docker-compose.offline.yml "$@"; }
# The cluster: a project of its own, its nodes in their own data directories.
cluster() {
    COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME}c" OL_DATA_DIR="${OL_DATA_DIR}-cluster" \
        "${compose_cmd[@]}" -f docker-compose.cluster.yml -f docker-compose.cluster.offline.yml "$@"
}

# Every check is counted as it runs; the closing line is printed from these
# counts (by finish, so it is printed even when a step aborts the script).
passed=0
failed=0

finish() {
    status=$?
    if [ "$status" -ne 0 ]; then
        # expect never exits, so this is a step outside the checks (build,
        # start, health, deploy): the checks after it never ran, so the
        # abort counts as one failure.
        echo "FAIL: compose stack step failed (exit $status)" >&2
        failed=$((failed + 1))
    fi
    echo "compose: ${passed} passed, ${failed} failed"
    if [ "$failed" -ne 0 ]; then
        status=1
        echo "compose test failed; the manager's log:" >&2
        compose logs --tail 50 manager >&2 || true
        cluster logs --tail 20 >&2 || true
    fi
    compose down -v --rmi all --remove-orphans >/dev/null 2>&1 || true
    cluster down -v --rmi all --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$OL_DATA_DIR" "${OL_DATA_DIR}-cluster"
    exit "$status"
}
trap finish EXIT

# wait_for SECONDS WHAT COMMAND...: runs COMMAND each second until it works.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq 1 "$seconds"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    echo "$what did not answer at $OL_URL" >&2
    return 1
}
wait_healthy() { wait_for 120 "the manager's health check" "$ol" health; }
# The API answers once Postgres does too: after a restart of the whole stack
# the manager is up (healthz) a moment before Postgres takes connections,
# and management calls get a quick 503 "Postgres is unreachable" meanwhile.
wait_api() { wait_for 60 "the management API" "$ol" list; }

expect() { # expect WHAT ACTUAL WANTED; later checks still run after a failure
    if [ "$2" != "$3" ]; then
        echo "FAIL: $1: got '$2', wanted '$3'" >&2
        failed=$((failed + 1))
        return 0
    fi
    echo "ok: $1"
    passed=$((passed + 1))
}

invocations() { "$ol" billing --csv | awk -F, 'NR > 1 { n += $2 } END { print n + 0 }'; }

wait_invocations() { # records are written off the request path
    for _ in $(seq 1 50); do
        [ "$(invocations)" = "$1" ] && return 0
        sleep 0.2
    done
    return 0
}

step "compose: building and starting the offline stack (${compose_cmd[*]})"
compose up -d --build
wait_healthy

step "compose: no key, no entry; the key from the log, as README says"
(cd examples/hello && python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1], "w"); z.write("f.py"); z.close()' "$OL_DATA_DIR.zip")
expect "upload from $host_ip without a key" \
    "$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/zip' \
        --data-binary @"$OL_DATA_DIR.zip" "http://${host_ip}:${OL_PORT}/api/v1/functions/nokey")" 401
rm -f "$OL_DATA_DIR.zip"
OL_API_KEY=$(compose logs manager 2>/dev/null | grep -o 'OL_API_KEY=ol_[0-9A-Za-z_-]*' | tail -n1 | cut -d= -f2)
export OL_API_KEY
expect "the first admin key is in the manager's log" "$([ -n "$OL_API_KEY" ] && echo found)" found

step "compose: deploy, call, billing"
expect "deploy with the key" "$("$ol" deploy examples/hello --name hello >/dev/null 2>&1 && echo deployed)" deployed
expect "ol invoke" "$("$ol" invoke hello --data '{"name": "Ada"}')" '{"greeting": "Hello, Ada!"}'
expect "function URL" "$(curl -fsS -d '{"name": "Bo"}' "$fn_url/fn/hello")" '{"greeting": "Hello, Bo!"}'
expect "no function URL on the management port" \
    "$(curl -s -d '{"name": "Bo"}' "$OL_URL/fn/hello" | grep -c greeting || true)" 0
wait_invocations 2
expect "billing counts both calls" "$(invocations)" 2

step "compose: restart"
compose restart
wait_healthy
wait_api
expect "function kept over a restart" "$("$ol" list | awk 'NR > 1 {print $1}')" hello
expect "call after restart" "$("$ol" invoke hello)" '{"greeting": "Hello, world!"}'
wait_invocations 3
expect "records kept over a restart" "$(invocations)" 3

step "compose: rotate the admin key from inside the manager's container"
old_key="$OL_API_KEY"
OL_API_KEY=$(compose exec -T manager ol admin-key --rotate 2>/dev/null | tail -n1 | tr -d '\r')
expect "the new key works" "$("$ol" list | awk 'NR > 1 {print $1}')" hello
expect "the old key is refused" \
    "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $old_key" "$OL_URL/api/v1/functions")" 401

step "compose: down and up (volumes kept)"
compose down
compose up -d
wait_healthy
wait_api
expect "function kept over down/up" "$("$ol" invoke hello --data '{"name": "Cy"}')" '{"greeting": "Hello, Cy!"}'
wait_invocations 4
expect "records kept over down/up" "$(invocations)" 4

step "compose cluster: three managers and HAProxy, offline, as README says"
compose down
cluster up -d --build
wait_healthy
stats="http://127.0.0.1:${OL_STATS_PORT}/stats;csv"
nodes_up() { [ "$(curl -fsS "$stats" | grep -c "^functions,node[0-9]*,.*,UP")" = "$1" ]; }
wait_for 120 "HAProxy's three nodes" nodes_up 3
cluster_key() { cluster logs 2>/dev/null | grep -o 'OL_API_KEY=ol_[0-9A-Za-z_-]*' | tail -n1 | cut -d= -f2; }
has_key() { [ -n "$(cluster_key)" ]; }
wait_for 30 "a node's first admin key" has_key || true
OL_API_KEY=$(cluster_key)
wait_api
expect "one node printed the cluster's first admin key" "$([ -n "$OL_API_KEY" ] && echo found)" found
expect "deploy through HAProxy" "$("$ol" deploy examples/hello --name hello >/dev/null 2>&1 && echo deployed)" deployed
node_of() { # node_of NAME: call NAME's function URL, print the node HAProxy names
    curl -fsS -D - -o /dev/null -d "{\"name\": \"$1\"}" "$fn_url/fn/hello" | tr -d '\r' \
        | awk -F': ' 'tolower($1) == "x-ol-node" {print $2}'
}
home=$(node_of Ada)
expect "a function URL through HAProxy names its node" "$(echo "$home" | grep -c '^node[123]$')" 1
expect "the same node again" "$(node_of Bo)" "$home"
expect "no function URL on the management port" \
    "$(curl -s -d '{"name": "Bo"}' "$OL_URL/fn/hello" | grep -c greeting || true)" 0
cluster stop "$home"
wait_for 30 "HAProxy taking $home out" nodes_up 2
other=$(node_of Cy)
expect "with its node stopped, another node serves it" "$([ -n "$other" ] && [ "$other" != "$home" ] && echo moved)" moved
wait_invocations 3
expect "billing counts the three calls" "$(invocations)" 3
cluster down -v
leftovers() { for n in 1 2 3; do docker ps -aq --filter "label=openlambda.instance=${OL_INSTANCE}-node$n"; done; }
expect "down removed every function container of the nodes" "$(leftovers | wc -l)" 0
