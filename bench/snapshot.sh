#!/usr/bin/env bash
# Snapshot benchmark: the CPU that snapshots and tamper checks cost per 1080p camera at
# the default interval (10 s; target < 1 % of one core), against what a user would run
# instead: one ffmpeg per camera writing a JPEG every 10 s. The results file says how.
#
#   bench/snapshot.sh [--window SECONDS] [--warmup SECONDS] [--no-build] [N]
#
# Defaults: --window 120 --warmup 25, N = 10 camsim cameras (1920x1080 25 fps H.264,
# ~4.2 Mbit/s, a keyframe every 2 s). Three runs of WARMUP + WINDOW each, one after the
# other, against the same camsim: Cradle with [snapshots] interval_seconds = 10, Cradle
# with interval_seconds = 3600 (no snapshot in the window: recording alone), and N ffmpeg
# processes. About 8 minutes.
# Results: bench/results/snapshot.md; raw numbers in bench/work/snapshot/runs.jsonl.
# Environment: CRADLE_BIN=/path/to/cradle benchmarks another binary (with --no-build).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
PY=/usr/bin/python3
WORK="$BENCH_DIR/work/snapshot"
RESULTS="$BENCH_DIR/results"
INTERVAL=10

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "snapshot.sh: error: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

CMDLINE="bench/snapshot.sh"
for a in "$@"; do CMDLINE+=" $(printf '%q' "$a")"; done

