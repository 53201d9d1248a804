// warden dashboard: plain JS, no build step. Signs in with the admin token (POST
// /ui/login sets an HttpOnly cookie), renders GET /api/v1/actors, follows
// /api/v1/events (one EventSource per tab, closed while the tab is hidden), and acts
// with POST /api/v1/actors/{path}/{start|stop|restart} (X-Warden-CSRF header).
"use strict";

const LOG_LINES = 2000;        // the log pane keeps at most this many lines
const LOG_POLL_MS = 1000;      // how often the open actor's log tail is fetched
const SIDE_POLL_MS = 5000;     // deploys, spokes
const RESYNC_MS = 30000;       // full refetch of the tree, in case an actor left it
const DETAIL_BATCH = 30;       // more changed actors than this: refetch the whole list

const $ = (id) => document.getElementById(id);
const state = {
  csrf: "",
  access: "",
  actors: new Map(),   // path -> actor view (GET /api/v1/actors)
  rows: new Map(),     // path -> row element
  order: [],           // paths in display order
  skew: 0,             // server clock minus ours, ms (from the Date header)
  es: null,            // the one EventSource of this tab
  dirty: new Set(),    // paths whose full view is stale after an event
  dirtyTimer: 0,
  refetchAll: false,
  selected: null,      // path of the open panel
  logTimer: 0,
  sideTimer: 0,
  resyncTimer: 0,
  logText: "",
  filter: "",
  spokes: false,
};
window.__warden = state;  // for tests and benchmarks

// ---------- HTTP ----------

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function noteDate(resp) {
  const date = resp.headers.get("Date");
  if (!date) return;
  const server = Date.parse(date);
  // The Date header has a resolution of 1 s: the server's clock was within [date, date+1s).
  if (!Number.isNaN(server)) state.skew = server + 500 - Date.now();
}

