#!/usr/bin/env bash
# THE test command for Cradle (CI runs it through .ci/run).
#
#   scripts/test.sh [CARGO_TEST_ARGS...] [-- TEST_BINARY_ARGS...]
#
# Examples:
#   scripts/test.sh                          # everything
#   scripts/test.sh --test recording         # one integration test file
#   scripts/test.sh some_name -- --nocapture # filter, show test output
#
# What it does:
#   1. scripts/install-test-deps.sh (no-op when everything is present);
#   2. a private temp dir under ${TMPDIR:-/tmp}, free ports;
#   3. a PostgreSQL cluster (scripts/postgres.sh) and a single-node Garage
#      (scripts/garage.sh), whose connection settings are exported:
#        CRADLE_TEST_PG_URL, CRADLE_TEST_S3_{ENDPOINT,BUCKET,REGION,
#        ACCESS_KEY_ID,SECRET_ACCESS_KEY}
#      plus, for tests that drive their own instances or cameras:
#        CRADLE_TEST_GARAGE_SH    scripts/garage.sh (start/stop a Garage)
#        CRADLE_TEST_GST_CAMERA   tests/support/gst_camera.py (fake camera)
#        CRADLE_TEST_TMPDIR       scratch dir, removed at exit; any Garage
#                                 started below it is stopped at exit too
#        CRADLE_TEST_GARAGE_DIR / _S3_PORT / _RPC_PORT / _ADMIN_PORT
#                                 the shared Garage (do not stop it from a
#                                 test: tests run in parallel; start your own
#                                 under CRADLE_TEST_TMPDIR instead)
#   4. cargo test --locked --no-fail-fast [ARGS] -- --test-threads=${CRADLE_TEST_THREADS:-2}
#   5. on any exit: stop Garage and PostgreSQL, delete the temp dir
#      (kept if CRADLE_TEST_KEEP_TMP=1).
# The exit code is cargo's.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
readonly SCRIPTS="$REPO/scripts"

TMP_ROOT=""
PG_DIR=""
GARAGE_DIR=""
CARGO_PGID=""

section() { printf '\n========== %s ==========\n' "$*" >&2; }
log() { printf 'test.sh: %s\n' "$*" >&2; }
die() {
    printf 'test.sh: ERROR: %s\n' "$*" >&2
    exit 1
}

# Print N free TCP ports on 127.0.0.1, all different, chosen below the
# kernel's ephemeral range so that outgoing connections made during the tests
# cannot grab them - tests stop and restart Garage on the same port.
free_ports() {
    /usr/bin/python3 - "$1" <<'EOF'
import random, socket, sys
n = int(sys.argv[1])
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    low = 32768
candidates = list(range(20000, max(20001, low - 1)))
random.shuffle(candidates)
held, ports = [], []
for port in candidates:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    held.append(s)  # keep bound so the next pick differs
    ports.append(port)
    if len(ports) == n:
        break
if len(ports) < n:
    sys.exit("no free ports")
print(" ".join(map(str, ports)))
EOF
}

print_log_tail() {
    [[ -f "$1" ]] || return 0
    printf -- '--- last lines of %s ---\n' "$1" >&2
    tail -n 20 "$1" >&2 || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    section "Cleanup"
    if [[ -n "$CARGO_PGID" ]] && kill -0 "$CARGO_PGID" 2>/dev/null; then
        log "stopping cargo test (process group $CARGO_PGID)"
        kill -TERM -- "-$CARGO_PGID" 2>/dev/null
        local i
        for ((i = 0; i < 50; i++)); do
            kill -0 -- "-$CARGO_PGID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$CARGO_PGID" 2>/dev/null
    fi
    if [[ -n "$TMP_ROOT" && -d "$TMP_ROOT" ]]; then
        if ((rc != 0)); then
            print_log_tail "$GARAGE_DIR/garage.log"
            print_log_tail "$PG_DIR/postgres.log"
        fi
        # The shared Garage plus any a test started under the temp dir and
        # did not stop (e.g. after a panic).
        local pidfile
        while IFS= read -r -d '' pidfile; do
            bash "$SCRIPTS/garage.sh" stop "$(dirname "$pidfile")"
        done < <(find "$TMP_ROOT" -name garage.pid -print0 2>/dev/null)
        [[ -n "$PG_DIR" ]] && bash "$SCRIPTS/postgres.sh" stop "$PG_DIR"
        if [[ "${CRADLE_TEST_KEEP_TMP:-0}" == 1 ]]; then
            log "keeping $TMP_ROOT (CRADLE_TEST_KEEP_TMP=1)"
        else
            rm -rf "$TMP_ROOT"
        fi
    fi
    log "exit code $rc"
    exit "$rc"
}

