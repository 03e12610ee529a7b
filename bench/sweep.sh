#!/usr/bin/env bash
# Sweep benchmark: the retention sweeper on an index of a million segments, on SQLite and
# on PostgreSQL (a private cluster started with scripts/postgres.sh). See bench/README.md.
#
#   bench/sweep.sh [--no-build] [-- SWEEP_BENCH_ARGS...]
#
# Two configurations: 100 cameras × 100 days × 100 segments a day (14.4-minute
# segments) = 1,000,000 rows, and 10 cameras × 100 days of 1-minute segments =
# 1,440,000 rows; each sweep deletes the oldest 10 days. Arguments after `--` replace
# both with one configuration of your own (e.g. `-- --cameras 20 --per-day 1440`).
# Results: bench/results/sweep.md. Takes about 3 minutes on a 2-core machine.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
RESULTS="$BENCH_DIR/results"
BUILD=1
EXTRA=()
while (($#)); do
    case "$1" in
        --no-build) BUILD=0; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "sweep.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cd "$ROOT"
if ((BUILD)); then
    log "cargo build --release --example sweep_bench"
    cargo build --release --locked --example sweep_bench >&2
fi
BIN="$ROOT/target/release/examples/sweep_bench"
[[ -x "$BIN" ]] || { echo "sweep.sh: $BIN is missing (run without --no-build)" >&2; exit 1; }

# PostgreSQL runs as the `postgres` user when we are root: its directory must be
# reachable by that user, hence /tmp and 0755 (as scripts/test.sh does).
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cradle-sweep-bench.XXXXXX")
chmod 755 "$TMP"
PG_DIR="$TMP/postgres"
cleanup() {
    bash "$ROOT/scripts/postgres.sh" stop "$PG_DIR" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
eval "$(bash "$ROOT/scripts/postgres.sh" start "$PG_DIR" "$PORT")"
# scripts/postgres.sh tunes the cluster for tests (fsync = off, synchronous_commit = off);
# a benchmark of deletes must pay for durability, so turn both back on.
PGCONF="$PG_DIR/data/postgresql.conf"
sed -i -e 's/^fsync = off/fsync = on/' -e 's/^synchronous_commit = off/synchronous_commit = on/' -e 's/^full_page_writes = off/full_page_writes = on/' "$PGCONF"
bash "$ROOT/scripts/postgres.sh" stop "$PG_DIR" >/dev/null
eval "$(bash "$ROOT/scripts/postgres.sh" start "$PG_DIR" "$PORT")"

# Each configuration on a fresh SQLite file and a fresh PostgreSQL database.
if ((${#EXTRA[@]})); then
    CONFIGS=("${EXTRA[*]}")
else
    # 1,000,000 rows; and 1-minute segments (1,440,000 rows, of 10 cameras: 100 cameras
    # of 1-minute segments for 100 days is 14.4 million rows, past this script's budget).
    CONFIGS=("--cameras 100 --days 100 --per-day 100" "--cameras 10 --days 100 --per-day 1440")
fi
PSQL=/usr/lib/postgresql/15/bin/psql
RUNS=()
n=0
for cfg in "${CONFIGS[@]}"; do
    n=$((n + 1))
    read -r -a cargs <<<"$cfg"
    log "SQLite: $cfg"
    "$BIN" --url "sqlite://$TMP/bench-$n.db" "${cargs[@]}" >"$TMP/sqlite-$n.md"
    "$PSQL" -X -q -d "$CRADLE_TEST_PG_URL" -c "CREATE DATABASE bench_$n"
    log "PostgreSQL: $cfg"
    "$BIN" --url "${CRADLE_TEST_PG_URL%/*}/bench_$n" "${cargs[@]}" >"$TMP/postgres-$n.md"
    RUNS+=("$n:$cfg")
done

PG_VERSION=$(/usr/lib/postgresql/15/bin/postgres --version)
SQLITE_VERSION=$(grep -m1 -A1 'name = "libsqlite3-sys"' Cargo.lock | sed -n 's/version = "\(.*\)"/libsqlite3-sys \1 (bundled SQLite)/p')
mkdir -p "$RESULTS"
{
    echo "# Sweep benchmark"
    echo
    echo "Written by \`bench/sweep.sh${EXTRA[*]:+ -- ${EXTRA[*]}}\` on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Cradle $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' + uncommitted changes')."
    echo "Databases: $SQLITE_VERSION, WAL; $PG_VERSION, fsync and synchronous_commit on, on the same machine."
    echo
    echo "**Object store: an empty local directory.** Every object delete is an \`unlink\` that finds no"
    echo "file (counted as deleted), so these are the index's and the sweeper's costs, not S3's; on"
    echo "S3 add one \`DeleteObjects\` request per 1000 segments."
    echo
    echo "The index holds every camera's back-to-back segments from the archive's start. \"Nothing"
    echo "expired\" sweeps run at 90 days after the start (the cutoff precedes every segment's end), first"
    echo "over the first 10 days' rows, then over all of them; \"10 days expired\" runs at 100 days and"
    echo "deletes the oldest 10 days of every camera; the last row sweeps again right after. Statements"
    echo "are the sweeper's own SQL statements (scans, marks, deletes, hold and camera look-ups, oldest"
    echo "remaining per camera); the run's one audit entry adds a few more and is inside the time."
    echo
    for run in "${RUNS[@]}"; do
        n=${run%%:*}
        echo "## \`${run#*:}\`"
        echo
        echo "| database | index rows | what | time (median) | deleted | statements | batches | statements per deleted segment | deleted rows/s |"
        echo "|---|---:|---|---|---:|---:|---:|---:|---:|"
        grep '^|' "$TMP/sqlite-$n.md"
        grep '^|' "$TMP/postgres-$n.md"
        echo
        grep -v '^|' "$TMP/sqlite-$n.md"
        echo
        grep -v '^|' "$TMP/postgres-$n.md"
        echo
    done
} >"$RESULTS/sweep.md"
log "wrote $RESULTS/sweep.md"
cat "$RESULTS/sweep.md"
