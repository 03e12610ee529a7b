#!/usr/bin/env bash
# Check a TURN server the way a parent's browser will use it: compute a short-lived
# credential from the shared secret exactly as Cradle does (TURN REST API, coturn's
# use-auth-secret), then let coturn's test client allocate relays and send packets
# through them (turnutils_uclient -y: two relays talk to each other, no peer needed).
#
# Run it from outside the centre's network (a laptop on a phone hotspot) to test the
# path viewers take; from the TURN host itself it only proves the credentials.
#
# Reading the result (the last lines of turnutils_uclient):
#   tot_send_msgs=N, tot_recv_msgs=N      every packet came back through the relays
#   Total lost packets 0 (0.000000%)      the verdict this script prints as PASS
#   error 401 (Unauthorized)              the secret differs from static-auth-secret,
#                                         or a clock is off by more than the TTL
#   error 403 (Forbidden IP)              denied-peer-ip blocked the peer; with -y the
#                                         peer is coturn's own relay address, which is
#                                         private when external-ip is missing
#   error 486 (Allocation Quota Reached)  user-quota / total-quota exhausted
#   no answer / timeout                   the port is closed (firewall, NAT forwarding)
set -euo pipefail

usage() {
    cat >&2 <<'EOF'
usage: check-turn.sh [-t | -s] HOST [PORT]

  HOST  the TURN server (name or IPv4 address), as in [live] turn_servers
  PORT  default 3478, or 5349 with -s
  -t    TURN over TCP  (turn:HOST:3478?transport=tcp)
  -s    TURN over TLS  (turns:HOST:5349?transport=tcp)
        without -t/-s: TURN over UDP (turn:HOST:3478?transport=udp)

The secret comes from CRADLE_TURN_SECRET (as in deploy/cradle.env), or is asked for:
  set -a; . deploy/cradle.env; set +a; deploy/coturn/check-turn.sh turn.example.org
Needs openssl, base64, and turnutils_uclient (Debian: apt-get install coturn) or docker.
Exit status: 0 every packet relayed, 1 failure, 2 usage.
EOF
    exit 2
}

transport=()
default_port=3478
while getopts ":tsh" opt; do
    case $opt in
        t) transport=(-t) ;;
        s) transport=(-t -S); default_port=5349 ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[[ $# -ge 1 && $# -le 2 ]] || usage
host=$1
port=${2:-$default_port}
[[ $port =~ ^[0-9]+$ ]] || usage

SECRET=${CRADLE_TURN_SECRET:-}
if [[ -z $SECRET ]]; then
    [[ -t 0 ]] || { echo "check-turn.sh: set CRADLE_TURN_SECRET" >&2; exit 2; }
    read -rsp "TURN secret (static-auth-secret): " SECRET
    echo >&2
fi

# turnutils_uclient wants an address.
if [[ $host =~ ^[0-9]+(\.[0-9]+){3}$ ]]; then
    addr=$host
else
    addr=$(getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }') || true
    [[ -n $addr ]] || { echo "check-turn.sh: cannot resolve $host" >&2; exit 1; }
fi

# The credential, as Cradle computes it for each viewer: "<unix expiry>:<username>",
# password = base64(HMAC-SHA1(secret, username)). The secret is on openssl's command
# line for a moment; run this where other local users cannot watch the process list.
u="$(( $(date +%s) + 3600 )):check"
p=$(printf %s "$u" | openssl dgst -binary -sha1 -hmac "$SECRET" | base64)

if command -v turnutils_uclient >/dev/null; then
    uclient=(turnutils_uclient)
elif command -v docker >/dev/null; then
    uclient=(docker run --rm --network host --entrypoint turnutils_uclient docker.io/coturn/coturn:4.6)
else
    echo "check-turn.sh: needs turnutils_uclient (apt-get install coturn) or docker" >&2
    exit 1
fi

echo "TURN $host ($addr) port $port ${transport[*]:-udp}, user $u" >&2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
timeout 60 "${uclient[@]}" -u "$u" -w "$p" -y -n 10 -p "$port" "${transport[@]}" "$addr" 2>&1 | tee "$out" \
    || status=$?

lost=$(sed -n 's/.*Total lost packets \([0-9][0-9]*\).*/\1/p' "$out" | tail -n 1)
if [[ $status -eq 0 && $lost == 0 ]]; then
    echo "PASS: credentials accepted and every packet relayed" >&2
    exit 0
fi
if grep -Eq 'error 401|Unauthorized' "$out"; then
    echo "FAIL: 401 - the secret differs from static-auth-secret, or a clock is wrong" >&2
elif grep -Eq 'error 403|Forbidden' "$out"; then
    echo "FAIL: 403 - a relay peer is denied (denied-peer-ip; check external-ip)" >&2
elif grep -Eq 'error 486|Quota' "$out"; then
    echo "FAIL: 486 - allocation quota reached (user-quota / total-quota)" >&2
elif [[ $status -eq 124 ]]; then
    echo "FAIL: no result within 60 s - is port $port open to this machine?" >&2
elif [[ -n $lost ]]; then
    echo "FAIL: $lost packets lost - the relay range (min-port..max-port) may be blocked" >&2
else
    echo "FAIL: turnutils_uclient exited with $status - see its output above" >&2
fi
exit 1
