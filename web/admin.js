// Administration page: the centre, classrooms, areas, cameras' placement, children,
// guardians and consent, accounts — through the admin API. Plain DOM, no build step;
// Chinese or English (common.js chooses), switched by the language button.
"use strict";

// Every fixed text as [Chinese, English]; functions take the values they show. What the
// server says (errors, names, reasons) is shown as it says it.
const T = {
  title: ["Cradle 管理", "Cradle administration"],
  id: ["ID", "ID"],
  status: ["录像状态", "Recording status"],
  signout: ["退出", "Sign out"],
  adminsOnly: ["此页面仅供管理员使用", "This page is for admins."],
  saved: ["已保存", "Saved"],
  linked: ["已关联", "Linked"],
  recorded: ["已记录", "Recorded"],
  hhmm: ["时:分（24:00 为当天结束）", "HH:MM (24:00 = end of day)"],
  days: [
    { mon: "一", tue: "二", wed: "三", thu: "四", fri: "五", sat: "六", sun: "日" },
    { mon: "Mon", tue: "Tue", wed: "Wed", thu: "Thu", fri: "Fri", sat: "Sat", sun: "Sun" },
  ],
  day_mon: ["一", "Mon"], day_tue: ["二", "Tue"], day_wed: ["三", "Wed"], day_thu: ["四", "Thu"],
  day_fri: ["五", "Fri"], day_sat: ["六", "Sat"], day_sun: ["日", "Sun"],
  weekday: [(d) => `周${d}`, (d) => d],
  roles: [
    { admin: "管理员", operator: "值班员", parent: "家长", investigator: "调查员", regulator: "监管", committee: "家委会" },
    { admin: "admin", operator: "operator", parent: "parent", investigator: "investigator", regulator: "regulator", committee: "committee" },
  ],
  role_parent: ["家长", "parent"], role_operator: ["值班员", "operator"], role_admin: ["管理员", "admin"],
  role_investigator: ["调查员", "investigator"], role_regulator: ["监管", "regulator"], role_committee: ["家委会", "committee"],

  centre: ["园所", "Centre"],
  centreName: ["园所名称", "Centre name"],
  timeZone: ["时区（Asia/Shanghai）", "Time zone (Asia/Shanghai)"],
  parentViewing: ["家长观看：", "Parent viewing:"],
  saveCentre: ["保存园所", "Save centre"],
  centreLine: [
    (c, hours, pl) => `${c.name} · 时区 ${c.time_zone} · 开放时间 ${hours} · 学位 ${pl.enrolled}/${pl.capacity}（上限 ${pl.limit}）`,
    (c, hours, pl) => `${c.name} · time zone ${c.time_zone} · viewing hours ${hours} · places ${pl.enrolled}/${pl.capacity} (limit ${pl.limit})`,
  ],
  closedHours: ["不开放", "closed"],
  everyDay: [(s) => `每天 ${s}`, (s) => `every day ${s}`],

  classrooms: ["班级", "Classrooms"],
  classroomsHint: ["（乳儿班 ≤ 10 · 托小班 ≤ 15 · 托大班 ≤ 20 · 全园 ≤ 150）",
    "(infant ≤ 10 · toddler ≤ 15 · preschool ≤ 20 · whole centre ≤ 150)"],
  name: ["名称", "Name"],
  kindInfant: ["乳儿班（≤ 10）", "Infant (≤ 10)"],
  kindToddler: ["托小班（≤ 15）", "Toddler (≤ 15)"],
  kindPreschool: ["托大班（≤ 20）", "Preschool (≤ 20)"],
  capacity: ["容量（可选）", "Capacity (optional)"],
  addClassroom: ["新建班级", "Add classroom"],
  periodName: ["隐私时段（如午睡）", "Privacy period (nap time)"],
  addPeriod: ["新建隐私时段", "Add privacy period"],
  colKind: ["类型", "Kind"],
  colCapacity: ["容量", "Capacity"],
  colEnrolled: ["在园", "Enrolled"],
  colPeriods: ["隐私时段", "Privacy periods"],
  colState: ["状态", "State"],
  closed: ["已关闭", "closed"],
  close: ["关闭", "Close"],
  removePeriod: [(n) => `删除“${n}”`, (n) => `Remove “${n}”`],

  areas: ["区域", "Areas"],
  areasHint: ["（私密区域的摄像头永远不对家长开放）", "(cameras in a private area are never shown to parents)"],
  private: ["私密", "Private"],
  addArea: ["新建区域", "Add area"],
  makePublic: ["设为非私密", "Make not private"],
  makePrivate: ["设为私密", "Make private"],

  cameras: ["摄像头", "Cameras"],
  camerasHint: ["（配置文件中的摄像头优先，只能在文件中修改；停用不会停止录像）",
    "(cameras of the config file win and are edited there; decommissioning never stops recording)"],
  parentsMayWatch: ["家长可看", "Parents may watch"],
  save: ["保存", "Save"],
  cameraId: ["ID（如 room-3）", "ID (room-3)"],
  subUrl: ["子码流 rtsp://…（可选）", "Sub-stream rtsp://… (optional)"],
  cameraUsername: ["摄像头用户名", "Camera username"],
  cameraPassword: ["摄像头密码", "Camera password"],
  addCamera: ["添加并开始录像", "Add and start recording"],
  colPlace: ["位置", "Place"],
  colParents: ["家长可看", "Parents"],
  colSource: ["来源", "Source"],
  colUrl: ["地址", "URL"],
  colDecommissioned: ["停用", "Decommissioned"],
  sourceConfig: ["配置文件", "config file"],
  sourceAdded: ["管理员添加", "added"],
  notRecorded: ["未在录像", "not recorded"],
  unplaced: ["未放置", "unplaced"],
  someClassroom: [(id) => `班级 ${id}`, (id) => `classroom ${id}`],
  someArea: [(id) => `区域 ${id}`, (id) => `area ${id}`],
  placeClassroom: [(n) => `班级 ${n}`, (n) => `Classroom ${n}`],
  placeArea: [(n, p) => `区域 ${n}${p ? "（私密）" : ""}`, (n, p) => `Area ${n}${p ? " (private)" : ""}`],
  decommission: ["停用", "Decommission"],
  decommissionWhy: ["停用原因（录像会继续）：", "Reason for decommissioning (recording continues):"],

  children: ["幼儿", "Children"],
  childName: ["姓名", "Name"],
  enrol: ["入园", "Enrol"],
  colClassroom: ["班级", "Classroom"],
  colBorn: ["出生", "Born"],
  move: ["转班", "Move"],
  moveTo: [(rooms) => `转到哪个班（ID）：${rooms}`, (rooms) => `Move to classroom id: ${rooms}`],
  leaves: ["离园", "Leaves"],
  leavesConfirm: [(n) => `${n} 离园？`, (n) => `${n} leaves the centre?`],

  guardians: ["监护人与同意", "Guardians and consent"],
  parentUsername: ["家长账号", "Parent's username"],
  displayName: ["显示名", "Display name"],
  addGuardian: ["新建监护人", "Add guardian"],
  relationship: ["关系（母亲…）", "Relationship (mother…)"],
  link: ["关联", "Link"],
  given: ["同意", "Given"],
  withdrawn: ["撤回", "Withdrawn"],
  note: ["备注", "Note"],
  recordConsent: ["记录同意", "Record consent"],
  colAccount: ["账号", "Account"],
  colDisplayName: ["显示名", "Name"],
  colChildrenConsent: ["幼儿与同意", "Children and consent"],
  consentGiven: ["已同意", "given"],
  consentWithdrawn: ["已撤回", "withdrawn"],
  consentNone: ["未记录", "none"],
  unlink: [(n) => `解除 ${n}`, (n) => `Unlink ${n}`],

  accounts: ["账号", "Accounts"],
  username: ["用户名", "Username"],
  password: ["密码（≥ 10 位）", "Password (≥ 10)"],
  addAccount: ["新建账号", "Add account"],
  colRole: ["角色", "Role"],
  colDisabled: ["停用", "Disabled"],
  enable: ["启用", "Enable"],
  disable: ["停用", "Disable"],
  endSessions: ["结束会话", "End sessions"],
};

