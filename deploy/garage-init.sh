#!/usr/bin/env bash
# One-time set-up of the compose file's Garage node: assign the layout, create
# the bucket cradle-footage and a key for Cradle, and print the key's id and
# secret for deploy/cradle.env. Safe to run again (it skips what exists).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
g() { docker compose -f compose.yaml exec -T garage /garage "$@"; }

node=$(g node id -q | cut -d@ -f1)
if g layout show | grep -q 'No nodes currently have a role'; then
    g layout assign -z dc1 -c 1T "$node" >/dev/null
    g layout apply --version 1 >/dev/null
fi
g bucket info cradle-footage >/dev/null 2>&1 || g bucket create cradle-footage >/dev/null
if ! g key info cradle >/dev/null 2>&1; then
    g key create cradle >/dev/null
fi
g bucket allow --read --write cradle-footage --key cradle >/dev/null
echo "Put these in deploy/cradle.env (CRADLE_S3_ACCESS_KEY_ID / CRADLE_S3_SECRET_ACCESS_KEY):"
g key info cradle --show-secret | grep -E 'Key ID|Secret key'
