#!/usr/bin/env bash
# Recording benchmark: CPU-seconds per camera-hour and resident memory per stream of
# Cradle and of one `ffmpeg -c copy -f segment` per stream, recording the same camsim
# streams in the same run, alternately. See bench/README.md.
#
#   bench/recording.sh [--window SECONDS] [--warmup SECONDS] [--repeats R] [--no-build] [N ...]
#
# Defaults: --window 90 --warmup 15 --repeats 1, N = 1 10 50.
# Results: bench/results/recording.md (table) and bench/results/recording.json (raw).
# Environment: CRADLE_BIN=/path/to/cradle uses that binary instead of target/release/cradle
# (implies nothing about building: pass --no-build to skip `cargo build`).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
PY=/usr/bin/python3
UTIL="$BENCH_DIR/recording_util.py"
WORK="$BENCH_DIR/work"
RESULTS="$BENCH_DIR/results"
FPS=25

usage() {
    sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}
die() { echo "recording.sh: error: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# The command line as typed, for the results file.
CMDLINE="bench/recording.sh"
for a in "$@"; do CMDLINE+=" $(printf '%q' "$a")"; done
[[ -n "${CRADLE_BIN:-}" ]] && CMDLINE="CRADLE_BIN=$(printf '%q' "$CRADLE_BIN") $CMDLINE"

WINDOW=90
WARMUP=15
REPEATS=1
BUILD=1
NS=()
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
while (($#)); do
    case "$1" in
        --window) [[ $# -ge 2 ]] && is_uint "$2" && (($2 > 0)) || die "--window needs a positive number of seconds"; WINDOW=$2; shift 2 ;;
        --warmup) [[ $# -ge 2 ]] && is_uint "$2" || die "--warmup needs a number of seconds"; WARMUP=$2; shift 2 ;;
        --repeats) [[ $# -ge 2 ]] && is_uint "$2" && (($2 > 0)) || die "--repeats needs a positive integer"; REPEATS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) is_uint "$1" && (($1 > 0)) || die "N must be a positive integer, got '$1'"; NS+=("$1"); shift ;;
    esac
done
((${#NS[@]})) || NS=(1 10 50)

# ------------------------------------------------------------------ prerequisites
[[ -x "$PY" ]] || die "$PY is needed (standard library only)"
command -v ffmpeg >/dev/null || die "ffmpeg is not installed (Debian: apt-get install ffmpeg); the benchmark compares against it"
FFMPEG=$(command -v ffmpeg)
FFMPEG_VERSION=$("$FFMPEG" -hide_banner -version 2>/dev/null | head -1 | sed 's/ Copyright.*//' || true)
[[ "$FFMPEG_VERSION" == ffmpeg* ]] || die "'$FFMPEG -version' did not run"
CLK_TCK=$(getconf CLK_TCK)

cd "$ROOT"
if ((BUILD)); then
    log "cargo build --release --locked"
    cargo build --release --locked
fi
CRADLE_BIN=${CRADLE_BIN:-$ROOT/target/release/cradle}
[[ -x "$CRADLE_BIN" ]] || die "$CRADLE_BIN not found (build it, or set CRADLE_BIN)"
CRADLE_VERSION=$("$CRADLE_BIN" --version 2>/dev/null || echo "cradle ?")

# ------------------------------------------------------------------ process bookkeeping
PIDS=()        # every process this script started and has not reaped yet
forget() {     # forget PID...: drop from PIDS
    local p q keep_it keep=()
    for q in "${PIDS[@]+"${PIDS[@]}"}"; do
        keep_it=1
        for p in "$@"; do
            if [[ "$q" == "$p" ]]; then keep_it=0; fi
        done
        if ((keep_it)); then keep+=("$q"); fi
    done
    PIDS=("${keep[@]+"${keep[@]}"}")
}
alive() {      # alive PID: running (not gone, not a zombie)
    local st
    st=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$st" && "$st" != Z && "$st" != X ]]
}
STOP_S=0
stop() {       # stop TIMEOUT PID...: SIGTERM, wait up to TIMEOUT s, then SIGKILL; reap
    local timeout=$1 p t0 left
    shift
    (($#)) || return 0
    t0=$(date +%s.%N)
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    local deadline=$(($(date +%s) + timeout))
    while :; do
        left=0
        for p in "$@"; do
            if alive "$p"; then left=$((left + 1)); fi
        done
        if ((left == 0)); then break; fi
        if (($(date +%s) >= deadline)); then
            log "  $left process(es) still running ${timeout}s after SIGTERM: SIGKILL"
            for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
            break
        fi
        sleep 0.2
    done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
    forget "$@"
    STOP_S=$("$PY" -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$t0")
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((${#PIDS[@]})); then
        echo "recording.sh: stopping ${#PIDS[@]} process(es) it started" >&2
        stop 20 "${PIDS[@]}" || true
    fi
    rm -rf "$WORK/data"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
fresh_port() {
    local p
    p=$("$PY" "$UTIL" freeport) || die "no free TCP port"
    "$PY" "$UTIL" portfree "$p" || die "port $p is in use"
    echo "$p"
}
check_disk() { # check_disk N: enough space for one run of N streams?
    local need avail
    need=$(( $1 * 4200000 / 8 * (WARMUP + WINDOW + 60) * 12 / 10 + 512 * 1024 * 1024 ))
    avail=$(df --output=avail -B1 "$WORK" | tail -1 | tr -d ' ')
    ((avail > need)) || die "not enough disk in $WORK for N=$1: $((avail >> 20)) MB free, ~$((need >> 20)) MB needed"
}

# ------------------------------------------------------------------ machine
rm -rf "$WORK/data" "$WORK/logs" "$WORK/runs"
mkdir -p "$WORK/data" "$WORK/logs" "$WORK/runs" "$RESULTS"
GIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- . ':!bench' 2>/dev/null)" ]]; then
    GIT+=" (+ uncommitted changes outside bench/)"
fi
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM_GB=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
NOTES=()
[[ "$CRADLE_BIN" != "$ROOT/target/release/cradle" ]] && NOTES+=("Cradle binary given by CRADLE_BIN ($CRADLE_BIN), not target/release/cradle of this checkout.")
((BUILD)) || NOTES+=("Run with --no-build: the binary was not rebuilt by this run.")
MACHINE_LINE="$(nproc) CPUs ($CPU_MODEL), ${MEM_GB} GB RAM, $(uname -sr), $FFMPEG_VERSION, CLK_TCK $CLK_TCK"
BUSY_AT_START=$(ps -eo pcpu=,etime=,args= --sort=-pcpu | head -4 | cut -c1-140 | sed 's/^ *//' | paste -sd'|' || true)
export MACHINE_LINE CPU_MODEL GIT FFMPEG_VERSION CRADLE_BIN CRADLE_VERSION WINDOW WARMUP REPEATS CLK_TCK BUSY_AT_START
MACHINE_JSON="$WORK/machine.json"
"$PY" - "$MACHINE_JSON" "${NOTES[@]+"${NOTES[@]}"}" <<'EOF'
import json, os, subprocess, sys, time
e = os.environ
json.dump({
    "line": e["MACHINE_LINE"], "nproc": os.cpu_count(), "cpu_model": e["CPU_MODEL"],
    "kernel": os.uname().release, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "git": e["GIT"], "ffmpeg": e["FFMPEG_VERSION"], "cradle_bin": e["CRADLE_BIN"],
    "cradle_version": e["CRADLE_VERSION"], "window": int(e["WINDOW"]), "warmup": int(e["WARMUP"]),
    "repeats": int(e["REPEATS"]), "clk_tck": int(e["CLK_TCK"]),
    "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    "top_processes_at_start": e["BUSY_AT_START"].split("|"),
    "notes": sys.argv[2:],
}, open(sys.argv[1], "w"), indent=1)
EOF
log "machine: $MACHINE_LINE"
log "git $GIT; $CRADLE_VERSION ($CRADLE_BIN)"
log "window ${WINDOW}s, warmup ${WARMUP}s, repeats $REPEATS, N = ${NS[*]}; load $(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ one run
SEQ=0
CAMSIM_PID=
CAMSIM_PORT=

# wait_warmup RECORDER N FFMPEG_DIR PID...: waits WARMUP seconds from the start of the
# recorder(s), then on until every stream is flowing (Cradle: /metrics says all N
# cameras are recording; ffmpeg: every camK has a non-empty first segment).
wait_warmup() {
    local what=$1 n=$2 dir=$3; shift 3
    local start=$SECONDS deadline=$((SECONDS + WARMUP + 120)) status="" p k i ok
    while :; do
        for p in "$@"; do
            if ! alive "$p"; then die "$what exited during warmup (pid $p); see $WORK/logs"; fi
        done
        if ((SECONDS - start >= WARMUP)); then
            ok=1
            if [[ $what == cradle ]]; then
                status=$("$PY" "$UTIL" cradle-ready "$HTTP_PORT" "$n") || ok=0
            else
                k=0
                for ((i = 1; i <= n; i++)); do
                    if [[ -s "$dir/cam$i/out_00000.mp4" ]]; then k=$((k + 1)); fi
                done
                status="$k/$n writing"
                if ((k != n)); then ok=0; fi
            fi
            if ((ok)); then break; fi
            if ((SECONDS >= deadline)); then die "$what not ready $((WARMUP + 120))s after start: $status"; fi
        fi
        sleep 1
    done
    log "  $what: ready after $((SECONDS - start)) s ($status)"
}

run_one() { # run_one RECORDER N REPEAT ORDER
    local rec=$1 n=$2 rep=$3 order=$4
    SEQ=$((SEQ + 1))
    local tag
    tag=$(printf '%03d-n%d-r%d-%s' "$SEQ" "$n" "$rep" "$rec")
    local data="$WORK/data/$tag" out="$WORK/runs/$tag.json"
    local pids=() metrics_args=() errors=0 warnings=0 errlog
    check_disk "$n"
    mkdir -p "$data"
    alive "$CAMSIM_PID" || die "camsim died (see $WORK/logs/camsim-n$n.log)"
    log "N=$n repeat $rep: $rec (${order})"
    if [[ $rec == cradle ]]; then
        HTTP_PORT=$(fresh_port)
        "$PY" "$UTIL" config "$n" "$CAMSIM_PORT" "$HTTP_PORT" "$data/cradle-data" >"$data/cradle.toml"
        NO_COLOR=1 "$CRADLE_BIN" serve --config "$data/cradle.toml" >"$WORK/logs/$tag.log" 2>&1 &
        pids=($!)
        PIDS+=("${pids[@]}")
        wait_warmup cradle "$n" "" "${pids[@]}"
        metrics_args=(--metrics "http://127.0.0.1:$HTTP_PORT/metrics")
    else
        for ((k = 1; k <= n; k++)); do
            mkdir -p "$data/ffmpeg/cam$k"
            "$FFMPEG" -nostdin -loglevel error -rtsp_transport tcp -i "rtsp://127.0.0.1:$CAMSIM_PORT/cam$k" \
                -c copy -f segment -segment_time 60 -reset_timestamps 1 "$data/ffmpeg/cam$k/out_%05d.mp4" \
                >/dev/null 2>"$WORK/logs/$tag-cam$k.log" &
            pids+=($!)
            PIDS+=($!)
        done
        wait_warmup ffmpeg "$n" "$data/ffmpeg" "${pids[@]}"
    fi

    # In the background and waited for, so that a signal to this script acts at once.
    "$PY" "$UTIL" window --seconds "$WINDOW" --out "$out" --pids "${pids[@]}" --camsim "$CAMSIM_PID" \
        "${metrics_args[@]+"${metrics_args[@]}"}" \
        --meta "recorder=$rec" --meta "n=$n" --meta "repeat=$rep" --meta "seq=$SEQ" --meta "order=$order" &
    local wp=$!
    PIDS+=("$wp")
    wait "$wp" || die "measuring the window failed"
    forget "$wp"

    local died=0 p
    for p in "${pids[@]}"; do
        if ! alive "$p"; then died=$((died + 1)); fi
    done
    stop 120 "${pids[@]}"
    local written
    written=$(du -sm "$data" | cut -f1)
    if [[ $rec == cradle ]]; then
        errlog="$WORK/logs/$tag.log"
        errors=$(grep -c ' ERROR ' "$errlog" || true)
        warnings=$(grep -c ' WARN ' "$errlog" || true)
    else
        errors=$(cat "$WORK/logs/$tag"-cam*.log | wc -l)
        errlog="$WORK/logs/$tag-cam*.log"
    fi
    "$PY" "$UTIL" annotate "$out" "errors=$errors" "warnings=$warnings" "written_mb=$written" \
        "stop_s=$STOP_S" "died_during_window=$died" "log=${errlog#"$ROOT"/}"
    log "  stopped in ${STOP_S}s; ${written} MB written; $errors error line(s), $warnings warning(s)"
    if ((errors > 0)); then
        if [[ $rec == cradle ]]; then grep -m3 ' ERROR ' "$errlog" | cut -c1-200 >&2 || true
        else cat "$WORK/logs/$tag"-cam*.log | sort | uniq -c | sort -rn | head -3 | cut -c1-200 >&2 || true
        fi
    fi
    rm -rf "$data"
    sleep 3 # let writeback of the deleted footage and the teardown settle
}

# ------------------------------------------------------------------ main loop
for n in "${NS[@]}"; do
    CAMSIM_PORT=$(fresh_port)
    log "camsim: $n stream(s) on 127.0.0.1:$CAMSIM_PORT"
    "$CRADLE_BIN" camsim --listen "127.0.0.1:$CAMSIM_PORT" --streams "$n" >"$WORK/logs/camsim-n$n.log" 2>&1 &
    CAMSIM_PID=$!
    PIDS+=("$CAMSIM_PID")
    for ((i = 0; i < 50; i++)); do
        port_open "$CAMSIM_PORT" && break
        alive "$CAMSIM_PID" || die "camsim exited (see $WORK/logs/camsim-n$n.log)"
        sleep 0.2
    done
    port_open "$CAMSIM_PORT" || die "camsim is not listening on $CAMSIM_PORT"
    for ((rep = 1; rep <= REPEATS; rep++)); do
        if ((rep % 2 == 1)); then
            run_one cradle "$n" "$rep" "cradle first"
            run_one ffmpeg "$n" "$rep" "cradle first"
        else
            run_one ffmpeg "$n" "$rep" "ffmpeg first"
            run_one cradle "$n" "$rep" "ffmpeg first"
        fi
    done
    stop 20 "$CAMSIM_PID"
done

"$PY" - "$MACHINE_JSON" <<'EOF'
import json, sys, time
m = json.load(open(sys.argv[1]))
m["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
m["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
json.dump(m, open(sys.argv[1], "w"), indent=1)
EOF
"$PY" "$UTIL" report --runs "$WORK/runs" --machine "$MACHINE_JSON" --command "$CMDLINE" \
    --md "$RESULTS/recording.md" --json "$RESULTS/recording.json"
echo
log "wrote bench/results/recording.md and bench/results/recording.json"