let lang = pickLang();
let csrf = "";
let me = null;
let data = null; // the last answers of the admin API, rendered by render()
let msgFn = null; // the message in #msg when it is one of ours, re-rendered on a language change
const { pick, t } = translator(T, () => lang);

// Shows `text` (a string, or a function answering one in the current language) in #msg.
function say(text, ok = false) {
  const m = document.getElementById("msg");
  msgFn = typeof text === "function" ? text : null;
  m.textContent = msgFn ? msgFn() : text;
  m.className = ok ? "ok" : "err";
  if (ok) setTimeout(() => { m.className = ""; }, 3000);
}

async function api(method, path, body) {
  const headers = { "X-CSRF-Token": csrf };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) {
    location.href = `/login?next=${encodeURIComponent(location.pathname)}`;
    throw new Error("signed out");
  }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
  return data;
}

// The list in an answer: the answer itself, or its first array field.
const listOf = (v) => (Array.isArray(v) ? v : Object.values(v || {}).find(Array.isArray) || []);

const show = (v) => {
  if (v === null || v === undefined) return "—";
  if (typeof v === "boolean") return v ? "✓" : "✗";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
};

// Fills table `id`: a header of `columns` ([key or function, label key]) and a row per item
// of `rows` (data-id: its id); `actions(row)` answers the row's buttons as [action, label,
// fn] (data-action: the action).
function table(id, rows, columns, actions) {
  const tbl = document.getElementById(id);
  const head = el("tr");
  for (const [, label] of columns) head.appendChild(el("th", {}, t(label)));
  if (actions) head.appendChild(el("th"));
  const body = rows.map((row) => {
    const tr = el("tr", { "data-id": row.id ?? row.username });
    for (const [key] of columns) tr.appendChild(el("td", {}, show(typeof key === "function" ? key(row) : row[key])));
    if (actions) {
      const td = el("td");
      for (const [action, label, fn] of actions(row)) {
        const b = el("button", { class: "secondary", type: "button", "data-action": action }, label);
        b.addEventListener("click", () => fn().then(load).catch((e) => say(e.message)));
        td.appendChild(b);
      }
      tr.appendChild(td);
    }
    return tr;
  });
  tbl.replaceChildren(head, ...body);
}

