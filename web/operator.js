// Operator console (operators and admins): every camera at a glance from
// /api/v1/operator/overview — its latest snapshot, state, frame rate, bitrate, last frame,
// today's coverage, days of footage kept against the floor, tamper conditions, open alarms —
// the open alarms with acknowledgement (/api/v1/alarms), the storage forecast, live view of
// any camera over WHEP (draft-ietf-wish-whep; the server audits staff viewing), and adding or
// editing a camera after a test connection that shows its picture. Refreshes every 5 s; a
// snapshot is fetched only when the overview names a newer one. Plain DOM, no build step;
// Chinese and English.
"use strict";

// Every fixed text as [Chinese, English]; functions take the values they show.
const T = {
  tamperSettings: ["检测设置", "Tamper settings"],
  tamperTitle: [(n) => `${n} 的遮挡/移位检测`, (n) => `Tamper checks of ${n}`],
  tamperHint: ["每项检测在连续若干张快照中出现才报警。数值对本摄像头生效，保存后立即使用。",
    "A condition must show in several snapshots in a row before it alarms. These values are this camera's own and apply at once."],
  tamperReset: ["恢复默认", "Back to defaults"],
  tamperSaved: ["已保存", "Saved"],
  tamperOwn: ["本摄像头自定", "this camera's own"],
  tamperDefault: ["使用默认值", "the centre's defaults"],
  th_uniform_spread: ["遮挡：亮度范围低于", "Covered: luma spread below"],
  th_dark_mean: ["遮挡：平均亮度低于", "Covered: mean luma below"],
  th_frozen_mad: ["冻结：画面差异不超过", "Frozen: difference at most"],
  th_frozen_pictures: ["冻结：连续张数", "Frozen: pictures in a row"],
  th_blur_ratio: ["模糊：清晰度低于正常的", "Blurred: sharpness below share of normal"],
  th_moved_similarity: ["移位：与基准相似度低于", "Moved: similarity to the reference below"],
  th_consecutive: ["报警前连续张数", "Pictures in a row before an alarm"],
  th_clear_after: ["恢复前连续正常张数", "Healthy pictures before clearing"],
  th_reference_pictures: ["自动基准张数", "Pictures for the automatic reference"],
  title: ["Cradle 值班台", "Cradle operator console"],
  status: ["录像状态", "Recording status"],
  admin: ["管理", "Administration"],
  signout: ["退出", "Sign out"],
  loading: ["加载中…", "Loading…"],
  close: ["关闭", "Close"],
  notForRole: ["此页面仅供值班员和管理员使用", "This page is for operators and admins"],
  cannotReach: [(e) => `无法连接 Cradle：${e}`, (e) => `Cannot reach Cradle: ${e}`],

  camerasTitle: ["摄像头", "Cameras"],
  summary: [(r, n, w) => `${r} / ${n} 路正在录像 · 更新于 ${w}`, (r, n, w) => `${r} of ${n} recording · updated ${w}`],
  addCamera: ["添加摄像头", "Add camera"],
  noCameras: ["尚未配置摄像头", "No cameras are configured"],
  noPicture: ["暂无画面", "No picture yet"],
  pictureFailed: [(e) => `画面无法加载：${e}`, (e) => `The picture did not load: ${e}`],
  states: [
    { recording: "录像中", degraded: "降级", stalled: "停滞", offline: "离线", starting: "启动中", connecting: "连接中",
      failed: "故障", decommissioned: "已停用" },
    { recording: "recording", degraded: "degraded", stalled: "stalled", offline: "offline", starting: "starting",
      connecting: "connecting", failed: "failed", decommissioned: "decommissioned" },
  ],
  fps: ["帧率", "Frame rate"],
  bitrate: ["码率", "Bitrate"],
  lastFrame: ["最后画面", "Last frame"],
  coverage: ["今日覆盖", "Today's coverage"],
  kept: ["录像保存", "Footage kept"],
  keptValue: [(d, f) => `${d} / ${f} 天`, (d, f) => `${d} / ${f} days`],
  videoFormat: ["视频", "Video"],
  never: ["从未", "never"],
  ago: [(d) => `${d}前`, (d) => `${d} ago`],
  units: [{ s: "秒", min: "分钟", h: "小时", d: "天" }, { s: "s", min: "min", h: "h", d: "d" }],
  reference: [(by, w) => `画面基准：${by}，${w}`, (by, w) => `View confirmed by ${by}, ${w}`],
  noReference: ["画面基准尚未确认", "View not confirmed yet"],
  alarmsOpen: [(n) => `${n} 个未结警报`, (n) => `${n} open alarm${n === 1 ? "" : "s"}`],
  live: ["实时", "Live"],
  confirmView: ["确认画面", "Confirm view"],
  confirmViewHint: ["把当前画面设为基准：之后画面明显不同即报“摄像头被移动”",
    "Make the current picture the reference: a later picture that differs raises “camera moved”"],
  viewConfirmed: [(n) => `已确认 ${n} 的画面基准`, (n) => `The view of ${n} is confirmed`],
  edit: ["编辑", "Edit"],
  inConfig: ["在配置文件中修改", "Edit in the config file"],

  alarmsTitle: ["未结警报", "Open alarms"],
  alarmCount: [(n) => `共 ${n} 个`, (n) => `${n} in all`],
  noAlarms: ["没有未结警报", "No open alarms"],
  site: ["全站", "whole site"],
  alarmStates: [
    { raised: "待处理", acknowledged: "已确认", cleared: "已消除", closed: "已关闭" },
    { raised: "raised", acknowledged: "acknowledged", cleared: "cleared", closed: "closed" },
  ],
  raisedAt: [(w) => `触发于 ${w}`, (w) => `raised ${w}`],
  clearedAt: [(w) => `消除于 ${w}`, (w) => `cleared ${w}`],
  ackedBy: [(by, w, note) => `${by} 于 ${w} 确认：${note}`, (by, w, note) => `acknowledged by ${by}, ${w}: ${note}`],
  ack: ["确认处理", "Acknowledge"],
  ackNote: ["处理说明（必填）", "What was done (required)"],
  ackSubmit: ["提交", "Submit"],
  cancel: ["取消", "Cancel"],
  needNote: ["请填写处理说明", "Say what was done about the alarm"],
  acked: ["警报已确认", "Alarm acknowledged"],
  alreadyAcked: [(e) => `此警报已被确认：${e}`, (e) => `This alarm was already acknowledged: ${e}`],
  breaksArmed: ["影响设防", "breaks armed state"],

  storageTitle: ["存储", "Storage"],
  stWhere: ["存储位置", "Store"],
  stFootage: ["录像总量", "Footage stored"],
  stCapacity: ["容量 / 可用", "Capacity / free"],
  stPerDay: ["每日新增", "Added per day"],
  stForecast: ["按此速率可保存", "At this rate it holds"],
  stVerdict: ["结论", "Verdict"],
  verdict_ok: [(d, f) => `按当前速度可存 ${d} 天，满足 ${f} 天的最低保存期`, (d, f) => `at this rate the store holds ${d} days (the floor is ${f})`],
  verdict_short: [(d, f) => `按当前速度只能存 ${d} 天，不足 ${f} 天的最低保存期`, (d, f) => `at this rate the store holds ${d} days: less than the ${f}-day floor`],
  verdict_unknown_size: ["存储容量未知：请在配置中设置 [storage] capacity_gb", "the store's size is unknown: set [storage] capacity_gb to forecast"],
  verdict_no_data: ["最近 24 小时没有录像，无法预测", "no footage recorded in the last 24 hours to forecast from"],
  unknown: ["未知", "unknown"],
  forecastDays: [(d, f) => `${d} 天（下限 ${f} 天）`, (d, f) => `${d} days (floor ${f} days)`],
  perDay: [(b) => `${b}/天`, (b) => `${b}/day`],
  stCamera: ["摄像头", "Camera"],
  stBytes: ["已存录像", "Stored"],
  stCamPerDay: ["每日", "Per day"],
  stDays: ["已保存天数", "Days kept"],

  stop: ["停止", "Stop"],
  connecting: ["正在连接…", "Connecting…"],
  playing: ["正在实时播放（查看已记录）", "Playing live (this viewing is logged)"],
  playFailed: [(e) => `无法播放：${e}`, (e) => `Cannot play: ${e}`],
  connectionLost: ["连接中断", "The connection was lost"],
  noWebrtc: ["此浏览器不支持 WebRTC 实时播放", "This browser cannot play live video (no WebRTC)"],
  offline: ["摄像头暂无画面", "The camera is not delivering video now"],

  addTitle: ["添加摄像头", "Add a camera"],
  editTitle: [(id) => `编辑摄像头 ${id}`, (id) => `Edit camera ${id}`],
  fId: ["ID（小写字母、数字、- 和 _）", "ID (lowercase letters, digits, - and _)"],
  fName: ["名称", "Name"],
  fUrl: ["RTSP 地址", "RTSP URL"],
  fUser: ["用户名", "Username"],
  fPassword: ["密码", "Password"],
  fSubUrl: ["子码流地址（可选）", "Sub-stream URL (optional)"],
  editHint: ["密码留空且用户名不变时，沿用已保存的密码（测试连接时也是）。", "With the password empty and the username unchanged, the stored password is kept (for the test too)."],
  test: ["测试连接", "Test connection"],
  save: ["保存", "Save"],
  testing: ["正在连接摄像头…", "Connecting to the camera…"],
  testOk: [(c, w, h) => `连接成功：${c} ${w}×${h}`, (c, w, h) => `Connected: ${c} ${w}×${h}`],
  testFailed: [(e) => `连接失败：${e}`, (e) => `Connection failed: ${e}`],
  testFirst: ["请先测试连接，成功后才能保存", "Test the connection; Save works after a successful test"],
  needUrl: ["请填写 RTSP 地址", "Enter the RTSP URL"],
  saved: [(id) => `摄像头 ${id} 已保存，正在录像`, (id) => `Camera ${id} saved; it records now`],
};

