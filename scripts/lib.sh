# Shared by scripts/test.sh and scripts/bench.sh.

step() { printf '\n==> %s\n' "$*" >&2; }

PG_DIR=""

# Starts a throwaway Postgres cluster (Debian's server binaries) on a free
# loopback port and exports DATABASE_URL, unless DATABASE_URL is already set.
ol_start_postgres() {
    if [ -n "${DATABASE_URL:-}" ]; then
        step "using the Postgres at DATABASE_URL"
        return
    fi
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
    if [ -z "$bin" ]; then
        step "installing Debian's PostgreSQL server"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    fi
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    PG_DIR=$(mktemp -d /tmp/ol-pg.XXXXXX)
    local as=()
    if [ "$(id -u)" -eq 0 ]; then
        # initdb refuses to run as root.
        chown postgres:postgres "$PG_DIR"
        as=(runuser -u postgres --)
    fi
    step "starting a throwaway Postgres on 127.0.0.1:$port ($PG_DIR)"
    "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
    "${as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w start -o \
        "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null
    PG_BIN="$bin"
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

ol_stop_postgres() {
    if [ -n "$PG_DIR" ]; then
        local as=()
        [ "$(id -u)" -eq 0 ] && as=(runuser -u postgres --)
        "${as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
}

# Removes what tests leave when they fail half-way: containers of test
# instances (label openlambda.instance=test-*) and the test network.
ol_cleanup_tests() {
    local ids
    ids=$(docker ps -a --filter label=openlambda.instance \
        --format '{{.ID}} {{.Label "openlambda.instance"}}' | awk '$2 ~ /^test-/ {print $1}')
    if [ -n "$ids" ]; then
        step "removing $(echo "$ids" | wc -l) leftover test containers"
        # shellcheck disable=SC2086
        docker rm -f $ids >/dev/null || true
    fi
    # The test network and any a test derived from its name (the cluster's).
    docker network ls --format '{{.Name}}' | grep -E '^openlambda-test(-|$)' \
        | xargs -r docker network rm >/dev/null 2>&1 || true
}

# Drops the databases tests and the bench check make (ol_test_*, ol_bench_*)
# that a killed run left behind; each drops its own when it ends, even when
# it fails.
ol_drop_test_databases() {
    [ -n "${DATABASE_URL:-}" ] || return 0
    command -v psql >/dev/null 2>&1 || return 0
    local names
    names=$(psql "$DATABASE_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'ol\_test\_%' OR datname LIKE 'ol\_bench\_%'" 2>/dev/null || true)
    [ -n "$names" ] && step "dropping $(echo "$names" | wc -l) leftover test and bench databases"
    for name in $names; do
        psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
}

# Removes what a benchmark run leaves when it fails half-way: containers of
# bench instances (label openlambda.instance=bench-*) and the bench network.
ol_cleanup_bench() {
    local ids
    ids=$(docker ps -a --filter label=openlambda.instance \
        --format '{{.ID}} {{.Label "openlambda.instance"}}' | awk '$2 ~ /^bench-/ {print $1}')
    # shellcheck disable=SC2086
    [ -n "$ids" ] && docker rm -f $ids >/dev/null || true
    # Its containers may still be going away: try again for a few seconds.
    for _ in 1 2 3 4 5; do
        docker network rm openlambda-bench >/dev/null 2>&1 && break
        docker network inspect openlambda-bench >/dev/null 2>&1 || break
        sleep 1
    done
}