function options(select, items, label, blank) {
  const s = typeof select === "string" ? document.getElementById(select) : select;
  const opts = items.map((i) => el("option", { value: i.value ?? i.id }, label(i)));
  if (blank) opts.unshift(el("option", { value: "" }, blank));
  s.replaceChildren(...opts);
}

function formJson(form) {
  const out = {};
  for (const input of form.querySelectorAll("input, select")) {
    if (!input.name) continue;
    if (input.type === "checkbox") out[input.name] = input.checked;
    else if (input.value === "") continue;
    else if (input.type === "number" || input.name.endsWith("_id")) out[input.name] = Number(input.value);
    else out[input.name] = input.value;
  }
  return out;
}

const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const dayName = (d) => t("days")[d] || d;
const hours = (vh) => {
  const days = DAYS.filter((d) => vh && vh[d]);
  if (days.length === 0) return t("closedHours");
  const span = (d) => `${vh[d].start}–${vh[d].end}`;
  if (days.length === 7 && days.every((d) => span(d) === span("mon"))) return t("everyDay", span("mon"));
  return days.map((d) => `${t("weekday", dayName(d))} ${span(d)}`).join(" · ");
};
const period = (p) => `${p.name} ${p.weekdays.map(dayName).join(lang === "zh" ? "" : " ")} ${p.start}–${p.end}`;
const consent = (c) => (c ? `${t(c.state === "given" ? "consentGiven" : "consentWithdrawn")} (${c.by})` : t("consentNone"));
const roleName = (r) => t("roles")[r] || r;

function showWho() {
  if (me) document.getElementById("who").textContent = `${me.display_name} (${roleName(me.role)})`;
}

async function load() {
  const [centre, rooms, areas, cams, children, guardians, users] = await Promise.all([
    api("GET", "/api/v1/centre"),
    api("GET", "/api/v1/classrooms"),
    api("GET", "/api/v1/areas"),
    api("GET", "/api/v1/centre/cameras"),
    api("GET", "/api/v1/children"),
    api("GET", "/api/v1/guardians"),
    api("GET", "/api/v1/users"),
  ]);
  data = { centre, rooms, areas, cams, children, guardians, users };
  const c = centre.centre;
  const cf = document.getElementById("centre-form");
  cf.elements["name"].value = c.name;
  cf.time_zone.value = c.time_zone;
  for (const d of DAYS) cf.querySelector(`input[name="day-${d}"]`).checked = Boolean(c.viewing_hours[d]);
  const first = c.viewing_hours[DAYS.find((d) => c.viewing_hours[d])];
  if (first) { cf.start.value = first.start; cf.end.value = first.end; }
  render();
}

