#!/usr/bin/env bash
# Install everything Cradle's test suite needs on Debian 12 (bookworm),
# skipping whatever is already present, so it is cheap to run on every CI
# run and on developer machines.
#
#   scripts/install-test-deps.sh               everything the tests need
#   scripts/install-test-deps.sh --build-only  only what `cargo build` needs
#                                              (scripts/demo.sh, the run command)
#
# - Debian packages to build Cradle: FFmpeg 5.1's development files
#   (libavcodec/libavformat/libavutil/libswscale; the ffmpeg-next crate decodes
#   keyframes into snapshots, src/snapshot/decode.rs), clang + libclang-dev (its
#   bindgen reads the FFmpeg headers), pkg-config, and a C toolchain (the
#   linker; ring, aws-lc and the bundled SQLite compile C).
# - Debian packages to test it: ffmpeg (ffprobe is the tests' independent decoder),
#   GStreamer + its RTSP server with Python bindings (tests/support/
#   gst_camera.py, the fake camera), PostgreSQL 15 server binaries
#   (scripts/postgres.sh), curl (scripts/garage.sh's S3 probe), chromium and
#   python3-websocket (tests/web/*.py drive the pages over DevTools).
# - Garage 2.x (S3 server, scripts/garage.sh), built with cargo because
#   Debian does not package it.  This takes several minutes the first time.
# - moto[server] (an S3 server with Object Lock, which Garage lacks) in a
#   virtualenv of its own (scripts/moto.sh install; needs python3-venv).
# - aiortc (a WebRTC client that is not a browser: tests/web/whep_aiortc.py
#   plays live view over WHEP and decodes with PyAV's bundled FFmpeg) in the
#   same virtualenv.  Pure-Python wheel; its dependencies (av, cryptography,
#   pylibsrtp, ...) have manylinux wheels for Debian's Python 3.11.
#
# Needs root (or sudo) only when Debian packages are missing.
set -euo pipefail

# Kept in sync with what the build, the scripts and the tests use; see the header.
readonly BUILD_PACKAGES=(
    build-essential
    pkg-config
    clang
    libclang-dev
    libavcodec-dev
    libavformat-dev
    libavutil-dev
    libswscale-dev
)
readonly TEST_PACKAGES=(
    ffmpeg
    curl
    ca-certificates
    python3
    python3-gi
    gir1.2-gst-rtsp-server-1.0
    gir1.2-gst-plugins-base-1.0 # GstRtsp (auth method enum) for gst_camera.py
    gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good   # rtph264pay/rtph265pay
    gstreamer1.0-plugins-ugly   # x264enc
    gstreamer1.0-plugins-bad    # x265enc
    gstreamer1.0-x              # timeoverlay (pango plugin)
    gstreamer1.0-tools
    chromium                    # headless browser tests (tests/web/*.py, over CDP)
    python3-websocket           # the DevTools protocol client for those tests
    python3-venv                # scripts/moto.sh's virtualenv (S3 Object Lock tests)
    postgresql                  # server binaries in /usr/lib/postgresql/15/bin
    # (`cargo install garage` compiles bundled sqlite/lmdb/libsodium with the
    # C toolchain of BUILD_PACKAGES.)
)
readonly AIORTC_VERSION=1.16.0
readonly GARAGE_INSTALL=(cargo install garage --locked --no-default-features --features bundled-libs,sqlite,lmdb)
# How long to wait for another apt/dpkg process (e.g. unattended-upgrades or
# a parallel provisioning step) to release its lock.
readonly APT_LOCK_TIMEOUT_S=600

export DEBIAN_FRONTEND=noninteractive

log() { printf '==> install-test-deps: %s\n' "$*" >&2; }
die() {
    printf 'install-test-deps: ERROR: %s\n' "$*" >&2
    exit 1
}

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -E "$@"
    else
        die "need root to run: $* (re-run as root or install sudo)"
    fi
}

# apt-get with a lock wait: DPkg::Lock::Timeout covers the dpkg frontend lock
# (apt >= 1.9.11); `apt-get update`'s lists lock is not covered by it in all
# versions, hence also the retry loop.
apt_get() {
    local deadline=$((SECONDS + APT_LOCK_TIMEOUT_S))
    local out rc
    out=$(mktemp)
    while true; do
        rc=0
        # Show apt's progress (CI logs) and keep a copy to look for lock errors.
        as_root apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT_S" "$@" 2>&1 | tee "$out" >&2 ||
            rc=$?
        if ((rc == 0)); then
            rm -f "$out"
            return 0
        fi
        if grep -qiE 'could not get lock|unable to acquire|unable to lock' "$out" &&
            ((SECONDS < deadline)); then
            log "apt/dpkg is locked by another process; retrying in 5 s"
            sleep 5
            continue
        fi
        rm -f "$out"
        die "apt-get $* failed (exit $rc)"
    done
}

