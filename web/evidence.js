// Police evidence page (investigators and the admin): evidence requests and their approval
// (/api/v1/evidence/requests), and for an approved request a day timeline of one camera's
// recorded spans and gaps (/api/v1/cameras/{id}/recordings), playback of the approved range
// from /api/v1/cameras/{id}/view.mp4 in half-hour windows, and signed exports polled until
// ready. Plain DOM, no build step; Chinese and English. Times on screen are the browser's
// local time with its UTC offset; times sent to the server are UTC RFC 3339.
"use strict";

// Every fixed text as [Chinese, English]; functions take the values they show.
const T = {
  title: ["Cradle 证据调取", "Cradle evidence"],
  home: ["录像状态", "Recording status"],
  signout: ["退出", "Sign out"],
  loading: ["加载中…", "Loading…"],
  refresh: ["刷新", "Refresh"],
  back: ["返回列表", "Back to the list"],
  requestsTitle: ["证据调取申请", "Evidence requests"],
  newRequest: ["新建申请", "New request"],
  caseRef: ["案件编号", "Case reference"],
  cameras: ["摄像头", "Cameras"],
  camera: ["摄像头", "Camera"],
  otherCameras: ["其他摄像头 ID（逗号分隔）", "Other camera ids (comma-separated)"],
  from: ["开始", "From"],
  to: ["结束", "To"],
  reason: ["事由", "Reason"],
  submit: ["提交申请", "Submit request"],
  range: ["时段", "Time range"],
  state: ["状态", "State"],
  requested: ["申请人", "Requested by"],
  decision: ["审批", "Decision"],
  day: ["日期", "Day"],
  wholeDay: ["显示全天", "Whole day"],
  lgRecorded: ["已录像", "Recorded"],
  lgGap: ["缺失", "Gap"],
  lgApproved: ["批准时段", "Approved range"],
  lgLoaded: ["已加载", "Loaded"],
  exportTitle: ["导出证据", "Export evidence"],
  exportGo: ["导出此时段", "Export this range"],
  publicKey: ["下载园所公钥（用于核验签名）", "Download the centre's public key (to verify signatures)"],
  tzNote: [(z) => `时间按本机时区 ${z}`, (z) => `Times in this device's zone, ${z}`],
  none: ["暂无申请", "No requests yet"],
  open: ["查看录像", "Open"],
  approve: ["批准", "Approve"],
  reject: ["驳回", "Reject"],
  close: ["结案", "Close"],
  note: ["审批意见", "Note"],
  closeReason: ["结案原因", "Reason for closing"],
  validDays: ["有效天数", "Valid days"],
  ownRequest: ["本人申请须由另一位管理员批准", "Your own request needs another admin's approval"],
  until: [(w) => `有效至 ${w}`, (w) => `valid until ${w}`],
  expiredAt: [(w) => `已于 ${w} 过期`, (w) => `expired ${w}`],
  states: [{ pending: "待审批", approved: "已批准", rejected: "已驳回", expired: "已过期", closed: "已结案" },
    { pending: "pending", approved: "approved", rejected: "rejected", expired: "expired", closed: "closed" }],
  exportStates: [{ pending: "生成中", ready: "已就绪", failed: "失败" }, { pending: "preparing", ready: "ready", failed: "failed" }],
  approved: ["已批准", "Approved"],
  rejected: ["已驳回", "Rejected"],
  closed: ["已结案，证据保全已解除", "Closed; the legal holds are released"],
  submitted: ["已提交，等待管理员批准", "Submitted; waiting for an admin's approval"],
  needCamera: ["请至少选择一个摄像头", "Choose at least one camera"],
  needReason: ["请填写结案原因", "Enter the reason for closing"],
  badRange: ["结束时间必须晚于开始时间", "The end must be after the start"],
  outsideRange: ["所选时段超出批准时段", "The chosen range is outside the approved range"],
  clamped: ["已限制在批准时段内", "Kept inside the approved range"],
  notOpenable: ["只有已批准且未过期的申请可以查看录像", "Only an approved, unexpired request can be played"],
  noSuchRequest: [(id) => `没有编号为 ${id} 的申请`, (id) => `No request ${id}`],
  notForRole: ["此页面仅供调查员和管理员使用", "This page is for investigators and admins"],
  cannotReach: [(e) => `无法连接 Cradle：${e}`, (e) => `Cannot reach Cradle: ${e}`],
  noFootageYet: ["该时段尚未开始", "This range has not started yet"],
  gapInfo: [(a, b, s, why) => `缺失 ${a}–${b}（${s} 秒）：${why}`, (a, b, s, why) => `Gap ${a}–${b} (${s} s): ${why}`],
  resumes: [(w) => `录像从 ${w} 开始`, (w) => `Footage resumes at ${w}`],
  loadingVideo: [(a, b) => `正在加载 ${a}–${b}…`, (a, b) => `Loading ${a}–${b}…`],
  endOfRange: ["已到批准时段或当天的结尾", "End of the approved range or of the day"],
  endOfFootage: ["此后没有录像", "No footage after this"],
  videoError: [(c) => `视频无法播放（错误 ${c}）`, (c) => `The video cannot play (error ${c})`],
  frameTime: [(w) => `画面时间 ${w}`, (w) => `Frame time ${w}`],
  exportStarted: ["正在生成导出文件…", "Preparing the export…"],
  preparing: [(s) => `生成中… 已 ${s} 秒`, (s) => `Preparing… ${s} s`],
  fileLink: [(mb) => `视频 MP4（${mb} MB）`, (mb) => `Video MP4 (${mb} MB)`],
  manifestLink: ["清单 manifest.json", "Manifest (JSON)"],
  signatureLink: ["签名 signature", "Signature"],
  howToVerify: ["如何核验", "How to verify"],
  verifyText: ["① 视频文件的 SHA-256 必须等于清单中的 file.sha256；② 用园所公钥核验清单的签名，成功时输出 “Signature Verified Successfully”。",
    "(1) The video file's SHA-256 must equal file.sha256 in the manifest. (2) The manifest's signature must verify with the centre's public key; openssl then prints \"Signature Verified Successfully\"."],
  days: [["周日", "周一", "周二", "周三", "周四", "周五", "周六"], ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]],
};

