// nurture console: a read-only single page over the /v1 read API.
// No framework, no build step: DOM built with h(), text always via textContent.

const T = {
  en: {
    "nav.journeys": "Journeys", "nav.performance": "Performance", "nav.preview": "Preview",
    "nav.contacts": "Customers", logout: "Sign out", "login.title": "Sign in to the console",
    "login.help": "Paste the API token or the read-only console token.", "login.token": "Token",
    "login.submit": "Sign in", "login.wrong": "That token is not accepted.",
    "j.title": "Journeys", "j.trigger": "Trigger", "j.state": "File", "j.running": "running version",
    "j.rejected": "rejected edit", "j.enrolled": "entered", "j.active": "active", "j.sent": "sent",
    "j.done": "done", "j.exited": "exited", "j.activated": "activated", "j.paused": "PAUSED by the blast guard",
    "state.loaded": "loaded", "state.disabled": "disabled", "state.edit_rejected": "edit rejected",
    "j.notrunning": "not running", "j.files": "Files", "j.open": "Open diagram", "j.back": "← all journeys",
    "c.reached": "reached", "c.waiting": "waiting", "c.held": "held", "c.sent": "sent", "c.skipped": "skipped",
    "c.entered": "entered", "c.done": "done", "c.converted": "converted", "c.failed": "failed",
    "p.title": "Performance", "p.days": "Last 30 days", "p.entered": "entered", "p.sent": "sent",
    "p.converted": "converted", "p.channels": "Delivery by channel", "p.channel": "channel",
    "p.retried": "retried", "p.dead": "dead", "p.cancelled": "cancelled", "p.queued": "queued",
    "p.depth": "Queue depth", "p.arms": "Per arm and against the holdout", "p.group": "group",
    "p.rate": "rate", "p.ci": "95% interval", "p.lift": "Lift over the holdout: {a} points ({r}), p = {p}: {s}",
    "p.sig": "significant", "p.notsig": "not significant", "p.convday": "Converted per day, per group",
    "v.title": "Preview (dry-run)", "v.at": "At", "v.until": "Until",
    "v.workflow": "Workflow", "v.action": "Action", "v.contact": "Contact", "v.all": "all",
    "v.run": "Show", "v.prev": "← Previous", "v.next": "Next →", "v.rows": "rows {a}–{b} of {n}",
    "v.none": "Nothing is due.", "v.note": "Nothing was sent or changed.", "v.when": "when",
    "v.step": "step", "v.detail": "detail", "v.entered": "entered", "v.loading": "Simulating…",
    "u.title": "Customers", "u.search": "Search by id, name, phone or e-mail", "u.go": "Search",
    "u.none": "No contact found.", "u.fields": "Fields", "u.tags": "Tags", "u.owner": "Owner",
    "u.consent": "Consent", "u.subscribed": "subscribed", "u.unsubscribed": "unsubscribed from everything",
    "u.enrollments": "Enrollments", "u.history": "History", "u.explain": "Explain",
    "u.explain.run": "Why would each workflow act or not?", "u.noowner": "no owner",
    loading: "Loading…",
  },
  zh: {
    "nav.journeys": "旅程", "nav.performance": "效果", "nav.preview": "预览", "nav.contacts": "客户",
    logout: "退出", "login.title": "登录控制台", "login.help": "请粘贴 API 令牌或只读控制台令牌。",
    "login.token": "令牌", "login.submit": "登录", "login.wrong": "令牌无效。",
    "j.title": "旅程", "j.trigger": "触发", "j.state": "文件", "j.running": "运行版本",
    "j.rejected": "被拒绝的修改", "j.enrolled": "进入", "j.active": "进行中", "j.sent": "已发送",
    "j.done": "完成", "j.exited": "退出", "j.activated": "启用于", "j.paused": "已被防误发保护暂停",
    "state.loaded": "运行中", "state.disabled": "已停用", "state.edit_rejected": "修改被拒",
    "j.notrunning": "未运行", "j.files": "文件", "j.open": "查看流程图", "j.back": "← 全部旅程",
    "c.reached": "到达", "c.waiting": "等待", "c.held": "暂扣", "c.sent": "已发送", "c.skipped": "跳过",
    "c.entered": "进入", "c.done": "完成", "c.converted": "转化", "c.failed": "失败",
    "p.title": "效果", "p.days": "最近 30 天", "p.entered": "进入", "p.sent": "发送", "p.converted": "转化",
    "p.channels": "各渠道投递", "p.channel": "渠道", "p.retried": "重试", "p.dead": "失败",
    "p.cancelled": "取消", "p.queued": "排队", "p.depth": "队列深度", "p.arms": "各实验组与对照组",
    "p.group": "分组", "p.rate": "转化率", "p.ci": "95% 置信区间",
    "p.lift": "相对对照组提升：{a} 个百分点（{r}），p = {p}：{s}", "p.sig": "显著", "p.notsig": "不显著",
    "p.convday": "各组每日转化",
    "v.title": "预览（演练）", "v.at": "时间", "v.until": "直到", "v.workflow": "工作流", "v.action": "动作",
    "v.contact": "客户", "v.all": "全部", "v.run": "查看", "v.prev": "← 上一页", "v.next": "下一页 →",
    "v.rows": "第 {a}–{b} 行，共 {n} 行", "v.none": "没有待执行的动作。", "v.note": "未发送、未修改任何内容。",
    "v.when": "时间", "v.step": "步骤", "v.detail": "详情", "v.entered": "进入", "v.loading": "正在模拟…",
    "u.title": "客户", "u.search": "按编号、姓名、手机号或邮箱搜索", "u.go": "搜索", "u.none": "未找到客户。",
    "u.fields": "字段", "u.tags": "标签", "u.owner": "负责人", "u.consent": "订阅状态",
    "u.subscribed": "已订阅", "u.unsubscribed": "已退订全部渠道", "u.enrollments": "参与的旅程",
    "u.history": "时间线", "u.explain": "解释", "u.explain.run": "各工作流为何会或不会执行？",
    "u.noowner": "无负责人", loading: "加载中…",
  },
};

