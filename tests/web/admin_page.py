#!/usr/bin/python3
"""Drives the sign-in and admin pages in headless Chromium over the DevTools protocol,
as an admin on a phone-sized screen would: open /admin, get sent to /login, sign in,
land on /admin, see every table filled, add an area through the page (a cookie-
authenticated write, so the CSRF token must flow), and keep a screenshot.

    admin_page.py BASE_URL USERNAME PASSWORD SCREENSHOT.png

Exit 0 when every check holds; otherwise a message on stderr and exit 1. Uses only
Debian packages: chromium and python3-websocket.
"""
import sys

from cdp import Browser

PHONE_WIDTH = 390
MESSAGE = "(document.getElementById('msg') || {}).textContent"


def fail(msg):
    print(f"admin_page.py: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    base, username, password, shot = sys.argv[1:5]
    with Browser(fail) as page:
        page.phone(PHONE_WIDTH, 2400)
        # Signed out, the admin page sends us to the sign-in page, which brings us back.
        page.sign_in(base, "/admin", username, password)
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

        page.screenshot(shot)
        print(f"admin page OK at {PHONE_WIDTH}px; screenshot {shot}")


if __name__ == "__main__":
    main()
