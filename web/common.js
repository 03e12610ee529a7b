// What the pages share: building elements, choosing the language (the user's saved
// choice, else the centre's `[server] language`, else the browser's; Chinese or English),
// and looking texts up in a page's table of [Chinese, English] pairs. Loaded before the
// page's own script; the server puts `CRADLE_DEFAULT_LANG` in front of this file.
"use strict";

const el = (tag, attrs = {}, text = "") => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
  if (text !== "") e.textContent = text;
  return e;
};

function pickLang() {
  const saved = localStorage.getItem("cradle.lang");
  if (saved === "zh" || saved === "en") return saved;
  if (typeof CRADLE_DEFAULT_LANG === "string") return CRADLE_DEFAULT_LANG;
  return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en";
}

// `pick(pair)` chooses from a [Chinese, English] pair and `t(key, ...args)` looks `key`
// up in `table` (a function entry is called with args), both in the language
// `currentLang()` answers at the time of the call.
function translator(table, currentLang) {
  const pick = (pair) => pair[currentLang() === "zh" ? 0 : 1];
  const t = (key, ...args) => {
    const v = pick(table[key]);
    return typeof v === "function" ? v(...args) : v;
  };
  return { pick, t };
}

// ---- WHEP (live view over WebRTC), shared by the live and operator pages ----

// Resolves when the browser has gathered its ICE candidates, or after `ms` at most.
function iceGathered(pc, ms) {
  return new Promise((done) => {
    if (pc.iceGatheringState === "complete") return done();
    const timer = setTimeout(done, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        done();
      }
    });
  });
}

// Sends late ICE candidates to the session at `url` (RFC 9725 trickle: a PATCH with an
// SDP fragment); failures are logged, not thrown.
async function whepPatch(url, etag, csrf, pc, cands) {
  const sdp = pc.localDescription.sdp;
  const attr = (name) => (sdp.match(new RegExp(`^a=${name}:(.*)$`, "m")) || ["", ""])[1].trim();
  const lines = [`a=ice-ufrag:${attr("ice-ufrag")}`, `a=ice-pwd:${attr("ice-pwd")}`,
    "m=video 9 UDP/TLS/RTP/SAVPF 0", `a=mid:${cands[0].sdpMid ?? "0"}`, ...cands.map((c) => `a=${c.candidate}`)];
  const headers = { "Content-Type": "application/trickle-ice-sdpfrag", "X-CSRF-Token": csrf };
  if (etag) headers["If-Match"] = etag;
  try {
    const r = await fetch(url, { method: "PATCH", credentials: "same-origin", headers, body: lines.join("\r\n") + "\r\n" });
    if (!r.ok) console.warn(`trickle ICE PATCH ${url}: ${r.status} ${r.statusText}`);
  } catch (e) {
    console.warn(`trickle ICE PATCH ${url}: ${e}`);
  }
}

// Ends the session at `url`; answers the HTTP status, or null if the request failed.
// keepalive lets the DELETE outlive the page on pagehide.
function whepDelete(url, csrf) {
  return fetch(url, { method: "DELETE", credentials: "same-origin", keepalive: true, headers: { "X-CSRF-Token": csrf } })
    .then((r) => r.status, (e) => { console.warn(`DELETE ${url}: ${e}`); return null; });
}

// Makes the offer, gathers candidates (up to 1 s), and — if `beforePost()` still says
// so — POSTs it to the camera's WHEP endpoint. Answers null when aborted, else the
// response `r` and, for 201, the session's `url` (a same-origin path when possible),
// `etag` and SDP `answer`.
async function whepOffer(cameraId, pc, csrf, beforePost) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc, 1000);
  if (!beforePost()) return null;
  const endpoint = `/api/v1/cameras/${encodeURIComponent(cameraId)}/whep`;
  const r = await fetch(endpoint, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/sdp", "X-CSRF-Token": csrf },
    body: pc.localDescription.sdp,
  });
  if (r.status !== 201) return { r };
  const u = new URL(r.headers.get("Location"), new URL(endpoint, window.location.href));
  const url = u.origin === window.location.origin ? u.pathname + u.search : u.href;
  return { r, url, etag: r.headers.get("ETag"), answer: await r.text() };
}