let lang = localStorage.getItem("nurture.lang") ||
  ((navigator.languages || [navigator.language]).some((l) => /^zh/i.test(l || "")) ? "zh" : "en");

function t(key, vars) {
  let s = (T[lang] && T[lang][key]) || T.en[key] || key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, String(v));
  return s;
}

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

class Unauthorized extends Error {}
// An answer for a page the user already left: dropped, never drawn over the new one.
class Stale extends Error {}
let gen = 0;

async function api(path) {
  const my = gen;
  const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401) throw new Unauthorized();
  const body = await r.json().catch(() => ({}));
  if (my !== gen) throw new Stale();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

const main = () => document.getElementById("main");
function show(...nodes) {
  // replaceChildren would print a left-out part (null) as the text "null".
  main().replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
}

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.getElementById("lang").textContent = lang === "zh" ? "English" : "中文";
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}

// ---------------------------------------------------------------------------
// Sign-in

function loginPage(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  const input = h("input", { id: "token", type: "password", autocomplete: "current-password", "aria-label": t("login.token") });
  const err = h("p", { id: "login-error", class: "error" }, message || "");
  const form = h("form", { class: "card login", id: "login" },
    h("h1", {}, t("login.title")), h("p", { class: "muted" }, t("login.help")), input,
    h("button", { class: "primary", type: "submit" }, t("login.submit")), err);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await fetch("/console/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: input.value }),
    });
    if (r.ok) { input.value = ""; route(); } else err.textContent = t("login.wrong");
  });
  show(form);
  input.focus();
}

// ---------------------------------------------------------------------------
// Journeys

function badge(state) {
  // The class keeps the state's own name (tests and styles read it); the text is translated.
  const key = `state.${state}`;
  const label = t(key);
  return h("span", { class: `badge ${state}`, "data-state": state }, label === key ? state : label);
}