# Installs the packages named as arguments that are not installed yet.
install_apt_packages() {
    command -v dpkg-query >/dev/null || die "this script supports Debian/Ubuntu only (dpkg-query missing)"
    local missing=() pkg
    for pkg in "$@"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        log "Debian packages: all present"
        return 0
    fi
    log "Debian packages missing: ${missing[*]}"
    log "apt-get update"
    apt_get update -q
    log "apt-get install ${missing[*]}"
    # No recommends: keeps CI installs small; everything needed is listed.
    apt_get install -y -q --no-install-recommends "${missing[@]}"
}

garage_path() {
    if command -v garage >/dev/null 2>&1; then
        command -v garage
    elif [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]]; then
        echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage"
    fi
}

install_garage() {
    local garage version
    garage=$(garage_path)
    if [[ -z "$garage" ]]; then
        command -v cargo >/dev/null 2>&1 ||
            die "cargo not found: install Rust (https://rustup.rs) to build Garage"
        log "Garage not found; building it: ${GARAGE_INSTALL[*]} (takes several minutes)"
        "${GARAGE_INSTALL[@]}" || die "cargo install garage failed"
        garage=$(garage_path)
        [[ -n "$garage" ]] || die "cargo install garage succeeded but no garage binary found in ~/.cargo/bin"
    fi
    version=$("$garage" --version 2>/dev/null | head -n 1) || die "$garage --version failed"
    # scripts/garage.sh uses the 2.x CLI (layout/key/bucket syntax changed
    # between major versions).
    [[ "$version" =~ (^|[^0-9.])2\.[0-9]+\.[0-9]+ ]] ||
        die "$garage is '$version' but Garage 2.x is required (remove it and re-run to build 2.x)"
    log "Garage: $garage ($version)"
}

# Into moto.sh's venv (made just before), so the tests know one venv only.
install_aiortc() {
    local python have
    python=$(bash "$(dirname "${BASH_SOURCE[0]}")/moto.sh" python) || die "no test venv (scripts/moto.sh install failed?)"
    have=$("$python" -c 'import importlib.metadata as m; print(m.version("aiortc"))' 2>/dev/null || true)
    if [[ "$have" == "$AIORTC_VERSION" ]]; then
        log "aiortc $AIORTC_VERSION present in the test venv"
        return 0
    fi
    log "installing aiortc==$AIORTC_VERSION into the test venv"
    "$python" -m pip install --quiet --disable-pip-version-check "aiortc==$AIORTC_VERSION" ||
        die "pip install aiortc==$AIORTC_VERSION failed"
    "$python" -c 'import aiortc, av' || die "aiortc $AIORTC_VERSION not importable after install"
}

# Fail here, with a clear message, rather than in the middle of the build.
verify_build() {
    local lib
    for lib in libavcodec libavformat libavutil libswscale; do
        pkg-config --exists "$lib" || die "pkg-config cannot find $lib (libavcodec-dev etc. not installed?)"
    done
    log "FFmpeg for the build: libavcodec $(pkg-config --modversion libavcodec), libswscale $(pkg-config --modversion libswscale)"
}

# Fail here, with a clear message, rather than in the middle of a test.
verify() {
    local el bin
    for bin in ffmpeg ffprobe gst-inspect-1.0 curl chromium /usr/lib/postgresql/15/bin/initdb \
        /usr/lib/postgresql/15/bin/pg_ctl /usr/lib/postgresql/15/bin/psql; do
        command -v "$bin" >/dev/null 2>&1 || die "$bin not found after install"
    done
    for el in videotestsrc timeoverlay videoconvert x264enc x265enc rtph264pay rtph265pay; do
        gst-inspect-1.0 --exists "$el" || die "GStreamer element '$el' missing"
    done
    # /usr/bin/python3 explicitly: gi is a Debian package, invisible to
    # pyenv/venv interpreters that may come first on PATH.
    /usr/bin/python3 - <<'EOF' || die "/usr/bin/python3 cannot load the GStreamer RTSP server bindings"
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtsp, GstRtspServer  # noqa: F401
EOF
    /usr/bin/python3 -c "import websocket" || die "/usr/bin/python3 cannot import websocket (python3-websocket)"
    log "all test dependencies present"
}

main() {
    case "${1:-}" in
        "") ;;
        --build-only)
            install_apt_packages "${BUILD_PACKAGES[@]}"
            verify_build
            return 0
            ;;
        *) die "unknown argument '$1' (usage: $0 [--build-only])" ;;
    esac
    install_apt_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
    verify_build
    install_garage
    bash "$(dirname "${BASH_SOURCE[0]}")/moto.sh" install || die "installing moto (scripts/moto.sh) failed"
    install_aiortc
    verify
}

main "$@"
