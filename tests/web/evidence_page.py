#!/usr/bin/python3
"""Plays an approved evidence request on the evidence page (/evidence) in headless
Chromium over the DevTools protocol, as an investigator on a phone would: sign in, open
the request, pick the camera, wait for the day timeline, tap a recorded span, and see
the video decode frames that move, with the frame's wall-clock time inside the approved
range.

    evidence_page.py BASE_URL USERNAME PASSWORD REQUEST_ID CAMERA_ID SCREENSHOT.png [--seeks N]

Prints one JSON object on stdout:
  {"event": "played", "video_width": n, "spans": n, "gaps": n, "wall_time": RFC 3339 UTC,
   "wall_text": what the page shows, "day": local day shown, "clicked": RFC 3339 UTC, "window": {...}}
With --seeks N it then seeks N times inside the loaded file (spread over it, far apart
so most need bytes the browser has not fetched yet) and adds "seek_ms": the time from
setting currentTime to the first frame presented at the new position, per seek.
Exit 0 when every check holds; otherwise a message on stderr and exit 1. Uses Debian's
chromium and python3-websocket only.
"""
import json
import sys
import time
from datetime import datetime, timezone

from cdp import WEBRTC_FLAGS, Browser

PHONE_WIDTH = 390

# Where the page is, when a wait times out.
STATE = ("JSON.stringify({ev: window.cradleEvidence, timeline: (document.getElementById('timeline')||{}).dataset,"
         " msg: (document.getElementById('msg')||{}).textContent,"
         " note: (document.getElementById('player-note')||{}).textContent})")

# Counts the frames the video presents (requestVideoFrameCallback), from before the tap.
PROBE = """
(() => {
  const v = document.getElementById('video');
  window.__frames = 0;
  if (v.requestVideoFrameCallback) {
    const cb = () => { window.__frames++; v.requestVideoFrameCallback(cb); };
    v.requestVideoFrameCallback(cb);
  }
  return true;
})()
"""

# The longest recorded span's rectangle on screen and the time a fifth of the way into it
# (early enough that the half-hour window after it holds footage to play).
TARGET = """
(() => {
  const tl = document.getElementById('timeline');
  tl.scrollIntoView({block: 'center'});
  const spans = [...document.querySelectorAll('#track .span')];
  if (!spans.length) return null;
  const best = spans.map(s => [s, s.getBoundingClientRect()]).sort((a, b) => b[1].width - a[1].width)[0];
  const r = best[1], track = document.getElementById('track').getBoundingClientRect();
  const x = r.width < 6 ? r.left + r.width / 2 : r.left + Math.max(2, r.width * 0.2);
  const y = r.top + r.height / 2;
  const s = Date.parse(tl.dataset.start), e = Date.parse(tl.dataset.end);
  return {x, y, clicked: s + (x - track.left) / track.width * (e - s),
          span: [best[0].dataset.start, best[0].dataset.end]};
})()
"""


def fail(msg):
    print(f"evidence_page.py: {msg}", file=sys.stderr)
    sys.exit(1)


def ms(rfc3339):
    """RFC 3339 (Z or offset, any fraction) → ms since the epoch."""
    s = rfc3339.replace("Z", "+00:00")
    if "." in s:
        head, rest = s.split(".", 1)
        i = next((k for k, c in enumerate(rest) if not c.isdigit()), len(rest))
        s = f"{head}.{rest[:i][:6].ljust(6, '0')}{rest[i:]}"
    return datetime.fromisoformat(s).timestamp() * 1000