async function journeysPage() {
  const data = await api("/v1/workflows");
  const cards = data.workflows.map((w) => {
    const c = w.counts;
    const fs = w.file_state;
    return h("div", { class: "card workflow", "data-workflow": w.name },
      h("h2", {}, h("a", { href: `#/journey/${encodeURIComponent(w.name)}` }, w.name), " ", badge(w.state)),
      w.description ? h("p", {}, w.description) : null,
      h("p", { class: "muted" }, `${t("j.trigger")}: ${w.trigger} · ${w.file}`),
      w.paused ? h("p", { class: "error" }, `${t("j.paused")}: ${w.paused.reason}`) : null,
      h("p", {}, `${t("j.enrolled")} ${c.enrolled} · ${t("j.active")} ${c.active} · ${t("j.sent")} ${c.sent} · ${t("j.done")} ${c.done} · ${t("j.exited")} ${c.exited}`),
      fileState(fs));
  });
  const broken = data.files.filter((f) => f.state === "broken" && !f.running_version);
  show(h("h1", {}, t("j.title")), h("div", { class: "grid" }, cards),
    broken.length ? h("div", { class: "card" }, h("h2", {}, t("j.files")), broken.map(fileState)) : null);
}

function fileState(fs) {
  if (!fs) return null;
  return h("div", { class: "filestate" },
    h("div", { class: "muted" }, `${fs.file}: `, fs.running_version
      ? `${t("j.running")} ${fs.running_version} (${fs.loaded_at})` : t("j.notrunning")),
    fs.rejected_version ? h("div", { class: "error" }, `${t("j.rejected")} ${fs.rejected_version} (${fs.rejected_at})`) : null,
    fs.diagnostics && fs.diagnostics.length ? h("pre", { class: "diagnostics" }, fs.diagnostics.join("\n")) : null);
}

function countLine(kind, c) {
  if (!c) return "";
  const parts = [];
  const add = (k, v) => { if (v) parts.push(`${t(k)} ${v}`); };
  if (kind === "trigger") add("c.entered", c.entered);
  else if (kind === "end") add("c.done", c.done);
  else if (kind === "goal") {
    add("c.converted", c.converted);
    for (const [r, n] of Object.entries(c.exited || {})) parts.push(`${r} ${n}`);
  } else {
    add("c.reached", c.reached);
    add("c.sent", c.messages && c.messages.sent);
    add("c.failed", c.messages && c.messages.failed);
    add("c.waiting", c.waiting);
    add("c.held", c.held);
    const sk = Object.values(c.skipped || {}).reduce((a, b) => a + b, 0);
    add("c.skipped", sk);
  }
  return parts.join(" · ");
}

const COLOURS = {
  trigger: ["#e3f0ff", "#2f6fd6"], send: ["#e8f7ee", "#2b9a57"], assign: ["#fff4e0", "#c9831a"],
  tag: ["#f3ecff", "#7b4fd1"], wait: ["#f1f2f5", "#7a8090"], if: ["#fffbe0", "#b59a00"],
  goal: ["#ffeef0", "#c7374a"], end: ["#ffffff", "#445566"],
};

function clip(text, max) {
  let cols = 0, out = "";
  for (const ch of text || "") {
    const w = ch.codePointAt(0) >= 0x1100 ? 2 : 1;
    if (cols + w > max) return out + "…";
    cols += w; out += ch;
  }
  return out;
}