WINDOW=120
WARMUP=25
BUILD=1
N=10
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
while (($#)); do
    case "$1" in
        --window) [[ $# -ge 2 ]] && is_uint "$2" && (($2 >= 20)) || die "--window needs at least 20 seconds"; WINDOW=$2; shift 2 ;;
        --warmup) [[ $# -ge 2 ]] && is_uint "$2" && (($2 >= 15)) || die "--warmup needs at least 15 seconds"; WARMUP=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) is_uint "$1" && (($1 > 0 && $1 <= 100)) || die "N must be 1..100, got '$1'"; N=$1; shift ;;
    esac
done

[[ -x "$PY" ]] || die "$PY is needed (standard library only)"
command -v ffmpeg >/dev/null || die "ffmpeg is not installed (Debian: apt-get install ffmpeg)"
FFMPEG=$(command -v ffmpeg)
FFMPEG_VERSION=$("$FFMPEG" -hide_banner -version | head -1 | sed 's/ Copyright.*//')
cd "$ROOT"
if ((BUILD)); then
    log "cargo build --release --locked"
    cargo build --release --locked
fi
CRADLE_BIN=${CRADLE_BIN:-$ROOT/target/release/cradle}
[[ -x "$CRADLE_BIN" ]] || die "$CRADLE_BIN not found (build it, or set CRADLE_BIN)"

# ------------------------------------------------------------------ processes
PIDS=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK/data"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stop PID...: SIGTERM, up to 60 s, then SIGKILL; reap; forget.
stop() {
    local p q keep=() deadline=$((SECONDS + 60))
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "$@"; do
        while kill -0 "$p" 2>/dev/null && [[ "$(awk '{sub(/^.*\) /, ""); print $1}' "/proc/$p/stat" 2>/dev/null)" != Z ]]; do
            ((SECONDS < deadline)) || { kill -KILL "$p" 2>/dev/null || true; break; }
            sleep 0.2
        done
        wait "$p" 2>/dev/null || true
    done
    for q in "${PIDS[@]+"${PIDS[@]}"}"; do
        for p in "$@"; do [[ "$q" == "$p" ]] && continue 2; done
        keep+=("$q")
    done
    PIDS=("${keep[@]+"${keep[@]}"}")
}
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The window: CPU of the measured processes (utime + stime in /proc/PID/stat) and, for
# Cradle, its /metrics, read at the start and the end; one JSON line to stdout.
# Args: SECONDS LABEL METRICS_URL|- PID...
measure() {
    "$PY" - "$@" <<'EOF'
import json, os, re, sys, time, urllib.request
seconds, label, url, pids = float(sys.argv[1]), sys.argv[2], sys.argv[3], [int(p) for p in sys.argv[4:]]
tck = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tck
def metrics():
    if url == "-":
        return {}
    out = {}
    for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
        m = re.match(r'(cradle_snapshots_total|cradle_snapshot_cpu_seconds_total|cradle_snapshot_failures_total)\{camera="([^"]+)"\} (\S+)', line)
        if m:
            out.setdefault(m[2], {})[m[1]] = float(m[3])
    return out
c0, m0, t0 = [cpu(p) for p in pids], metrics(), time.monotonic()
time.sleep(seconds)
c1, m1, t1 = [cpu(p) for p in pids], metrics(), time.monotonic()
cams = {}
for cam, v in m1.items():
    before = m0.get(cam, {})
    cams[cam] = {k: v.get(k, 0) - before.get(k, 0) for k in v}
print(json.dumps({"label": label, "seconds": t1 - t0, "pids": len(pids),
                  "cpu_per_process": [b - a for a, b in zip(c0, c1)], "cameras": cams}))
EOF
}

# ------------------------------------------------------------------ camsim
rm -rf "$WORK/data" "$WORK/logs"
mkdir -p "$WORK/data" "$WORK/logs" "$RESULTS"
: >"$WORK/runs.jsonl"
CAMSIM_PORT=$(free_port)
"$CRADLE_BIN" camsim --listen "127.0.0.1:$CAMSIM_PORT" --streams "$N" >/dev/null 2>"$WORK/logs/camsim.log" &
CAMSIM_PID=$!
PIDS+=("$CAMSIM_PID")
for _ in $(seq 100); do port_open "$CAMSIM_PORT" && break; sleep 0.1; done
port_open "$CAMSIM_PORT" || die "camsim did not listen (see $WORK/logs/camsim.log)"
log "camsim: $N cameras on rtsp://127.0.0.1:$CAMSIM_PORT/camK; load $(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ Cradle
# cradle_run LABEL INTERVAL_SECONDS
cradle_run() {
    local label=$1 interval=$2 data="$WORK/data/$1" port k ready
    mkdir -p "$data"
    port=$(free_port)
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\ndata_dir = "%s"\n' "$port" "$data/cradle-data"
        printf '[database]\nurl = "sqlite://%s/cradle.db"\n' "$data"
        printf '[storage]\nurl = "file://%s/footage"\n' "$data"
        printf '[recording]\nsegment_seconds = 60\n[snapshots]\ninterval_seconds = %s\n' "$interval"
        for ((k = 1; k <= N; k++)); do
            printf '[[cameras]]\nid = "cam%s"\nurl = "rtsp://127.0.0.1:%s/cam%s"\n' "$k" "$CAMSIM_PORT" "$k"
        done
    } >"$data/cradle.toml"
    log "$label: cradle serve, [snapshots] interval_seconds = $interval, warmup ${WARMUP}s"
    "$CRADLE_BIN" serve --config "$data/cradle.toml" >/dev/null 2>"$WORK/logs/$label.log" &
    local pid=$!
    PIDS+=("$pid")
    sleep "$WARMUP"
    ready=$(curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null | grep -c '^cradle_camera_recording{.*} 1$' || true)
    ((ready == N)) || die "$label: $ready of $N cameras recording after ${WARMUP}s (see $WORK/logs/$label.log)"
    log "$label: measuring ${WINDOW}s"
    measure "$WINDOW" "$label" "http://127.0.0.1:$port/metrics" "$pid" >>"$WORK/runs.jsonl"
    stop "$pid"
    rm -rf "$data"
}

# ------------------------------------------------------------------ ffmpeg
# One process per camera, decoding keyframes only, one JPEG every 10 s at Cradle's size
# (1280 wide) and JPEG quality (qscale 5); numbered files so the snapshots can be counted.
ffmpeg_run() {
    local label=ffmpeg data="$WORK/data/ffmpeg" k pids=() written
    log "$label: $N x ffmpeg -skip_frame nokey … -vf fps=1/$INTERVAL,scale=1280:-2, warmup ${WARMUP}s"
    for ((k = 1; k <= N; k++)); do
        mkdir -p "$data/cam$k"
        "$FFMPEG" -nostdin -loglevel error -rtsp_transport tcp -skip_frame nokey \
            -i "rtsp://127.0.0.1:$CAMSIM_PORT/cam$k" \
            -vf "fps=1/$INTERVAL,scale=1280:-2" -q:v 5 -y "$data/cam$k/snap_%05d.jpg" \
            >/dev/null 2>"$WORK/logs/ffmpeg-cam$k.log" &
        pids+=($!)
        PIDS+=($!)
    done
    sleep "$WARMUP"
    written=$(find "$data" -name 'snap_*.jpg' | wc -l)
    ((written >= N)) || die "ffmpeg: only $written snapshots from $N cameras after ${WARMUP}s (see $WORK/logs)"
    local before=$written
    log "$label: measuring ${WINDOW}s"
    measure "$WINDOW" "$label" - "${pids[@]}" >"$WORK/ffmpeg.json"
    written=$(find "$data" -name 'snap_*.jpg' | wc -l)
    "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); r["snapshots"]=int(sys.argv[2]); print(json.dumps(r))' \
        "$WORK/ffmpeg.json" "$((written - before))" >>"$WORK/runs.jsonl"
    stop "${pids[@]}"
    rm -rf "$data"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
cradle_run cradle-snapshots "$INTERVAL"
cradle_run cradle-no-snapshots 3600
ffmpeg_run

# ------------------------------------------------------------------ report
CAMSIM_CPU=$(awk -v tck="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print ($12 + $13) / tck}' "/proc/$CAMSIM_PID/stat")
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
export LOAD_START LOAD_END CAMSIM_CPU CMDLINE N WINDOW WARMUP INTERVAL FFMPEG_VERSION CRADLE_BIN
export MACHINE="$(nproc) CPUs ($(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr)"
export GIT="$(git -C "$ROOT" rev-parse --short HEAD)$([[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- src)" ]] && echo ' (+ uncommitted changes in src/)')"
export CRADLE_VERSION="$("$CRADLE_BIN" --version)"
"$PY" - "$WORK/runs.jsonl" >"$RESULTS/snapshot.md" <<'EOF'
import json, os, statistics, sys, time
E = os.environ
runs = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
n, interval = int(E["N"]), int(E["INTERVAL"])
on, off, ff = runs["cradle-snapshots"], runs["cradle-no-snapshots"], runs["ffmpeg"]

cams = on["cameras"]
per_cam_pct = [100 * c["cradle_snapshot_cpu_seconds_total"] / on["seconds"] for c in cams.values()]
snaps = sum(c["cradle_snapshots_total"] for c in cams.values())
cpu = sum(c["cradle_snapshot_cpu_seconds_total"] for c in cams.values())
fails = sum(c.get("cradle_snapshot_failures_total", 0) for c in cams.values())
cradle_pct = statistics.mean(per_cam_pct)
cradle_ms = 1000 * cpu / snaps if snaps else float("nan")

proc_on = 100 * on["cpu_per_process"][0] / on["seconds"]
proc_off = 100 * off["cpu_per_process"][0] / off["seconds"]
off_snaps = sum(c["cradle_snapshots_total"] for c in off["cameras"].values())
diff_pct = (proc_on - proc_off) / n

ff_pct_each = [100 * c / ff["seconds"] for c in ff["cpu_per_process"]]
ff_pct = statistics.mean(ff_pct_each)
ff_ms = 1000 * sum(ff["cpu_per_process"]) / ff["snapshots"] if ff["snapshots"] else float("nan")

print(f"""# Snapshots and tamper checks: CPU per camera

{time.strftime('%Y-%m-%d %H:%M %Z')}, `{E['CMDLINE']}`; {E['MACHINE']}; git {E['GIT']};
{E['CRADLE_VERSION']}; {E['FFMPEG_VERSION']}. Load average (1, 5, 15 min) at the start
{E['LOAD_START']}, at the end {E['LOAD_END']}: CPU times are what each process spent, but a
busy machine (other builds and tests shared it) makes every figure a little higher.

{n} camsim cameras (1920x1080 25 fps H.264 ~4.2 Mbit/s, a keyframe every 2 s), a snapshot
every {interval} s, measured over {on['seconds']:.0f} s windows after {E['WARMUP']} s of warmup.
Target: **< 1 % of one core per camera**.

| per 1080p camera | % of one core | ms CPU per snapshot | snapshots in the window |
|---|---|---|---|
| Cradle: decode + JPEG + luma + tamper checks (`cradle_snapshot_cpu_seconds_total`, CPU time of the blocking thread) | **{cradle_pct:.2f} %** (cameras {min(per_cam_pct):.2f}–{max(per_cam_pct):.2f} %) | **{cradle_ms:.1f}** | {snaps:.0f} ({snaps / n:.1f} per camera; {fails:.0f} failed) |
| Cradle, whole process: (snapshots on − off) / {n} | {diff_pct:.2f} % | {1000 * (on['cpu_per_process'][0] - off['cpu_per_process'][0]) / snaps:.1f} | |
| ffmpeg, one process per camera (whole process: RTSP, every keyframe decoded, a JPEG every {interval} s) | {ff_pct:.2f} % (processes {min(ff_pct_each):.2f}–{max(ff_pct_each):.2f} %) | {ff_ms:.1f} | {ff['snapshots']} ({ff['snapshots'] / n:.1f} per camera) |

**Cradle / ffmpeg: {cradle_pct / ff_pct:.2f}** (per camera, snapshot CPU against the whole ffmpeg
process, which is what a user would add to get the same pictures).

Whole Cradle process (recording {n} cameras, HTTP, everything): {proc_on:.1f} % of one core
with snapshots every {interval} s, {proc_off:.1f} % with `interval_seconds = 3600`
({off_snaps:.0f} snapshots in that window); the difference, {proc_on - proc_off:.1f} % for
{n} cameras, is what the snapshots cost seen from outside, against {cradle_pct * n:.1f} %
from the per-camera metrics. The two runs were one after the other on a shared machine, so
the difference carries the noise of two whole-process measurements; the metric is the
precise figure.

## What is compared

- **Cradle**: `cradle serve` recording the {n} cameras, `[snapshots] interval_seconds = {interval}`:
  every {interval} s each camera's newest keyframe (if a new one arrived) is decoded by
  FFmpeg on a blocking thread into a JPEG at most 1280 wide (mjpeg, qscale 5) and a 160x90
  grey picture, and the four tamper checks run on it. The metric is the CPU time of that
  thread (decode + scale + JPEG + checks); recording is not in it.
- **ffmpeg**, one per camera, what a user would run beside a recorder to get the same pictures:

  ```sh
  ffmpeg -nostdin -rtsp_transport tcp -skip_frame nokey -i rtsp://…/camK \\
         -vf fps=1/{interval},scale=1280:-2 -q:v 5 -y snap_%05d.jpg
  ```

  (`-update 1 -y snap.jpg` costs the same; numbered files let the script count them).
  It receives the whole stream, decodes every keyframe (one every 2 s: the decoder cannot
  know which one the `fps` filter will keep) with FFmpeg's default threads, and encodes one
  JPEG every {interval} s. No tamper checks.
- camsim is a separate process, not counted (its total CPU over the whole run was
  {float(os.environ.get('CAMSIM_CPU', 'nan')):.0f} s).

Raw numbers: `bench/work/snapshot/runs.jsonl`.
""")
EOF
cat "$RESULTS/snapshot.md"
