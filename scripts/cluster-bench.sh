#!/usr/bin/env bash
# The cluster's figures on this host: brings up the compose cluster
# (docker-compose.cluster.yml, offline override, a binary built on the host)
# under a project of its own, runs scripts/cluster-bench.py against its
# HAProxy: locality and balance with 3 nodes, then throughput with 1 node and
# with 3 (the same HAProxy, load and warm-up; for 1, node2 and node3 are
# paused: they use no CPU, HAProxy takes them out, and they come back with
# their warm containers), alternated BENCH_ROUNDS times so that each pair
# shares the machine's load of the moment, each phase profiled (records, CPU
# per part, Docker actions, Postgres writes). Removes all it made, even when
# it fails. Its build's output goes to $OL_DATA_DIR.log while it runs.
#   OL_BINARY=target/debug/ol scripts/cluster-bench.sh
#   BENCH_SECONDS=20 BENCH_WARMUP=30 BENCH_ROUNDS=3 OL_HASH_BALANCE_FACTOR=125 scripts/cluster-bench.sh
# Bounded: about (2 + 2 x BENCH_ROUNDS) x (BENCH_WARMUP + BENCH_SECONDS)
# plus 2 x BENCH_WARMUP for locality, and the cluster's start.
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
else
    compose_cmd=(docker-compose)
fi
id="$(date +%s)$$"
export COMPOSE_PROJECT_NAME="olbench${id}"
export OL_BINARY="${OL_BINARY:-target/release/ol}"
export OL_BASE_IMAGE="${OL_BASE_IMAGE:-openlambda/base:bookworm}"
export OL_MANAGER_IMAGE="openlambda-bench/manager:${id}"
export OL_POSTGRES_IMAGE="${OL_POSTGRES_IMAGE:-openlambda/postgres:15}"
export OL_HAPROXY_IMAGE="${OL_HAPROXY_IMAGE:-openlambda/haproxy:2.6}"
export OL_DATA_DIR="/tmp/olbench-${id}"
export OL_INSTANCE="bench-${id}"
export OL_NETWORK="${OL_NETWORK:-openlambda-bench}"
OL_ADMIN_TOKEN="ol_bench_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export OL_ADMIN_TOKEN
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
OL_PORT=$(free_port)
OL_FUNCTIONS_PORT=$(free_port)
OL_STATS_PORT=$(free_port)
export OL_PORT OL_FUNCTIONS_PORT OL_STATS_PORT
seconds="${BENCH_SECONDS:-15}"
warmup="${BENCH_WARMUP:-20}"
rounds="${BENCH_ROUNDS:-2}"
# The factor haproxy.cfg defaults to, unless this run sets another.
factor="${OL_HASH_BALANCE_FACTOR:-$(grep -o 'OL_HASH_BALANCE_FACTOR-[0-9]*' haproxy/haproxy.cfg | cut -d- -f2)}"
export OL_HASH_BALANCE_FACTOR="$factor"
compose() { "${compose_cmd[@]}" -f docker-compose.cluster.yml -f docker-compose.cluster.offline.yml "$@"; }

cleanup() {
    compose unpause >/dev/null 2>&1 || true
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    # What a node that did not stop cleanly left, by its instance label.
    for node in node1 node2 node3; do
        ids=$(docker ps -aq --filter "label=openlambda.instance=${OL_INSTANCE}-${node}")
        [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    done
    docker rmi "$OL_MANAGER_IMAGE" >/dev/null 2>&1 || true
    rm -rf "$OL_DATA_DIR" "${OL_DATA_DIR}.log"
}
trap cleanup EXIT

stats="http://127.0.0.1:${OL_STATS_PORT}/stats"
# wait_nodes N: until HAProxy sees exactly N function servers up.
wait_nodes() {
    for _ in $(seq 120); do
        [ "$(curl -fsS "${stats};csv" 2>/dev/null | grep -c '^functions,node[0-9]*,.*,UP')" = "$1" ] && return 0
        sleep 1
    done
    echo "HAProxy did not see $1 nodes up" >&2
    return 1
}
bench() {
    python3 scripts/cluster-bench.py --url "http://127.0.0.1:${OL_PORT}" \
        --fn-url "http://127.0.0.1:${OL_FUNCTIONS_PORT}" --stats "$stats" --token "$OL_ADMIN_TOKEN" \
        --seconds "$seconds" --warmup "$warmup" --factor "$factor" \
        --instance "$OL_INSTANCE" --project "$COMPOSE_PROJECT_NAME" "$@"
}

compose up -d --build >"${OL_DATA_DIR}.log" 2>&1 || { cat "${OL_DATA_DIR}.log" >&2; exit 1; }
wait_nodes 3
echo "== ${OL_BINARY}, hash-balance-factor ${factor}, ${seconds} s per phase after ${warmup} s warm-up"
echo "== 3 nodes: locality, balance (load average $(cut -d' ' -f1 /proc/loadavg))"
bench --phases locality,balance
for round in $(seq "$rounds"); do
    echo "== round ${round}: 1 node (node2 and node3 paused), then 3 nodes"
    compose pause node2 node3 >/dev/null 2>&1
    wait_nodes 1
    bench --phases throughput
    compose unpause node2 node3 >/dev/null 2>&1
    wait_nodes 3
    bench --phases throughput
done
