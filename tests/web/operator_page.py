#!/usr/bin/python3
"""Works the operator console (/operator) in headless Chromium over the DevTools protocol,
as a member of staff on a phone would: sign in, switch the language, see a tile with a
loaded snapshot for every camera, confirm a camera's view, play a camera live and stop,
acknowledge the no_frames alarm of a camera that stopped, add a camera after a test
connection, and keep screenshots (phone and desktop).

    operator_page.py BASE_URL USERNAME PASSWORD --cameras ID,ID,... --killed ID
                     --add-url RTSP_URL --add-id ID --screenshot FILE.png
    operator_page.py BASE_URL USERNAME PASSWORD --expect-denied

Prints one JSON object per line on stdout, in this order:
  {"event": "grid", "cameras": {id: [natural width, height]}}  — the caller then stops the
      camera `--killed` (its camsim), so its no_frames alarm is raised while the script goes on
  {"event": "reference", "camera": id, "text": ...}
  {"event": "live", "camera": id, "location": ..., "frames": n, "video_width": n, "stopped": status}
  {"event": "acknowledged", "alarm": id, "note": ..., "server": {the alarm as the server has it}}
  {"event": "added", "camera": id, "codec": ..., "width": n, "height": n}
  {"event": "done", "screenshots": [paths], "snapshot_fetches": n}
With --expect-denied: {"event": "denied", "text": ...} (the account's role may not use it).
Exit 0 when every check holds; otherwise a message on stderr and exit 1. Uses Debian's
chromium and python3-websocket only.
"""
import argparse
import json
import os
import sys
import time

from cdp import WEBRTC_FLAGS, Browser

PHONE = (390, 844)
DESKTOP = (1280, 900)
NOTE = "camsim process stopped by the test; camera checked"

# Where the page is, when a wait times out.
STATE = ("JSON.stringify({href: location.href, op: window.cradleOperator && {lang: cradleOperator.lang,"
         " refreshes: cradleOperator.refreshes, cameras: cradleOperator.cameras, alarms: cradleOperator.alarms,"
         " live: {state: cradleOperator.live.state, error: cradleOperator.live.error, frames: cradleOperator.live.frames},"
         " form: cradleOperator.form},"
         " msg: (document.getElementById('msg')||{}).textContent,"
         " tiles: [...document.querySelectorAll('#cameras li[data-camera]')].map(li => li.dataset.camera + ':' + li.dataset.state + ':' + li.dataset.snapshot),"
         " alarms: [...document.querySelectorAll('#alarms li[data-alarm-id]')].map(li => li.dataset.alarmId + ':' + li.dataset.kind + ':' + li.dataset.camera + ':' + li.dataset.state),"
         " formResult: (document.getElementById('form-result')||{}).textContent})")

# Installed before the page's scripts: records every snapshot URL the page fetches, and
# the page's uncaught errors.
PROBE = """
window.__errors = [];
window.addEventListener('error', (e) => window.__errors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => window.__errors.push(String(e.reason)));
window.__snapshots = [];
const __fetch = window.fetch;
window.fetch = function (url, opts) {
  if (String(url).includes('/snapshot.jpg')) window.__snapshots.push(String(url));
  return __fetch.apply(this, arguments);
};
"""


def fail(msg):
    print(f"operator_page.py: {msg}", file=sys.stderr)
    sys.exit(1)


def emit(obj):
    print(json.dumps(obj), flush=True)


def q(s):
    return json.dumps(s)


def tile(cam):
    return f"document.querySelector('#cameras li[data-camera={q(cam)}]')"


def click(page, what, expr):
    """Clicks the element `expr` names (scrolled into view), failing with `what` if absent."""
    ok = page.js(f"(() => {{ const e = {expr}; if (!e) return false; e.scrollIntoView({{block: 'center'}}); e.click(); return true; }})()")
    if not ok:
        fail(f"{what}: no such element ({expr[:100]}); page: {page.js(STATE)}")


