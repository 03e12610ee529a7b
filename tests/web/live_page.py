#!/usr/bin/python3
"""Plays a camera on the live page (/live) in headless Chromium over the DevTools
protocol, as a parent on a phone would: sign in, tap the camera, see video.

    live_page.py BASE_URL USERNAME PASSWORD CAMERA_ID [--trials N] [--screenshot F]
                 [--until-ended SECONDS] [--expect-refused CODE]

Prints one JSON object per line on stdout:
  {"event": "playing", "location": ..., "ttff_ms": [...], "frames_decoded": n, "codec": ..., "overlay": ...}
  with --until-ended: {"event": "ended", "ended": bool, "last_frame_wall": t, "message": ...}
  with --expect-refused: {"event": "refused", "message": ...}
ttff_ms is, per trial, the time from the WHEP POST leaving the page to the first
decoded frame (requestVideoFrameCallback). Exit 0 when every check holds; otherwise a
message on stderr and exit 1. Uses Debian's chromium and python3-websocket only.
"""
import argparse
import json
import sys
import time

from cdp import WEBRTC_FLAGS, Browser

PHONE_WIDTH = 390

# Wraps fetch so the page's WHEP POST time is known, and counts decoded frames.
PROBE = """
(() => {
  if (window.__probe) return true;
  window.__probe = { posts: [], frames: [] };
  const f = window.fetch;
  window.fetch = function (url, opts) {
    if (String(url).endsWith('/whep') && opts && opts.method === 'POST') window.__probe.posts.push(performance.now());
    return f.apply(this, arguments);
  };
  const v = document.getElementById('video');
  const cb = (now, meta) => { window.__probe.frames.push(now); v.requestVideoFrameCallback(cb); };
  v.requestVideoFrameCallback(cb);
  return true;
})()
"""

STATS = """
(async () => {
  const pc = window.cradleLive && window.cradleLive.pc;
  if (!pc) return null;
  const r = await pc.getStats();
  let out = null;
  r.forEach(s => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      const c = s.codecId && r.get(s.codecId);
      out = { decoded: s.framesDecoded || 0, keyframes: s.keyFramesDecoded || 0,
              codec: c ? c.mimeType : null, bytes: s.bytesReceived || 0 };
    }
  });
  return out;
})()
"""


def fail(msg):
    print(f"live_page.py: {msg}", file=sys.stderr)
    sys.exit(1)


def emit(obj):
    print(json.dumps(obj), flush=True)


# Where the page is, when a wait times out.
STATE = ("JSON.stringify({state: window.cradleLive && window.cradleLive.state,"
         " msg: (document.getElementById('msg')||{}).textContent})")


def tile(camera):
    return f"document.querySelector('li[data-camera=\"{camera}\"]')"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("username")
    ap.add_argument("password")
    ap.add_argument("camera")
    ap.add_argument("--trials", type=int, default=1)
    ap.add_argument("--screenshot")
    ap.add_argument("--until-ended", type=float)
    ap.add_argument("--expect-refused")
    a = ap.parse_args()

    with Browser(fail, WEBRTC_FLAGS) as page:
        page.phone(PHONE_WIDTH, 844)
        page.sign_in(a.base, "/live", a.username, a.password)
        page.describe = STATE
        page.wait(f"camera {a.camera} listed", f"!!{tile(a.camera)}")
        if not page.js("!!(window.RTCRtpReceiver && RTCRtpReceiver.getCapabilities('video').codecs"
                       ".some(c => c.mimeType === 'video/H264'))"):
            fail("this Chromium cannot receive H.264 over WebRTC")
        page.js(PROBE)

        if a.expect_refused:
            page.js(f"{tile(a.camera)}.querySelector('.play').click(); true")
            page.wait("the refusal", "window.cradleLive && window.cradleLive.state === 'error'")
            emit({"event": "refused", "message": page.js("document.getElementById('msg').textContent"),
                  "tile_reason": page.js(f"({tile(a.camera)}.querySelector('.reason')||{{}}).textContent || null")})
            return

        ttff = []
        for trial in range(a.trials):
            if trial:
                page.js("document.getElementById('stop').click(); true")
                page.wait("the stop", "window.cradleLive.state === 'idle'")
                time.sleep(0.3)
            n_posts = page.js("window.__probe.posts.length")
            n_frames = page.js("window.__probe.frames.length")
            page.js(f"{tile(a.camera)}.querySelector('.play').click(); true")
            page.wait("the first decoded frame",
                      f"window.__probe.posts.length > {n_posts} && window.__probe.frames.length > {n_frames}",
                      timeout=20, every=0.01)
            t = page.js(f"window.__probe.frames[{n_frames}] - window.__probe.posts[{n_posts}]")
            ttff.append(round(t, 1))
        page.wait("state playing", "window.cradleLive.state === 'playing'")
        stats = page.wait("decoded frames per getStats", f"(async () => {{ const s = await {STATS}; return s && s.decoded > 0 ? s : null; }})()")
        time.sleep(1.0)
        stats2 = page.js(STATS)
        if stats2["decoded"] <= stats["decoded"]:
            fail(f"frames stopped after the first ones: {stats} then {stats2}")
        overlay = page.js("(document.getElementById('overlay')||{}).textContent")
        has_controls = page.js("document.getElementById('video').controls")
        if has_controls:
            fail("the video shows controls (download)")
        if a.screenshot:
            page.screenshot(a.screenshot)
        emit({"event": "playing", "location": page.js("window.cradleLive.location"), "ttff_ms": ttff,
              "frames_decoded": stats2["decoded"], "keyframes_decoded": stats2["keyframes"],
              "codec": stats2["codec"], "overlay": overlay,
              "width": page.js("document.documentElement.scrollWidth")})

        if a.until_ended:
            last = stats2["decoded"]
            last_wall = time.time()
            end = time.time() + a.until_ended
            ended = False
            while time.time() < end:
                s = page.js(STATS)
                if s and s["decoded"] > last:
                    last, last_wall = s["decoded"], time.time()
                if page.js("window.cradleLive.state") == "ended":
                    ended = True
                    break
                time.sleep(0.05)
            emit({"event": "ended", "ended": ended, "last_frame_wall": last_wall,
                  "message": page.js("document.getElementById('msg').textContent")})


if __name__ == "__main__":
    main()
