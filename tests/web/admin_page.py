#!/usr/bin/python3
"""Drives the sign-in, admin and recording status pages in headless Chromium over the
DevTools protocol, as an admin on a phone-sized screen would: open /admin, get sent to
/login, sign in, land on /admin, see every table filled, add an area through the page (a
cookie-authenticated write, so the CSRF token must flow), switch the language (Chinese,
then English, kept across a reload; the sign-in and status pages follow the choice and
switch too), and keep a screenshot.

    admin_page.py BASE_URL USERNAME PASSWORD SCREENSHOT.png

Exit 0 when every check holds; otherwise a message on stderr and exit 1. Uses only
Debian packages: chromium and python3-websocket.
"""
import json
import sys

from cdp import Browser

PHONE_WIDTH = 390
MESSAGE = "(document.getElementById('msg') || {}).textContent"


def fail(msg):
    print(f"admin_page.py: {msg}", file=sys.stderr)
    sys.exit(1)


def q(s):
    return json.dumps(s)


def click(page, what, expr):
    ok = page.js(f"(() => {{ const e = {expr}; if (!e) return false; e.click(); return true; }})()")
    if not ok:
        fail(f"{what}: no such element ({expr[:100]}); page: {page.js(page.describe)}")


# Texts of the admin page that follow the language; ADMIN_ZH / ADMIN_EN are what they must read.
ADMIN_TEXTS = ("({title: document.title, h1: document.querySelector('h1').textContent,"
               " th: document.querySelector('#classrooms th:nth-child(2)').textContent,"
               " close: (document.querySelector('#classrooms button[data-action=\"close\"]') || {}).textContent,"
               " placeholder: document.querySelector('#centre-form input[name=\"name\"]').placeholder,"
               " save: document.querySelector('#centre-form button').textContent,"
               " option: document.querySelector('select[name=\"kind\"] option[value=\"infant\"]').textContent,"
               " centre: document.getElementById('centre-body').textContent})")
ADMIN_ZH = {"title": "Cradle 管理", "h1": "Cradle 管理", "th": "名称", "close": "关闭", "placeholder": "园所名称",
            "save": "保存园所", "option": "乳儿班（≤ 10）"}
ADMIN_EN = {"title": "Cradle administration", "h1": "Cradle administration", "th": "Name", "close": "Close",
            "placeholder": "Centre name", "save": "Save centre", "option": "Infant (≤ 10)"}


def check_admin_texts(page, want, expected, centre_word):
    got = page.js(ADMIN_TEXTS)
    wrong = {k: got[k] for k, v in expected.items() if got[k] != v}
    if wrong or centre_word not in got["centre"]:
        fail(f"after choosing {want} the admin page should read {expected} and the centre line name {centre_word!r}: {got}")


def check_languages(page, base, tables_filled):
    # The admin page, re-rendered in place.
    page.set_lang("zh")
    check_admin_texts(page, "zh", ADMIN_ZH, "时区")
    page.set_lang("en")
    check_admin_texts(page, "en", ADMIN_EN, "time zone")
    # The choice outlives a reload.
    page.js("window.__before_reload = true")
    page.cmd("Page.reload")
    page.wait("the admin page after a reload", f"!window.__before_reload && {tables_filled}")
    if page.js("document.documentElement.lang") != "en":
        fail("the saved language (en) was not used after a reload")
    check_admin_texts(page, "en", ADMIN_EN, "time zone")
    page.set_lang("zh")
    check_admin_texts(page, "zh", ADMIN_ZH, "时区")

    # The recording status page follows the saved choice and switches too.
    page.cmd("Page.navigate", url=f"{base}/")
    status = ("({h1: document.querySelector('h1').textContent, th: document.querySelector('thead th').textContent,"
              " admin: document.querySelector('a[href=\"/admin\"]').textContent,"
              " summary: document.getElementById('summary').textContent})")
    rows = "location.pathname === '/' && document.querySelectorAll('#cams tr').length > 0"
    page.wait("the status page's cameras", rows)
    got = page.js(status)
    if (page.js("document.documentElement.lang") != "zh-CN" or got["h1"] != "Cradle 录像状态" or got["th"] != "摄像头"
            or got["admin"] != "管理" or "路摄像头正在录像" not in got["summary"]):
        fail(f"the status page should be in Chinese, as chosen: {got}")
    page.set_lang("en")
    got = page.js(status)
    if (got["h1"] != "Cradle recording status" or got["th"] != "Camera" or got["admin"] != "Administration"
            or "cameras recording" not in got["summary"]):
        fail(f"the status page should be in English after the switch: {got}")

    # The sign-in page too (it needs no session to show).
    page.cmd("Page.navigate", url=f"{base}/login")
    page.wait("the sign-in page", "location.pathname === '/login' && !!document.getElementById('login')")
    login = ("({title: document.title, h1: document.querySelector('h1').textContent,"
             " button: document.querySelector('#login button[type=submit]').textContent,"
             " label: document.querySelector('label[for=username]').textContent})")
    got = page.js(login)
    if got != {"title": "Cradle sign in", "h1": "Cradle sign in", "button": "Sign in", "label": "Username"}:
        fail(f"the sign-in page should be in English, as chosen: {got}")
    page.set_lang("zh")
    got = page.js(login)
    if got != {"title": "Cradle 登录", "h1": "Cradle 登录", "button": "登录", "label": "用户名"}:
        fail(f"the sign-in page should be in Chinese after the switch: {got}")


def main():
    base, username, password, shot = sys.argv[1:5]
    with Browser(fail) as page:
        page.phone(PHONE_WIDTH, 2400)
        # Signed out, the admin page sends us to the sign-in page, which brings us back.
        page.sign_in(base, "/admin", username, password)
        tables = ["classrooms", "areas", "cameras", "children", "guardians", "users"]
        # (Null-safe: it is also polled while a reload or navigation is still building the page.)
        filled = " && ".join(f"(document.getElementById('{t}') || {{rows: []}}).rows.length > 1" for t in tables)
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

        check_languages(page, base, filled)
        page.cmd("Page.navigate", url=f"{base}/admin")
        page.wait("the admin page again, in Chinese", f"location.pathname === '/admin' && {filled}")
        check_admin_texts(page, "zh", ADMIN_ZH, "时区")
        page.screenshot(shot)
        print(f"admin page OK at {PHONE_WIDTH}px in Chinese and English; screenshot {shot}")


if __name__ == "__main__":
    main()