function diagram(g) {
  const extra = 16;
  const svg = s("svg", { width: g.width, height: g.height + extra, viewBox: `0 0 ${g.width} ${g.height + extra}`, id: "diagram", role: "img" });
  svg.append(s("title", {}, g.workflow));
  const defs = s("defs");
  const marker = s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
  marker.append(s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#667" }));
  defs.append(marker);
  svg.append(defs);
  const byId = Object.fromEntries(g.nodes.map((n) => [n.id, n]));
  for (const e of g.edges) {
    const a = byId[e.from], b = byId[e.to];
    if (!a || !b) continue;
    const x1 = a.x + a.w / 2, y1 = a.y + a.h + 14, x2 = b.x + b.w / 2, y2 = b.y, my = y1 + 8;
    svg.append(s("path", { d: `M${x1},${y1} L${x1},${my} L${x2},${my} L${x2},${y2}`, fill: "none", stroke: "#667", "stroke-width": 1.4, "marker-end": "url(#arrow)" }));
    // Beside the drop into the branch's first step, below the parent (which
    // would otherwise cover it).
    if (e.label) svg.append(s("text", { x: x2 + 5, y: my + 12, "font-size": 12, fill: "#445", class: "edge-label" }, e.label === "yes" ? (lang === "zh" ? "是" : "yes") : (lang === "zh" ? "否" : "no")));
  }
  for (const n of g.nodes) {
    const [fill, stroke] = COLOURS[n.kind] || COLOURS.end;
    const grp = s("g", { class: `node ${n.kind}`, "data-id": n.id });
    grp.append(s("rect", { x: n.x, y: n.y, width: n.w, height: n.h + 14, rx: n.kind === "trigger" || n.kind === "end" ? 24 : n.kind === "if" ? 2 : 8, fill, stroke, "stroke-width": 1.5 }));
    grp.append(s("text", { x: n.x + n.w / 2, y: n.y + 20, "text-anchor": "middle", "font-weight": 600 }, clip(n.label, 28)));
    const d = s("text", { x: n.x + n.w / 2, y: n.y + 38, "text-anchor": "middle", "font-size": 12, fill: "#334" }, clip(n.detail, 30));
    d.append(s("title", {}, n.detail));
    grp.append(d);
    grp.append(s("text", { x: n.x + n.w / 2, y: n.y + 58, "text-anchor": "middle", class: "counts" }, clip(countLine(n.kind, g.counts[n.id]), 34)));
    svg.append(grp);
  }
  return svg;
}

async function journeyPage(name) {
  const [g, list] = await Promise.all([
    api(`/v1/workflows/${encodeURIComponent(name)}/graph`), api("/v1/workflows"),
  ]);
  const w = list.workflows.find((x) => x.name === name) || {};
  show(h("p", {}, h("a", { href: "#/journeys" }, t("j.back"))),
    h("h1", {}, g.workflow, " ", badge(w.state || "loaded")),
    g.description ? h("p", {}, g.description) : null,
    h("p", { class: "muted" }, `entry: ${g.entry}`, w.activated_at ? ` · ${t("j.activated")} ${w.activated_at}` : ""),
    w.paused ? h("p", { class: "error" }, `${t("j.paused")}: ${w.paused.reason}`) : null,
    fileState(w.file_state),
    h("div", { class: "diagram" }, diagram(g)));
}

// ---------------------------------------------------------------------------
// Performance

function chart(days, series) {
  const W = 600, H = 160, pad = 24;
  const max = Math.max(1, ...Object.values(series).flat());
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  svg.append(s("line", { x1: pad, y1: H - pad, x2: W, y2: H - pad, stroke: "#ccd" }));
  svg.append(s("text", { x: 2, y: 12, "font-size": 10, fill: "#667" }, String(max)));
  const colours = { entered: "#2f6fd6", sent: "#2b9a57", converted: "#c7374a" };
  const palette = ["#2f6fd6", "#2b9a57", "#c7374a", "#8a5cd1", "#d68a2f", "#2fa7b8", "#667"];
  Object.keys(series).forEach((k, i) => { if (!colours[k]) colours[k] = palette[i % palette.length]; });
  const step = (W - pad) / Math.max(1, days.length - 1);
  for (const [k, vals] of Object.entries(series)) {
    const pts = vals.map((v, i) => `${pad + i * step},${H - pad - (v / max) * (H - 2 * pad)}`).join(" ");
    svg.append(s("polyline", { points: pts, fill: "none", stroke: colours[k], "stroke-width": 2, class: `series-${k}` }));
  }
  svg.append(s("text", { x: pad, y: H - 6, "font-size": 10, fill: "#667" }, days[0] || ""));
  svg.append(s("text", { x: W - 64, y: H - 6, "font-size": 10, fill: "#667" }, days[days.length - 1] || ""));
  return svg;
}

async function performancePage() {
  const [rep, ch] = await Promise.all([api("/v1/report/workflows?days=30"), api("/v1/report/channels")]);
  const legend = h("div", { class: "legend" },
    ["entered", "sent", "converted"].map((k) => h("span", {}, h("i", { class: `l-${k}` }), t(`p.${k}`))));
  const cards = rep.workflows.map((w) => h("div", { class: "card report", "data-workflow": w.workflow },
    h("h2", {}, w.workflow),
    h("p", {}, `${t("p.entered")} ${w.totals.entered} · ${t("p.sent")} ${w.totals.sent} · ${t("p.converted")} ${w.totals.converted}`),
    chart(rep.days, { entered: w.entered, sent: w.sent, converted: w.converted }), legend.cloneNode(true)));
  const arms = await Promise.all(rep.workflows.filter((w) => w.experiment)
    .map((w) => api(`/v1/report/workflows/${encodeURIComponent(w.workflow)}?days=30`).then(armsCard)));
  const rows = ch.channels.map((c) => h("tr", {},
    h("td", {}, c.channel), ...["sent", "retried", "dead", "cancelled", "queued"].map((k) => h("td", { class: "num" }, c[k]))));
  show(h("h1", {}, t("p.title")), h("p", { class: "muted" }, `${t("p.days")} (${rep.timezone})`),
    h("div", { class: "grid" }, cards),
    ...arms,
    h("div", { class: "card" }, h("h2", {}, t("p.channels")),
      h("table", { id: "channels" }, h("thead", {}, h("tr", {}, h("th", {}, t("p.channel")),
        ...["sent", "retried", "dead", "cancelled", "queued"].map((k) => h("th", { class: "num" }, t(`p.${k}`))))),
      h("tbody", {}, rows)),
      h("p", {}, `${t("p.depth")}: ${ch.queue_depth}`)));
}

// One workflow per split arm and against its holdout: conversion with its
// 95% interval per group, the lift, and conversions per day per group.
function armsCard(r) {
  const pct = (x) => `${(x * 100).toFixed(1)}%`;
  const rows = r.groups.map((g) => h("tr", { "data-group": g.group, class: `group-${g.kind}` },
    h("td", {}, g.group), h("td", { class: "num" }, g.entered), h("td", { class: "num" }, g.converted),
    h("td", { class: "num" }, pct(g.rate)), h("td", { class: "num" }, `${pct(g.ci[0])} – ${pct(g.ci[1])}`)));
  const lift = r.lift ? h("p", { class: "lift" }, t("p.lift", {
    a: (r.lift.absolute * 100).toFixed(1), r: r.lift.relative == null ? "—" : pct(r.lift.relative),
    p: r.lift.p_value.toFixed(3), s: t(r.lift.significant ? "p.sig" : "p.notsig") })) : null;
  const series = {};
  for (const d of r.daily) if (d.group !== "all") series[d.group] = d.converted;
  const legend = h("div", { class: "legend" }, Object.keys(series).map((k) => h("span", {}, k)));
  return h("div", { class: "card arms", "data-workflow": r.workflow },
    h("h2", {}, `${r.workflow} · ${t("p.arms")}`),
    r.goal ? h("p", { class: "muted" }, r.goal) : null,
    h("table", {}, h("thead", {}, h("tr", {}, ...["p.group", "p.entered", "p.converted", "p.rate", "p.ci"]
      .map((k, i) => h("th", i ? { class: "num" } : {}, t(k))))), h("tbody", {}, rows)),
    lift, h("p", { class: "muted" }, t("p.convday")), chart(r.days, series), legend);
}

// ---------------------------------------------------------------------------
// Preview

const PAGE = 50;

async function previewPage(params) {
  const list = await api("/v1/workflows");
  const q = new URLSearchParams(params);
  const offset = Number(q.get("offset") || 0);
  const field = (name, label, input) => h("label", {}, `${t(label)} `, input);
  const at = h("input", { name: "at", value: q.get("at") || "", placeholder: "2026-11-01T10:00" });
  const until = h("input", { name: "until", value: q.get("until") || "", placeholder: "7d", size: 8 });
  const wf = h("select", { name: "workflow" }, h("option", { value: "" }, t("v.all")),
    list.workflows.map((w) => h("option", { value: w.name, selected: q.get("workflow") === w.name }, w.name)));
  const action = h("select", { name: "action" }, h("option", { value: "" }, t("v.all")),
    ["send", "assign", "tag", "wait", "exit", "skip"].map((a) => h("option", { value: a, selected: q.get("action") === a }, a)));
  const contact = h("input", { name: "contact", value: q.get("contact") || "", size: 12 });
  const form = h("form", { class: "toolbar", id: "preview-form" },
    field("at", "v.at", at), field("until", "v.until", until), field("workflow", "v.workflow", wf),
    field("action", "v.action", action), field("contact", "v.contact", contact),
    h("button", { class: "primary", type: "submit" }, t("v.run")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const el of [at, until, wf, action, contact]) if (el.value) p.set(el.name, el.value);
    location.hash = `#/preview?${p}`;
  });
  const status = h("p", { class: "muted", id: "preview-status" }, t("v.loading"));
  show(h("h1", {}, t("v.title")), form, status);
  if (!params) return previewResults(q, offset, status);
  return previewResults(q, offset, status);
}