async function api(method, url, body) {
  const headers = { "Accept": "application/json" };
  if (method !== "GET") headers["X-Warden-CSRF"] = state.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(url, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  noteDate(resp);
  if (resp.status === 401 && !url.startsWith("/ui/")) { signedOut(); }
  if (!resp.ok) {
    let message = resp.statusText;
    try { message = (await resp.json()).error || message; } catch (_) { /* not JSON */ }
    throw new HttpError(resp.status, message);
  }
  const type = resp.headers.get("Content-Type") || "";
  if (resp.status === 204) return null;
  return type.startsWith("application/json") ? resp.json() : resp.text();
}

const enc = (path) => path.replace(/^\//, "").split("/").map(encodeURIComponent).join("/");

// ---------- sign-in ----------

async function start() {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", onLogout);
  $("filter").addEventListener("input", (e) => { state.filter = e.target.value.trim().toLowerCase(); applyFilter(); });
  $("rows").addEventListener("click", onRowClick);
  $("panel-close").addEventListener("click", () => select(null));
  $("log").addEventListener("scroll", onLogScroll);
  $("deploy-list").addEventListener("click", onDeployClick);
  document.addEventListener("visibilitychange", onVisibility);
  setInterval(tick, 1000);
  try {
    signedIn(await api("GET", "/ui/session"));
  } catch (_) {
    showLogin();
  }
}

function showLogin() {
  $("login").classList.remove("hidden");
  $("app").classList.add("hidden");
  $("logout").classList.add("hidden");
  $("token").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const input = $("token");
  $("login-error").textContent = "";
  try {
    const session = await api("POST", "/ui/login", { token: input.value.trim() });
    input.value = "";
    signedIn(session);
  } catch (e) {
    $("login-error").textContent = e.status === 401 ? "Wrong token." : `Sign-in failed: ${e.message}`;
  }
}

async function onLogout() {
  try { await api("POST", "/ui/logout"); } catch (_) { /* signed out anyway */ }
  signedOut();
}

function signedIn(session) {
  state.csrf = session.csrf;
  state.access = session.access;
  document.body.classList.toggle("readonly", session.access !== "full");
  $("login").classList.add("hidden");
  $("app").classList.remove("hidden");
  $("logout").classList.remove("hidden");
  openStream();
  clearInterval(state.resyncTimer);
  state.resyncTimer = setInterval(() => { if (!document.hidden) refetchAll(); }, RESYNC_MS);
  refetchSpokes();
}

function signedOut() {
  closeStream();
  clearInterval(state.resyncTimer);
  select(null);
  state.csrf = "";
  showLogin();
}

// ---------- the event stream ----------

function openStream() {
  if (state.es) return;
  const es = new EventSource("/api/v1/events");
  state.es = es;
  es.addEventListener("open", () => { setLink(true); refetchAll(); });
  es.addEventListener("state", onStateEvent);
  es.addEventListener("lagged", () => refetchAll());
  es.addEventListener("error", () => {
    setLink(false);
    if (es.readyState === EventSource.CLOSED) {
      // Refused (the session ended?) rather than dropped: ask before retrying.
      closeStream();
      api("GET", "/ui/session").then(() => setTimeout(openStream, 2000), () => signedOut());
    }
  });
}

function closeStream() {
  if (state.es) { state.es.close(); state.es = null; }
  setLink(false);
}

function setLink(on) {
  const link = $("link");
  link.textContent = on ? "live" : "offline";
  link.classList.toggle("on", on);
}

function onVisibility() {
  if (!state.csrf) return;
  if (document.hidden) {
    closeStream();
  } else {
    openStream();  // its "open" refetches the tree
  }
}

function onStateEvent(event) {
  let change;
  try { change = JSON.parse(event.data); } catch (_) { return; }
  const actor = state.actors.get(change.path);
  if (!actor) { scheduleRefetch(null); return; }
  actor.state = change.state;
  actor.pid = change.pid;
  if (change.state === "running" || change.state === "starting") actor.failed_reason = null;
  updateRow(actor);
  scheduleRefetch(change.path);
}

/// Marks `path` (or everything, with null) stale and refetches soon, in one batch.
function scheduleRefetch(path) {
  if (path === null) state.refetchAll = true; else state.dirty.add(path);
  if (state.dirtyTimer) return;
  state.dirtyTimer = setTimeout(async () => {
    state.dirtyTimer = 0;
    const paths = [...state.dirty];
    const all = state.refetchAll || paths.length > DETAIL_BATCH;
    state.dirty.clear();
    state.refetchAll = false;
    if (all) { await refetchAll(); return; }
    await Promise.all(paths.map(async (p) => {
      try {
        const actor = await api("GET", `/api/v1/actors/${enc(p)}`);
        state.actors.set(p, actor);
        updateRow(actor);
        if (state.selected === p) renderFacts();
      } catch (e) {
        if (e.status === 404) scheduleRefetch(null);
      }
    }));
    renderPools();
  }, 150);
}

// ---------- the tree ----------

let refetching = null;
function refetchAll() {
  if (refetching) return refetching;
  refetching = (async () => {
    try {
      const list = await api("GET", "/api/v1/actors");
      if (!state.firstRender) performance.mark("warden-fetched");
      render(list);
    } catch (e) {
      toast(`cannot read the tree: ${e.message}`);
    } finally {
      refetching = null;
    }
  })();
  return refetching;
}

function render(list) {
  const rowsEl = $("rows");
  const seen = new Set();
  const order = [];
  for (const actor of list) {
    seen.add(actor.path);
    order.push(actor.path);
    state.actors.set(actor.path, actor);
  }
  for (const path of [...state.rows.keys()]) {
    if (!seen.has(path)) {
      state.rows.get(path).remove();
      state.rows.delete(path);
      state.actors.delete(path);
    }
  }
  const template = $("row-template").content.firstElementChild;
  const sameOrder = order.length === state.order.length && order.every((p, i) => p === state.order[i]);
  if (!sameOrder) {
    const fragment = document.createDocumentFragment();
    for (const path of order) {
      let row = state.rows.get(path);
      if (!row) {
        row = template.cloneNode(true);
        row.dataset.path = path;
        const depth = path.split("/").length - 2;
        row.querySelector(".name").style.setProperty("--depth", String(depth));
        row.querySelector(".open").textContent = path.slice(path.lastIndexOf("/") + 1) || path;
        row.querySelector(".open").title = path;
        state.rows.set(path, row);
      }
      fragment.appendChild(row);
    }
    rowsEl.appendChild(fragment);
    state.order = order;
  }
  for (const actor of list) updateRow(actor);
  applyFilter();
  renderSummary();
  renderPools();
  if (state.selected) {
    if (state.actors.has(state.selected)) renderFacts(); else select(null);
  }
  if (!state.firstRender) {
    state.firstRender = performance.now();
    performance.mark("warden-rendered");
    document.body.dataset.rendered = String(list.length);
    // The frame after the first render: rows laid out and painted.
    requestAnimationFrame(() => setTimeout(() => performance.mark("warden-painted"), 0));
  }
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function updateRow(actor) {
  const row = state.rows.get(actor.path);
  if (!row) return;
  if (row.dataset.state !== actor.state) row.dataset.state = actor.state;
  setText(row.querySelector(".kind"), actor.kind || "");
  setText(row.querySelector(".state"), actor.state);
  setText(row.querySelector(".pid"), actor.pid == null ? "" : String(actor.pid));
  setText(row.querySelector(".restarts"), String(actor.restarts ?? 0));
  setText(row.querySelector(".time"), timeText(actor));
  const reason = actor.failed_reason || (actor.last_exit && actor.state !== "running" ? actor.last_exit.reason || "" : "");
  setText(row.querySelector(".reason"), reason || "");
  row.querySelector(".reason").title = reason || "";
  const s = actor.state;
  row.querySelector('[data-action="start"]').disabled = !(s === "stopped" || s === "failed" || s === "exited");
  row.querySelector('[data-action="stop"]').disabled = s === "stopped" || s === "stopping";
  row.querySelector('[data-action="restart"]').disabled = s === "stopping";
  if (state.filter) filterRow(row, actor);
  if (!state.summaryTimer) state.summaryTimer = setTimeout(() => { state.summaryTimer = 0; renderSummary(); }, 200);
}

const serverNow = () => Date.now() + state.skew;

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

function timeText(actor) {
  if (actor.state === "backoff" && actor.next_restart_at) {
    const left = Date.parse(actor.next_restart_at) - serverNow();
    return left > 0 ? `retry in ${(left / 1000).toFixed(left < 10000 ? 1 : 0)}s` : "retrying…";
  }
  if (actor.state === "running" && actor.started_at) {
    return `up ${duration(serverNow() - Date.parse(actor.started_at))}`;
  }
  return "";
}

function tick() {
  if (document.hidden || !state.csrf) return;
  for (const actor of state.actors.values()) {
    if (actor.state === "running" || actor.state === "backoff") {
      const row = state.rows.get(actor.path);
      if (row && !row.hidden) setText(row.querySelector(".time"), timeText(actor));
    }
  }
  if (state.selected) renderFacts();
}

function renderSummary() {
  const counts = {};
  for (const a of state.actors.values()) counts[a.state] = (counts[a.state] || 0) + 1;
  const parts = Object.keys(counts).sort().map((s) => `${counts[s]} ${s}`);
  setText($("summary"), `${state.actors.size} actors: ${parts.join(", ")}`);
}

function filterRow(row, actor) {
  const f = state.filter;
  row.hidden = f !== "" && !actor.path.toLowerCase().includes(f) && actor.state !== f;
}

function applyFilter() {
  for (const [path, row] of state.rows) filterRow(row, state.actors.get(path));
}

async function onRowClick(event) {
  const row = event.target.closest(".row");
  if (!row) return;
  const button = event.target.closest("button[data-action]");
  if (button) {
    button.disabled = true;
    try {
      const actor = await api("POST", `/api/v1/actors/${enc(row.dataset.path)}/${button.dataset.action}`);
      state.actors.set(actor.path, actor);
      updateRow(actor);
    } catch (e) {
      toast(`${button.dataset.action} ${row.dataset.path}: ${e.message}`);
      const actor = state.actors.get(row.dataset.path);
      if (actor) updateRow(actor);
    }
    return;
  }
  if (event.target.closest(".open")) select(row.dataset.path);
}

let toastTimer = 0;
function toast(message) {
  const el = $("toast");
  el.textContent = message;
  el.classList.remove("hidden");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.add("hidden"), 5000);
}

// ---------- pools and spokes ----------

function cell(tr, text, tag = "td") {
  const c = document.createElement(tag);
  c.textContent = text == null ? "" : String(text);
  tr.appendChild(c);
}

function table(headers, rows) {
  const t = document.createElement("table");
  const head = document.createElement("tr");
  headers.forEach((h) => cell(head, h, "th"));
  t.appendChild(head);
  for (const r of rows) {
    const tr = document.createElement("tr");
    r.forEach((v) => cell(tr, v));
    t.appendChild(tr);
  }
  return t;
}

function renderPools() {
  const pools = [...state.actors.values()].filter((a) => a.kind === "pool" && a.details);
  $("pools").classList.toggle("hidden", pools.length === 0);
  const list = $("pool-list");
  const key = JSON.stringify(pools.map((p) => [p.path, p.details]));
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.replaceChildren(...pools.map((pool) => {
    const d = pool.details;
    const card = document.createElement("div");
    card.className = "card";
    const title = document.createElement("strong");
    title.textContent = `${pool.path}: ${d.sessions ?? 0}/${d.capacity ?? 0} sessions, workers ${(d.workers || []).length} (min ${d.min ?? "?"}, max ${d.max ?? "?"})`;
    card.appendChild(title);
    card.appendChild(table(["worker", "state", "port", "sessions", "draining"],
      (d.workers || []).map((w) => [w.worker, w.state, w.port, w.sessions, w.draining ? "yes" : ""])));
    return card;
  }));
}

async function refetchSpokes() {
  try {
    const spokes = await api("GET", "/api/v1/spokes");
    state.spokes = true;
    $("spokes").classList.remove("hidden");
    const card = document.createElement("div");
    card.className = "card";
    card.appendChild(table(["spoke", "connected", "version", "enrolled", "connected at"],
      spokes.map((s) => [s.name, s.connected ? "yes" : "no", s.version, s.enrolled_at, s.connected_at])));
    $("spoke-list").replaceChildren(card);
  } catch (_) {
    state.spokes = false;
    $("spokes").classList.add("hidden");
  }
}

// ---------- the actor panel ----------

function select(path) {
  if (state.selected) state.rows.get(state.selected)?.classList.remove("selected");
  state.selected = path;
  clearInterval(state.logTimer);
  clearInterval(state.sideTimer);
  state.logText = "";
  state.logCount = 0;
  $("log").replaceChildren();
  $("deploys").classList.add("hidden");
  if (!path) { $("panel").classList.add("hidden"); return; }
  state.rows.get(path)?.classList.add("selected");
  $("panel").classList.remove("hidden");
  setText($("panel-title"), path);
  state.follow = true;
  renderFollow();
  renderFacts();
  pollLog();
  side();
  state.logTimer = setInterval(pollLog, LOG_POLL_MS);
  state.sideTimer = setInterval(side, SIDE_POLL_MS);
}

function side() {
  refetchDeploys();
  if (state.spokes || !state.sideRounds) refetchSpokes();
  state.sideRounds = (state.sideRounds || 0) + 1;
}

function renderFacts() {
  const actor = state.actors.get(state.selected);
  if (!actor) return;
  const facts = [
    ["kind", actor.kind], ["state", actor.state], ["pid", actor.pid],
    ["restarts", actor.restarts], ["started", actor.started_at], ["time", timeText(actor)],
  ];
  if (actor.backoff && (actor.backoff.attempt || actor.backoff.delay_ms)) facts.push(["backoff", `attempt ${actor.backoff.attempt}, delay ${actor.backoff.delay_ms} ms`]);
  if (actor.next_restart_at) facts.push(["next restart", actor.next_restart_at]);
  if (actor.last_exit) {
    const x = actor.last_exit;
    facts.push(["last exit", [x.code != null ? `code ${x.code}` : "", x.signal || "", x.at || "", x.reason || ""].filter(Boolean).join(", ")]);
  }
  if (actor.failed_reason) facts.push(["failed", actor.failed_reason]);
  if (actor.details && actor.kind !== "pool") facts.push(["details", JSON.stringify(actor.details)]);
  const key = JSON.stringify(facts);
  const dl = $("panel-facts");
  if (dl.dataset.key === key) return;
  dl.dataset.key = key;
  dl.replaceChildren(...facts.filter(([, v]) => v != null && v !== "").flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = String(v);
    return [dt, dd];
  }));
}