// What an alarm is about (`alarm.kind`); tamper conditions use the same names.
const KINDS = {
  no_frames: ["无画面", "No frames"],
  reconnect_storm: ["频繁重连", "Reconnect storm"],
  frame_rate_collapse: ["帧率骤降", "Frame rate collapse"],
  bitrate_collapse: ["码率骤降", "Bitrate collapse"],
  clock_drift: ["时钟偏差", "Clock drift"],
  upload_failing: ["上传失败", "Uploads failing"],
  spool_backlog: ["本地缓存积压", "Spool backlog"],
  spool_full: ["本地缓存已满", "Spool full"],
  storage_forecast: ["存储容量不足预警", "Storage forecast short"],
  footage_missing: ["录像缺失", "Footage missing"],
  retention_short: ["保存期不足", "Retention short"],
  decommissioned: ["已停用", "Decommissioned"],
  lens_covered: ["镜头被遮挡", "Lens covered"],
  picture_frozen: ["画面冻结", "Picture frozen"],
  picture_blurred: ["画面模糊", "Picture blurred"],
  camera_moved: ["摄像头被移动", "Camera moved"],
};

const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
const video = $("video");
let lang = pickLang();
let csrf = "";
let me = null;
let overview = null; // the last /api/v1/operator/overview answer
let alarms = null; // the last open alarms, newest first
let refreshedAt = 0; // Date.now() of the last good overview
let timer = 0;
let msgFn = null, msgTimer = 0;
const tiles = new Map(); // camera id → { li, img, taken, loading, url, snap }
const rows = new Map(); // alarm id → { li, open (the acknowledge form is open), note }
let sess = null; // the live session being set up or played
let form = null; // the camera form: { mode: "add"|"edit", id, tested, testing, saving }

