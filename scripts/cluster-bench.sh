#!/usr/bin/env bash
# The cluster's figures on this host: brings up the compose cluster
# (docker-compose.cluster.yml, offline override, the host-built binary) under
# a project of its own, runs scripts/cluster-bench.py with 3 nodes, stops two
# nodes and measures 1, reads Postgres' write counters, then removes all it
# made. Bounded: about (2 x warmup + seconds) per phase, 5 phases.
#   scripts/cluster-bench.sh            # OL_BINARY=target/release/ol by default
#   OL_BINARY=target/debug/ol BENCH_SECONDS=20 scripts/cluster-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

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
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
OL_PORT=$(free_port)
OL_STATS_PORT=$(free_port)
export OL_PORT OL_STATS_PORT
# Until the managers listen twice, function calls go to the one listener.
export OL_FUNCTIONS_PORT="${OL_FUNCTIONS_PORT:-8081}"
seconds="${BENCH_SECONDS:-15}"
warmup="${BENCH_WARMUP:-10}"
compose() { docker-compose -f docker-compose.cluster.yml -f docker-compose.cluster.offline.yml "$@"; }

cleanup() {
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    # What a node that did not stop cleanly left, by its instance label.
    for node in node1 node2 node3; do
        ids=$(docker ps -aq --filter "label=openlambda.instance=${OL_INSTANCE}-${node}")
        [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    done
    docker rmi "$OL_MANAGER_IMAGE" >/dev/null 2>&1 || true
    rm -rf "$OL_DATA_DIR"
}
trap cleanup EXIT

compose up -d --build >/dev/null
url="http://127.0.0.1:${OL_PORT}"
stats="http://127.0.0.1:${OL_STATS_PORT}/stats"
for _ in $(seq 120); do
    curl -fsS "$url/healthz" >/dev/null 2>&1 && break
    sleep 1
done
bench() { python3 scripts/cluster-bench.py --url "$url" --stats "$stats" --seconds "$seconds" --warmup "$warmup" "$@"; }
pg_writes() {
    compose exec -T postgres psql -U openlambda -d openlambda -tAc \
        "SELECT xact_commit || ' ' || tup_inserted FROM pg_stat_database WHERE datname = 'openlambda'"
}

echo "== 3 nodes (${OL_BINARY}, ${seconds} s per phase after ${warmup} s warm-up)"
bench --phases locality,balance
read -r commits0 rows0 < <(pg_writes)
out=$(bench --phases throughput)
read -r commits1 rows1 < <(pg_writes)
echo "$out" | sed -n 1p
calls=$(echo "$out" | tail -n1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["calls"])')
echo "postgres during the throughput phase (warm-up included): $((commits1 - commits0)) commits, $((rows1 - rows0)) rows inserted, for ${calls} measured calls"

echo "== 1 node (node2 and node3 stopped)"
compose stop node2 node3 >/dev/null
for _ in $(seq 30); do
    curl -fsS "${stats};csv" | grep -q '^functions,node2,.*,DOWN' && break
    sleep 1
done
bench --phases throughput | sed -n 1p