// Fills the centre line, the tables and the choices from `data`, in the current language.
function render() {
  if (!data) return;
  const { centre, rooms, areas, cams, children, guardians, users } = data;
  const c = centre.centre, pl = centre.places;
  document.getElementById("centre-body").textContent = t("centreLine", c, hours(c.viewing_hours), pl);

  const roomList = listOf(rooms), areaList = listOf(areas);
  const openRooms = roomList.filter((r) => !r.closed_at_us);
  table("classrooms", roomList,
    [["id", "id"], ["name", "name"], [(r) => pick([r.kind_zh, r.kind_en]), "colKind"], ["capacity", "colCapacity"],
     ["enrolled", "colEnrolled"], [(r) => r.privacy_periods.map(period).join("; ") || null, "colPeriods"],
     [(r) => (r.closed_at_us ? t("closed") : null), "colState"]],
    (r) => [
      ...(r.closed_at_us ? [] : [["close", t("close"), () => api("POST", `/api/v1/classrooms/${r.id}/close`, {})]]),
      ...r.privacy_periods.map((p) => ["remove-period", t("removePeriod", p.name),
        () => api("DELETE", `/api/v1/classrooms/${r.id}/privacy-periods/${p.id}`)]),
    ]);
  table("areas", areaList, [["id", "id"], ["name", "name"], ["private", "private"]],
    (a) => [["toggle-private", a.private ? t("makePublic") : t("makePrivate"),
      () => api("PATCH", `/api/v1/areas/${a.id}`, { name: a.name, private: !a.private })]]);
  for (const s of document.querySelectorAll(".classroom-select")) options(s, openRooms, (r) => r.name);

  const camList = listOf(cams);
  const placeName = (x) => {
    const p = x.placement.placement;
    if (p.kind === "classroom") return (roomList.find((r) => r.id === p.classroom_id) || {}).name || t("someClassroom", p.classroom_id);
    if (p.kind === "area") return (areaList.find((a) => a.id === p.area_id) || {}).name || t("someArea", p.area_id);
    return t("unplaced");
  };
  table("cameras", camList,
    [["id", "id"], ["name", "name"], [placeName, "colPlace"], [(x) => x.placement.parent_viewable, "colParents"],
     [(x) => (x.in_config ? t(x.source === "config" ? "sourceConfig" : "sourceAdded") : t("notRecorded")), "colSource"],
     [(x) => (x.connection ? x.connection.url : null), "colUrl"],
     [(x) => (x.placement.decommissioned ? `${x.placement.decommissioned.reason} (${x.placement.decommissioned.by})` : null), "colDecommissioned"]],
    (x) => (!x.in_config || x.placement.decommissioned ? [] : [["decommission", t("decommission"), () => {
      const reason = prompt(t("decommissionWhy"));
      return reason ? api("POST", `/api/v1/centre/cameras/${encodeURIComponent(x.id)}/decommission`, { reason }) : Promise.resolve();
    }]]));
  options("camera-select", camList.filter((x) => x.in_config).map((x) => ({ value: x.id, name: x.name })), (x) => `${x.value} ${x.name || ""}`);
  options("place-select", [
    { value: "none", n: t("unplaced") },
    ...openRooms.map((r) => ({ value: `classroom:${r.id}`, n: t("placeClassroom", r.name) })),
    ...areaList.map((a) => ({ value: `area:${a.id}`, n: t("placeArea", a.name, a.private) })),
  ], (x) => x.n);

  const childList = listOf(children).filter((k) => !k.left_at_us);
  table("children", childList,
    [["id", "id"], ["name", "childName"], [(k) => (roomList.find((r) => r.id === k.classroom_id) || {}).name, "colClassroom"], ["birth_date", "colBorn"]],
    (k) => [["move", t("move"), () => {
      const to = prompt(t("moveTo", openRooms.map((r) => `${r.id}=${r.name}`).join(", ")));
      return to ? api("POST", `/api/v1/children/${k.id}/move`, { classroom_id: Number(to) }) : Promise.resolve();
    }], ["leave", t("leaves"), () => (confirm(t("leavesConfirm", k.name)) ? api("POST", `/api/v1/children/${k.id}/leave`, {}) : Promise.resolve())]]);
  const guardianList = listOf(guardians);
  table("guardians", guardianList,
    [["id", "id"], ["username", "colAccount"], ["display_name", "colDisplayName"],
     [(g) => g.children.map((k) => `${k.child.name} · ${k.relationship} · ${consent(k.consent)}`).join("; ") || null, "colChildrenConsent"]],
    (g) => g.children.map((k) => ["unlink", t("unlink", k.child.name), () => api("DELETE", `/api/v1/guardians/${g.id}/children/${k.child.id}`)]));
  for (const id of ["guardian-select", "consent-guardian"]) options(id, guardianList, (g) => `${g.display_name} (${g.username})`);
  for (const id of ["child-select", "consent-child"]) options(id, childList, (k) => k.name);
  options("period-classroom", openRooms, (r) => r.name);

  table("users", listOf(users), [["username", "username"], ["display_name", "colDisplayName"], [(u) => roleName(u.role), "colRole"], ["disabled", "colDisabled"]],
    (u) => [["toggle-disabled", u.disabled ? t("enable") : t("disable"),
      () => api("PATCH", `/api/v1/users/${encodeURIComponent(u.username)}`, { disabled: !u.disabled })],
            ["end-sessions", t("endSessions"), () => api("POST", `/api/v1/users/${encodeURIComponent(u.username)}/revoke-sessions`, {})]]);
}