// What the browser test reads.
const op = (window.cradleOperator = { lang, refreshes: 0, cameras: 0, alarms: 0,
  live: { state: "idle", pc: null, location: null, camera: null, frames: 0, error: null, stopped: null },
  form: { open: false, tested: false, codec: null, width: null, height: null } });

const { pick, t } = translator(T, () => lang);
const kindText = (k) => (KINDS[k] ? pick(KINDS[k]) : k);

// Puts `nodes` in `parent` in this order, moving only what is out of place: a node that
// stays keeps its focus and its half-typed input across refreshes.
function sync(parent, nodes) {
  const keep = new Set(nodes);
  for (const c of [...parent.children]) if (!keep.has(c)) c.remove();
  nodes.forEach((n, i) => {
    if (parent.children[i] !== n) parent.insertBefore(n, parent.children[i] || null);
  });
}

// ---- formatting ----

// RFC 3339 → ms since the epoch. The server writes microseconds; ECMA-262's date format has
// exactly three fraction digits, so the rest is cut before parsing.
const ms = (s) => (s ? Date.parse(String(s).replace(/(\.\d{3})\d+/, "$1")) : NaN);
const pad = (n) => String(n).padStart(2, "0");

// A time on this device's clock: HH:MM:SS today, else with the date.
function when(iso) {
  const m = ms(iso);
  if (!Number.isFinite(m)) return "—";
  const d = new Date(m), now = new Date();
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms.slice(0, 5)}`;
}

function duration(s) {
  const u = t("units");
  if (s < 1) return `<1 ${u.s}`;
  if (s < 120) return `${Math.round(s)} ${u.s}`;
  if (s < 7200) return `${Math.round(s / 60)} ${u.min}`;
  if (s < 172800) return `${Math.round(s / 3600)} ${u.h}`;
  return `${Math.round(s / 86400)} ${u.d}`;
}

function bytes(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return "—";
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let v = Number(n), i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

function bitrate(bps) {
  if (bps === null || bps === undefined) return "—";
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mbit/s` : `${(bps / 1e3).toFixed(0)} kbit/s`;
}

// An RFC 6381 codec string as people say it ("avc1.640028" → "H.264").
const codecName = (c) => (/^avc[13]/i.test(c) ? "H.264" : /^(hvc1|hev1)/i.test(c) ? "H.265" : c);

const days = (d) => (d === null || d === undefined ? "—" : d < 10 ? (Math.floor(d * 10) / 10).toFixed(1) : String(Math.floor(d)));

// Tile colour: recording green, degraded amber, stalled/offline/failed red, the rest grey.
function tone(cam) {
  const h = (cam.health && cam.health.state) || cam.state;
  if (cam.state === "failed" || h === "stalled" || h === "offline" || h === "failed") return "bad";
  if (h === "degraded") return "warn";
  if (h === "recording") return "ok";
  return "idle";
}
const stateText = (s) => t("states")[s] || s;

// ---- messages and requests ----

function say(fn, ok = false) {
  msgFn = fn;
  const m = $("msg");
  m.textContent = fn ? fn() : "";
  m.className = fn ? (ok ? "ok" : "err") : "";
  clearTimeout(msgTimer);
  if (fn && ok) msgTimer = setTimeout(() => say(null), 4000);
}

function toLogin() {
  window.location.href = "/login?next=/operator";
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// A JSON request; writes carry the CSRF token. Throws HttpError with the server's message.
async function api(method, path, body) {
  const headers = { "X-CSRF-Token": csrf };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, credentials: "same-origin", headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) {
    toLogin();
    throw new HttpError(401, "signed out");
  }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new HttpError(r.status, data.error || `${r.status} ${r.statusText}`);
  return data;
}

// ---- refreshing ----