function atBottom(el) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < 8;
}

function onLogScroll() {
  const follow = atBottom($("log"));
  if (follow !== state.follow) { state.follow = follow; renderFollow(); }
}

function renderFollow() {
  const el = $("log-follow");
  el.textContent = state.follow ? "following" : "paused (scroll to the bottom to follow)";
  el.classList.toggle("paused", !state.follow);
}

let logBusy = false;
async function pollLog() {
  const path = state.selected;
  if (!path || logBusy || document.hidden) return;
  logBusy = true;
  try {
    const text = await api("GET", `/api/v1/actors/${enc(path)}/logs?tail=${LOG_LINES}`);
    if (state.selected !== path) return;
    showLog(typeof text === "string" ? text : JSON.stringify(text));
  } catch (e) {
    if (state.selected === path) showLog(`(no log: ${e.message})`);
  } finally {
    logBusy = false;
  }
}

/// Shows the tail, at most LOG_LINES lines, kept at the bottom while the reader is there.
/// What is new since the last poll is appended in blocks of at most 200 lines (only they
/// are laid out); the oldest blocks go while the pane holds more than LOG_LINES.
function showLog(text) {
  if (text === state.logText) return;
  const pre = $("log");
  const follow = state.follow;
  const old = state.logText;
  state.logText = text;
  let added = null;
  if (old) {
    // The last line of the previous tail and up to 200 characters before it.
    const cut = old.lastIndexOf("\n", old.length - 2);
    const tail = old.slice(Math.max(0, cut - 200));
    const at = text.lastIndexOf(tail);
    if (at >= 0) added = text.slice(at + tail.length);
  }
  if (added === null) {
    pre.replaceChildren();
    state.logCount = 0;
    added = lastLines(text, LOG_LINES);
  }
  for (const chunk of chunks(added, 200)) {
    const block = document.createElement("div");
    block.textContent = chunk.text;
    block.dataset.lines = String(chunk.lines);
    pre.appendChild(block);
    state.logCount += chunk.lines;
  }
  while (state.logCount > LOG_LINES && pre.childElementCount > 1) {
    state.logCount -= Number(pre.firstChild.dataset.lines);
    pre.firstChild.remove();
  }
  if (follow) pre.scrollTop = pre.scrollHeight;
}