def utc(m):
    return datetime.fromtimestamp(m / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Seeks to `pos` seconds and resolves with the milliseconds until the frame at the new
# position is presented (requestVideoFrameCallback after `seeked`): the picture a user
# sees when they let go of the scrubber.
SEEK = """
((pos) => new Promise((resolve, reject) => {
  const v = document.getElementById('video');
  // Paused, so the end of the file (which makes the page load the next window) is
  // never reached between seeks.
  v.pause();
  const t0 = performance.now();
  const out = {pos, seeked_ms: null, frame_ms: null, media_time: null};
  const timer = setTimeout(() => resolve(out), 10000);
  v.requestVideoFrameCallback((now, meta) => {
    out.frame_ms = performance.now() - t0;
    out.media_time = meta.mediaTime;
    if (out.seeked_ms !== null) { clearTimeout(timer); resolve(out); }
  });
  v.addEventListener('seeked', () => {
    out.seeked_ms = performance.now() - t0;
    if (out.frame_ms !== null) { clearTimeout(timer); resolve(out); }
  }, {once: true});
  v.currentTime = pos;
}))
"""


def measure_seek(page, i, n):
    """The i-th of n seeks: alternately near the end and near the start of what is left,
    so consecutive seeks are far apart."""
    duration = page.js("document.getElementById('video').duration")
    if not duration or duration != duration or duration < 2:
        fail(f"cannot seek in a video of duration {duration}")
    frac = (i // 2) / max(1, n) * 0.45
    pos = duration * (0.95 - frac if i % 2 == 0 else 0.05 + frac)
    r = page.js(f"{SEEK}({pos:.3f})")
    if r["seeked_ms"] is None or r["frame_ms"] is None:
        fail(f"seeking to {pos:.1f} s of {duration:.1f}: no {'seeked event' if r['seeked_ms'] is None else 'frame'} "
             f"within 10 s ({r}); page: {page.js(STATE)}")
    if abs(r["media_time"] - pos) > 2.5:
        fail(f"seeking to {pos:.1f} s showed the frame at {r['media_time']:.1f} s")
    return round(max(r["seeked_ms"], r["frame_ms"]), 1)


def main():
    args = sys.argv[1:]
    seeks = 0
    if "--seeks" in args:
        i = args.index("--seeks")
        seeks = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 6:
        fail("usage: evidence_page.py BASE_URL USERNAME PASSWORD REQUEST_ID CAMERA_ID SCREENSHOT.png [--seeks N]")
    base, username, password, request_id, camera, shot = args
    row = f"document.querySelector('#requests tr[data-request-id=\"{request_id}\"]')"

    with Browser(fail, WEBRTC_FLAGS) as page:
        page.phone(PHONE_WIDTH, 1400)
        page.sign_in(base, "/evidence", username, password)
        page.describe = STATE

        # The request, approved and unexpired, is in the list with its "open" button.
        page.wait(f"request {request_id} listed", f"!!{row}")
        state = page.js(f"{row}.dataset.state")
        if state != "approved":
            fail(f"request {request_id} is {state!r}, not approved")
        page.js(f"{row}.querySelector('button.open').click(); true")
        page.wait("the request opened",
                  f"(() => {{ const r = document.getElementById('review');"
                  f" return !r.hidden && r.dataset.requestId === {json.dumps(request_id)}; }})()")

        # The camera, picked as a person would: the select, then its change event.
        picked = page.js(f"""(() => {{
            const s = document.getElementById('camera');
            if (![...s.options].some(o => o.value === {json.dumps(camera)})) return false;
            s.value = {json.dumps(camera)};
            s.dispatchEvent(new Event('change', {{bubbles: true}}));
            return true; }})()""")
        if not picked:
            cams = page.js("[...document.getElementById('camera').options].map(o => o.value)")
            fail(f"camera {camera!r} is not in request {request_id} (it has {cams})")

        # The day timeline with at least one recorded span: the page starts on the day of the
        # latest footage; when that day has none, the test tries the request's other days.
        days = page.js("[...document.getElementById('day').options].map(o => o.value)")
        first = page.js("document.getElementById('day').value")
        ready = ("(() => { const t = document.getElementById('timeline');"
                 f" return t.dataset.camera === {json.dumps(camera)} && ['ready', 'error'].includes(t.dataset.state)"
                 " && t.dataset.state; })()")
        for day in [first] + [d for d in days if d != first]:
            if day != page.js("document.getElementById('day').value"):
                page.js(f"(() => {{ const s = document.getElementById('day'); s.value = {json.dumps(day)};"
                        " s.dispatchEvent(new Event('change', {bubbles: true})); return true; })()")
            if page.wait("the timeline", ready, timeout=20) == "error":
                fail(f"the timeline did not load: {page.js(STATE)}")
            if page.js("document.querySelectorAll('#track .span').length") > 0:
                break
        else:
            fail(f"no recorded span on any day of request {request_id} for camera {camera}")
        spans = page.js("document.querySelectorAll('#track .span').length")
        gaps = page.js("document.querySelectorAll('#track .gap').length")

        # A tap inside a recorded span plays from there.
        page.js(PROBE)
        target = page.js(TARGET)
        if not target:
            fail("no span to tap")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            page.cmd("Input.dispatchMouseEvent", type=kind, x=target["x"], y=target["y"],
                     button="none" if kind == "mouseMoved" else "left", clickCount=0 if kind == "mouseMoved" else 1)
        page.wait("decoded video",
                  "(() => { const v = document.getElementById('video');"
                  " return v.readyState >= 2 && v.videoWidth > 0 && !!window.cradleEvidence.wallTime; })()",
                  timeout=30)
        before = page.js("({t: document.getElementById('video').currentTime, f: window.__frames})")
        time.sleep(1.5)
        after = page.js("({t: document.getElementById('video').currentTime, f: window.__frames,"
                        " paused: document.getElementById('video').paused})")
        if not (after["t"] > before["t"] or after["f"] > before["f"]):
            fail(f"the video does not advance (paused: {after['paused']}; currentTime {before['t']} → {after['t']};"
                 f" frames {before['f']} → {after['f']}); page: {page.js(STATE)}")

        info = page.js("({ev: window.cradleEvidence, text: document.getElementById('wall-time').textContent,"
                       " width: document.getElementById('video').videoWidth,"
                       " nodownload: document.getElementById('video').controlsList.contains('nodownload'),"
                       " msg: document.getElementById('msg').className === 'err' ? document.getElementById('msg').textContent : null,"
                       " page: document.documentElement.scrollWidth})")
        if info["msg"]:
            fail(f"the page shows an error: {info['msg']}")
        if not info["nodownload"]:
            fail("the video's controls offer a download")
        ev = info["ev"]
        wall = ms(ev["wallTime"])
        req_start, req_end = ms(ev["request"]["start"]), ms(ev["request"]["end"])
        if not (req_start - 1000 <= wall <= req_end + 1000):
            fail(f"frame time {ev['wallTime']} is outside the approved range {ev['request']}")
        # The file starts at the first keyframe at or after the tapped time.
        if not (target["clicked"] - 2000 <= wall <= target["clicked"] + 30 * 60e3):
            fail(f"frame time {ev['wallTime']} is not after the tapped time {utc(target['clicked'])}")
        if info["page"] > PHONE_WIDTH:
            fail(f"the page is {info['page']}px wide on a {PHONE_WIDTH}px phone")

        seek_ms = [measure_seek(page, i, seeks) for i in range(seeks)]

        page.screenshot(shot)
        print(json.dumps({"event": "played", "seek_ms": seek_ms, "video_width": info["width"], "spans": spans, "gaps": gaps,
                          "wall_time": ev["wallTime"], "wall_text": info["text"], "day": ev["day"],
                          "clicked": utc(target["clicked"]), "window": ev["window"]}), flush=True)


if __name__ == "__main__":
    main()