async function refresh() {
  clearTimeout(timer);
  try {
    const [ov, al] = await Promise.all([api("GET", "/api/v1/operator/overview"), api("GET", "/api/v1/alarms?state=open")]);
    overview = ov;
    alarms = (al.alarms || []).slice().sort((a, b) => ms(b.raised_at) - ms(a.raised_at));
    refreshedAt = Date.now();
    op.refreshes++;
    if (msgFn && msgFn.refreshError) say(null);
    renderAll();
  } catch (e) {
    if (e.status === 401) return;
    const fn = () => t("cannotReach", e.message);
    fn.refreshError = true;
    say(fn);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function renderAll() {
  renderGrid();
  renderAlarms();
  renderStorage();
}

// ---- the camera grid ----

function renderGrid() {
  if (!overview) return;
  const cams = overview.cameras || [];
  op.cameras = cams.length;
  const recording = cams.filter((c) => tone(c) === "ok" || tone(c) === "warn").length;
  $("summary").textContent = t("summary", recording, cams.length, when(new Date(refreshedAt).toISOString()));
  const list = $("cameras");
  if (!cams.length) {
    tiles.clear();
    return list.replaceChildren(el("li", { class: "empty" }, t("noCameras")));
  }
  for (const id of [...tiles.keys()]) {
    if (!cams.some((c) => c.id === id)) {
      if (tiles.get(id).url) URL.revokeObjectURL(tiles.get(id).url);
      tiles.delete(id);
    }
  }
  sync(list, cams.map(renderTile));
}

function renderTile(cam) {
  let tile = tiles.get(cam.id);
  if (!tile) {
    const img = el("img", { class: "snap", alt: "" });
    img.hidden = true;
    tile = { li: el("li", { "data-camera": cam.id }), img, taken: null, loading: null, url: null, snap: "none", error: null };
    tiles.set(cam.id, tile);
  }
  const health = (cam.health && cam.health.state) || cam.state;
  const li = tile.li;
  li.className = `tile ${tone(cam)}`;
  li.dataset.state = health;
  li.dataset.source = cam.source || "";

  // The picture: kept between refreshes, replaced only when a newer one is named.
  const pic = el("div", { class: "pic" });
  pic.appendChild(tile.img);
  if (tile.snap !== "loaded") pic.appendChild(el("div", { class: "none" }, tile.snap === "error" ? t("pictureFailed", tile.error) : t("noPicture")));
  else if (tile.taken) pic.appendChild(el("span", { class: "taken" }, when(tile.taken)));
  li.dataset.snapshot = tile.snap;
  loadSnapshot(cam, tile);

  const info = el("div", { class: "info" });
  const title = el("div", { class: "title" });
  title.append(el("strong", {}, cam.name || cam.id), el("small", {}, cam.id), el("span", { class: `badge ${tone(cam)}` }, stateText(health)));
  info.appendChild(title);
  const why = (cam.health && cam.health.state !== "recording" && cam.health.detail) || cam.last_error;
  if (why) info.appendChild(el("div", { class: "detail" }, why));

  const dl = el("dl");
  const row = (label, value, cls) => {
    dl.append(el("dt", {}, label), el("dd", cls ? { class: cls } : {}, value));
  };
  row(t("fps"), cam.fps === null || cam.fps === undefined ? "—" : `${Number(cam.fps).toFixed(1)} fps`);
  row(t("bitrate"), bitrate(cam.bitrate_bps));
  row(t("lastFrame"), cam.last_frame_age_s === null || cam.last_frame_age_s === undefined ? t("never") : t("ago", duration(cam.last_frame_age_s)));
  const today = cam.today || {};
  row(t("coverage"), today.percent === null || today.percent === undefined ? "—" : `${Number(today.percent).toFixed(1)}%`);
  const floor = cam.retention_days || overview.floor_days;
  row(t("kept"), t("keptValue", days(cam.days_kept), floor), cam.days_kept < floor ? "short" : "");
  if (cam.codec) row(t("videoFormat"), `${codecName(cam.codec)}${cam.width && cam.height ? ` ${cam.width}×${cam.height}` : ""}`);
  info.appendChild(dl);

  const chips = el("div", { class: "chips" });
  const tamper = cam.tamper || {};
  for (const k of tamper.active || []) chips.appendChild(el("span", { class: "badge bad", "data-tamper": k }, kindText(k)));
  if (cam.alarms_open > 0) chips.appendChild(el("span", { class: "badge bad", "data-alarms": cam.alarms_open }, t("alarmsOpen", cam.alarms_open)));
  if (chips.childElementCount) info.appendChild(chips);
  const ref = tamper.reference;
  info.appendChild(el("small", { class: "reference" }, ref ? t("reference", ref.confirmed_by, when(ref.confirmed_at)) : t("noReference")));

  const actions = el("div", { class: "actions" });
  const button = (cls, label, fn, extra = {}) => {
    const b = el("button", { type: "button", class: cls, ...extra }, label);
    b.addEventListener("click", fn);
    actions.appendChild(b);
    return b;
  };
  button("live", t("live"), () => play(cam));
  button("secondary confirm", t("confirmView"), () => confirmView(cam), { title: t("confirmViewHint") });
  button("secondary tamper", t("tamperSettings"), () => openTamper(cam));
  if (cam.source === "database") button("secondary edit", t("edit"), () => openForm("edit", cam));
  else actions.appendChild(el("span", { class: "muted" }, t("inConfig")));

  sync(li, [pic, info, actions]);
  return li;
}

// Fetched only when the overview names a picture this tile has not shown (each is fetched
// once); the previous picture stays up until the new one has decoded.
async function loadSnapshot(cam, tile) {
  const snap = cam.snapshot;
  if (!snap || !snap.url) return;
  if (tile.taken === snap.taken || tile.loading === snap.taken) return;
  tile.loading = snap.taken;
  const mark = (state, error = null) => {
    tile.snap = state;
    tile.error = error;
    if (overview) renderTile(overview.cameras.find((c) => c.id === cam.id) || cam);
  };
  try {
    const sep = snap.url.includes("?") ? "&" : "?";
    const r = await fetch(`${snap.url}${sep}t=${encodeURIComponent(snap.taken)}`, { credentials: "same-origin" });
    if (r.status === 401) return toLogin();
    if (r.status === 503) {
      tile.taken = snap.taken;
      if (tile.snap !== "loaded") mark("none");
      return;
    }
    if (!r.ok) {
      const err = await r.json().catch(() => ({}));
      return mark(tile.snap === "loaded" ? "loaded" : "error", err.error || `${r.status} ${r.statusText}`);
    }
    const url = URL.createObjectURL(await r.blob());
    const img = tile.img;
    await new Promise((done, fail) => {
      const probe = new Image();
      probe.onload = done;
      probe.onerror = () => fail(new Error("not a picture"));
      probe.src = url;
    });
    if (tiles.get(cam.id) !== tile) return URL.revokeObjectURL(url); // the camera left meanwhile
    if (tile.url) URL.revokeObjectURL(tile.url);
    img.src = url;
    img.hidden = false;
    tile.url = url;
    tile.taken = snap.taken; // as the overview names it, so the next refresh compares equal
    mark("loaded");
  } catch (e) {
    if (tile.snap !== "loaded") mark("error", e.message || String(e));
  } finally {
    if (tile.loading === snap.taken) tile.loading = null;
  }
}

async function confirmView(cam) {
  try {
    const r = await api("POST", `/api/v1/cameras/${encodeURIComponent(cam.id)}/reference`, {});
    const c = overview && overview.cameras.find((x) => x.id === cam.id);
    if (c && r.reference) {
      c.tamper = c.tamper || { active: [] };
      c.tamper.reference = r.reference;
      renderTile(c);
    }
    say(() => t("viewConfirmed", cam.name || cam.id), true);
  } catch (e) {
    if (e.status !== 401) say(() => e.message);
  }
}

// ---- alarms ----

function cameraName(id) {
  if (!id) return t("site");
  const c = overview && (overview.cameras || []).find((x) => x.id === id);
  return c ? c.name || id : id;
}

function renderAlarms() {
  if (!alarms) return;
  op.alarms = alarms.length;
  $("alarm-count").textContent = t("alarmCount", alarms.length);
  const list = $("alarms");
  for (const id of [...rows.keys()]) if (!alarms.some((a) => a.id === id)) rows.delete(id);
  if (!alarms.length) return list.replaceChildren(el("li", { class: "empty" }, t("noAlarms")));
  sync(list, alarms.map(renderAlarm));
}

function renderAlarm(a) {
  let row = rows.get(a.id);
  if (!row) {
    row = { li: el("li", { "data-alarm-id": a.id }), open: false, note: "", thumb: null };
    rows.set(a.id, row);
  }
  const li = row.li;
  li.className = `alarm ${a.state === "raised" ? "bad" : a.state === "acknowledged" ? "warn" : "idle"}`;
  li.dataset.kind = a.kind;
  li.dataset.camera = a.camera_id || "";
  li.dataset.state = a.state;
  const parts = [];
  if (a.snapshot) {
    // The alarm's picture never changes: fetched once, when the row is first shown.
    if (!row.thumb || row.thumb.dataset.src !== a.snapshot) {
      row.thumb = el("img", { class: "thumb", alt: "", loading: "lazy", "data-src": a.snapshot, src: a.snapshot });
    }
    parts.push(row.thumb);
  }
  const body = el("div", { class: "body" });
  const head = el("div", { class: "head" });
  head.append(el("span", { class: "kind" }, kindText(a.kind)), el("span", { class: "camera" }, cameraName(a.camera_id)),
    el("span", { class: `badge state ${a.state === "raised" ? "bad" : a.state === "acknowledged" ? "warn" : "ok"}` }, t("alarmStates")[a.state] || a.state));
  if (a.breaks_armed) head.appendChild(el("span", { class: "badge bad" }, t("breaksArmed")));
  body.appendChild(head);
  if (a.detail) body.appendChild(el("div", { class: "detail" }, a.detail));
  const times = [t("raisedAt", when(a.raised_at))];
  if (a.cleared_at) times.push(t("clearedAt", when(a.cleared_at)));
  body.appendChild(el("div", { class: "times" }, times.join(" · ")));
  if (a.acknowledged_at) body.appendChild(el("div", { class: "times acked" }, t("ackedBy", a.acknowledged_by, when(a.acknowledged_at), a.ack_note || "")));
  parts.push(body);
  if (!a.acknowledged_at) parts.push(row.open && row.form ? row.form : ackButton(a, row));
  sync(li, parts);
  return li;
}

function ackButton(a, row) {
  const div = el("div", { class: "actions" });
  const b = el("button", { type: "button", class: "ack" }, t("ack"));
  b.addEventListener("click", () => {
    row.open = true;
    row.form = ackForm(a, row);
    renderAlarm(a);
    row.form.querySelector("input").focus();
  });
  div.appendChild(b);
  return div;
}

// Asks for the note in the row (a dialog box would hide the alarm it is about).
function ackForm(a, row) {
  const f = el("form", { class: "actions ack-form" });
  const input = el("input", { name: "note", class: "note", maxlength: "2000", placeholder: t("ackNote"), "aria-label": t("ackNote") });
  input.value = row.note;
  input.addEventListener("input", () => { row.note = input.value; });
  const submit = el("button", { type: "submit", class: "ack-submit" }, t("ackSubmit"));
  const cancel = el("button", { type: "button", class: "secondary ack-cancel" }, t("cancel"));
  cancel.addEventListener("click", () => {
    row.open = false;
    row.form = null;
    renderAlarm(alarms.find((x) => x.id === a.id) || a);
  });
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const note = input.value.trim();
    if (!note) {
      input.focus();
      return say(() => t("needNote"));
    }
    submit.disabled = true;
    try {
      const r = await api("POST", `/api/v1/alarms/${a.id}/ack`, { note });
      row.open = false;
      row.form = null;
      row.note = "";
      const i = alarms.findIndex((x) => x.id === a.id);
      if (i >= 0 && r.alarm) alarms[i] = r.alarm;
      renderAlarms();
      say(() => t("acked"), true);
    } catch (e) {
      submit.disabled = false;
      if (e.status === 401) return;
      if (e.status === 409) {
        row.open = false;
        row.form = null;
        say(() => t("alreadyAcked", e.message));
        return refresh();
      }
      say(() => e.message);
    }
  });
  f.append(input, submit, cancel);
  return f;
}