// Puts the page in `lang`: the fixed texts, the tables and choices (keeping what is
// chosen in them) and our own message; what is typed in the forms stays.
function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
  for (const e of document.querySelectorAll("[data-t-placeholder]")) e.placeholder = t(e.dataset.tPlaceholder);
  for (const e of document.querySelectorAll("[data-t-title]")) e.title = t(e.dataset.tTitle);
  showWho();
  const chosen = [...document.querySelectorAll("main select")].map((s) => [s, s.value]);
  render();
  for (const [s, v] of chosen) if ([...s.options].some((o) => o.value === v)) s.value = v;
  if (msgFn) document.getElementById("msg").textContent = msgFn();
}

const checkedDays = (form) => DAYS.filter((d) => form.querySelector(`input[name="day-${d}"]`).checked);

function wire() {
  for (const form of document.querySelectorAll("form[data-post]")) {
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      api("POST", form.dataset.post, formJson(form))
        .then(() => { form.reset(); say(() => t("saved"), true); return load(); })
        .catch((e) => say(e.message));
    });
  }
  document.getElementById("camera-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const [kind, id] = f.place.value.split(":");
    const placement = kind === "classroom" ? { kind, classroom_id: Number(id) }
      : kind === "area" ? { kind, area_id: Number(id) } : { kind: "unplaced" };
    api("PATCH", `/api/v1/centre/cameras/${f.camera.value}`, { placement, parent_viewable: f.parent_viewable.checked })
      .then(() => { say(() => t("saved"), true); return load(); })
      .catch((e) => say(e.message));
  });
  document.getElementById("centre-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const viewing_hours = {};
    for (const d of checkedDays(f)) viewing_hours[d] = { start: f.start.value, end: f.end.value };
    api("PATCH", "/api/v1/centre", { name: f.elements["name"].value, time_zone: f.time_zone.value, viewing_hours })
      .then(() => { say(() => t("saved"), true); return load(); })
      .catch((e) => say(e.message));
  });
  document.getElementById("period-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    api("POST", `/api/v1/classrooms/${f.classroom.value}/privacy-periods`,
      { name: f.elements["name"].value, weekdays: checkedDays(f), start: f.start.value, end: f.end.value })
      .then(() => { say(() => t("saved"), true); return load(); })
      .catch((e) => say(e.message));
  });
  document.getElementById("link-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    api("POST", `/api/v1/guardians/${f.guardian.value}/children`, { child_id: Number(f.child.value), relationship: f.relationship.value })
      .then(() => { say(() => t("linked"), true); return load(); })
      .catch((e) => say(e.message));
  });
  document.getElementById("consent-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    api("POST", `/api/v1/guardians/${f.guardian.value}/children/${f.child.value}/consent`, { state: f.state.value, note: f.note.value })
      .then(() => { say(() => t("recorded"), true); return load(); })
      .catch((e) => say(e.message));
  });
  document.getElementById("logout").addEventListener("click", async (ev) => {
    ev.preventDefault();
    await fetch("/api/v1/logout", { method: "POST", headers: { "X-CSRF-Token": csrf } });
    location.href = "/login";
  });
}

document.getElementById("lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("cradle.lang", lang);
  applyLang();
});
applyLang();
(async () => {
  const r = await fetch("/api/v1/me");
  if (r.status === 401) {
    location.href = `/login?next=${encodeURIComponent(location.pathname)}`;
    return;
  }
  me = await r.json();
  csrf = me.csrf_token;
  showWho();
  if (me.role !== "admin") {
    say(() => t("adminsOnly"));
    return;
  }
  wire();
  load().catch((e) => say(e.message));
})();