def check_languages(page, cameras):
    page.set_lang("zh")
    zh = page.js("({h1: document.querySelector('h1').textContent, html: document.documentElement.lang,"
                 " grid: document.querySelector('#grid-box h2').textContent,"
                 " live: (document.querySelector('#cameras li[data-camera] button.live') || {}).textContent || ''})")
    if zh["html"] != "zh-CN" or "值班台" not in zh["h1"] or "摄像头" not in zh["grid"] or zh["live"] != "实时":
        fail(f"after choosing Chinese the page should be in Chinese: {zh}")
    page.set_lang("en")
    en = page.js("({h1: document.querySelector('h1').textContent, html: document.documentElement.lang,"
                 " live: (document.querySelector('#cameras li[data-camera] button.live') || {}).textContent || ''})")
    if en["html"] != "en" or "operator console" not in en["h1"] or en["live"] != "Live":
        fail(f"after choosing English the page should be in English: {en}")
    # The choice outlives a reload.
    page.js("window.__before_reload = true")
    page.cmd("Page.reload")
    page.wait("the page after a reload", "!window.__before_reload && !!window.cradleOperator && window.cradleOperator.refreshes > 0", timeout=20)
    if page.js("window.cradleOperator.lang") != "en":
        fail("the saved language was not used after a reload")
    page.set_lang("zh")


def wait_grid(page, cameras):
    # Per camera: the snapshot decoded, the tile green (recording), and the figures an
    # operator reads filled in (frame rate, bitrate, last frame, coverage, days kept).
    ready = " && ".join(
        f"(() => {{ const li = {tile(c)}; const img = li && li.querySelector('img.snap');"
        " return !!img && li.dataset.snapshot === 'loaded' && img.complete && img.naturalWidth > 0"
        " && li.classList.contains('ok') && li.querySelectorAll('dt').length >= 5"
        " && /fps/.test(li.textContent) && /bit\\/s/.test(li.textContent) && /%/.test(li.textContent); })()"
        for c in cameras)
    page.wait(f"a green tile with a loaded snapshot, frame rate, bitrate and coverage for every camera ({', '.join(cameras)})",
              ready, timeout=60, every=0.25)
    sizes = page.js("Object.fromEntries([...document.querySelectorAll('#cameras li[data-camera]')].map(li =>"
                    " [li.dataset.camera, [li.querySelector('img.snap').naturalWidth, li.querySelector('img.snap').naturalHeight]]))")
    extra = sorted(set(sizes) - set(cameras))
    if extra:
        fail(f"the grid shows cameras that do not exist: {extra}")
    storage = page.wait("the storage figures", "document.querySelectorAll('#storage dd').length >= 6"
                        " && document.querySelectorAll('#storage-cameras tr[data-camera]').length", timeout=10)
    if storage < len(cameras):
        fail(f"the storage table lists {storage} cameras, not {len(cameras)}")
    return sizes


def check_width(page, width, where):
    w = page.js("Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)")
    if w > width + 1:
        wide = page.js(f"[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > {width + 1})"
                       ".slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)")
        fail(f"{where}: the page is {w} px wide on a {width} px screen (too wide: {wide})")


def confirm_view(page, cam):
    not_yet = page.js(f"{tile(cam)}.querySelector('.reference').textContent")
    click(page, f"Confirm view on {cam}", f"{tile(cam)}.querySelector('button.confirm')")
    text = page.wait(f"the confirmed view of {cam}",
                     f"(() => {{ const r = {tile(cam)}.querySelector('.reference').textContent;"
                     f" return r !== {q(not_yet)} && r !== '画面基准尚未确认' && r !== 'View not confirmed yet' && r; }})()",
                     timeout=10)
    emit({"event": "reference", "camera": cam, "text": text})


