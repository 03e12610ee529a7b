// Recording status page: whether the centre is armed (and why not), every camera's state
// and the last hour's recorded spans and gaps, from /api/v1/armed, /api/v1/cameras and
// /api/v1/cameras/{id}/recordings. Refreshes every 5 s; Chinese or English, with what
// the server says (reasons, errors, gap details) shown as it says it.
"use strict";

// Every fixed text as [Chinese, English]; functions take the values they show.
const T = {
  title: ["Cradle 录像状态", "Cradle recording status"],
  operator: ["值班台", "Operator console"],
  admin: ["管理", "Administration"],
  live: ["实时画面", "Live view"],
  evidence: ["调取录像", "Evidence"],
  signout: ["退出", "Sign out"],
  loading: ["加载中…", "loading…"],
  thCamera: ["摄像头", "Camera"],
  thState: ["状态", "State"],
  thLastFrame: ["最后画面", "Last frame"],
  thCodec: ["编码", "Codec"],
  thKeptSince: ["录像保存自", "Footage kept since"],
  thLastHour: ["最近一小时（绿：已录像，红：中断）", "Last hour (green: recorded, red: gap)"],
  roles: [
    { admin: "管理员", operator: "值班员", parent: "家长", investigator: "调查员", regulator: "监管", committee: "家委会" },
    { admin: "admin", operator: "operator", parent: "parent", investigator: "investigator", regulator: "regulator", committee: "committee" },
  ],
  states: [
    { recording: "录像中", connecting: "连接中", failed: "故障" },
    { recording: "recording", connecting: "connecting", failed: "failed" },
  ],
  never: ["从未", "never"],
  now: ["刚刚", "now"],
  secondsAgo: [(s) => `${s} 秒前`, (s) => `${s} s ago`],
  lastHour: ["最近一小时", "last hour"],
  inProgress: ["正在录制的片段", "segment in progress"],
  armed: ["设防中", "Armed"],
  notArmed: ["未设防", "NOT ARMED"],
  armedLine: [(f, w) => ` · 最低保存 ${f} 天 · 检查于 ${w}`, (f, w) => ` · ${f}-day floor · checked ${w}`],
  forStaff: ["此页面向工作人员和监管方显示录像状态。", "This page shows the recording status to staff and the regulator."],
  summary: [
    (r, n, d, ok) => `${r} / ${n} 路摄像头正在录像 · 存储：${d}（${ok}）`,
    (r, n, d, ok) => `${r} of ${n} cameras recording · storage: ${d} (${ok})`,
  ],
  healthy: ["正常", "healthy"],
  failing: [(e) => `故障：${e}`, (e) => `FAILING: ${e}`],
  spool: [
    (n, mb, up) => `待上传：${n} 个片段，${mb} MB；启动以来已上传 ${up} 个。`,
    (n, mb, up) => `Spool backlog: ${n} segments, ${mb} MB waiting for upload; ${up} uploaded since start.`,
  ],
  cannotReach: [(e) => `无法连接 Cradle：${e}`, (e) => `cannot reach Cradle: ${e}`],
};

let lang = pickLang();
let me = null;
let armed = null; // the last /api/v1/armed answer
let view = null; // the last { cameras, status, bars: per camera { start, end, data } or null }
let summaryFn = () => t("loading"); // what #summary says, re-rendered on a language change
const { t } = translator(T, () => lang);

function ago(iso) {
  if (!iso) return t("never");
  const s = (Date.now() - Date.parse(iso)) / 1000;
  return s < 1 ? t("now") : s < 120 ? t("secondsAgo", s.toFixed(0)) : new Date(iso).toLocaleString(lang === "zh" ? "zh-CN" : "en");
}

const roleName = (r) => t("roles")[r] || r;
const stateName = (s) => t("states")[s] || s;

// The last hour of one camera: its segments and gaps, or null when they did not load.
async function recordings(cam) {
  const end = new Date();
  const start = new Date(end - 3600e3);
  const q = `start=${start.toISOString()}&end=${end.toISOString()}`;
  const r = await fetch(`/api/v1/cameras/${cam.id}/recordings?${q}`);
  return r.ok ? { start, end, data: await r.json() } : null;
}