// ---- storage ----

function renderStorage() {
  if (!overview || !overview.storage) return;
  const s = overview.storage;
  const dl = $("storage");
  const items = [];
  const row = (label, value, cls) => items.push(el("dt", {}, label), el("dd", cls ? { class: cls } : {}, value));
  row(t("stWhere"), s.description || "—");
  row(t("stFootage"), bytes(s.footage_bytes));
  row(t("stCapacity"), `${s.capacity_bytes == null ? t("unknown") : bytes(s.capacity_bytes)} / ${s.free_bytes == null ? t("unknown") : bytes(s.free_bytes)}`);
  row(t("stPerDay"), t("perDay", bytes(s.bytes_per_day)));
  const floor = s.floor_days || overview.floor_days;
  row(t("stForecast"), s.days_at_rate == null ? t("unknown") : t("forecastDays", days(s.days_at_rate), floor),
    s.days_at_rate == null ? "" : s.days_at_rate < floor ? "bad" : "ok");
  const code = `verdict_${s.verdict_code}`;
  row(t("stVerdict"), code in T ? t(code, days(s.days_at_rate), floor) : s.verdict || "—");
  dl.replaceChildren(...items);

  const head = el("tr");
  head.append(el("th", {}, t("stCamera")), el("th", { class: "num" }, t("stBytes")), el("th", { class: "num" }, t("stCamPerDay")), el("th", { class: "num" }, t("stDays")));
  const body = (overview.cameras || []).map((c) => {
    const tr = el("tr", { "data-camera": c.id });
    tr.append(el("td", {}, c.name || c.id), el("td", { class: "num" }, bytes(c.bytes_stored)),
      el("td", { class: "num" }, c.bytes_per_day == null ? "—" : bytes(c.bytes_per_day)),
      el("td", { class: "num" }, t("keptValue", days(c.days_kept), c.retention_days || overview.floor_days)));
    return tr;
  });
  $("storage-cameras").replaceChildren(head, ...body);
}