const WINDOW_MS = 30 * 60e3; // one view.mp4 window (the server allows up to 1 h)
const MERGE_MS = 1500; // segments closer than this are one span on the timeline
const TICK_MINUTES = [5, 10, 15, 30, 60, 120, 180, 360, 720];

const $ = (id) => document.getElementById(id);
const video = $("video");
const track = $("track");
const playhead = $("playhead");
let lang = pickLang();
let csrf = "";
let me = null;
let requests = []; // the last /api/v1/evidence/requests answer, newest first
let allCameras = null; // [{id, name}] from /api/v1/cameras (admins), or null (investigators: 403)
const exportsById = new Map(); // every export seen, kept fresh by polling
const polling = new Set(); // export ids being polled
let view = null; // the opened request: {req, camera, day, lim, shown, spans, gaps, pending}
let win = null; // the loaded view.mp4 window: {from, to (its last frame, if known), xstart, url} (ms)
let pendingSeek = 0; // seconds into the new window, applied once its metadata is known
let loadSeq = 0, tlSeq = 0; // the newest window load / timeline fetch; older answers are dropped
let drag = null; // a pointer pressed on the timeline: {x0, moved}
let msgFn = null, msgTimer = 0;

// What the browser test reads.
const ev = (window.cradleEvidence = { state: "idle", request: null, camera: null, day: null,
  spans: 0, gaps: 0, window: null, wallTime: null });

const { pick, t } = translator(T, () => lang);

// ---- time ----

// RFC 3339 → ms since the epoch. The server writes microseconds; ECMA-262's date format has
// exactly three fraction digits, so the rest is cut before parsing (Safari rejects more).
const ms = (s) => (s ? Date.parse(String(s).replace(/(\.\d{3})\d+/, "$1")) : NaN);
const iso = (m) => new Date(m).toISOString().replace(".000Z", "Z");
const pad = (n) => String(n).padStart(2, "0");
const clamp = (x, a, b) => Math.min(b, Math.max(a, x));
const localDate = (m) => { const d = new Date(m); return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`; };
const localTime = (m, secs = false) => {
  const d = new Date(m);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}${secs ? `:${pad(d.getSeconds())}` : ""}`;
};
const offset = (m) => {
  const o = -new Date(m).getTimezoneOffset();
  return `UTC${o < 0 ? "-" : "+"}${pad(Math.floor(Math.abs(o) / 60))}:${pad(Math.abs(o) % 60)}`;
};
const wall = (m) => `${localDate(m)} ${localTime(m, true)} ${offset(m)}`;
const when = (m) => `${localDate(m)} ${localTime(m)}`;
const span = (a, b) => (localDate(a) === localDate(b) ? `${when(a)}–${localTime(b)}` : `${when(a)} – ${when(b)}`);
// datetime-local values are local wall time without an offset (HTML §2.3.5.5); `new Date`
// reads that form as local time too (ECMA-262 §21.4.3.2).
const inputValue = (m) => `${localDate(m)}T${localTime(m, true)}`;
const fromInput = (v) => (v ? new Date(v).getTime() : NaN);
const midnight = (m) => { const d = new Date(m); return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime(); };
const nextMidnight = (m) => { const d = new Date(m); return new Date(d.getFullYear(), d.getMonth(), d.getDate() + 1).getTime(); };

// ---- messages and the API ----

function say(x, ok = false) {
  msgFn = x == null ? null : typeof x === "function" ? x : () => x;
  const m = $("msg");
  m.textContent = msgFn ? msgFn() : "";
  m.className = msgFn ? (ok ? "ok" : "err") : "";
  clearTimeout(msgTimer);
  if (ok) msgTimer = setTimeout(() => say(null), 4000);
}
const note = (text) => { $("player-note").textContent = text || ""; };

function toLogin() {
  location.href = `/login?next=${encodeURIComponent(location.pathname + location.hash)}`;
}

