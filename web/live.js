// Parent live view: the cameras this viewer may watch now (and, for the others, why not) from
// /api/v1/live/cameras, played over WebRTC with WHEP (draft-ietf-wish-whep) from
// /api/v1/cameras/{id}/whep. The viewer's name and the time sit over the picture so a screen
// recording names its source. Plain DOM, no build step; Chinese and English.
"use strict";

// Every fixed text as [Chinese, English]; functions take the values they show.
const T = {
  title: ["Cradle 实时查看", "Cradle live view"],
  signout: ["退出", "Sign out"],
  banner: Array(2).fill("本园未开放家长实时查看 / Live view is switched off at this centre"),
  loading: ["加载中…", "Loading…"],
  none: ["目前没有可查看的摄像头", "No cameras to watch right now"],
  stop: ["停止", "Stop"],
  until: [(t) => `可看到 ${t}`, (t) => `until ${t}`],
  sessions: [(a, m) => `您的家庭正在观看 ${a} / ${m} 路`, (a, m) => `Your family is watching ${a} of ${m} streams`],
  connecting: ["正在连接…", "Connecting…"],
  stopped: ["已停止", "Stopped"],
  failed: [(e) => `无法播放：${e}`, (e) => `Cannot play: ${e}`],
  cannotReach: [(e) => `无法连接 Cradle：${e}`, (e) => `Cannot reach Cradle: ${e}`],
  noWebrtc: ["此浏览器不支持 WebRTC 实时播放", "This browser cannot play live video (no WebRTC)"],
  days: [["周日", "周一", "周二", "周三", "周四", "周五", "周六"], ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]],
};

// Why a camera cannot be watched now (list `reason.code`, or a WHEP refusal's `code`).
const REASONS = {
  closed: [(r, w) => (r.until ? `开放时间 ${w(r.until)}` : "暂不开放"), (r, w) => (r.until ? `opens ${w(r.until)}` : "closed")],
  privacy: [(r, w) => `${r.period || "隐私时段"}：${r.until ? `${w(r.until)} 前暂停` : "暂停"}`,
    (r, w) => `${r.period || "privacy period"} until ${r.until ? w(r.until) : "later"}`],
  consent: ["需要您的监护人同意", "needs your guardian consent"],
  classroom_consent: ["班级内尚有家庭未同意", "not every family in the class has consented"],
  policy: ["本园未开放实时查看", "live view is switched off here"],
  offline: ["摄像头暂无画面", "camera is offline"],
  family_limit: ["您的家庭已达同时观看上限", "your family is already watching the maximum number of streams"],
};

// Why a session ended (GET <session> `end_reason`).
const ENDED = {
  privacy: ["隐私时段开始，直播已暂停", "A privacy period started; live view paused"],
  closed: ["已过开放时间", "Viewing hours are over"],
  consent: ["监护人同意已撤回", "Guardian consent was withdrawn"],
  classroom_consent: ["班级内有家庭撤回了同意", "A family in the class withdrew consent"],
  account: ["您的账户已退出或停用", "Your account was signed out or disabled"],
  moved: ["摄像头或孩子的班级已变更", "The camera or your child's classroom changed"],
  policy: ["实时查看已关闭", "Live view was switched off"],
  session_limit: ["已达观看上限", "Viewing limit reached"],
  camera_gone: ["摄像头已不可用", "The camera is no longer available"],
  ended_by_viewer: ["已停止", "Stopped"],
  server_shutdown: ["服务器正在重启，请稍后再试", "The server is restarting; try again shortly"],
  connection_lost: ["连接中断", "Connection lost"],
};

const $ = (id) => document.getElementById(id);
const video = $("video");
let lang = pickLang();
let csrf = "";
let me = null;
let list = null; // the last /api/v1/live/cameras answer
let skewMs = 0; // server clock minus this device's clock
let sess = null; // the session being set up or played
let msgFn = null; // the message in #msg, re-rendered on a language change

// What the browser tests read.
const live = (window.cradleLive = { pc: null, location: null, camera: null, state: "idle" });

const { pick, t } = translator(T, () => lang);

// A time in the centre's zone: just the HH:MM of the RFC 3339 text, whose offset is the
// centre's; with the weekday when it is not today.
function when(iso) {
  const hm = iso.slice(11, 16);
  const day = iso.slice(0, 10);
  if (!list || !list.now || list.now.slice(0, 10) === day) return hm;
  return `${t("days")[new Date(`${day}T12:00:00Z`).getUTCDay()]} ${hm}`;
}

