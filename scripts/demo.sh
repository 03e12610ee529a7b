#!/usr/bin/env bash
# The run command: builds Cradle and starts the demo centre — four simulated cameras
# (camsim, in-process: three H.264 classrooms and an H.265 entrance) recorded around
# the clock into ./data (SQLite index, local footage folder). Needs the Rust toolchain
# on Debian 12; the first run installs the Debian packages the build needs (FFmpeg's
# development files for snapshots, clang, pkg-config, a C toolchain) with apt-get, as
# root or through sudo (scripts/install-test-deps.sh --build-only; a no-op once they
# are there). SQLite is bundled and the camera clips are embedded in the binary.
set -euo pipefail
cd "$(dirname "$0")/.."

config=${1:-config/cradle.toml}
echo "==> checking the Debian packages the build needs"
bash scripts/install-test-deps.sh --build-only
echo "==> building Cradle (release; the first build takes a few minutes)"
cargo build --release --locked
echo
echo "==> starting the demo centre with $config"
echo "    open http://127.0.0.1:8080/            sign in (demo accounts below, also in ./data/demo-accounts.json)"
echo "         http://127.0.0.1:8080/live             parents' live view (sign in as parent-infant or parent-toddler)"
echo "         http://127.0.0.1:8080/evidence         police evidence requests (sign in as investigator; an admin approves)"
echo "         http://127.0.0.1:8080/operator         operator console: snapshots, alarms, storage, cameras (sign in as operator)"
echo "         http://127.0.0.1:8080/metrics          Prometheus metrics"
echo "    footage: ./data/footage   index: ./data/cradle.db   stop: Ctrl-C (closes the segment in progress)"
echo
exec ./target/release/cradle serve --demo --config "$config"
