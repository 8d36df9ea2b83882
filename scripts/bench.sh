#!/usr/bin/env bash
# The benchmark: the same set-up as the test command (base image, throwaway
# Postgres unless DATABASE_URL is set, runtime image), a release build, then
# `ol bench` with the arguments given here (see `ol bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

trap 'ol_cleanup_bench; ol_stop_postgres' EXIT

export OL_BASE_IMAGE="${OL_BASE_IMAGE:-$(images/bootstrap-base.sh | tail -n1)}"
ol_start_postgres
step "building the release binary"
cargo build --release --locked
bin="${CARGO_TARGET_DIR:-target}/release/ol"
"$bin" images
step "running the benchmark"
"$bin" bench "$@"
