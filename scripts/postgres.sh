#!/usr/bin/env bash
# Private PostgreSQL 15 cluster for Cradle's tests.
#
#   scripts/postgres.sh start DIR PORT
#       Create (first time) and start a cluster in DIR/data listening on
#       127.0.0.1:PORT (unix socket in DIR/run), ensure role `cradle`
#       (password `cradle`, CREATEDB - tests create one database each) and
#       database `cradle`, then print on stdout:
#           export CRADLE_TEST_PG_URL=postgres://cradle:cradle@127.0.0.1:PORT/cradle
#       Starting an already-running cluster just re-checks and re-prints.
#
#   scripts/postgres.sh stop DIR
#       Fast shutdown (`pg_ctl stop -m fast`).  No-op if not running.
#
# The server refuses to run as root, so when run as root everything server
# side runs as the `postgres` system user (created by Debian's postgresql
# package), and DIR is chowned to it.  DIR's parent directories must be
# traversable by that user.
#
# PG_BIN overrides the server binaries directory (default: PostgreSQL 15).
set -euo pipefail

readonly PG_USER=cradle
readonly PG_PASSWORD=cradle
readonly PG_DB=cradle
readonly START_TIMEOUT_S=60

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() {
    printf 'postgres.sh: ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: postgres.sh start DIR PORT
       postgres.sh stop DIR
EOF
    exit 2
}

find_pg_bin() {
    PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
    [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" && -x "$PG_BIN/psql" ]] ||
        die "PostgreSQL server binaries not found in $PG_BIN (install the 'postgresql' package, e.g. scripts/install-test-deps.sh, or set PG_BIN)"
}

# Run a command as the cluster owner.  `cd /` first: the caller's cwd (e.g.
# /root) is often unreadable for postgres and initdb/psql would complain.
as_owner() {
    if ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

set_paths() {
    DIR=$(cd "$1" && pwd)
    DATA="$DIR/data"
    RUN="$DIR/run"
    LOGFILE="$DIR/postgres.log"
}

is_running() {
    [[ -f "$DATA/PG_VERSION" ]] && as_owner "$PG_BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

# psql as the superuser over the private unix socket (trust auth, see initdb).
admin_psql() {
    as_owner "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U postgres -d postgres "$@"
}

init_cluster() {
    if ((EUID == 0)); then
        id postgres >/dev/null 2>&1 || die "system user 'postgres' missing (install the 'postgresql' package)"
        chown postgres: "$DIR"
        as_owner test -w "$DIR" ||
            die "user 'postgres' cannot write $DIR: a parent directory is probably not traversable (chmod o+x it)"
    fi
    as_owner mkdir -p "$RUN"
    chmod 700 "$RUN"
    [[ -f "$DATA/PG_VERSION" ]] && return 0
    log "initdb in $DATA"
    # Local (socket) connections: trust, the socket dir is private (0700).
    # TCP: password (scram), so the URL's credentials are really checked.
    as_owner "$PG_BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 >"$DIR/initdb.log" 2>&1 ||
        {
            cat "$DIR/initdb.log" >&2
            die "initdb failed"
        }
    # Test-only durability trade-offs: nothing here must survive a power
    # cut, and fsync dominates test time on small CI disks.
    cat >>"$DATA/postgresql.conf" <<'EOF'

# --- added by scripts/postgres.sh (test cluster) ---
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
# Every test has its own database and pool; tests run in parallel.
max_connections = 300
EOF
}

cmd_start() {
    (($# == 2)) || usage
    PORT=$2
    [[ "$PORT" =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "PORT must be a TCP port number, got '$PORT'"
    find_pg_bin
    mkdir -p "$1" || die "cannot create $1"
    set_paths "$1"
    init_cluster

    if is_running; then
        log "already running in $DATA"
    else
        log "starting on 127.0.0.1:$PORT (log: $LOGFILE)"
        # Port and socket dir on the command line, not in the conf, so a
        # restart may use another port.  -w: return once accepting
        # connections.  The log file must be writable by postgres.
        as_owner touch "$LOGFILE"
        as_owner "$PG_BIN/pg_ctl" start -D "$DATA" -l "$LOGFILE" -w -t "$START_TIMEOUT_S" \
            -o "-c port=$PORT -c unix_socket_directories='$RUN'" >/dev/null ||
            {
                tail -n 30 "$LOGFILE" >&2 || true
                die "pg_ctl start failed (is port $PORT free?)"
            }
    fi

    # Idempotent: safe on every start.  CREATEDB because each test creates
    # and drops its own database.
    admin_psql <<EOF
DO \$\$
BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    ALTER ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  ELSE
    CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')
\gexec
EOF

    local url="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/$PG_DB"
    # Check exactly what the tests will use: TCP + password.
    "$PG_BIN/psql" -X -q -At -d "$url" -c 'SELECT 1' >/dev/null ||
        die "cannot connect with $url"
    log "ready: 127.0.0.1:$PORT database $PG_DB"
    printf 'export CRADLE_TEST_PG_URL=%q\n' "$url"
}

cmd_stop() {
    (($# == 1)) || usage
    if [[ ! -d "$1" ]]; then
        log "no such directory: $1 (nothing to stop)"
        return 0
    fi
    find_pg_bin
    set_paths "$1"
    if ! is_running; then
        log "not running in $DIR"
        return 0
    fi
    # fast: roll back open transactions and disconnect clients (tests may
    # leave pools open); -w waits until the server is gone.
    as_owner "$PG_BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 30 >/dev/null ||
        die "pg_ctl stop failed; see $LOGFILE"
    log "stopped"
}

main() {
    (($# >= 1)) || usage
    local cmd=$1
    shift
    case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    *) usage ;;
    esac
}

main "$@"