// ---- live view (WHEP) ----

// H.264 first (what the cameras send); the others stay as the browser's fallback.
function preferH264(tr) {
  const caps = window.RTCRtpReceiver && RTCRtpReceiver.getCapabilities && RTCRtpReceiver.getCapabilities("video");
  if (!caps || !tr.setCodecPreferences) return;
  const h264 = caps.codecs.filter((c) => /h264/i.test(c.mimeType));
  if (!h264.length) return;
  try {
    tr.setCodecPreferences([...h264, ...caps.codecs.filter((c) => !/h264/i.test(c.mimeType))]);
  } catch (_) { /* keep the browser's order */ }
}

function playerSay(text, err = false) {
  $("player-state").textContent = text;
  $("player-state").className = err ? "err" : "";
}

async function play(cam) {
  stopLive(false);
  $("player-box").hidden = false;
  $("player-title").textContent = cam.name || cam.id;
  $("player-box").scrollIntoView({ block: "start", behavior: "smooth" });
  if (!window.RTCPeerConnection) return playerSay(t("noWebrtc"), true);
  const s = { cam, pc: null, url: null, etag: null, posted: false, queue: [], patches: Promise.resolve() };
  sess = s;
  Object.assign(op.live, { state: "connecting", pc: null, location: null, camera: cam.id, frames: 0, error: null, stopped: null });
  playerSay(t("connecting"));
  // The ICE servers (STUN/TURN with short-lived credentials) the server hands out now.
  let iceServers = [];
  try {
    iceServers = (await api("GET", "/api/v1/live/cameras")).ice_servers || [];
  } catch (e) {
    if (e.status === 401) return;
  }
  if (sess !== s) return;
  const pc = new RTCPeerConnection({ iceServers });
  s.pc = op.live.pc = pc;
  preferH264(pc.addTransceiver("video", { direction: "recvonly" }));
  pc.ontrack = (ev) => {
    video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    video.play().catch(() => {});
  };
  pc.onicecandidate = (ev) => {
    if (ev.candidate && ev.candidate.candidate && s.posted) {
      s.queue.push(ev.candidate);
      flush(s);
    }
  };
  pc.onconnectionstatechange = () => {
    if (sess === s && (pc.connectionState === "failed" || pc.connectionState === "closed")) endLive(s, t("connectionLost"));
  };
  try {
    const o = await whepOffer(cam.id, pc, csrf, () => {
      if (sess !== s) return false;
      s.posted = true; // candidates from now on go by PATCH (WHEP §4.3)
      return true;
    });
    if (!o) return;
    if (o.r.status === 401) return toLogin();
    if (o.r.status !== 201) {
      const err = await o.r.json().catch(() => ({}));
      return endLive(s, err.code === "offline" ? t("offline") : err.error || `${o.r.status} ${o.r.statusText}`);
    }
    s.url = o.url;
    s.etag = o.etag;
    if (sess !== s) return removeSession(s.url); // stopped while the offer was in flight
    op.live.location = s.url;
    await pc.setRemoteDescription({ type: "answer", sdp: o.answer });
    flush(s);
  } catch (e) {
    if (sess !== s) return;
    if (s.url) removeSession(s.url);
    endLive(s, e.message || String(e));
  }
}