function timeline(rec) {
  const bar = el("div", { class: "bar", title: t("lastHour") });
  if (!rec) return bar;
  const { start, end, data } = rec;
  const pos = (iso) => Math.max(0, Math.min(100, ((Date.parse(iso) - start) / 3600e3) * 100));
  const add = (cls, s, e, title) => {
    const span = el("span", { class: cls, title });
    span.style.left = `${pos(s)}%`;
    span.style.width = `${Math.max(0.2, pos(e) - pos(s))}%`;
    bar.appendChild(span);
  };
  for (const s of data.segments) add("rec", s.start, s.end, `${s.start} – ${s.end} (${s.state})`);
  for (const g of data.gaps) add("gap", g.start, g.end, `${g.cause}: ${g.detail}`);
  if (data.in_progress) add("pending", data.in_progress.start, end.toISOString(), t("inProgress"));
  return bar;
}

function showWho() {
  if (me) document.getElementById("who").textContent = `${me.display_name} (${roleName(me.role)})`;
}

async function whoami() {
  const r = await fetch("/api/v1/me");
  if (r.status === 401) {
    location.href = `/login?next=${encodeURIComponent(location.pathname)}`;
    return null;
  }
  me = await r.json();
  sessionStorage.setItem("csrf", me.csrf_token);
  showWho();
  return me;
}

async function logout() {
  await fetch("/api/v1/logout", { method: "POST", headers: { "X-CSRF-Token": sessionStorage.getItem("csrf") || "" } });
  location.href = "/login";
}

function showArmed() {
  if (!armed) return;
  const a = armed;
  const box = document.getElementById("armed");
  box.className = a.armed ? "yes" : "no";
  box.replaceChildren(el("strong", {}, a.armed ? t("armed") : t("notArmed")));
  box.appendChild(document.createTextNode(t("armedLine", a.floor_days, ago(a.checked_at))));
  if (a.reasons.length) {
    const ul = el("ul");
    for (const r of a.reasons) ul.appendChild(el("li", {}, r));
    box.appendChild(ul);
  }
}

function saySummary(fn) {
  summaryFn = fn;
  document.getElementById("summary").textContent = fn();
}

function render() {
  if (!view) return;
  const { cameras, status, bars } = view;
  const rows = cameras.map((c, i) => {
    const tr = el("tr");
    const name = el("td");
    name.appendChild(el("div", {}, c.name));
    name.appendChild(el("small", {}, c.id));
    tr.appendChild(name);
    const st = el("td");
    st.appendChild(el("span", { class: `state ${c.state}` }, stateName(c.state)));
    if (c.last_error) st.appendChild(el("div", { class: "err" }, c.last_error));
    tr.appendChild(st);
    tr.appendChild(el("td", {}, ago(c.last_frame_at)));
    tr.appendChild(el("td", {}, c.codec || "—"));
    tr.appendChild(el("td", {}, c.oldest_footage ? new Date(c.oldest_footage).toLocaleString(lang === "zh" ? "zh-CN" : "en") : "—"));
    const tl = el("td");
    tl.appendChild(timeline(bars[i]));
    tr.appendChild(tl);
    return tr;
  });
  document.getElementById("cams").replaceChildren(...rows);
  document.getElementById("spool").textContent = t("spool", status.spool.backlog_segments,
    (status.spool.backlog_bytes / 1e6).toFixed(1), status.spool.uploaded_segments);
}

async function refresh() {
  try {
    const [camsR, statusR, armedR] = await Promise.all([
      fetch("/api/v1/cameras"),
      fetch("/api/v1/status"),
      fetch("/api/v1/armed"),
    ]);
    if (armedR.ok) {
      armed = await armedR.json();
      showArmed();
    }
    if (camsR.status === 401) return whoami();
    if (!statusR.ok) {
      saySummary(() => t("forStaff"));
      return;
    }
    const { cameras } = await camsR.json();
    const status = await statusR.json();
    const bars = await Promise.all(cameras.map(recordings));
    view = { cameras, status, bars };
    const rec = cameras.filter((c) => c.state === "recording").length;
    saySummary(() => t("summary", rec, cameras.length, status.storage.description,
      status.storage.healthy ? t("healthy") : t("failing", status.storage.last_error || "")));
    render();
  } catch (e) {
    saySummary(() => t("cannotReach", e));
  }
}

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
  showWho();
  showArmed();
  render();
  document.getElementById("summary").textContent = summaryFn();
}

document.getElementById("logout").addEventListener("click", logout);
document.getElementById("lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("cradle.lang", lang);
  applyLang();
});
applyLang();
whoami().then((who) => {
  if (!who) return;
  refresh();
  setInterval(refresh, 5000);
});
