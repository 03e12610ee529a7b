"""Headless Debian Chromium driven over the DevTools protocol: what the page tests share.

Uses only Debian packages (chromium, python3-websocket). A script does:

    with Browser(fail) as page:
        page.phone(390, 844)
        page.sign_in(base, "/live", username, password)
        page.wait("something", "js expression")
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websocket

# Real addresses in ICE candidates instead of mDNS names a server cannot resolve, and
# media that may play without a tap.
WEBRTC_FLAGS = ["--autoplay-policy=no-user-gesture-required",
                "--disable-features=WebRtcHideLocalIpsWithMdns"]


NAVIGATED = object()


class Page:
    """One tab. `fail(msg)` is the script's way to stop with a message (it must not return)."""

    def __init__(self, ws, fail):
        self.ws, self.n, self.fail = ws, 0, fail
        # An expression telling where the page is, printed when a wait times out.
        self.describe = "location.href + ' message: ' + ((document.getElementById('msg') || {}).textContent || '')"

    def cmd(self, method, _retry_navigated=False, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            r = json.loads(self.ws.recv())
            if r.get("id") == self.n:
                if "error" in r:
                    if _retry_navigated and "navigated or closed" in str(r["error"].get("message", "")):
                        return NAVIGATED
                    self.fail(f"{method}: {r['error']}")
                return r.get("result", {})

    def js(self, expr):
        # A navigation (the sign-in page sending the browser on) destroys the context an
        # evaluation runs in; Chromium then answers "Inspected target navigated or
        # closed". Evaluate again in the new page, a few times.
        for _ in range(10):
            r = self.cmd("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True, _retry_navigated=True)
            if r is not NAVIGATED:
                break
            time.sleep(0.2)
        else:
            self.fail(f"script {expr[:80]!r}: the page kept navigating")
        if "exceptionDetails" in r:
            self.fail(f"script {expr[:80]!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, what, expr, timeout=20.0, every=0.05):
        """Polls `expr` until it is truthy and returns its value; on timeout fails with `what`
        and where the page is (`self.describe`)."""
        end = time.time() + timeout
        while time.time() < end:
            try:
                v = self.js(expr)
                if v:
                    return v
            except websocket.WebSocketException:
                pass
            time.sleep(every)
        self.fail(f"timed out waiting for {what} ({expr[:120]}); page: {self.js(self.describe)}")

    def phone(self, width, height):
        self.cmd("Page.enable")
        self.cmd("Emulation.setDeviceMetricsOverride", width=width, height=height,
                 deviceScaleFactor=1, mobile=True)

    def sign_in(self, base, path, username, password):
        """Opens `path` signed out, expects the sign-in page, signs in and expects to land back on `path`."""
        self.cmd("Page.navigate", url=f"{base}{path}")
        self.wait("the sign-in page", "location.pathname === '/login' && !!document.getElementById('username')")
        self.js(f"document.getElementById('username').value = {json.dumps(username)};"
                f"document.getElementById('password').value = {json.dumps(password)};"
                "document.getElementById('login').requestSubmit(); true")
        self.wait(f"{path} after sign-in", f"location.pathname === {json.dumps(path)}")

    def set_lang(self, want):
        """Presses the page's language switch (#lang) until the page is in `want` ("zh" or
        "en", as <html lang> shows it), and checks the choice was saved for next time."""
        html = "zh-CN" if want == "zh" else "en"
        for _ in range(2):
            if self.js("document.documentElement.lang") == html:
                break
            self.js("document.getElementById('lang').click(); true")
        self.wait(f"the page in {want}", f"document.documentElement.lang === {json.dumps(html)}", timeout=5)
        saved = self.js("localStorage.getItem('cradle.lang')")
        if saved != want:
            self.fail(f"the language switch did not save {want!r} to localStorage cradle.lang (it holds {saved!r})")

    def screenshot(self, path):
        import base64
        png = self.cmd("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(png))


class Browser:
    """A headless Chromium with a throwaway profile; `with Browser(fail) as page:`."""

    def __init__(self, fail, extra_flags=()):
        self.fail, self.extra_flags = fail, list(extra_flags)
        self.proc, self.profile = None, None

    def __enter__(self):
        self.profile = tempfile.mkdtemp(prefix="cradle-chromium-")
        self.proc = subprocess.Popen(
            [shutil.which("chromium") or "chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-quic", *self.extra_flags,
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        end = time.time() + 30
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if time.time() > end or self.proc.poll() is not None:
                self.__exit__(None, None, None)
                self.fail("chromium did not start (no DevToolsActivePort)")
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
        ws = websocket.create_connection(next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"])
        return Page(ws, self.fail)

    def __exit__(self, *exc):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
        return False