def tune_tamper(page, cam):
    """Opens the camera's tamper settings, sets "pictures in a row" to 4 and saves."""
    click(page, f"Tamper settings on {cam}", f"{tile(cam)}.querySelector('button.tamper')")
    page.wait(f"the tamper settings of {cam}",
              "!document.getElementById('tamper-box').hidden && !!document.getElementById('tamper-form').elements['consecutive']",
              timeout=10)
    before = page.js("document.getElementById('tamper-form').elements['consecutive'].value")
    if before != "3":
        fail(f"the tamper settings show consecutive = {before!r}, the default is 3")
    page.js("(() => { document.getElementById('tamper-form').elements['consecutive'].value = '4'; return true; })()")
    click(page, "Save tamper settings", "document.getElementById('tamper-save')")
    page.wait("the tamper settings saved", "document.getElementById('tamper-result').className === 'ok'", timeout=10)
    # A value the server refuses is shown, not swallowed.
    page.js("(() => { document.getElementById('tamper-form').elements['blur_ratio'].value = '7'; return true; })()")
    click(page, "Save tamper settings", "document.getElementById('tamper-save')")
    err = page.wait("the refused threshold explained",
                    "document.getElementById('tamper-result').className === 'err' && document.getElementById('tamper-result').textContent",
                    timeout=10)
    if "blur_ratio" not in err:
        fail(f"the refusal does not name blur_ratio: {err!r}")
    click(page, "Close tamper settings", "document.getElementById('tamper-close')")
    emit({"event": "tamper", "camera": cam, "consecutive": 4})


def play_live(page, cam):
    click(page, f"Live on {cam}", f"{tile(cam)}.querySelector('button.live')")
    page.wait(f"live video of {cam} playing (frames presented)",
              "window.cradleOperator.live.state === 'playing' && window.cradleOperator.live.frames > 10"
              " && document.getElementById('video').videoWidth > 0", timeout=30, every=0.1)
    info = page.js("({camera: cradleOperator.live.camera, location: cradleOperator.live.location, frames: cradleOperator.live.frames,"
                   " video_width: document.getElementById('video').videoWidth, visible: !document.getElementById('player-box').hidden})")
    if info["camera"] != cam or not info["location"] or not info["visible"]:
        fail(f"the player should show {cam} with a session: {info}")
    click(page, "the player's Stop", "document.getElementById('player-stop')")
    info["stopped"] = page.wait("the session's DELETE answer", "window.cradleOperator.live.stopped", timeout=10)
    if info["stopped"] != 204:
        fail(f"stopping should DELETE the session (204), got {info['stopped']}")
    if not page.js("document.getElementById('player-box').hidden"):
        fail("the player should close after Stop")
    emit({"event": "live", **info})


def acknowledge(page, killed, username):
    row = f"document.querySelector('#alarms li[data-kind=\"no_frames\"][data-camera={q(killed)}]')"
    page.wait(f"the open no_frames alarm of the stopped camera {killed}", f"!!{row}", timeout=60, every=0.25)
    page.wait(f"the tile of {killed} turning red", f"{tile(killed)}.classList.contains('bad')", timeout=30)
    alarm = int(page.js(f"{row}.dataset.alarmId"))
    if page.js(f"{row}.dataset.state") != "raised":
        fail(f"alarm {alarm} should be raised, not yet acknowledged: {page.js(STATE)}")
    if "无画面" not in page.js(f"{row}.querySelector('.kind').textContent"):
        fail(f"alarm {alarm}: the kind should be in Chinese (无画面): {page.js(f'{row}.textContent')!r}")
    click(page, f"Acknowledge on alarm {alarm}", f"{row}.querySelector('button.ack')")
    page.wait("the acknowledgement note field", f"!!{row}.querySelector('form input.note')", timeout=5)
    # An empty note is refused on the page, before the server would refuse it.
    click(page, "Submit with an empty note", f"{row}.querySelector('form button.ack-submit')")
    page.wait("the message asking for a note", "document.getElementById('msg').textContent === '请填写处理说明'", timeout=5)
    # Typed, then a refresh passes (the note must survive it), then submitted.
    page.js(f"(() => {{ const i = {row}.querySelector('form input.note'); i.focus(); i.value = {q(NOTE)};"
            " i.dispatchEvent(new Event('input', {bubbles: true})); return true; })()")
    n = page.js("window.cradleOperator.refreshes")
    page.wait("a refresh while the note is typed", f"window.cradleOperator.refreshes > {n}", timeout=15)
    kept = page.js(f"(() => {{ const i = {row}.querySelector('form input.note'); return i && i.value === {q(NOTE)} && document.activeElement === i; }})()")
    if not kept:
        fail(f"the half-typed note (and its focus) should survive a refresh; row: {page.js(f'{row}.outerHTML')[:400]}")
    click(page, "Submit with the note", f"{row}.querySelector('form button.ack-submit')")
    page.wait(f"alarm {alarm} shown acknowledged",
              f"(() => {{ const r = document.querySelector('#alarms li[data-alarm-id=\"{alarm}\"]');"
              f" return r && r.dataset.state === 'acknowledged' && !r.querySelector('button.ack') && r.textContent.includes({q(NOTE)}); }})()",
              timeout=10)
    server = page.js(f"fetch('/api/v1/alarms?state=all&kind=no_frames&camera={killed}').then(r => r.json())"
                     f".then(v => v.alarms.find(a => a.id === {alarm}))")
    if not server or server.get("acknowledged_by") != username or server.get("ack_note") != NOTE:
        fail(f"the server should have alarm {alarm} acknowledged by {username} with the note: {server}")
    emit({"event": "acknowledged", "alarm": alarm, "note": NOTE, "server": server})


