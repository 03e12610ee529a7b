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
