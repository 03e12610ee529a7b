// Administration page: the centre, classrooms, areas, cameras' placement, children,
// guardians and consent, accounts — through the admin API. Plain DOM, no build step.
"use strict";

let csrf = "";

const el = (tag, attrs = {}, text = "") => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== "") e.textContent = text;
  return e;
};

function say(text, ok = false) {
  const m = document.getElementById("msg");
  m.textContent = text;
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

function table(id, rows, columns, actions) {
  const t = document.getElementById(id);
  const head = el("tr");
  for (const [, label] of columns) head.appendChild(el("th", {}, label));
  if (actions) head.appendChild(el("th"));
  const body = rows.map((row) => {
    const tr = el("tr");
    for (const [key] of columns) tr.appendChild(el("td", {}, show(typeof key === "function" ? key(row) : row[key])));
    if (actions) {
      const td = el("td");
      for (const [label, fn] of actions(row)) {
        const b = el("button", { class: "secondary", type: "button" }, label);
        b.addEventListener("click", () => fn().then(load).catch((e) => say(e.message)));
        td.appendChild(b);
      }
      tr.appendChild(td);
    }
    return tr;
  });
  t.replaceChildren(head, ...body);
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
const DAY_ZH = { mon: "一", tue: "二", wed: "三", thu: "四", fri: "五", sat: "六", sun: "日" };
const hours = (vh) => {
  const days = DAYS.filter((d) => vh && vh[d]);
  if (days.length === 0) return "不开放 closed";
  const span = (d) => `${vh[d].start}–${vh[d].end}`;
  if (days.length === 7 && days.every((d) => span(d) === span("mon"))) return `每天 every day ${span("mon")}`;
  return days.map((d) => `周${DAY_ZH[d]} ${span(d)}`).join(" · ");
};
const period = (p) => `${p.name} ${p.weekdays.map((d) => DAY_ZH[d] || d).join("")} ${p.start}–${p.end}`;
const consent = (c) => (c ? `${c.state === "given" ? "已同意 given" : "已撤回 withdrawn"} (${c.by})` : "未记录 none");

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
  const c = centre.centre, pl = centre.places;
  document.getElementById("centre-body").textContent =
    `${c.name} · 时区 time zone ${c.time_zone} · 开放时间 viewing hours ${hours(c.viewing_hours)} · ` +
    `学位 places ${pl.enrolled}/${pl.capacity} (上限 limit ${pl.limit})`;
  const cf = document.getElementById("centre-form");
  cf.elements["name"].value = c.name;
  cf.time_zone.value = c.time_zone;
  for (const d of DAYS) cf.querySelector(`input[name="day-${d}"]`).checked = Boolean(c.viewing_hours[d]);
  const first = c.viewing_hours[DAYS.find((d) => c.viewing_hours[d])];
  if (first) { cf.start.value = first.start; cf.end.value = first.end; }

  const roomList = listOf(rooms), areaList = listOf(areas);
  const openRooms = roomList.filter((r) => !r.closed_at_us);
  table("classrooms", roomList,
    [["id", "ID"], ["name", "名称 Name"], [(r) => `${r.kind_zh} ${r.kind_en}`, "类型 Kind"], ["capacity", "容量 Capacity"],
     ["enrolled", "在园 Enrolled"], [(r) => r.privacy_periods.map(period).join("; ") || null, "隐私时段 Privacy periods"],
     [(r) => (r.closed_at_us ? "已关闭 closed" : null), "状态 State"]],
    (r) => [
      ...(r.closed_at_us ? [] : [["关闭 Close", () => api("POST", `/api/v1/classrooms/${r.id}/close`, {})]]),
      ...r.privacy_periods.map((p) => [`删除 Remove “${p.name}”`, () => api("DELETE", `/api/v1/classrooms/${r.id}/privacy-periods/${p.id}`)]),
    ]);
  table("areas", areaList, [["id", "ID"], ["name", "名称 Name"], ["private", "私密 Private"]],
    (a) => [[a.private ? "设为非私密 Make not private" : "设为私密 Make private",
      () => api("PATCH", `/api/v1/areas/${a.id}`, { name: a.name, private: !a.private })]]);
  for (const s of document.querySelectorAll(".classroom-select")) options(s, openRooms, (r) => r.name);

  const camList = listOf(cams);
  const placeName = (x) => {
    const p = x.placement.placement;
    if (p.kind === "classroom") return (roomList.find((r) => r.id === p.classroom_id) || {}).name || `classroom ${p.classroom_id}`;
    if (p.kind === "area") return (areaList.find((a) => a.id === p.area_id) || {}).name || `area ${p.area_id}`;
    return "未放置 unplaced";
  };
  table("cameras", camList,
    [["id", "ID"], ["name", "名称 Name"], [placeName, "位置 Place"], [(x) => x.placement.parent_viewable, "家长可看 Parents"],
     [(x) => (x.in_config ? (x.source === "config" ? "配置文件 config file" : "管理员添加 added") : "未在录像 not recorded"), "来源 Source"],
     [(x) => (x.connection ? x.connection.url : null), "地址 URL"],
     [(x) => (x.placement.decommissioned ? `${x.placement.decommissioned.reason} (${x.placement.decommissioned.by})` : null), "停用 Decommissioned"]],
    (x) => (!x.in_config || x.placement.decommissioned ? [] : [["停用 Decommission", () => {
      const reason = prompt("停用原因 Reason for decommissioning (recording continues):");
      return reason ? api("POST", `/api/v1/centre/cameras/${encodeURIComponent(x.id)}/decommission`, { reason }) : Promise.resolve();
    }]]));
  options("camera-select", camList.filter((x) => x.in_config).map((x) => ({ value: x.id, name: x.name })), (x) => `${x.value} ${x.name || ""}`);
  options("place-select", [
    { value: "none", n: "未放置 unplaced" },
    ...openRooms.map((r) => ({ value: `classroom:${r.id}`, n: `班级 ${r.name}` })),
    ...areaList.map((a) => ({ value: `area:${a.id}`, n: `区域 ${a.name}${a.private ? " (私密 private)" : ""}` })),
  ], (x) => x.n);

  const childList = listOf(children).filter((k) => !k.left_at_us);
  table("children", childList,
    [["id", "ID"], ["name", "姓名 Name"], [(k) => (roomList.find((r) => r.id === k.classroom_id) || {}).name, "班级 Classroom"], ["birth_date", "出生 Born"]],
    (k) => [["转班 Move", () => {
      const to = prompt(`转到哪个班（ID）Move to classroom id: ${openRooms.map((r) => `${r.id}=${r.name}`).join(", ")}`);
      return to ? api("POST", `/api/v1/children/${k.id}/move`, { classroom_id: Number(to) }) : Promise.resolve();
    }], ["离园 Leaves", () => (confirm(`${k.name} 离园？ leaves the centre?`) ? api("POST", `/api/v1/children/${k.id}/leave`, {}) : Promise.resolve())]]);
  const guardianList = listOf(guardians);
  table("guardians", guardianList,
    [["id", "ID"], ["username", "账号 Account"], ["display_name", "显示名 Name"],
     [(g) => g.children.map((k) => `${k.child.name} · ${k.relationship} · ${consent(k.consent)}`).join("; ") || null, "幼儿与同意 Children and consent"]],
    (g) => g.children.map((k) => [`解除 Unlink ${k.child.name}`, () => api("DELETE", `/api/v1/guardians/${g.id}/children/${k.child.id}`)]));
  for (const id of ["guardian-select", "consent-guardian"]) options(id, guardianList, (g) => `${g.display_name} (${g.username})`);
  for (const id of ["child-select", "consent-child"]) options(id, childList, (k) => k.name);
  options("period-classroom", openRooms, (r) => r.name);

  table("users", listOf(users), [["username", "用户名 Username"], ["display_name", "显示名 Name"], ["role", "角色 Role"], ["disabled", "停用 Disabled"]],
    (u) => [[u.disabled ? "启用 Enable" : "停用 Disable", () => api("PATCH", `/api/v1/users/${encodeURIComponent(u.username)}`, { disabled: !u.disabled })],
            ["结束会话 End sessions", () => api("POST", `/api/v1/users/${encodeURIComponent(u.username)}/revoke-sessions`, {})]]);
}

const checkedDays = (form) => DAYS.filter((d) => form.querySelector(`input[name="day-${d}"]`).checked);

function wire() {
  for (const form of document.querySelectorAll("form[data-post]")) {
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      api("POST", form.dataset.post, formJson(form))
        .then(() => { form.reset(); say("已保存 Saved", true); return load(); })
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
      .then(() => { say("已保存 Saved", true); return load(); })
      .catch((e) => say(e.message));
  });
  document.getElementById("centre-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const viewing_hours = {};
    for (const d of checkedDays(f)) viewing_hours[d] = { start: f.start.value, end: f.end.value };
    api("PATCH", "/api/v1/centre", { name: f.elements["name"].value, time_zone: f.time_zone.value, viewing_hours })
      .then(() => { say("已保存 Saved", true); return load(); })
      .catch((e) => say(e.message));
  });
  document.getElementById("period-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    api("POST", `/api/v1/classrooms/${f.classroom.value}/privacy-periods`,
      { name: f.elements["name"].value, weekdays: checkedDays(f), start: f.start.value, end: f.end.value })
      .then(() => { say("已保存 Saved", true); return load(); })
      .catch((e) => say(e.message));
  });
  document.getElementById("link-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    api("POST", `/api/v1/guardians/${f.guardian.value}/children`, { child_id: Number(f.child.value), relationship: f.relationship.value })
      .then(() => { say("已关联 Linked", true); return load(); })
      .catch((e) => say(e.message));
  });
  document.getElementById("consent-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    api("POST", `/api/v1/guardians/${f.guardian.value}/children/${f.child.value}/consent`, { state: f.state.value, note: f.note.value })
      .then(() => { say("已记录 Recorded", true); return load(); })
      .catch((e) => say(e.message));
  });
  document.getElementById("logout").addEventListener("click", async (ev) => {
    ev.preventDefault();
    await fetch("/api/v1/logout", { method: "POST", headers: { "X-CSRF-Token": csrf } });
    location.href = "/login";
  });
}

(async () => {
  const r = await fetch("/api/v1/me");
  if (r.status === 401) {
    location.href = `/login?next=${encodeURIComponent(location.pathname)}`;
    return;
  }
  const me = await r.json();
  csrf = me.csrf_token;
  document.getElementById("who").textContent = `${me.display_name} (${me.role})`;
  if (me.role !== "admin") {
    say("此页面仅供管理员使用 · This page is for admins.");
    return;
  }
  wire();
  load().catch((e) => say(e.message));
})();