def form_state(page):
    return page.js("({save: document.getElementById('form-save').disabled, result: document.getElementById('form-result').textContent,"
                   " cls: document.getElementById('form-result').className, tested: cradleOperator.form.tested,"
                   " preview: (() => { const i = document.getElementById('form-preview'); return !i.hidden && i.complete ? i.naturalWidth : 0; })()})")


def fill(page, name, value):
    page.js(f"(() => {{ const i = document.getElementById('camera-form').elements[{q(name)}]; i.value = {q(value)};"
            " i.dispatchEvent(new Event('input', {bubbles: true})); return true; })()")


def add_camera(page, cam, url):
    click(page, "Add camera", "document.getElementById('add-camera')")
    page.wait("the camera form", "!document.getElementById('form-box').hidden", timeout=5)
    fill(page, "id", cam)
    fill(page, "name", "测试 Added by the operator")
    # A camera that is not there: the error is shown and Save stays off.
    fill(page, "url", "rtsp://127.0.0.1:9/none")
    if not form_state(page)["save"]:
        fail("Save should be disabled before a test connection")
    click(page, "Test connection (nowhere)", "document.getElementById('form-test')")
    st = page.wait("the failed test's message", "(() => { const r = document.getElementById('form-result');"
                   " return r.className === 'err' && r.textContent; })()", timeout=30)
    if not form_state(page)["save"]:
        fail(f"Save should stay disabled after a failed test ({st})")
    # The real camera: a picture with its codec and size; then Save is on.
    fill(page, "url", url)
    click(page, "Test connection", "document.getElementById('form-test')")
    page.wait("the test connection's picture", "(() => { const i = document.getElementById('form-preview');"
              " return !i.hidden && i.complete && i.naturalWidth > 0 && cradleOperator.form.tested; })()", timeout=30)
    st = form_state(page)
    if st["save"] or st["cls"] != "ok":
        fail(f"after a good test Save should be on and the result shown: {st}")
    info = page.js("({codec: cradleOperator.form.codec, width: cradleOperator.form.width, height: cradleOperator.form.height})")
    if not info["codec"] or not info["width"] or not info["height"]:
        fail(f"the test should show the codec and picture size: {info}; {st}")
    # Another URL than the one tested: Save is off again until it is tested.
    fill(page, "url", url + "-other")
    if not form_state(page)["save"]:
        fail("Save should turn off when the URL changes after the test")
    fill(page, "url", url)
    if form_state(page)["save"]:
        fail("Save should be on again for the URL that was tested")
    click(page, "Save", "document.getElementById('form-save')")
    page.wait("the form closing after Save", "document.getElementById('form-box').hidden", timeout=15)
    page.wait(f"a tile with a loaded snapshot for the added camera {cam}",
              f"(() => {{ const li = {tile(cam)}; const img = li && li.querySelector('img.snap');"
              " return !!img && img.complete && img.naturalWidth > 0; })()", timeout=60, every=0.25)
    # An added camera is edited here; a config-file camera is not.
    if not page.js(f"!!{tile(cam)}.querySelector('button.edit')"):
        fail(f"the added camera {cam} should have an Edit button")
    click(page, f"Edit on {cam}", f"{tile(cam)}.querySelector('button.edit')")
    page.wait("the edit form filled with the camera's URL",
              f"!document.getElementById('form-box').hidden && document.getElementById('f-url').value === {q(url)}", timeout=10)
    if not page.js("document.getElementById('f-id').disabled && document.getElementById('form-save').disabled"):
        fail("editing: the id is fixed and Save waits for a test")
    click(page, "Close the form", "document.getElementById('form-close')")
    emit({"event": "added", "camera": cam, **info})