async function previewResults(q, offset, status) {
  const p = new URLSearchParams(q);
  p.set("offset", offset);
  p.set("limit", PAGE);
  const data = await api(`/v1/dry-run?${p}`);
  const summary = h("table", { id: "preview-summary" },
    h("thead", {}, h("tr", {}, h("th", {}, t("v.workflow")), h("th", { class: "num" }, t("v.entered")), h("th", {}, t("v.action")))),
    h("tbody", {}, data.summary.map((w) => h("tr", {}, h("td", {}, w.workflow), h("td", { class: "num" }, w.entered),
      h("td", {}, Object.entries(w.actions).map(([k, v]) => `${k}=${v}`).join("  ") || "-")))));
  const rows = data.rows.map((r) => h("tr", { class: "row" },
    h("td", {}, r.when), h("td", {}, r.workflow), h("td", {}, h("a", { href: `#/contact/${encodeURIComponent(r.contact_id)}` }, r.contact_id)),
    h("td", {}, r.step), h("td", {}, r.action),
    h("td", { class: "body" }, detail(r))));
  const go = (o) => { const n = new URLSearchParams(q); n.set("offset", o); location.hash = `#/preview?${n}`; };
  const prev = h("button", { id: "prev", type: "button", disabled: offset <= 0, onclick: () => go(Math.max(0, offset - PAGE)) }, t("v.prev"));
  const next = h("button", { id: "next", type: "button", disabled: offset + PAGE >= data.matched, onclick: () => go(offset + PAGE) }, t("v.next"));
  status.textContent = `${data.at}${data.until !== data.at ? ` → ${data.until}` : ""} · ${t("v.note")}`;
  main().append(
    h("div", { class: "card" }, summary),
    h("div", { class: "card" },
      h("div", { class: "toolbar" }, prev, next,
        h("span", { id: "range" }, data.matched ? t("v.rows", { a: offset + 1, b: Math.min(offset + data.rows.length, data.matched), n: data.matched }) : t("v.none"))),
      h("table", { id: "preview-rows" },
        h("thead", {}, h("tr", {}, ...["v.when", "v.workflow", "v.contact", "v.step", "v.action", "v.detail"].map((k) => h("th", {}, t(k))))),
        h("tbody", {}, rows))));
}