async function api(method, path, body) {
  const headers = method === "GET" ? {} : { "X-CSRF-Token": csrf };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) {
    toLogin();
    throw Object.assign(new Error("signed out"), { status: 401 });
  }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error(data.error || `${r.status} ${r.statusText}`), { status: r.status });
  return data;
}
const fail = (e) => { if (e.status !== 401) say(e.message); };

// ---- the requests ----

const isAdmin = () => me && me.role === "admin";
// "expired" is an approved request past its expiry; the server may not have said so yet.
const stateOf = (r) => (r.state === "approved" && r.expires_at && ms(r.expires_at) <= Date.now() ? "expired" : r.state);
const camerasOf = (r) => (r.cameras && r.cameras.length ? r.cameras : (r.camera_ids || []).map((id) => ({ id, name: id })));
const camName = (r, id) => (camerasOf(r).find((c) => c.id === id) || { name: id }).name;

async function loadRequests() {
  const d = await api("GET", "/api/v1/evidence/requests");
  requests = (d.requests || []).sort((a, b) => ms(b.requested_at) - ms(a.requested_at));
  for (const r of requests) for (const e of r.exports || []) keepExport(e);
  if (view) {
    const r = requests.find((x) => x.id === view.req.id);
    if (r) view.req = r;
  }
  renderRequests();
  renderCameraChoices();
  if (view) { renderReviewInfo(); renderExports(); }
}

function upsert(r) {
  const i = requests.findIndex((x) => x.id === r.id);
  if (i >= 0) requests[i] = r;
  else requests.unshift(r);
  if (view && view.req.id === r.id) {
    view.req = r;
    if (stateOf(r) !== "approved") closeReview();
    else renderReviewInfo();
  }
  renderRequests();
}

function renderRequests() {
  const table = $("requests");
  const head = el("tr");
  for (const k of ["caseRef", "cameras", "range", "reason", "state", "requested", "decision"]) head.appendChild(el("th", {}, t(k)));
  head.appendChild(el("th"));
  const thead = el("thead");
  thead.appendChild(head);
  const body = el("tbody");
  if (!requests.length) body.appendChild(el("tr")).appendChild(el("td", { colspan: 8 }, t("none")));
  for (const r of requests) body.appendChild(requestRow(r));
  table.replaceChildren(thead, body);
}

function requestRow(r) {
  const st = stateOf(r);
  const tr = el("tr", { "data-request-id": r.id, "data-state": st, class: view && view.req.id === r.id ? "current" : null });
  const cell = (label, ...kids) => {
    const td = el("td", { "data-label": t(label) });
    for (const k of kids) if (k) td.append(k);
    tr.appendChild(td);
    return td;
  };
  const c = el("div");
  c.append(el("strong", {}, r.case_ref), " ", el("small", {}, `#${r.id}`));
  cell("caseRef", c);
  cell("cameras", camerasOf(r).map((x) => x.name || x.id).join(", "));
  cell("range", span(ms(r.start), ms(r.end)));
  cell("reason", r.reason);
  const line = (text) => (text ? el("small", { style: "display:block" }, text) : null);
  const exp = r.expires_at && (st === "approved" || st === "expired")
    ? line(t(st === "expired" ? "expiredAt" : "until", when(ms(r.expires_at)))) : null;
  cell("state", el("span", { class: `badge ${st}` }, t("states")[st] || st), exp);
  cell("requested", `${r.requested_by} · ${when(ms(r.requested_at))}`);
  const d = r.decided_by ? el("div", {}, `${r.decided_by} · ${when(ms(r.decided_at))}`) : null;
  cell("decision", d, line(r.decision_note), line(r.close_reason && `${t("close")}: ${r.close_reason}`));
  tr.appendChild(actions(r, st));
  return tr;
}

function button(label, cls, fn) {
  const b = el("button", { type: "button", class: cls }, label);
  b.addEventListener("click", () => {
    b.disabled = true;
    Promise.resolve(fn()).catch(fail).finally(() => { b.disabled = false; });
  });
  return b;
}

function actions(r, st) {
  const td = el("td", { class: "actions" });
  if (st === "approved") td.appendChild(button(t("open"), "open", () => openRequest(r.id)));
  if (!isAdmin()) return td;
  const post = (action, body, done) => api("POST", `/api/v1/evidence/requests/${r.id}/${action}`, body)
    .then((nr) => { upsert(nr); say(() => t(done), true); });
  if (r.state === "pending") {
    const noteIn = el("input", { class: "note", placeholder: t("note"), "aria-label": t("note") });
    td.appendChild(noteIn);
    const text = () => noteIn.value.trim() || undefined;
    // The server refuses (403) an admin approving their own request; the button is not offered,
    // but a refusal from a second tab still shows in #msg.
    if (r.requested_by !== me.username) {
      const days = el("input", { class: "days", type: "number", min: 1, max: 3650, value: 30,
        title: t("validDays"), "aria-label": t("validDays") });
      td.append(days, button(t("approve"), "approve",
        () => post("approve", { note: text(), valid_days: Number(days.value) || undefined }, "approved")));
    } else {
      td.appendChild(el("small", {}, t("ownRequest")));
    }
    td.appendChild(button(t("reject"), "danger reject", () => post("reject", { note: text() }, "rejected")));
  } else if (r.state === "approved") {
    const why = el("input", { class: "note", placeholder: t("closeReason"), "aria-label": t("closeReason") });
    td.append(why, button(t("close"), "secondary close", () => {
      if (!why.value.trim()) return say(() => t("needReason"));
      return post("close", { reason: why.value.trim() }, "closed");
    }));
  }
  return td;
}

