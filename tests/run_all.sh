#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, builds, starts a private
# PostgreSQL cluster (as the unprivileged `postgres` user when run as root), runs every test
# with ctest, and stops the cluster again.
#
#   tests/run_all.sh [CTEST ARGS...]      e.g. tests/run_all.sh -L unit
#
# BUILD_DIR (default: build) and JOBS (default: nproc) may be set in the environment.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build}
jobs=${JOBS:-$(nproc)}

bash "$root/deploy/install-deps.sh"

echo "run_all: building in $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$jobs"

pg_dir=$(mktemp -d /tmp/reptrace-test-pg.XXXXXX)
cleanup() {
  bash "$root/deploy/local/pg-cluster.sh" stop "$pg_dir" || true
  rm -rf "$pg_dir"
}
trap cleanup EXIT
# The tests' data is thrown away: skip fsync to keep the suite fast.
REPTRACE_PG_FSYNC=off bash "$root/deploy/local/pg-cluster.sh" start "$pg_dir" >"$pg_dir.conninfo"
REPTRACE_TEST_PG=$(cat "$pg_dir.conninfo")
rm -f "$pg_dir.conninfo"
export REPTRACE_TEST_PG
echo "run_all: PostgreSQL at $REPTRACE_TEST_PG"

cd "$build"
ctest --output-on-failure --timeout 600 -j "$jobs" "$@"