function detail(r) {
  switch (r.action) {
    case "send": return `${r.channel} → ${r.to}${r.subject ? ` [${r.subject}]` : ""}: ${r.body}`;
    case "assign": return `→ ${r.salesperson}${r.notify ? ` (${r.notify})` : ""}`;
    case "tag": return `+[${(r.add || []).join(", ")}] -[${(r.remove || []).join(", ")}]`;
    case "wait": return `until ${r.until}`;
    default: return r.reason || "";
  }
}

// ---------------------------------------------------------------------------
// Customers

async function contactsPage(params) {
  const q = new URLSearchParams(params).get("q") || "";
  const input = h("input", { id: "search", name: "q", value: q, placeholder: t("u.search"), size: 40 });
  const form = h("form", { class: "toolbar", id: "search-form" }, input, h("button", { class: "primary", type: "submit" }, t("u.go")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = `#/contacts?${new URLSearchParams({ q: input.value })}`;
  });
  show(h("h1", {}, t("u.title")), form);
  if (!q) return;
  const data = await api(`/v1/contacts/search?${new URLSearchParams({ q })}`);
  main().append(data.contacts.length
    ? h("ul", { class: "results card", id: "results" }, data.contacts.map((c) => h("li", {},
      h("a", { href: `#/contact/${encodeURIComponent(c.id)}` }, c.name || c.id), " ",
      h("span", { class: "muted" }, [c.id, c.phone, c.email].filter(Boolean).join(" · ")))))
    : h("p", { id: "results" }, t("u.none")));
}

