#!/usr/bin/python3
"""Drives the sign-in and admin pages in headless Chromium over the DevTools protocol,
as an admin on a phone-sized screen would: open /admin, get sent to /login, sign in,
land on /admin, see every table filled, add an area through the page (a cookie-
authenticated write, so the CSRF token must flow), and keep a screenshot.

    admin_page.py BASE_URL USERNAME PASSWORD SCREENSHOT.png

Exit 0 when every check holds; otherwise a message on stderr and exit 1. Uses only
Debian packages: chromium and python3-websocket.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

PHONE_WIDTH = 390
MESSAGE = "(document.getElementById('msg') || {}).textContent"


def fail(msg):
    print(f"admin_page.py: {msg}", file=sys.stderr)
    sys.exit(1)


class Page:
    def __init__(self, ws):
        self.ws, self.n = ws, 0

    def cmd(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            r = json.loads(self.ws.recv())
            if r.get("id") == self.n:
                if "error" in r:
                    fail(f"{method}: {r['error']}")
                return r.get("result", {})

    def js(self, expr):
        r = self.cmd("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            fail(f"script {expr!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, what, expr, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            try:
                if self.js(expr):
                    return
            except websocket.WebSocketException:
                pass
            time.sleep(0.2)
        where, msg = self.js("location.href"), self.js(MESSAGE)
        fail(f"timed out waiting for {what} ({expr}); page: {where} message: {msg}")


def main():
    base, username, password, shot = sys.argv[1:5]
    profile = tempfile.mkdtemp(prefix="cradle-chromium-")
    chromium = subprocess.Popen(
        [shutil.which("chromium") or "chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
         "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        end = time.time() + 30
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if time.time() > end or chromium.poll() is not None:
                fail("chromium did not start (no DevToolsActivePort)")
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
        page = Page(websocket.create_connection(next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"]))
        page.cmd("Page.enable")
        page.cmd("Emulation.setDeviceMetricsOverride", width=PHONE_WIDTH, height=2400, deviceScaleFactor=1, mobile=True)

        # Signed out, the admin page sends us to the sign-in page, which brings us back.
        page.cmd("Page.navigate", url=f"{base}/admin")
        page.wait("the sign-in page", "location.pathname === '/login' && !!document.getElementById('username')")
        page.js(f"document.getElementById('username').value = {json.dumps(username)};"
                f"document.getElementById('password').value = {json.dumps(password)};"
                "document.getElementById('login').requestSubmit(); true")
        page.wait("the admin page after sign-in", "location.pathname === '/admin'")
        tables = ["classrooms", "areas", "cameras", "children", "guardians", "users"]
        filled = " && ".join(f"document.getElementById('{t}').rows.length > 1" for t in tables)
        page.wait("every table filled", filled)
        msg = page.js(MESSAGE)
        if msg:
            fail(f"the page shows an error: {msg}")
        if "demo" not in page.js("document.getElementById('centre-body').textContent").lower():
            fail("the centre line does not name the demo centre")
        width = page.js("document.documentElement.scrollWidth")
        if width > PHONE_WIDTH:
            fail(f"the page is {width}px wide on a {PHONE_WIDTH}px phone (tables must scroll, not the page)")

        # A change through the page: the session cookie plus the CSRF header.
        areas = page.js("document.getElementById('areas').rows.length")
        page.js("(() => { const f = document.querySelector('form[data-post=\"/api/v1/areas\"]');"
                " f.elements['name'].value = '操场 Playground'; f.requestSubmit(); return true; })()")
        page.wait("the new area listed", f"document.getElementById('areas').rows.length === {areas + 1}")
        if "Playground" not in page.js("document.getElementById('areas').textContent"):
            fail("the new area is not in the table")
        if page.js("document.getElementById('msg').className") == "err":
            fail(f"error after adding an area: {page.js(MESSAGE)}")

        png = page.cmd("Page.captureScreenshot", format="png")["data"]
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png))
        print(f"admin page OK at {PHONE_WIDTH}px; screenshot {shot}")
    finally:
        chromium.kill()
        chromium.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