// ---- the new-request form ----

async function loadCameraChoices() {
  try {
    allCameras = (await api("GET", "/api/v1/cameras")).cameras.map((c) => ({ id: c.id, name: c.name }));
  } catch (e) {
    allCameras = null; // investigators may not list cameras (403): offer those of their requests
  }
  renderCameraChoices();
}

function renderCameraChoices() {
  const box = $("req-cameras");
  const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  let cams = allCameras;
  if (!cams) {
    const seen = new Map();
    for (const r of requests) for (const c of camerasOf(r)) seen.set(c.id, c);
    cams = [...seen.values()].sort((a, b) => a.id.localeCompare(b.id));
  }
  const items = cams.map((c) => {
    const l = el("label");
    const i = el("input", { type: "checkbox", name: "camera", value: c.id });
    i.checked = checked.has(c.id);
    l.append(i, c.name && c.name !== c.id ? `${c.name} (${c.id})` : c.id);
    return l;
  });
  box.replaceChildren(box.querySelector("legend"), ...items);
  box.hidden = !items.length;
}

async function submitRequest(e) {
  e.preventDefault();
  const typed = $("req-camera-ids").value.split(/[\s,，、]+/).filter(Boolean);
  const ids = [...new Set([...[...$("req-cameras").querySelectorAll("input:checked")].map((i) => i.value), ...typed])];
  if (!ids.length) return say(() => t("needCamera"));
  const start = fromInput($("req-start").value), end = fromInput($("req-end").value);
  if (!(start < end)) return say(() => t("badRange"));
  const r = await api("POST", "/api/v1/evidence/requests", {
    case_ref: $("req-case").value.trim(), camera_ids: ids, start: iso(start), end: iso(end), reason: $("req-reason").value.trim(),
  });
  $("request-form").reset();
  $("new-request").open = false;
  upsert(r);
  renderCameraChoices();
  say(() => t("submitted"), true);
}

// ---- one approved request: camera, day, timeline ----

function openRequest(id) {
  const r = requests.find((x) => String(x.id) === String(id));
  if (!r) return say(() => t("noSuchRequest", id));
  if (stateOf(r) !== "approved") return say(() => t("notOpenable"));
  stopVideo();
  view = { req: r, camera: null, day: null, lim: null, shown: null, spans: [], gaps: [], pending: null };
  history.replaceState(null, "", `#request=${r.id}`);
  const sec = $("review");
  sec.hidden = false;
  sec.dataset.requestId = r.id;
  ev.request = { id: r.id, start: r.start, end: r.end };
  const opts = camerasOf(r).map((c) => el("option", { value: c.id }, c.name && c.name !== c.id ? `${c.name} (${c.id})` : c.id));
  $("camera").replaceChildren(...opts);
  $("export-camera").replaceChildren(...opts.map((o) => o.cloneNode(true)));
  const s = ms(r.start), e = ms(r.end);
  for (const [id, v] of [["export-start", s], ["export-end", e]]) {
    const i = $(id);
    i.value = inputValue(v);
    i.min = inputValue(s);
    i.max = inputValue(e);
  }
  // Start on the day of the latest footage the range can hold: its end, or now if earlier.
  const latest = Math.min(e, Date.now()) - 1;
  view.day = midnight(latest >= s ? latest : s);
  renderDays();
  renderReviewInfo();
  renderRequests();
  for (const x of r.exports || []) keepExport(x);
  renderExports();
  selectCamera($("camera").value);
  sec.scrollIntoView();
}

function closeReview() {
  stopVideo();
  view = null;
  ev.request = null;
  $("review").hidden = true;
  history.replaceState(null, "", location.pathname);
  renderRequests();
}

function renderReviewInfo() {
  const r = view.req;
  $("review-title").textContent = `${r.case_ref} #${r.id}`;
  const parts = [span(ms(r.start), ms(r.end)), `${t("approved")}: ${r.decided_by || "—"}`];
  if (r.expires_at) parts.push(t("until", when(ms(r.expires_at))));
  if (r.decision_note) parts.push(r.decision_note);
  $("review-info").textContent = parts.join(" · ");
}

function renderDays() {
  const r = view.req, s = ms(r.start), e = ms(r.end);
  const opts = [];
  for (let d = midnight(s); d < e && opts.length < 400; d = nextMidnight(d)) {
    opts.push(el("option", { value: d }, `${localDate(d)} ${t("days")[new Date(d).getDay()]}`));
  }
  $("day").replaceChildren(...opts);
  $("day").value = String(view.day);
}

function selectCamera(id) {
  stopVideo();
  view.camera = id;
  $("camera").value = id;
  $("export-camera").value = id;
  ev.camera = id;
  fetchTimeline();
}