// Trickle ICE (RFC 8840 fragment, WHEP §4.3): candidates found after the offer was sent.
function flush(s) {
  const batch = s.queue.splice(0);
  if (!batch.length || !s.url) {
    s.queue.unshift(...batch);
    return;
  }
  s.patches = s.patches.then(() => whepPatch(s.url, s.etag, csrf, s.pc, batch));
}

function removeSession(url) {
  return whepDelete(url, csrf);
}

function release(s) {
  try { if (s.pc) s.pc.close(); } catch (_) { /* already closed */ }
  video.srcObject = null;
}

function endLive(s, message) {
  if (sess !== s) return;
  sess = null;
  release(s);
  Object.assign(op.live, { state: "ended", error: message, pc: null });
  playerSay(t("playFailed", message), true);
}

function stopLive(hide = true) {
  const s = sess;
  sess = null;
  if (s) {
    if (s.url) removeSession(s.url).then((status) => { op.live.stopped = status; });
    release(s);
  }
  Object.assign(op.live, { state: "idle", pc: null, location: null });
  if (hide) {
    $("player-box").hidden = true;
    playerSay("");
  }
}

function noteFrame() {
  if (!sess) return;
  op.live.frames++;
  if (op.live.state === "connecting") {
    op.live.state = "playing";
    playerSay(t("playing"));
  }
}

function onVideoFrame() {
  noteFrame();
  video.requestVideoFrameCallback(onVideoFrame);
}

function tick() {
  if ($("player-box").hidden) return;
  const d = new Date();
  const clock = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  $("overlay").textContent = `${(me && me.display_name) || ""} · ${clock}`;
}

// ---- adding and editing a camera ----

const field = (name) => $("camera-form").elements[name];
const settings = () => ({ url: field("url").value.trim(), username: field("username").value.trim(), password: field("password").value });
const settingsKey = () => JSON.stringify(settings());

async function openForm(mode, cam) {
  form = { mode, id: cam ? cam.id : null, tested: null, testing: false, saving: false };
  const f = $("camera-form");
  f.reset();
  field("id").disabled = mode === "edit";
  $("form-preview").hidden = true;
  $("form-preview").removeAttribute("src");
  formSay("");
  $("form-hint").hidden = mode !== "edit";
  renderFormTexts();
  $("form-box").hidden = false;
  op.form = { open: true, tested: false, codec: null, width: null, height: null };
  if (mode === "edit") {
    field("id").value = cam.id;
    field("name").value = cam.name || "";
    try {
      const all = await api("GET", "/api/v1/centre/cameras");
      const c = (all.cameras || []).find((x) => x.id === cam.id);
      const conn = (c && c.connection) || {};
      field("url").value = conn.url || "";
      field("username").value = conn.username || "";
      field("sub_url").value = conn.sub_url || "";
      if (c && c.name) field("name").value = c.name;
    } catch (e) {
      if (e.status !== 401) formSay(e.message, "err");
    }
  }
  updateSave();
  $("form-box").scrollIntoView({ block: "start", behavior: "smooth" });
  (mode === "edit" ? field("url") : field("id")).focus({ preventScroll: true });
}

function closeForm() {
  form = null;
  $("form-box").hidden = true;
  op.form.open = false;
}

function renderFormTexts() {
  if (!form) return;
  $("form-title").textContent = form.mode === "edit" ? t("editTitle", form.id) : t("addTitle");
  $("form-hint").textContent = t("editHint");
}

function formSay(text, cls = "") {
  $("form-result").textContent = text;
  $("form-result").className = cls;
}

// Save is possible only after a successful test of exactly these URL and credentials.
function updateSave() {
  const ok = !!form && !form.saving && form.tested !== null && form.tested === settingsKey();
  $("form-save").disabled = !ok;
  $("form-save").title = ok ? "" : t("testFirst");
  $("form-test").disabled = !form || form.testing;
  op.form.tested = ok;
}