function phrase(table, r) {
  const f = table[r.code] && pick(table[r.code]);
  if (typeof f === "function") return f(r, when);
  return f || r.message || r.code || "";
}
const reasonText = (r) => phrase(REASONS, r);
const endedText = (info) =>
  info.state === "active" || !info.end_reason
    ? pick(ENDED.connection_lost)
    : phrase({ ...REASONS, ...ENDED }, { code: info.end_reason, message: info.message });

function say(fn) {
  msgFn = fn;
  $("msg").textContent = fn ? fn() : "";
}

function toLogin() {
  window.location.href = "/login?next=/live";
}

async function getJson(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (r.status === 401) {
    toLogin();
    throw new Error("signed out");
  }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
  return data;
}

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
  renderList();
  say(msgFn);
}

// ---- the camera list ----

async function refreshList() {
  try {
    list = await getJson("/api/v1/live/cameras");
    skewMs = list.now ? Date.parse(list.now) - Date.now() : 0;
    renderList();
  } catch (e) {
    if (e.message !== "signed out") say(() => t("cannotReach", e.message));
  }
}

function renderList() {
  if (!list) return;
  $("banner").hidden = list.parent_live_view !== false;
  const s = list.sessions;
  $("sessions").textContent = s && s.max != null ? t("sessions", s.active, s.max) : "";
  const cams = list.cameras || [];
  if (!cams.length) return $("cameras").replaceChildren(el("li", { class: "empty" }, t("none")));
  $("cameras").replaceChildren(...cams.map(tile));
}

function tile(cam) {
  const cls = ["camera"];
  if (!cam.available) cls.push("unavailable");
  if (sess && sess.cam.id === cam.id) cls.push("current");
  const li = el("li", { class: cls.join(" "), "data-camera": cam.id });
  // Unavailable cameras stay tappable: the server's refusal then says why, with today's rules.
  const b = el("button", { type: "button", class: "play" });
  b.appendChild(el("span", { class: "name" }, cam.name));
  if (cam.classroom) b.appendChild(el("span", { class: "classroom" }, cam.classroom));
  if (!cam.available) b.appendChild(el("span", { class: "reason" }, reasonText(cam.reason || { code: "offline" })));
  else if (cam.until) b.appendChild(el("span", { class: "until" }, t("until", when(cam.until))));
  b.addEventListener("click", () => start(cam));
  li.appendChild(b);
  return li;
}

// ---- playing: WHEP ----

function setState(state) {
  live.state = state;
  $("stage").hidden = !(state === "connecting" || state === "playing");
}

async function start(cam) {
  if (sess) stop(false);
  if (!window.RTCPeerConnection) return say(() => t("noWebrtc"));
  const pc = new RTCPeerConnection({ iceServers: (list && list.ice_servers) || [] });
  const s = { cam, pc, url: null, etag: null, posted: false, queue: [], patches: Promise.resolve(), lastFrame: Date.now() };
  sess = s;
  Object.assign(live, { pc, location: null, camera: cam.id });
  setState("connecting");
  $("now-playing").textContent = cam.name;
  say(() => t("connecting"));
  renderList();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (ev) => {
    video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    video.play().catch(() => {});
  };
  pc.onicecandidate = (ev) => {
    if (ev.candidate && ev.candidate.candidate && s.posted) trickle(s, ev.candidate);
  };
  pc.onconnectionstatechange = () => {
    const st = pc.connectionState;
    if (st === "failed" || st === "closed") check(s, true);
    else if (st === "disconnected") check(s, false);
  };
  try {
    const o = await whepOffer(cam.id, pc, csrf, () => {
      if (sess !== s) return false;
      s.posted = true; // candidates from now on go by PATCH (WHEP §4.3)
      return true;
    });
    if (!o) return;
    if (o.r.status === 401) return toLogin();
    if (o.r.status !== 201) return refused(s, await o.r.json().catch(() => ({})), o.r);
    s.url = o.url;
    s.etag = o.etag;
    if (sess !== s) return remove(s.url); // stopped while the offer was in flight
    live.location = s.url;
    await pc.setRemoteDescription({ type: "answer", sdp: o.answer });
    flush(s);
    refreshList(); // the family's stream count now includes this one
  } catch (e) {
    if (sess !== s) return;
    if (s.url) remove(s.url);
    end(s, "error", () => t("failed", e.message || e));
  }
}

function refused(s, err, r) {
  // The refusal carries only the code; the list's reason for the camera has the details.
  const known = err.code && REASONS[err.code];
  const detail = s.cam.reason && s.cam.reason.code === err.code ? s.cam.reason : { code: err.code };
  const fallback = err.error || `${r.status} ${r.statusText}`;
  end(s, "error", () => (known ? reasonText(detail) : fallback));
}