function selectDay(d) {
  stopVideo();
  view.day = d;
  fetchTimeline();
}

// The playable part of the day: the approved range clipped to the day's local midnights.
function limits() {
  const s = ms(view.req.start), e = ms(view.req.end);
  return { start: Math.max(s, view.day), end: Math.min(e, nextMidnight(view.day)) };
}

function merge(spans) {
  spans.sort((a, b) => a[0] - b[0]);
  const out = [];
  for (const [a, b] of spans) {
    const last = out[out.length - 1];
    if (last && a - last[1] <= MERGE_MS) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

async function fetchTimeline() {
  const v = view, seq = ++tlSeq;
  v.lim = limits();
  v.spans = []; v.gaps = []; v.pending = null;
  $("timeline").dataset.state = "loading";
  $("tl-info").textContent = "";
  renderTimeline();
  const end = Math.min(v.lim.end, Date.now());
  if (end <= v.lim.start) {
    $("timeline").dataset.state = "ready";
    $("tl-info").textContent = t("noFootageYet");
    return;
  }
  try {
    const q = `start=${iso(v.lim.start)}&end=${iso(end)}`;
    const d = await api("GET", `/api/v1/cameras/${encodeURIComponent(v.camera)}/recordings?${q}`);
    if (seq !== tlSeq) return;
    v.spans = merge((d.segments || []).map((s) => [ms(s.start), ms(s.end)]));
    v.gaps = (d.gaps || []).map((g) => ({ start: ms(g.start), end: ms(g.end), cause: g.cause, detail: g.detail }));
    v.pending = d.in_progress ? ms(d.in_progress.start) : null;
    $("timeline").dataset.state = "ready";
  } catch (e) {
    if (seq !== tlSeq) return;
    $("timeline").dataset.state = "error";
    fail(e);
  }
  renderTimeline();
}

// Timeline position (percent) of a time on the shown range.
const pct = (m) => ((m - view.shown.start) / (view.shown.end - view.shown.start)) * 100;

function renderTimeline() {
  const v = view;
  if (!v || !v.lim) return;
  v.shown = $("whole-day").checked ? { start: v.day, end: nextMidnight(v.day) } : v.lim;
  const bar = (cls, a, b, attrs = {}) => {
    a = Math.max(a, v.shown.start);
    b = Math.min(b, v.shown.end);
    if (b <= a) return null;
    const d = el("div", { class: cls, "data-start": iso(a), "data-end": iso(b), ...attrs });
    d.style.left = `${pct(a)}%`;
    d.style.width = `${pct(b) - pct(a)}%`;
    return d;
  };
  const parts = [bar("approved", v.lim.start, v.lim.end)];
  for (const [a, b] of v.spans) parts.push(bar("span", a, b));
  if (v.pending) parts.push(bar("pending", v.pending, Math.min(Date.now(), v.lim.end)));
  for (const g of v.gaps) {
    const why = `${g.cause}${g.detail ? ` — ${g.detail}` : ""}`;
    parts.push(bar("gap", g.start, g.end, { "data-cause": g.cause, title: `${span(g.start, g.end)} ${why}` }));
  }
  if (win) parts.push(bar("loaded", win.xstart, win.to));
  track.replaceChildren(...parts.filter(Boolean), playhead);
  const tl = $("timeline");
  Object.assign(tl.dataset, { camera: v.camera, day: localDate(v.day), start: iso(v.shown.start), end: iso(v.shown.end) });
  ev.spans = track.querySelectorAll(".span").length;
  ev.gaps = track.querySelectorAll(".gap").length;
  ev.day = localDate(v.day);
  renderTicks();
  placePlayhead(ev.wallTime ? ms(ev.wallTime) : null);
}

// Labels at local clock multiples of a step chosen so they stay ≥ 46 px apart. Steps count
// from local midnight, so across a DST change the later ticks fall off the round hour by the
// shift; each label prints its own local time, so none is wrong.
function renderTicks() {
  const box = $("ticks"), s = view.shown;
  const width = box.clientWidth || 320;
  const step = (TICK_MINUTES.find((m) => ((m * 60e3) / (s.end - s.start)) * width >= 46) || 720) * 60e3;
  const base = midnight(s.start);
  const out = [];
  for (let m = base + Math.ceil((s.start - base) / step) * step; m <= s.end; m += step) {
    const p = pct(m);
    const label = m === s.end && m === midnight(m) && m > s.start ? "24:00" : localTime(m);
    const e = el("span", {}, label);
    e.style.left = `${p}%`;
    if (p < 4) e.style.transform = "none";
    else if (p > 96) e.style.transform = "translateX(-100%)";
    out.push(e);
  }
  box.replaceChildren(...out);
}

function placePlayhead(m) {
  if (m == null || !view || !view.shown || m < view.shown.start || m > view.shown.end) {
    playhead.hidden = true;
    return;
  }
  playhead.hidden = false;
  playhead.style.left = `${pct(m)}%`;
  track.setAttribute("aria-valuetext", wall(m));
}

// The time under a pointer on the timeline.
function timeAt(clientX) {
  const r = track.getBoundingClientRect();
  return view.shown.start + clamp((clientX - r.left) / r.width, 0, 1) * (view.shown.end - view.shown.start);
}

// What is at a time: a gap's cause, or the footage resuming later.
function describe(m) {
  const tol = (4 / (track.clientWidth || 320)) * (view.shown.end - view.shown.start); // 4 px either side
  const g = view.gaps.find((x) => m >= x.start - tol && m <= x.end + tol);
  if (!g) return "";
  const why = `${g.cause}${g.detail ? ` — ${g.detail}` : ""}`;
  return t("gapInfo", localTime(g.start, true), localTime(g.end, true), Math.round((g.end - g.start) / 1000), why);
}

// A tap, or the end of a drag: play from there. Inside the loaded window this is a seek;
// elsewhere a new window starts at that time.
function playAt(m) {
  const v = view;
  if (!v || !v.lim || $("timeline").dataset.state === "loading") return;
  let info = describe(m);
  const safe = clamp(m, v.lim.start, v.lim.end - 1000);
  if (Math.abs(safe - m) > 1000) info = [info, t("clamped")].filter(Boolean).join(" · ");
  $("tl-info").textContent = info;
  // The file may end before its window does (footage stops before `to`): past its duration,
  // ask for a new window rather than seek to the last frame.
  const inFile = !(video.duration < (safe - (win ? win.xstart : 0)) / 1000);
  if (win && safe >= win.from && safe < win.to - 500 && inFile && !video.error) {
    video.currentTime = Math.max(0, (safe - win.xstart) / 1000);
    video.play().catch(() => {});
  } else {
    loadWindow(safe);
  }
}

function onPointerDown(e) {
  if (!view || !view.shown || e.button > 0) return;
  drag = { x0: e.clientX, moved: false };
  track.setPointerCapture(e.pointerId);
  placePlayhead(timeAt(e.clientX));
}

// Dragging inside the loaded window scrubs it; the release decides what plays.
function onPointerMove(e) {
  if (!drag) return;
  if (Math.abs(e.clientX - drag.x0) > 4) drag.moved = true;
  const m = timeAt(e.clientX);
  placePlayhead(m);
  $("tl-info").textContent = `→ ${wall(m)}`;
  if (drag.moved && win && m >= win.xstart && m < win.to && !drag.busy) {
    drag.busy = true; // one seek per frame: a seek per pointer event would queue up behind decoding
    requestAnimationFrame(() => {
      if (drag) drag.busy = false;
      const sec = (m - win.xstart) / 1000;
      if (video.fastSeek) video.fastSeek(sec);
      else video.currentTime = sec;
    });
  }
}

function onPointerUp(e) {
  if (!drag) return;
  drag = null;
  playAt(timeAt(e.clientX));
}

function onKey(e) {
  if (!view || !view.lim || (e.key !== "ArrowLeft" && e.key !== "ArrowRight")) return;
  e.preventDefault();
  const step = (e.shiftKey ? 60 : 10) * 1000 * (e.key === "ArrowLeft" ? -1 : 1);
  playAt((ev.wallTime ? ms(ev.wallTime) : view.lim.start) + step);
}

// ---- playback ----

const viewUrl = (cam, from, to) => `/api/v1/cameras/${encodeURIComponent(cam)}/view.mp4?start=${iso(from)}&end=${iso(to)}`;

// The wall time of the file's time 0 (X-Cradle-Start) and, if the server says, of its last
// frame (X-Cradle-End), read with a HEAD, since a <video> cannot see response headers.
// Servers without HEAD get a one-byte ranged GET instead.
async function probe(url, from) {
  let r = await fetch(url, { method: "HEAD", credentials: "same-origin" });
  if (r.status === 405 || r.status === 501) {
    r = await fetch(url, { credentials: "same-origin", headers: { Range: "bytes=0-0" } });
    if (r.body) r.body.cancel().catch(() => {});
  }
  if (r.status === 401) {
    toLogin();
    throw Object.assign(new Error("signed out"), { status: 401 });
  }
  if (!r.ok) {
    // A HEAD answer has no body: ask again with a one-byte GET to read the {"error"}.
    let msg = `${r.status} ${r.statusText}`;
    const g = await fetch(url, { credentials: "same-origin", headers: { Range: "bytes=0-0" } }).catch(() => null);
    if (g && !g.ok) msg = (await g.json().catch(() => ({}))).error || msg;
    throw Object.assign(new Error(msg), { status: r.status });
  }
  const start = ms(r.headers.get("X-Cradle-Start")), end = ms(r.headers.get("X-Cradle-End"));
  if (!Number.isNaN(start)) return { start, end: Number.isNaN(end) ? null : end };
  // No header: the start of the footage at or after `from` on the timeline. Approximate: the
  // file begins at the first keyframe, up to a GOP later.
  const s = view.spans.find(([, b]) => b > from);
  return { start: s ? Math.max(s[0], from) : from, end: null };
}

// `quiet`: carrying on after a window ended, where "no more footage" is an ending, not an error.
async function loadWindow(m, quiet = false) {
  const v = view, seq = ++loadSeq;
  const from = Math.floor(m), to = Math.min(from + WINDOW_MS, v.lim.end);
  const url = viewUrl(v.camera, from, to);
  ev.state = "loading";
  note(t("loadingVideo", localTime(from, true), localTime(to, true)));
  let got;
  try {
    got = await probe(url, from);
  } catch (e) {
    if (seq !== loadSeq) return;
    const ended = quiet && e.status === 404; // the server's "no footage in this range"
    ev.state = ended ? "idle" : "error";
    note(ended ? t("endOfFootage") : "");
    return ended ? undefined : fail(e);
  }
  if (seq !== loadSeq || view !== v) return;
  const xstart = got.start;
  win = { from, to: Math.min(to, got.end || to), xstart, url };
  ev.window = { start: iso(from), end: iso(to), first_frame: iso(xstart) };
  if (xstart - m > 2000) $("tl-info").textContent = [describe(m), t("resumes", wall(xstart))].filter(Boolean).join(" · ");
  pendingSeek = Math.max(0, (m - xstart) / 1000);
  video.src = url;
  video.play().catch(() => {}); // autoplay may be refused; the controls then start it
  renderTimeline();
}

function stopVideo() {
  loadSeq++;
  win = null;
  pendingSeek = 0;
  video.pause();
  video.removeAttribute("src");
  video.load();
  Object.assign(ev, { state: "idle", window: null, wallTime: null });
  $("wall-time").textContent = "";
  note("");
  placePlayhead(null);
}

// The frame on screen as wall time: the window's first frame plus the position in the file.
function showWall(mediaTime) {
  if (!win) return;
  const m = win.xstart + (mediaTime ?? video.currentTime) * 1000;
  ev.wallTime = iso(m);
  $("wall-time").textContent = t("frameTime", wall(m));
  if (!drag) placePlayhead(m);
  // The window lies inside the approved range; a frame past its end would be a server fault.
  if (view && m > ms(view.req.end) + 1000) video.pause();
}

function onFrame(now, meta) {
  showWall(meta && meta.mediaTime);
  video.requestVideoFrameCallback(onFrame);
}

// Played to the end of a window: carry on with the next one, up to the day's limit. The next
// file starts at the first keyframe at or after this one's end (its last frame plus that
// frame's duration, so a one-frame GOP at the end cannot bring the same window back).
function onEnded() {
  if (!win || !view) return;
  const next = Math.max(win.to, win.xstart + (video.duration || 0) * 1000);
  if (next < view.lim.end - 1000) loadWindow(next, true);
  else note(t("endOfRange"));
}

// ---- exports ----

function keepExport(e) {
  const old = exportsById.get(e.id);
  if (!old || old.state === "pending") exportsById.set(e.id, e);
  if (e.state === "pending") poll(e.id);
}

function poll(id) {
  if (polling.has(id)) return;
  polling.add(id);
  const step = async () => {
    try {
      const e = await api("GET", `/api/v1/evidence/exports/${encodeURIComponent(id)}`);
      exportsById.set(id, e);
      renderExports();
      if (e.state === "pending") return setTimeout(step, 1000);
    } catch (err) {
      if (!err.status || err.status >= 500) return setTimeout(step, 3000); // the network or the server: try again
      fail(err);
    }
    polling.delete(id);
  };
  setTimeout(step, 1000);
}

async function submitExport(e) {
  e.preventDefault();
  const r = view.req, rs = ms(r.start), re = ms(r.end);
  const s = fromInput($("export-start").value), en = fromInput($("export-end").value);
  if (s >= en) return say(() => t("badRange"));
  // datetime-local keeps whole seconds; within a second of the approved bound means the bound.
  if (s < rs - 999 || en > re + 999) return say(() => t("outsideRange"));
  const body = { camera_id: $("export-camera").value };
  if (!Number.isNaN(s) && Math.abs(s - rs) >= 1000) body.start = iso(s);
  if (!Number.isNaN(en) && Math.abs(en - re) >= 1000) body.end = iso(en);
  const x = await api("POST", `/api/v1/evidence/requests/${r.id}/exports`, body);
  exportsById.set(x.id, x);
  if (x.state === "pending") poll(x.id);
  renderExports();
  say(() => t("exportStarted"), true);
}

function renderExports() {
  if (!view) return;
  const list = [...exportsById.values()].filter((x) => String(x.request_id) === String(view.req.id))
    .sort((a, b) => ms(b.created_at) - ms(a.created_at));
  // Re-rendered every second while one is pending: keep open "how to verify" boxes open.
  const open = new Set([...$("exports").querySelectorAll("details[open]")].map((d) => d.closest("li").dataset.exportId));
  const items = list.map(exportItem);
  for (const li of items) if (open.has(li.dataset.exportId)) li.querySelector("details").open = true;
  $("exports").replaceChildren(...items);
}

function exportItem(x) {
  const li = el("li", { "data-export-id": x.id, "data-state": x.state });
  const head = el("div");
  head.append(el("span", { class: `badge ${x.state}` }, t("exportStates")[x.state] || x.state), " ",
    `${camName(view.req, x.camera_id)} · ${span(ms(x.start), ms(x.end))}`);
  li.appendChild(head);
  li.appendChild(el("small", {}, `${x.created_by} · ${when(ms(x.created_at))} · ${x.id}`));
  if (x.state === "pending") li.appendChild(el("div", {}, t("preparing", Math.max(0, Math.round((Date.now() - ms(x.created_at)) / 1000)))));
  if (x.state === "failed") li.appendChild(el("div", { class: "err" }, x.error || ""));
  if (x.state !== "ready") return li;
  // Names that the verification commands below use.
  const base = `cradle-evidence-${x.id}`;
  const path = `/api/v1/evidence/exports/${encodeURIComponent(x.id)}`;
  const links = el("div", { class: "links" });
  links.append(
    el("a", { href: x.file_url || `${path}/file`, download: `${base}.mp4`, class: "file" }, t("fileLink", ((x.bytes || 0) / 1e6).toFixed(1))),
    el("a", { href: x.manifest_url || `${path}/manifest`, download: `${base}.manifest.json`, class: "manifest" }, t("manifestLink")),
    el("a", { href: x.signature_url || `${path}/signature`, download: `${base}.sig`, class: "signature" }, t("signatureLink")),
    el("a", { href: "/api/v1/evidence/public-key", download: "cradle-public.pem" }, "cradle-public.pem"));
  li.appendChild(links);
  li.appendChild(el("div", { class: "sha" }, `SHA-256 ${x.sha256 || "—"}`));
  const how = el("details");
  how.append(el("summary", {}, t("howToVerify")), el("p", {}, t("verifyText")), el("pre", {},
    `sha256sum ${base}.mp4\n` +
    `jq -r .file.sha256 ${base}.manifest.json\n` +
    `openssl pkeyutl -verify -pubin -inkey cradle-public.pem -rawin -in ${base}.manifest.json -sigfile ${base}.sig`));
  li.appendChild(how);
  return li;
}

// ---- language, header, start-up ----

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  $("tz-note").textContent = t("tzNote", `${zone} ${offset(Date.now())}`.trim());
  if (me) renderRequests();
  if (view) {
    renderReviewInfo();
    renderDays();
    renderExports();
    if (win && ev.wallTime) showWall();
  }
  $("msg").textContent = msgFn ? msgFn() : "";
}

async function logout(e) {
  e.preventDefault();
  stopVideo();
  await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf } }).catch(() => {});
  location.href = "/login";
}