async function testConnection() {
  if (!form || form.testing) return;
  const s = settings();
  if (!s.url) return formSay(t("needUrl"), "err");
  const key = settingsKey();
  const body = { url: s.url };
  if (s.username) body.username = s.username;
  if (s.password) body.password = s.password;
  if (form.mode === "edit") body.id = form.id; // the server may use the stored password
  form.testing = true;
  form.tested = null;
  updateSave();
  formSay(t("testing"));
  $("form-preview").hidden = true;
  const f = form;
  try {
    const r = await fetch("/api/v1/centre/cameras/test", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    if (r.status === 401) return toLogin();
    if (form !== f) return;
    if (!r.ok || !(r.headers.get("Content-Type") || "").startsWith("image/")) {
      const err = await r.json().catch(() => ({}));
      return formSay(t("testFailed", err.error || `${r.status} ${r.statusText}`), "err");
    }
    const blob = await r.blob();
    const img = $("form-preview");
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(blob);
    img.hidden = false;
    const codec = r.headers.get("X-Cradle-Codec") || "?";
    const w = r.headers.get("X-Cradle-Width") || "?", h = r.headers.get("X-Cradle-Height") || "?";
    Object.assign(op.form, { codec, width: Number(w) || null, height: Number(h) || null });
    form.tested = key;
    formSay(t("testOk", codec, w, h), "ok");
  } catch (e) {
    if (form === f) formSay(t("testFailed", e.message || String(e)), "err");
  } finally {
    f.testing = false;
    updateSave();
  }
}

async function saveCamera(ev) {
  ev.preventDefault();
  if (!form || form.tested !== settingsKey()) return formSay(t("testFirst"), "err");
  const body = {};
  for (const name of ["name", "url", "username", "password", "sub_url"]) {
    const v = name === "password" ? field(name).value : field(name).value.trim();
    if (v) body[name] = v;
  }
  const id = form.mode === "edit" ? form.id : field("id").value.trim();
  form.saving = true;
  updateSave();
  try {
    if (form.mode === "edit") await api("PUT", `/api/v1/centre/cameras/${encodeURIComponent(id)}/connection`, body);
    else await api("POST", "/api/v1/centre/cameras", { id, ...body });
    closeForm();
    say(() => t("saved", id), true);
    refresh();
  } catch (e) {
    if (form) {
      form.saving = false;
      updateSave();
    }
    if (e.status !== 401) formSay(e.message, "err");
  }
}

// ---- header, language, start-up ----

// ---- tamper thresholds of one camera ----

const THRESHOLDS = ["uniform_spread", "dark_mean", "frozen_mad", "frozen_pictures", "blur_ratio",
  "moved_similarity", "consecutive", "clear_after", "reference_pictures"];
const WHOLE = new Set(["frozen_pictures", "consecutive", "clear_after", "reference_pictures"]);
let tamperCam = null; // { id, name, loaded: thresholds as the server answered }

function tamperSay(text, cls = "") {
  $("tamper-result").textContent = text;
  $("tamper-result").className = cls;
}

function renderTamper(status) {
  const box = $("tamper-fields");
  box.replaceChildren(...THRESHOLDS.map((k) => {
    const input = el("input", { name: k, type: "number", step: WHOLE.has(k) ? "1" : "any", required: "" });
    input.value = status.thresholds[k];
    const label = el("label", {});
    label.append(el("span", {}, t(`th_${k}`)), input);
    return label;
  }));
  tamperCam.loaded = status.thresholds;
  $("tamper-title").textContent = `${t("tamperTitle", tamperCam.name)} · ${status.overridden ? t("tamperOwn") : t("tamperDefault")}`;
}

async function openTamper(cam) {
  tamperCam = { id: cam.id, name: cam.name || cam.id, loaded: null };
  tamperSay("");
  $("tamper-box").hidden = false;
  try {
    renderTamper(await api("GET", `/api/v1/cameras/${encodeURIComponent(cam.id)}/tamper`));
  } catch (e) {
    if (e.status !== 401) tamperSay(e.message, "err");
  }
  $("tamper-box").scrollIntoView({ block: "start", behavior: "smooth" });
}

async function saveTamper(ev) {
  ev.preventDefault();
  if (!tamperCam || !tamperCam.loaded) return;
  const changes = {};
  for (const k of THRESHOLDS) {
    const v = Number($("tamper-form").elements[k].value);
    if (v !== tamperCam.loaded[k]) changes[k] = v;
  }
  try {
    renderTamper(await api("PUT", `/api/v1/cameras/${encodeURIComponent(tamperCam.id)}/tamper`, changes));
    tamperSay(t("tamperSaved"), "ok");
  } catch (e) {
    if (e.status !== 401) tamperSay(e.message, "err");
  }
}

async function resetTamper() {
  if (!tamperCam) return;
  try {
    renderTamper(await api("DELETE", `/api/v1/cameras/${encodeURIComponent(tamperCam.id)}/tamper`));
    tamperSay(t("tamperSaved"), "ok");
  } catch (e) {
    if (e.status !== 401) tamperSay(e.message, "err");
  }
}

function applyLang() {
  op.lang = lang;
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
  renderFormTexts();
  if (form) updateSave();
  if (tamperCam && tamperCam.loaded) openTamper({ id: tamperCam.id, name: tamperCam.name });
  renderAll();
  if (msgFn) say(msgFn, $("msg").className === "ok");
  if (op.live.state === "playing") playerSay(t("playing"));
  else if (op.live.state === "connecting") playerSay(t("connecting"));
}

async function logout(ev) {
  ev.preventDefault();
  stopLive();
  await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf } }).catch(() => {});
  window.location.href = "/login";
}

async function main() {
  applyLang();
  try {
    me = await api("GET", "/api/v1/me");
  } catch (e) {
    if (e.status !== 401) say(() => t("cannotReach", e.message));
    return;
  }
  csrf = me.csrf_token;
  $("who").textContent = me.display_name || me.username;
  $("admin-link").hidden = me.role !== "admin";
  if (me.role !== "admin" && me.role !== "operator") {
    $("denied").hidden = false;
    return;
  }
  $("console").hidden = false;
  await refresh();
  setInterval(tick, 1000);
}

video.playsInline = true;
video.muted = true;
video.autoplay = true;
video.addEventListener("playing", noteFrame);
if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onVideoFrame);
$("player-stop").addEventListener("click", () => stopLive(true));
$("add-camera").addEventListener("click", () => openForm("add", null));
$("form-close").addEventListener("click", closeForm);
$("tamper-close").addEventListener("click", () => { tamperCam = null; $("tamper-box").hidden = true; });
$("tamper-form").addEventListener("submit", saveTamper);
$("tamper-reset").addEventListener("click", resetTamper);
$("form-test").addEventListener("click", testConnection);
$("camera-form").addEventListener("submit", saveCamera);
$("camera-form").addEventListener("input", updateSave);
$("logout").addEventListener("click", logout);
$("lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("cradle.lang", lang);
  applyLang();
});
window.addEventListener("pagehide", () => stopLive(false));
document.addEventListener("visibilitychange", () => { if (!document.hidden && me) refresh(); });
main();
