// Recording status page: whether the centre is armed (and why not), every camera's state
// and the last hour's recorded spans and gaps, from /api/v1/armed, /api/v1/cameras and
// /api/v1/cameras/{id}/recordings. Refreshes every 5 s.
"use strict";

const el = (tag, attrs = {}, text = "") => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
};

function ago(iso) {
  if (!iso) return "never";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  return s < 1 ? "now" : s < 120 ? `${s.toFixed(0)} s ago` : new Date(iso).toLocaleString();
}

async function timeline(cam) {
  const end = new Date();
  const start = new Date(end - 3600e3);
  const q = `start=${start.toISOString()}&end=${end.toISOString()}`;
  const r = await fetch(`/api/v1/cameras/${cam.id}/recordings?${q}`);
  const bar = el("div", { class: "bar", title: "last hour" });
  if (!r.ok) return bar;
  const data = await r.json();
  const pos = (iso) => Math.max(0, Math.min(100, ((Date.parse(iso) - start) / 3600e3) * 100));
  const add = (cls, s, e, title) => {
    const span = el("span", { class: cls, title });
    span.style.left = `${pos(s)}%`;
    span.style.width = `${Math.max(0.2, pos(e) - pos(s))}%`;
    bar.appendChild(span);
  };
  for (const s of data.segments) add("rec", s.start, s.end, `${s.start} – ${s.end} (${s.state})`);
  for (const g of data.gaps) add("gap", g.start, g.end, `${g.cause}: ${g.detail}`);
  if (data.in_progress) add("pending", data.in_progress.start, end.toISOString(), "segment in progress");
  return bar;
}

async function whoami() {
  const r = await fetch("/api/v1/me");
  if (r.status === 401) {
    location.href = `/login?next=${encodeURIComponent(location.pathname)}`;
    return null;
  }
  const me = await r.json();
  sessionStorage.setItem("csrf", me.csrf_token);
  document.getElementById("who").textContent = `${me.display_name} (${me.role})`;
  return me;
}

async function logout() {
  await fetch("/api/v1/logout", { method: "POST", headers: { "X-CSRF-Token": sessionStorage.getItem("csrf") || "" } });
  location.href = "/login";
}

function showArmed(a) {
  const box = document.getElementById("armed");
  box.className = a.armed ? "yes" : "no";
  box.replaceChildren(el("strong", {}, a.armed ? "设防中 Armed" : "未设防 NOT ARMED"));
  box.appendChild(document.createTextNode(` · ${a.floor_days}-day floor · checked ${ago(a.checked_at)}`));
  if (a.reasons.length) {
    const ul = el("ul");
    for (const r of a.reasons) ul.appendChild(el("li", {}, r));
    box.appendChild(ul);
  }
}

async function refresh() {
  try {
    const [camsR, statusR, armedR] = await Promise.all([
      fetch("/api/v1/cameras"),
      fetch("/api/v1/status"),
      fetch("/api/v1/armed"),
    ]);
    if (armedR.ok) showArmed(await armedR.json());
    if (camsR.status === 401) return whoami();
    if (!statusR.ok) {
      document.getElementById("summary").textContent = "This page shows the recording status to staff and the regulator.";
      return;
    }
    const { cameras } = await camsR.json();
    const status = await statusR.json();
    const rec = cameras.filter((c) => c.state === "recording").length;
    document.getElementById("summary").textContent =
      `${rec} of ${cameras.length} cameras recording · storage: ${status.storage.description} ` +
      `(${status.storage.healthy ? "healthy" : "FAILING: " + (status.storage.last_error || "")})`;
    const body = document.getElementById("cams");
    const rows = await Promise.all(
      cameras.map(async (c) => {
        const tr = el("tr");
        const name = el("td");
        name.appendChild(el("div", {}, c.name));
        name.appendChild(el("small", {}, c.id));
        tr.appendChild(name);
        const st = el("td");
        st.appendChild(el("span", { class: `state ${c.state}` }, c.state));
        if (c.last_error) st.appendChild(el("div", { class: "err" }, c.last_error));
        tr.appendChild(st);
        tr.appendChild(el("td", {}, ago(c.last_frame_at)));
        tr.appendChild(el("td", {}, c.codec || "—"));
        tr.appendChild(el("td", {}, c.oldest_footage ? new Date(c.oldest_footage).toLocaleString() : "—"));
        const tl = el("td");
        tl.appendChild(await timeline(c));
        tr.appendChild(tl);
        return tr;
      })
    );
    body.replaceChildren(...rows);
    document.getElementById("spool").textContent =
      `Spool backlog: ${status.spool.backlog_segments} segments, ` +
      `${(status.spool.backlog_bytes / 1e6).toFixed(1)} MB waiting for upload; ` +
      `${status.spool.uploaded_segments} uploaded since start.`;
  } catch (e) {
    document.getElementById("summary").textContent = `cannot reach Cradle: ${e}`;
  }
}

document.getElementById("logout").addEventListener("click", logout);
whoami().then((me) => {
  if (!me) return;
  refresh();
  setInterval(refresh, 5000);
});