function wire() {
  $("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("cradle.lang", lang);
    applyLang();
  });
  $("logout").addEventListener("click", logout);
  $("refresh").addEventListener("click", () => loadRequests().catch(fail));
  $("review-close").addEventListener("click", closeReview);
  $("request-form").addEventListener("submit", (e) => submitRequest(e).catch(fail));
  $("export-form").addEventListener("submit", (e) => submitExport(e).catch(fail));
  $("camera").addEventListener("change", (e) => selectCamera(e.target.value));
  $("day").addEventListener("change", (e) => selectDay(Number(e.target.value)));
  $("whole-day").addEventListener("change", renderTimeline);
  track.tabIndex = 0;
  track.addEventListener("pointerdown", onPointerDown);
  track.addEventListener("pointermove", onPointerMove);
  track.addEventListener("pointerup", onPointerUp);
  track.addEventListener("pointercancel", () => { drag = null; placePlayhead(ev.wallTime ? ms(ev.wallTime) : null); });
  track.addEventListener("keydown", onKey);
  video.addEventListener("loadedmetadata", () => {
    if (pendingSeek > 0.05) video.currentTime = pendingSeek;
    pendingSeek = 0;
  });
  video.addEventListener("playing", () => { ev.state = "playing"; note(""); });
  video.addEventListener("timeupdate", () => showWall());
  video.addEventListener("seeked", () => showWall());
  video.addEventListener("ended", onEnded);
  video.addEventListener("error", () => {
    if (!win || !video.error) return; // emptied on purpose by stopVideo
    ev.state = "error";
    note("");
    say(() => t("videoError", video.error.code));
  });
  video.addEventListener("contextmenu", (e) => e.preventDefault());
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);
  window.addEventListener("resize", () => { if (view && view.shown) renderTicks(); });
  window.addEventListener("hashchange", openFromHash);
  // Pending exports show their elapsed time between polls.
  setInterval(() => { if (view && polling.size) renderExports(); }, 1000);
}

function openFromHash() {
  const id = (location.hash.match(/^#request=(\d+)$/) || [])[1];
  if (id && (!view || String(view.req.id) !== id)) openRequest(id);
}

async function main() {
  applyLang();
  wire();
  try {
    me = await api("GET", "/api/v1/me");
  } catch (e) {
    if (e.status !== 401) say(() => t("cannotReach", e.message));
    return;
  }
  csrf = me.csrf_token;
  $("who").textContent = `${me.display_name} (${me.role})`;
  $("home").hidden = me.role !== "admin";
  if (me.role !== "admin" && me.role !== "investigator") return say(() => t("notForRole"));
  try {
    await loadRequests();
  } catch (e) {
    return fail(e);
  }
  loadCameraChoices();
  openFromHash();
}

main();