/// `text` cut after every `size`-th line: [{text, lines}].
function chunks(text, size) {
  const out = [];
  let start = 0;
  let lines = 0;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) === 10 && ++lines === size) {
      out.push({ text: text.slice(start, i + 1), lines });
      start = i + 1;
      lines = 0;
    }
  }
  if (start < text.length) out.push({ text: text.slice(start), lines: lines + 1 });
  return out;
}

function lastLines(text, max) {
  let count = 0;
  for (let i = text.length - 1; i >= 0; i--) {
    if (text.charCodeAt(i) === 10 && ++count > max) return text.slice(i + 1);
  }
  return text;
}

async function refetchDeploys() {
  const path = state.selected;
  if (!path) return;
  let deploys;
  try {
    deploys = await api("GET", `/api/v1/actors/${enc(path)}/deploys`);
  } catch (_) {
    $("deploys").classList.add("hidden");
    return;
  }
  if (state.selected !== path || !Array.isArray(deploys)) return;
  $("deploys").classList.remove("hidden");
  const list = $("deploy-list");
  if (deploys.length === 0) { list.textContent = "no deploys yet"; return; }
  list.replaceChildren(...deploys.slice(0, 10).map((d) => {
    const card = document.createElement("div");
    card.className = "card";
    const title = document.createElement("div");
    title.textContent = `${d.id} ${d.state}${d.commit ? ` @ ${String(d.commit).slice(0, 12)}` : ""}` +
      `${d.failed_step ? `, failed at ${d.failed_step}` : ""} (requested ${d.requested_at || "?"})`;
    card.appendChild(title);
    if (d.state === "awaiting_confirmation") {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "confirm";
      b.dataset.deploy = d.id;
      b.textContent = "confirm";
      card.appendChild(b);
    }
    if (d.output) {
      const out = document.createElement("pre");
      out.className = "deploy-output";
      out.textContent = d.output;
      card.appendChild(out);
    }
    return card;
  }));
}

async function onDeployClick(event) {
  const button = event.target.closest("button[data-deploy]");
  if (!button || !state.selected) return;
  button.disabled = true;
  try {
    await api("POST", `/api/v1/actors/${enc(state.selected)}/deploys/${encodeURIComponent(button.dataset.deploy)}/confirm`);
  } catch (e) {
    toast(`confirm: ${e.message}`);
  }
  refetchDeploys();
}

start();