main() {
    cd "$REPO"
    # cargo install puts garage here; a non-login shell may not have it.
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

    section "Installing test dependencies"
    bash "$SCRIPTS/install-test-deps.sh"

    section "Tool versions"
    {
        cargo --version
        rustc --version
        garage --version | head -n 1
        ffmpeg -version | head -n 1
        gst-launch-1.0 --version | sed -n 2p
        /usr/lib/postgresql/15/bin/postgres --version
    } >&2 || die "a required tool is missing (see above)"

    trap cleanup EXIT
    # Turn signals into a normal exit so the EXIT trap cleans up.
    trap 'exit 130' INT
    trap 'exit 143' TERM

    section "Starting services"
    TMP_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/cradle-test.XXXXXX")
    # mktemp makes it 0700; PostgreSQL runs as the `postgres` user and must
    # be able to reach its directory inside.
    chmod 755 "$TMP_ROOT"
    PG_DIR="$TMP_ROOT/postgres"
    GARAGE_DIR="$TMP_ROOT/garage"
    log "temp dir: $TMP_ROOT"

    local ports pg_port s3_port rpc_port admin_port out
    ports=$(free_ports 4) || die "cannot find free TCP ports"
    read -r pg_port s3_port rpc_port admin_port <<<"$ports"

    # Capture, then eval: `eval "$(cmd)"` would ignore cmd's failure.
    out=$(bash "$SCRIPTS/postgres.sh" start "$PG_DIR" "$pg_port") || die "PostgreSQL failed to start"
    eval "$out"
    out=$(bash "$SCRIPTS/garage.sh" start "$GARAGE_DIR" "$s3_port" "$rpc_port" "$admin_port") ||
        die "Garage failed to start"
    eval "$out"

    export CRADLE_TEST_GARAGE_SH="$SCRIPTS/garage.sh"
    export CRADLE_TEST_GST_CAMERA="$REPO/tests/support/gst_camera.py"
    export CRADLE_TEST_TMPDIR="$TMP_ROOT"
    export CRADLE_TEST_GARAGE_DIR="$GARAGE_DIR"
    export CRADLE_TEST_GARAGE_S3_PORT="$s3_port"
    export CRADLE_TEST_GARAGE_RPC_PORT="$rpc_port"
    export CRADLE_TEST_GARAGE_ADMIN_PORT="$admin_port"
    local v
    for v in CRADLE_TEST_PG_URL CRADLE_TEST_S3_ENDPOINT CRADLE_TEST_S3_BUCKET CRADLE_TEST_S3_REGION \
        CRADLE_TEST_S3_ACCESS_KEY_ID CRADLE_TEST_GARAGE_SH CRADLE_TEST_GST_CAMERA CRADLE_TEST_TMPDIR; do
        log "$v=${!v}"
    done

    # Split our args at `--`: before go to cargo, after to the test binaries.
    local cargo_args=() test_args=() seen_sep=0 a
    for a in "$@"; do
        if ((seen_sep == 0)) && [[ "$a" == -- ]]; then
            seen_sep=1
        elif ((seen_sep == 0)); then
            cargo_args+=("$a")
        else
            test_args+=("$a")
        fi
    done
    local cmd=(cargo test --locked --no-fail-fast "${cargo_args[@]}" -- --test-threads="${CRADLE_TEST_THREADS:-2}" "${test_args[@]}")

    section "Running: ${cmd[*]}"
    # In the background, in its own process group (setsid; it execs in place
    # since a non-interactive shell's child is no group leader, so the pgid
    # is $!): bash runs traps only between foreground commands, but `wait`
    # is interrupted by signals, so a SIGTERM/SIGINT (CI timeout, Ctrl-C)
    # cleans up at once, and cleanup() can end the whole test tree (cargo,
    # test binaries, cameras they spawned) with one group kill.
    local rc=0
    setsid "${cmd[@]}" &
    CARGO_PGID=$!
    wait "$CARGO_PGID" || rc=$?
    CARGO_PGID=""
    section "cargo test finished with exit code $rc"
    exit "$rc"
}

main "$@"
