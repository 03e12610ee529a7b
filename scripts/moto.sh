#!/usr/bin/env bash
# moto's S3 server for Cradle's S3 Object Lock tests (tests/object_lock.rs).
#
# Garage, the suite's S3 server, has no Object Lock, and MinIO is not packaged
# for Debian; moto (https://github.com/getmoto/moto) implements Object Lock
# (bucket lock configuration, COMPLIANCE retention, refused version deletes)
# in a small Python server.  It lives in its own virtualenv, made from
# Debian's /usr/bin/python3 (package python3-venv), so nothing is installed
# system-wide and pyenv/conda interpreters on PATH do not matter.
#
#   scripts/moto.sh install      create the venv and install moto[server]
#                                (no-op when the pinned version is there)
#   scripts/moto.sh python       print the venv's python (boto3 is in it)
#   scripts/moto.sh serve PORT   exec moto's server on 127.0.0.1:PORT
#
# The venv: $CRADLE_TEST_VENV, default ${XDG_DATA_HOME:-~/.local/share}/cradle/test-venv.
set -euo pipefail

readonly MOTO_VERSION=5.2.5
readonly VENV="${CRADLE_TEST_VENV:-${XDG_DATA_HOME:-$HOME/.local/share}/cradle/test-venv}"

log() { printf 'moto.sh: %s\n' "$*" >&2; }
die() {
    printf 'moto.sh: ERROR: %s\n' "$*" >&2
    exit 1
}

installed_version() {
    [[ -x "$VENV/bin/python" ]] || return 0
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null || true
}

install() {
    if [[ "$(installed_version)" == "$MOTO_VERSION" ]] && [[ -x "$VENV/bin/moto_server" ]]; then
        log "moto $MOTO_VERSION present in $VENV"
        return 0
    fi
    [[ -x /usr/bin/python3 ]] || die "/usr/bin/python3 missing (apt-get install python3 python3-venv)"
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating virtualenv $VENV"
        mkdir -p "$(dirname "$VENV")"
        /usr/bin/python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
    fi
    log "installing moto[server]==$MOTO_VERSION into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" ||
        die "pip install moto[server]==$MOTO_VERSION failed"
    [[ "$(installed_version)" == "$MOTO_VERSION" ]] || die "moto $MOTO_VERSION not importable after install"
}

case "${1:-}" in
install) install ;;
python)
    [[ -x "$VENV/bin/python" ]] || die "no venv at $VENV: run scripts/install-test-deps.sh"
    echo "$VENV/bin/python"
    ;;
serve)
    [[ $# -eq 2 ]] || die "usage: moto.sh serve PORT"
    [[ -x "$VENV/bin/moto_server" ]] || die "moto is not installed in $VENV: run scripts/install-test-deps.sh"
    exec "$VENV/bin/moto_server" -H 127.0.0.1 -p "$2"
    ;;
*)
    echo "usage: moto.sh install | python | serve PORT" >&2
    exit 2
    ;;
esac