def screenshots(page, base_path):
    shots = []
    for (w, h), suffix in ((PHONE, "-phone"), (DESKTOP, "")):
        page.cmd("Emulation.setDeviceMetricsOverride", width=w, height=h, deviceScaleFactor=1, mobile=w < 600)
        time.sleep(0.5)
        check_width(page, w, f"at {w} px")
        full = page.js("Math.ceil(document.documentElement.scrollHeight)")
        page.cmd("Emulation.setDeviceMetricsOverride", width=w, height=min(full, 6000), deviceScaleFactor=1, mobile=w < 600)
        page.js("window.scrollTo(0, 0); true")
        time.sleep(0.5)
        root, ext = os.path.splitext(base_path)
        path = f"{root}{suffix}{ext}"
        page.screenshot(path)
        shots.append(path)
    return shots


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("username")
    ap.add_argument("password")
    ap.add_argument("--cameras", default="")
    ap.add_argument("--killed")
    ap.add_argument("--add-url")
    ap.add_argument("--add-id")
    ap.add_argument("--screenshot")
    ap.add_argument("--expect-denied", action="store_true")
    a = ap.parse_args()

    with Browser(fail, WEBRTC_FLAGS) as page:
        page.describe = STATE
        page.phone(*PHONE)
        page.cmd("Page.addScriptToEvaluateOnNewDocument", source=PROBE)
        page.sign_in(a.base, "/operator", a.username, a.password)
        if a.expect_denied:
            text = page.wait("the page saying this role may not use it",
                             "!document.getElementById('denied').hidden && document.getElementById('console').hidden"
                             " && document.getElementById('denied').textContent", timeout=15)
            emit({"event": "denied", "text": text})
            return

        cameras = [c for c in a.cameras.split(",") if c]
        page.wait("the first refresh", "!!window.cradleOperator && window.cradleOperator.refreshes > 0", timeout=20)
        check_languages(page, cameras)
        sizes = wait_grid(page, cameras)
        check_width(page, PHONE[0], "at phone width")
        emit({"event": "grid", "cameras": sizes})

        confirm_view(page, cameras[0])
        tune_tamper(page, cameras[0])
        play_live(page, cameras[0])
        acknowledge(page, a.killed, a.username)
        add_camera(page, a.add_id, a.add_url)

        # Each picture is fetched once: no snapshot URL (it names the picture) twice.
        fetched = page.js("window.__snapshots")
        twice = sorted({u for u in fetched if fetched.count(u) > 1})
        if twice:
            fail(f"snapshots fetched more than once: {twice}")
        errors = page.js("window.__errors")
        if errors:
            fail(f"the page had uncaught errors: {errors}")
        shots = screenshots(page, a.screenshot)
        emit({"event": "done", "screenshots": shots, "snapshot_fetches": len(fetched)})


if __name__ == "__main__":
    main()
