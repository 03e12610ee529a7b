#!/usr/bin/python3
"""Helper for bench/recording.sh (Python 3 standard library only).

Subcommands:
  freeport                         print a free TCP port on 127.0.0.1
  portfree PORT                    exit 0 if 127.0.0.1:PORT can be bound, 1 if not
  config N CAMSIM_PORT HTTP_PORT DATA_DIR
                                   print a Cradle config recording cam1..camN
  cradle-ready HTTP_PORT N         exit 0 when /metrics shows N cameras, all recording;
                                   1 otherwise (prints the counts)
  window --seconds S --out FILE --pids P... [--camsim PID] [--metrics URL] [--meta K=V]...
                                   sample the recorder processes, sleep S, sample again,
                                   write the two samples and the deltas as JSON
  annotate FILE K=V...             add fields to a run JSON (after the recorder stopped)
  report --runs DIR --machine FILE --command CMD --md OUT.md --json OUT.json
                                   aggregate every run JSON into the results
"""

import argparse
import glob
import json
import os
import socket
import statistics
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
FPS = 25


# ---------------------------------------------------------------- helpers

def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode("utf-8")


def proc_cpu_ticks(pid):
    """utime + stime (fields 14 and 15 of /proc/PID/stat), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # Field 2 (comm) is in parentheses and may contain spaces: split after the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    state = rest[0]            # field 3
    utime = int(rest[11])      # field 14
    stime = int(rest[12])      # field 15
    return utime, stime, state


def proc_status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def proc_pss_kb(pid):
    """Proportional set size: shared pages (libraries) split between the processes mapping them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_ticks():
    """(busy, iowait, total) ticks over all CPUs from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, iowait, busy + idle + iowait


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def parse_metrics(text):
    """Sums the per-camera counters of interest over all cameras."""
    want = {
        "cradle_camera_frames_total": "frames",
        "cradle_camera_frames_dropped_total": "dropped",
        "cradle_camera_reconnects_total": "reconnects",
        "cradle_camera_bytes_total": "bytes",
        "cradle_camera_segments_total": "segments",
    }
    out = {k: 0 for k in want.values()}
    cams = set()
    recording = 0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{")
        if not rest:
            continue
        labels, _, value = rest.rpartition("}")
        value = float(value.strip())
        if name in want:
            out[want[name]] += int(value)
            cams.add(labels)
        elif name == "cradle_camera_recording":
            recording += int(value)
    out["cameras"] = len(cams)
    out["recording"] = recording
    return out


def sample(pids, camsim, metrics_url):
    t = time.monotonic()
    wall = time.time()
    procs = []
    for pid in pids:
        u, s, st = proc_cpu_ticks(pid)
        procs.append({
            "pid": pid, "utime": u, "stime": s, "state": st,
            "rss_kb": proc_status_kb(pid, "VmRSS"),
            "hwm_kb": proc_status_kb(pid, "VmHWM"),
            "pss_kb": proc_pss_kb(pid),
            "threads": proc_status_kb(pid, "Threads"),
        })
    t_proc = time.monotonic()
    cs = None
    if camsim:
        u, s, _ = proc_cpu_ticks(camsim)
        cs = u + s
    busy, iowait, total = machine_ticks()
    out = {
        "t": t, "wall": wall, "proc_read_s": t_proc - t,
        "procs": procs,
        "cpu_ticks": sum(p["utime"] + p["stime"] for p in procs),
        "rss_kb": sum(p["rss_kb"] for p in procs),
        "hwm_kb": sum(p["hwm_kb"] for p in procs),
        "pss_kb": sum(p["pss_kb"] for p in procs),
        "camsim_ticks": cs,
        "machine_busy_ticks": busy, "machine_iowait_ticks": iowait, "machine_total_ticks": total,
        "loadavg": loadavg(),
    }
    if metrics_url:
        out["metrics"] = parse_metrics(http_get(metrics_url))
    return out


# ---------------------------------------------------------------- subcommands

def cmd_freeport(_):
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port_free(port):
            print(port)
            return 0
    print("no free port found", file=sys.stderr)
    return 1


def cmd_portfree(a):
    return 0 if port_free(a.port) else 1


def cmd_config(a):
    lines = [
        "# Written by bench/recording.sh",
        "[server]",
        f'listen = "127.0.0.1:{a.http_port}"',
        f'data_dir = "{a.data_dir}"',
        "",
        "[recording]",
        "segment_seconds = 60",
        "",
        "# Recording alone, like ffmpeg -c copy: no snapshot in the window (the first pass",
        "# runs before any camera is connected). bench/snapshot.sh measures snapshots.",
        "[snapshots]",
        "interval_seconds = 3600",
    ]
    for k in range(1, a.n + 1):
        lines += ["", "[[cameras]]", f'id = "cam{k}"', f'url = "rtsp://127.0.0.1:{a.camsim_port}/cam{k}"']
    print("\n".join(lines))
    return 0


def cmd_cradle_ready(a):
    # /metrics needs no session (the camera list does, since accounts exist).
    try:
        m = parse_metrics(http_get(f"http://127.0.0.1:{a.http_port}/metrics", timeout=5))
    except Exception as e:  # not listening yet
        print(f"metrics: {e}")
        return 1
    print(f"cameras={m['cameras']} recording={m['recording']}")
    return 0 if m["cameras"] == a.n and m["recording"] == a.n else 1


def parse_kv(items):
    out = {}
    for kv in items:
        k, _, v = kv.partition("=")
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                pass
        out[k] = v
    return out


def cmd_annotate(a):
    with open(a.file) as f:
        run = json.load(f)
    run.update(parse_kv(a.kv))
    with open(a.file, "w") as f:
        json.dump(run, f, indent=1)
    return 0


def cmd_window(a):
    meta = parse_kv(a.meta)
    start = sample(a.pids, a.camsim, a.metrics)
    # RSS every few seconds in between: the value at the end is what the table reports,
    # the series shows what segment closes do to it.
    rss_series = [[0.0, start["rss_kb"]]]
    while True:
        left = a.seconds - (time.monotonic() - start["t"])
        if left <= 0:
            break
        time.sleep(min(left, a.rss_every))
        if a.seconds - (time.monotonic() - start["t"]) > 0.5:
            kb = 0
            for pid in a.pids:
                try:
                    kb += proc_status_kb(pid, "VmRSS")
                except OSError:
                    pass
            rss_series.append([round(time.monotonic() - start["t"], 1), kb])
    end = sample(a.pids, a.camsim, a.metrics)
    rss_series.append([round(end["t"] - start["t"], 1), end["rss_kb"]])
    elapsed = end["t"] - start["t"]
    cpu_s = (end["cpu_ticks"] - start["cpu_ticks"]) / CLK_TCK
    n = int(meta.get("n", len(a.pids)))
    run = dict(meta)
    run.update({
        "n": n,
        "repeat": int(meta.get("repeat", 1)),
        "window_nominal_s": a.seconds,
        "window_s": elapsed,
        "clk_tck": CLK_TCK,
        "cpu_s": cpu_s,
        "cpu_utime_s": sum(e["utime"] - s["utime"] for s, e in zip(start["procs"], end["procs"])) / CLK_TCK,
        "cpu_stime_s": sum(e["stime"] - s["stime"] for s, e in zip(start["procs"], end["procs"])) / CLK_TCK,
        "cpu_s_per_stream_hour": cpu_s / n / (elapsed / 3600.0),
        "cpu_cores": cpu_s / elapsed,
        "rss_kb_total": end["rss_kb"],
        "rss_kb_per_stream": end["rss_kb"] / n,
        "hwm_kb_total": end["hwm_kb"],
        "pss_kb_total": end["pss_kb"],
        "rss_kb_min_in_window": min(kb for _, kb in rss_series),
        "rss_kb_max_in_window": max(kb for _, kb in rss_series),
        "rss_kb_series": rss_series,
        "processes": len(a.pids),
        "processes_alive_at_end": sum(1 for p in end["procs"] if p["state"] not in ("Z", "X")),
        "loadavg_before": start["loadavg"],
        "loadavg_after": end["loadavg"],
    })
    busy = (end["machine_busy_ticks"] - start["machine_busy_ticks"]) / CLK_TCK
    total = (end["machine_total_ticks"] - start["machine_total_ticks"]) / CLK_TCK
    run["machine_busy_cores"] = busy / elapsed
    run["machine_iowait_cores"] = (end["machine_iowait_ticks"] - start["machine_iowait_ticks"]) / CLK_TCK / elapsed
    run["machine_cores_seen"] = total / elapsed
    if a.camsim:
        camsim_s = (end["camsim_ticks"] - start["camsim_ticks"]) / CLK_TCK
        run["camsim_cpu_s"] = camsim_s
        run["other_busy_cores"] = (busy - cpu_s - camsim_s) / elapsed
    if a.metrics:
        ms, me = start["metrics"], end["metrics"]
        d = {k: me[k] - ms[k] for k in ("frames", "dropped", "reconnects", "bytes", "segments")}
        expected = FPS * elapsed * n
        run["frames"] = {
            "received": d["frames"],
            "expected": expected,
            "received_over_expected": d["frames"] / expected if expected else None,
            "dropped": d["dropped"],
            "reconnects": d["reconnects"],
            "bytes": d["bytes"],
            "mbit_per_s_per_stream": d["bytes"] * 8 / 1e6 / elapsed / n,
            "segments_closed": d["segments"],
            "cameras": me["cameras"],
            "recording_at_start": ms["recording"],
            "recording_at_end": me["recording"],
            "total_at_end": me["frames"],
            "dropped_total_at_end": me["dropped"],
        }
    run["samples"] = {"start": start, "end": end}
    with open(a.out, "w") as f:
        json.dump(run, f, indent=1)
    line = (f"  {run.get('recorder', '?'):7s} N={n:<3d} window {elapsed:6.1f} s: "
            f"{cpu_s:7.2f} CPU-s ({run['cpu_cores'] * 100:5.1f}% of a core), "
            f"{run['cpu_s_per_stream_hour']:7.2f} CPU-s/stream-h, RSS {end['rss_kb'] / 1024:7.1f} MB; "
            f"load {start['loadavg'][0]:.2f}->{end['loadavg'][0]:.2f}")
    if a.metrics:
        fr = run["frames"]
        line += (f"; frames {fr['received']}/{fr['expected']:.0f} "
                 f"({fr['received_over_expected'] * 100:.2f}%), dropped {fr['dropped']}, reconnects {fr['reconnects']}")
    print(line, flush=True)
    return 0


# ---------------------------------------------------------------- report

def med(xs):
    return statistics.median(xs) if xs else None


def fmt_range(xs, digits=1):
    """median, plus (min–max) when there is more than one value."""
    if not xs:
        return "—"
    m = f"{med(xs):.{digits}f}"
    if len(xs) > 1:
        m += f" ({min(xs):.{digits}f}–{max(xs):.{digits}f})"
    return m


def cmd_report(a):
    with open(a.machine) as f:
        machine = json.load(f)
    runs = []
    for p in sorted(glob.glob(os.path.join(a.runs, "*.json"))):
        with open(p) as f:
            r = json.load(f)
        r.pop("samples", None)
        runs.append(r)
    ns = sorted({r["n"] for r in runs})
    summary = []
    for n in ns:
        rs = [r for r in runs if r["n"] == n]
        by = {rec: sorted((r for r in rs if r["recorder"] == rec), key=lambda r: r["repeat"])
              for rec in ("cradle", "ffmpeg")}
        s = {"n": n, "repeats": max(len(by["cradle"]), len(by["ffmpeg"]))}
        for rec, lst in by.items():
            cpu = [r["cpu_s_per_stream_hour"] for r in lst]
            rss = [r["rss_kb_total"] / 1024 for r in lst]
            s[rec] = {
                "cpu_s_per_stream_hour": cpu,
                "cpu_s_per_stream_hour_median": med(cpu),
                "rss_mb_total": rss,
                "rss_mb_total_median": med(rss),
                "rss_mb_per_stream_median": med(rss) / n if rss else None,
                "pss_mb_total_median": med([r.get("pss_kb_total", 0) / 1024 for r in lst]),
                "hwm_mb_total_median": med([r.get("hwm_kb_total", 0) / 1024 for r in lst]),
                "sys_share_median": med([r["cpu_stime_s"] / r["cpu_s"] for r in lst if r["cpu_s"] > 0]),
                "user_s_per_stream_hour_median": med([r["cpu_utime_s"] / n / (r["window_s"] / 3600) for r in lst]),
                "sys_s_per_stream_hour_median": med([r["cpu_stime_s"] / n / (r["window_s"] / 3600) for r in lst]),
                "cpu_cores_median": med([r["cpu_cores"] for r in lst]),
                "processes_alive_at_end": [r["processes_alive_at_end"] for r in lst],
                "errors": [r.get("errors", 0) for r in lst],
            }
        # Ratios are paired within a repeat (the two recorders ran back to back).
        pairs = {}
        for r in rs:
            pairs.setdefault(r["repeat"], {})[r["recorder"]] = r["cpu_s_per_stream_hour"]
        ratios = [p["cradle"] / p["ffmpeg"] for _, p in sorted(pairs.items())
                  if "cradle" in p and "ffmpeg" in p and p["ffmpeg"] > 0]
        s["ratio_cradle_over_ffmpeg"] = ratios
        s["ratio_median"] = med(ratios)
        fr = [r["frames"] for r in by["cradle"] if "frames" in r]
        s["cradle_frames"] = {
            "received": sum(x["received"] for x in fr),
            "expected": sum(x["expected"] for x in fr),
            "dropped": sum(x["dropped"] for x in fr),
            "reconnects": sum(x["reconnects"] for x in fr),
        }
        loads = [r["loadavg_before"][0] for r in rs] + [r["loadavg_after"][0] for r in rs]
        s["loadavg1_min"] = min(loads)
        s["loadavg1_max"] = max(loads)
        s["other_busy_cores_max"] = max(r.get("other_busy_cores", 0) for r in rs)
        summary.append(s)

    # ---- Markdown
    md = []
    md.append("# Recording benchmark: Cradle vs `ffmpeg -c copy -f segment`")
    md.append("")
    md.append("Written by `bench/recording.sh` (see [bench/README.md](../README.md) for the method). "
              "Overwritten by every run.")
    md.append("")
    md.append(f"- Command: `{a.command}`")
    md.append(f"- Machine: {machine['line']}")
    md.append(f"- Cradle binary: `{machine['cradle_bin']}` ({machine['cradle_version']}), "
              f"git `{machine['git']}`")
    md.append(f"- Parameters: window {machine['window']} s, warmup {machine['warmup']} s, "
              f"repeats {machine['repeats']}, N = {' '.join(map(str, ns))}; "
              f"camsim 1920x1080 25 fps H.264 ~4.2 Mbit/s, GOP 50; Cradle `segment_seconds = 60`")
    md.append(f"- Started {machine['date']}, finished {machine.get('finished', '?')}")
    md.append("")
    table = []
    table.append("| N | Cradle CPU-s / stream-h | ffmpeg CPU-s / stream-h | Cradle / ffmpeg "
                 "| Cradle RSS total (MB) | Cradle RSS / stream (MB) "
                 "| ffmpeg RSS total (MB) | ffmpeg RSS / stream (MB) "
                 "| Cradle frames received / expected | Cradle frames dropped | PSS total Cradle / ffmpeg (MB) |")
    table.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        c, f_ = s["cradle"], s["ffmpeg"]
        fr = s["cradle_frames"]
        pct = f"{fr['received'] / fr['expected'] * 100:.2f}%" if fr["expected"] else "—"
        table.append(
            f"| {s['n']} | {fmt_range(c['cpu_s_per_stream_hour'])} | {fmt_range(f_['cpu_s_per_stream_hour'])} "
            f"| {fmt_range(s['ratio_cradle_over_ffmpeg'], 3)} "
            f"| {fmt_range(c['rss_mb_total'])} | {c['rss_mb_per_stream_median']:.1f} "
            f"| {fmt_range(f_['rss_mb_total'])} | {f_['rss_mb_per_stream_median']:.1f} "
            f"| {fr['received']} / {fr['expected']:.0f} ({pct}) | {fr['dropped']} "
            f"| {c['pss_mb_total_median']:.1f} / {f_['pss_mb_total_median']:.1f} |")
    md += table
    md.append("")
    md.append("Values are medians over repeats (min–max in parentheses when repeats > 1). "
              "CPU-s / stream-h = (utime + stime of the recorder processes over the window) / N / "
              "(window / 3600 s); the ratio is computed per repeat from the two back-to-back runs, then "
              "the median taken. RSS is VmRSS at the end of the window (ffmpeg: summed over its N "
              "processes, so ffmpeg's shared libraries count once per process, as they do in a per-camera "
              "container setup); PSS (/proc/PID/smaps_rollup) splits shared pages between processes instead. "
              "Expected frames = 25 fps × window × N. The user/system split comes from the kernel's "
              "tick sampling (the total is exact to a tick): it is unreliable for runs of a few dozen ticks, "
              "such as N=1.")
    md.append("")

    # ---- Reading (generated from the numbers)
    parts = []
    for s in summary:
        r = s["ratio_median"]
        if r is None:
            continue
        parts.append(f"N={s['n']}: Cradle {s['cradle']['cpu_s_per_stream_hour_median']:.1f} vs ffmpeg "
                     f"{s['ffmpeg']['cpu_s_per_stream_hour_median']:.1f} CPU-s per stream-hour "
                     f"({r:.2f}×, {'under' if r < 0.2 else 'not under'} the 0.2× target)")
    reading = "Reading: " + "; ".join(parts) + "."
    split = []
    for s in summary:
        c, f_ = s["cradle"], s["ffmpeg"]
        if c["user_s_per_stream_hour_median"] is None or f_["user_s_per_stream_hour_median"] is None:
            continue
        split.append(f"N={s['n']}: user {c['user_s_per_stream_hour_median']:.1f} vs "
                     f"{f_['user_s_per_stream_hour_median']:.1f}, system {c['sys_s_per_stream_hour_median']:.1f} vs "
                     f"{f_['sys_s_per_stream_hour_median']:.1f}")
    if split:
        reading += (" Split into user and system (kernel) time, Cradle vs ffmpeg in CPU-s per stream-hour: "
                    + "; ".join(split) + ".")
    s10 = next((s for s in summary if s["n"] == 10), None)
    if s10:
        v = s10["cradle"]["cpu_s_per_stream_hour_median"]
        reading += (f" The N=10 goal of ≤ 3.5 CPU-s per stream-hour is "
                    f"{'met' if v <= 3.5 else 'not met'} ({v:.1f}).")
    def lost(s):
        fr = s["cradle_frames"]
        # Cradle counts a frame when its capture thread reads it, once per tick (500 ms to
        # 2.5 s apart, up to 63 frames at 25 fps), so either window edge may fall a tick
        # late. Dropped frames and reconnects are counted exactly.
        tol = (2 + 63) * s["n"] * max(1, s["repeats"])
        return fr["dropped"] > 0 or fr["reconnects"] > 0 or fr["expected"] - fr["received"] > tol

    for s in summary:
        s["frames_lost"] = lost(s)
    biggest = summary[-1] if summary else None
    if biggest:
        fr = biggest["cradle_frames"]
        bad = [str(s["n"]) for s in summary if s["frames_lost"]]
        verdict = (f"frames WERE lost (at N = {', '.join(bad)})" if bad
                   else "no frame was lost at any N")
        reading += (f" At N={biggest['n']} Cradle received {fr['received']} of {fr['expected']:.0f} expected "
                    f"frames ({fr['received'] / fr['expected'] * 100:.2f}%), dropped {fr['dropped']} and "
                    f"reconnected {fr['reconnects']} times; {verdict} (a shortfall of up to 65 frames per "
                    f"stream is sampling at the window edges: Cradle counts frames as its capture thread "
                    f"reads them, once per tick, 500 ms to 2.5 s apart).")
        per_stream = [s["cradle"]["rss_mb_per_stream_median"] for s in summary]
        ff = [s["ffmpeg"]["rss_mb_per_stream_median"] for s in summary]
        ff_pss = [s["ffmpeg"]["pss_mb_total_median"] / s["n"] for s in summary]
        if len(summary) > 1:
            cm = (f"goes from {per_stream[0]:.1f} MB at N={summary[0]['n']} "
                  f"to {per_stream[-1]:.1f} MB at N={biggest['n']}")
        else:
            cm = f"is {per_stream[0]:.1f} MB at N={biggest['n']}"
        ff_r = f"{min(ff):.1f}–{max(ff):.1f}" if len(summary) > 1 else f"{ff[0]:.1f}"
        ff_p = f"{min(ff_pss):.1f}–{max(ff_pss):.1f}" if len(summary) > 1 else f"{ff_pss[0]:.1f}"
        reading += (f" Cradle's resident memory per stream {cm} (one process for all cameras), "
                    f"against {ff_r} MB RSS ({ff_p} MB PSS) "
                    f"per ffmpeg process.")
        br = [r for r in runs if r["n"] == biggest["n"] and r["recorder"] == "cradle" and "rss_kb_min_in_window" in r]
        if br:
            reading += (f" During the N={biggest['n']} window Cradle's RSS ranged "
                        f"{min(r['rss_kb_min_in_window'] for r in br) / 1024:.0f}–"
                        f"{max(r['rss_kb_max_in_window'] for r in br) / 1024:.0f} MB "
                        f"(peak since start {max(r['hwm_kb_total'] for r in br) / 1024:.0f} MB).")
    busy = max((s["other_busy_cores_max"] for s in summary), default=0)
    lmax = max((s["loadavg1_max"] for s in summary), default=0)
    if busy > 0.25:
        reading += (f" The machine was otherwise busy during some windows (up to {busy:.2f} cores used by "
                    f"other processes, 1-min load average up to {lmax:.2f}), so absolute numbers are noisier "
                    f"than the same-run ratios.")
    else:
        reading += (f" The machine was otherwise quiet (at most {busy:.2f} cores used by other processes "
                    f"in any window; 1-min load average up to {lmax:.2f}, which includes the recorders).")
    md.append(reading)
    md.append("")

    # ---- Per-run detail
    md.append("## Runs")
    md.append("")
    md.append("In the order they ran. *RSS* and *PSS* are at the end of the window; *RSS range* is the "
              "lowest and highest of the samples taken every 5 s during the window; *peak RSS* is VmHWM, the "
              "high-water mark since start (summed for ffmpeg). *Other* = machine-wide busy "
              "CPU (/proc/stat) minus the recorder and camsim, in cores: how busy the rest of the machine "
              "was during the window (tick-sampled, so only good to about ±0.1 core; it can come out "
              "slightly negative).")
    md.append("")
    md.append("| N | repeat | recorder | window (s) | CPU-s (user + sys) | % of a core | CPU-s / stream-h "
              "| RSS (MB) | PSS (MB) | RSS range in window (MB) | peak RSS (MB) "
              "| camsim CPU-s | other (cores) | iowait (cores) | load 1m before → after | alive | errors | notes |")
    md.append("|---:|---:|:--|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--|---:|---:|:--|")
    for r in sorted(runs, key=lambda r: r.get("seq", 0)):
        notes = []
        if "frames" in r:
            fr = r["frames"]
            notes.append(f"frames {fr['received']}/{fr['expected']:.0f}, dropped {fr['dropped']}, "
                         f"reconnects {fr['reconnects']}, {fr['mbit_per_s_per_stream']:.2f} Mbit/s/stream")
        if r.get("written_mb") is not None:
            notes.append(f"{float(r['written_mb']):.0f} MB written")
        if r.get("stop_s") is not None:
            notes.append(f"stopped in {float(r['stop_s']):.1f} s")
        md.append(
            f"| {r['n']} | {r['repeat']} | {r['recorder']} | {r['window_s']:.1f} "
            f"| {r['cpu_s']:.2f} ({r['cpu_utime_s']:.2f} + {r['cpu_stime_s']:.2f}) "
            f"| {r['cpu_cores'] * 100:.1f} | {r['cpu_s_per_stream_hour']:.2f} | {r['rss_kb_total'] / 1024:.1f} "
            f"| {r.get('pss_kb_total', 0) / 1024:.1f} "
            f"| {r.get('rss_kb_min_in_window', 0) / 1024:.0f}–{r.get('rss_kb_max_in_window', 0) / 1024:.0f} "
            f"| {r.get('hwm_kb_total', 0) / 1024:.1f} "
            f"| {r.get('camsim_cpu_s', 0):.2f} | {r.get('other_busy_cores', 0):.2f} "
            f"| {r.get('machine_iowait_cores', 0):.2f} "
            f"| {r['loadavg_before'][0]:.2f} → {r['loadavg_after'][0]:.2f} "
            f"| {r['processes_alive_at_end']}/{r['processes']} | {r.get('errors', 0)} | {'; '.join(notes)} |")
    md.append("")
    if machine.get("notes"):
        md.append("## Notes")
        md.append("")
        for n_ in machine["notes"]:
            md.append(f"- {n_}")
        md.append("")
    md.append("Raw numbers: [recording.json](recording.json).")
    md.append("")

    with open(a.md, "w") as f:
        f.write("\n".join(md))
    with open(a.json, "w") as f:
        json.dump({"command": a.command, "machine": machine, "summary": summary, "runs": runs}, f, indent=1)
    print()
    print("\n".join(table))
    print()
    print(reading)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("freeport")
    x = sub.add_parser("portfree")
    x.add_argument("port", type=int)
    x = sub.add_parser("config")
    x.add_argument("n", type=int)
    x.add_argument("camsim_port", type=int)
    x.add_argument("http_port", type=int)
    x.add_argument("data_dir")
    x = sub.add_parser("cradle-ready")
    x.add_argument("http_port", type=int)
    x.add_argument("n", type=int)
    x = sub.add_parser("window")
    x.add_argument("--seconds", type=float, required=True)
    x.add_argument("--out", required=True)
    x.add_argument("--pids", type=int, nargs="+", required=True)
    x.add_argument("--camsim", type=int)
    x.add_argument("--metrics")
    x.add_argument("--rss-every", type=float, default=5.0)
    x.add_argument("--meta", action="append", default=[], help="KEY=VALUE stored in the run record")
    x = sub.add_parser("annotate")
    x.add_argument("file")
    x.add_argument("kv", nargs="*", help="KEY=VALUE added to the run record")
    x = sub.add_parser("report")
    x.add_argument("--runs", required=True)
    x.add_argument("--machine", required=True)
    x.add_argument("--command", required=True)
    x.add_argument("--md", required=True)
    x.add_argument("--json", required=True)
    a = p.parse_args()
    return {
        "freeport": cmd_freeport, "portfree": cmd_portfree, "config": cmd_config,
        "cradle-ready": cmd_cradle_ready, "window": cmd_window, "report": cmd_report,
        "annotate": cmd_annotate,
    }[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