async function contactPage(id) {
  const [c, hist, wfs] = await Promise.all([
    api(`/v1/contacts/${encodeURIComponent(id)}`), api(`/v1/contacts/${encodeURIComponent(id)}/history`), api("/v1/workflows"),
  ]);
  const fields = [["id", c.id], ["name", c.name], ["phone", c.phone], ["email", c.email],
    ["wecom_external_userid", c.wecom_external_userid], ["timezone", c.timezone],
    ["created_at", c.created_at], ["last_active_at", c.last_active_at],
    ...Object.entries(c.attributes || {})];
  const consent = c.consent.unsubscribed ? t("u.unsubscribed")
    : c.consent.channels.map((x) => `${x.channel}: ${x.allowed ? "✓" : "✗"}`).join("  ");
  const explainOut = h("pre", { id: "explain" });
  const which = h("select", {}, h("option", { value: "" }, t("v.all")), wfs.workflows.map((w) => h("option", { value: w.name }, w.name)));
  const explainBtn = h("button", { type: "button", onclick: async () => {
    const p = new URLSearchParams(); if (which.value) p.set("workflow", which.value);
    explainOut.textContent = t("loading");
    const r = await api(`/v1/contacts/${encodeURIComponent(id)}/explain?${p}`);
    explainOut.textContent = r.text;
  } }, t("u.explain"));
  show(h("p", {}, h("a", { href: "#/contacts" }, "← " + t("u.title"))),
    h("h1", { id: "contact-name" }, c.name || c.id),
    h("div", { class: "grid" },
      h("div", { class: "card" }, h("h2", {}, t("u.fields")),
        h("table", { id: "fields" }, h("tbody", {}, fields.filter(([, v]) => v !== null && v !== undefined)
          .map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, String(v))))))),
      h("div", { class: "card" },
        h("h2", {}, t("u.owner")), h("p", {}, c.owner ? `${c.owner.name || ""} (${c.owner.id})` : t("u.noowner")),
        h("h2", {}, t("u.tags")), h("div", { class: "tags" }, c.tags.map((x) => h("span", {}, x))),
        h("h2", {}, t("u.consent")), h("p", {}, consent),
        h("h2", {}, t("u.enrollments")),
        h("ul", { id: "enrollments" }, c.enrollments.map((e) => h("li", {}, `${e.workflow}: ${e.status}`,
          e.step ? ` → ${e.step}` : "", e.next_run_at ? ` (${e.next_run_at})` : ""))))),
    h("div", { class: "card" }, h("h2", {}, t("u.history")),
      h("ul", { class: "timeline", id: "timeline" }, hist.history.map((e) => h("li", {},
        h("span", { class: "when" }, e.at), h("strong", {}, e.kind), " ",
        [e.workflow, e.name, e.action, e.channel, e.status, e.detail, e.body].filter(Boolean).join(" · "))))),
    h("div", { class: "card" }, h("h2", {}, t("u.explain")), h("p", { class: "muted" }, t("u.explain.run")),
      h("div", { class: "toolbar" }, which, explainBtn), explainOut));
}

// ---------------------------------------------------------------------------
// Routing

async function route() {
  gen += 1;
  const hash = location.hash || "#/journeys";
  const [path, params] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", hash.startsWith(a.getAttribute("href").split("?")[0]) ||
      (parts[0] === "journey" && a.getAttribute("href") === "#/journeys") ||
      (parts[0] === "contact" && a.getAttribute("href") === "#/contacts"));
  }
  show(h("p", { class: "muted" }, t("loading")));
  try {
    switch (parts[0]) {
      case "journey": await journeyPage(parts[1]); break;
      case "performance": await performancePage(); break;
      case "preview": await previewPage(params); break;
      case "contacts": await contactsPage(params); break;
      case "contact": await contactPage(parts[1]); break;
      default: await journeysPage();
    }
    document.body.dataset.page = parts[0] || "journeys";
  } catch (e) {
    if (e instanceof Stale) return;
    if (e instanceof Unauthorized) return loginPage();
    main().append(h("p", { class: "error", id: "error" }, e.message));
  }
}

document.getElementById("lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("nurture.lang", lang);
  applyLang();
  route();
});
document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/console/logout", { method: "POST", credentials: "same-origin" });
  loginPage();
});
window.addEventListener("hashchange", route);
applyLang();
route();