// Trickle ICE (RFC 8840 fragment, WHEP §4.3): candidates found after the offer was sent.
function trickle(s, cand) {
  s.queue.push(cand);
  if (s.url) flush(s);
}

function flush(s) {
  const batch = s.queue.splice(0);
  if (!batch.length || !s.url) return;
  s.patches = s.patches.then(() => whepPatch(s.url, s.etag, csrf, s.pc, batch));
}

function remove(url) {
  return whepDelete(url, csrf);
}

function release(s) {
  try { s.pc.close(); } catch (_) { /* already closed */ }
  video.srcObject = null;
}

// Why the session stopped: asked of the server, which knows (privacy period, consent, …).
async function check(s, fatal) {
  if (s.checking || sess !== s) return;
  s.checking = true;
  try {
    let info = { state: "ended", end_reason: "connection_lost" };
    if (s.url) {
      const r = await fetch(s.url, { credentials: "same-origin" }).catch(() => null);
      if (r && r.ok) info = await r.json().catch(() => info);
    }
    if (sess !== s) return;
    if (info.state === "active" && !fatal) {
      s.lastFrame = Date.now(); // a hiccup: look again in 3 s
      return;
    }
    if (info.state === "active" && s.url) remove(s.url); // our side is dead; free the slot
    end(s, "ended", () => endedText(info));
  } finally {
    s.checking = false;
  }
}

function end(s, state, fn) {
  if (sess !== s) return;
  sess = null;
  release(s);
  setState(state);
  say(fn);
  refreshList();
}

function stop(byViewer = true) {
  const s = sess;
  if (!s) return;
  sess = null;
  if (s.url) remove(s.url);
  release(s);
  setState("idle");
  if (byViewer) {
    say(() => t("stopped"));
    refreshList();
  }
}

function noteFrame() {
  if (!sess) return;
  sess.lastFrame = Date.now();
  if (live.state === "connecting") {
    setState("playing");
    say(null);
  }
}

// No new frame for 3 s while playing: ask the server whether the session ended.
let lastCount = -1;
function watchFrames() {
  const s = sess;
  if (!s) return;
  if (!video.requestVideoFrameCallback && video.getVideoPlaybackQuality) {
    const n = video.getVideoPlaybackQuality().totalVideoFrames;
    if (n !== lastCount && n > 0) noteFrame();
    lastCount = n;
  }
  if (live.state === "playing" && Date.now() - s.lastFrame > 3000) check(s, false);
}

function onVideoFrame() {
  noteFrame();
  video.requestVideoFrameCallback(onVideoFrame);
}

// ---- overlay, header, start-up ----

function clock() {
  const d = new Date(Date.now() + skewMs);
  const tz = (list && list.time_zone) || undefined;
  try {
    const fmt = new Intl.DateTimeFormat("en-GB", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
    const p = Object.fromEntries(fmt.formatToParts(d).map((x) => [x.type, x.value]));
    return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
  } catch (_) {
    return d.toLocaleString();
  }
}

function tick() {
  const name = (list && list.viewer && list.viewer.display_name) || (me && me.display_name) || "";
  const text = `${name} · ${clock()}`;
  $("overlay").textContent = text;
  $("watermark").textContent = text;
}

async function logout(ev) {
  ev.preventDefault();
  stop(false);
  await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf } }).catch(() => {});
  window.location.href = "/login";
}

async function main() {
  try {
    me = await getJson("/api/v1/me");
  } catch (e) {
    if (e.message !== "signed out") say(() => t("cannotReach", e.message));
    return;
  }
  csrf = me.csrf_token;
  $("who").textContent = me.display_name;
  await refreshList();
  tick();
  setInterval(tick, 1000);
  setInterval(refreshList, 30000);
  setInterval(watchFrames, 500);
}

video.playsInline = true;
video.muted = true;
video.autoplay = true;
video.addEventListener("contextmenu", (e) => e.preventDefault());
$("player").addEventListener("contextmenu", (e) => e.preventDefault());
video.addEventListener("playing", noteFrame);
if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onVideoFrame);
$("stop").addEventListener("click", () => stop(true));
$("logout").addEventListener("click", logout);
$("lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("cradle.lang", lang);
  applyLang();
});
window.addEventListener("pagehide", () => stop(false));
window.addEventListener("pageshow", (e) => { if (e.persisted) refreshList(); });
applyLang();
main();
