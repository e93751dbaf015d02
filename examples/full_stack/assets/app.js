// Pulse dashboard — application: session, job list, live updates, run history,
// health panel, messages.

import {
  api, ApiError, describeError, getToken, setToken, decodeJwt, claimList, hasPermission,
} from "./api.js";
import { LiveChannel } from "./ws.js";
import * as v from "./views.js";

const { h } = v;

const RUN_PERMISSION = "etl.jobs.run";
const POLL_MS = 5000;
const HEALTH_MS = 10000;
const NO_RUN_REASON = `You need the ${RUN_PERMISSION} permission to start or cancel jobs`;

const $ = (id) => document.getElementById(id);

const state = {
  session: null, // {token, claims, email, userId, roles, permissions, exp}
  jobs: new Map(), // name -> {name, description, schedule, state, latest_run}
  order: [],
  cards: new Map(), // name -> {el, refs}
  loaded: false,
  live: null,
  liveStatus: "idle",
  liveInfo: {},
  wasDown: false,
  pollTimer: null,
  lastPollError: null,
  healthTimer: null,
  healthAt: null,
  tickTimer: null,
  expiryTimer: null,
  lastUpdate: null,
  reloadTimer: null,
  drawer: { job: null, runs: [], items: new Map(), logs: new Map(), opener: null, seq: 0 },
};

// =============================================================== messages

const TOAST_LIMIT = 4;

/**
 * Show a message in #toast. kind: "error" | "warn" | "success" | "info".
 * Errors carry their code and request id, small, for support.
 */
function toast({ kind = "info", title, text, code, requestId, runId, timeout }) {
  const box = $("toast");
  const key = `${kind}|${title}|${text}`;
  for (const old of box.querySelectorAll(".toast")) {
    if (old.dataset.key === key) old.remove();
  }
  const meta = [];
  if (runId) meta.push(h("span", {}, "run id ", h("code", { class: "selectable" }, runId)));
  if (code) meta.push(h("span", {}, "code ", h("code", {}, code)));
  if (requestId) meta.push(h("span", {}, "request id ", h("code", { class: "selectable" }, requestId)));
  const close = h("button", { type: "button", class: "toast-close", "aria-label": "Dismiss message" }, v.icon("close"));
  const el = h(
    "div",
    {
      class: `toast toast-${kind}`,
      role: kind === "error" ? "alert" : "status",
      dataset: { key, kind, code: code || "" },
    },
    h("span", { class: "toast-mark", "aria-hidden": "true" }),
    h("div", { class: "toast-body" },
      title ? h("p", { class: "toast-title" }, title) : null,
      text ? h("p", { class: "toast-text" }, text) : null,
      meta.length ? h("p", { class: "toast-meta" }, meta) : null,
    ),
    close,
  );
  let timer = null;
  const dismiss = () => {
    clearTimeout(timer);
    el.classList.add("leaving");
    setTimeout(() => el.remove(), 180);
  };
  close.addEventListener("click", dismiss);
  const ms = timeout ?? (kind === "error" ? 12000 : kind === "warn" ? 9000 : 5000);
  const arm = () => { timer = setTimeout(dismiss, ms); };
  el.addEventListener("mouseenter", () => clearTimeout(timer));
  el.addEventListener("mouseleave", arm);
  arm();
  box.append(el);
  while (box.children.length > TOAST_LIMIT) box.firstElementChild.remove();
  return el;
}

/** Report an error to the user; 401 ends the session. Returns the description. */
function reportError(err, ctx = {}) {
  if (err instanceof ApiError && err.status === 401 && ctx.action !== "login") {
    expireSession();
    return null;
  }
  const d = describeError(err, ctx);
  toast({
    kind: err instanceof ApiError && (err.status === 503 || err.status === 409) ? "warn" : "error",
    title: d.title,
    text: d.text,
    code: err instanceof ApiError ? err.code || (err.status ? `http_${err.status}` : null) : null,
    requestId: err instanceof ApiError ? err.requestId : null,
  });
  return d;
}

// =============================================================== session

function sessionFromToken(token) {
  const claims = decodeJwt(token);
  if (!claims) return null;
  const roles = claimList(claims.roles ?? claims.role);
  return {
    token,
    claims,
    email: typeof claims.email === "string" ? claims.email : String(claims.sub || "user"),
    userId: claims.sub != null ? String(claims.sub) : null,
    roles,
    permissions: claimList(claims.permissions ?? claims.perms),
    hasPermissionClaim: claims.permissions !== undefined || claims.perms !== undefined,
    exp: typeof claims.exp === "number" ? claims.exp * 1000 : null,
  };
}

const can = (permission) => Boolean(state.session) && hasPermission(state.session.permissions, permission);

function showLogin(notice) {
  stopDashboard();
  closeDrawer(false);
  $("dashboard-view").hidden = true;
  $("session-area").hidden = true;
  $("live-banner").hidden = true;
  $("login-view").hidden = false;
  document.title = "Sign in · Pulse";
  const n = $("login-notice");
  n.hidden = !notice;
  n.textContent = notice || "";
  $("login-error").hidden = true;
  setLoginBusy(false);
  const email = $("email");
  if (!email.value) email.focus();
  else $("password").focus();
}

function setLoginBusy(busy) {
  const btn = $("login-submit");
  btn.disabled = busy;
  btn.classList.toggle("busy", busy);
  btn.querySelector(".btn-label").textContent = busy ? "Signing in…" : "Sign in";
}

function showLoginError(text, err) {
  const box = $("login-error");
  box.replaceChildren(h("span", {}, text));
  if (err instanceof ApiError && (err.code || err.requestId)) {
    const parts = [];
    if (err.code) parts.push(`code ${err.code}`);
    if (err.requestId) parts.push(`request id ${err.requestId}`);
    box.append(h("span", { class: "support" }, parts.join(" · ")));
  }
  box.hidden = false;
}

async function onLogin(event) {
  event.preventDefault();
  const email = $("email").value.trim();
  const password = $("password").value;
  if (!email || !password) {
    showLoginError("Enter your email and password.");
    (!email ? $("email") : $("password")).focus();
    return;
  }
  $("login-error").hidden = true;
  setLoginBusy(true);
  try {
    const { data } = await api.login(email, password);
    const token = data && data.access_token;
    const session = token && sessionFromToken(token);
    if (!session) throw new ApiError({ status: 200, code: "bad_token", message: "The server sent an unreadable token." });
    setToken(token);
    state.session = session;
    $("password").value = "";
    enterDashboard();
  } catch (err) {
    setLoginBusy(false);
    if (err instanceof ApiError && err.status === 401) {
      showLoginError("Invalid email or password.", err);
    } else {
      const d = describeError(err, { action: "login", what: "sign in" });
      showLoginError(d.text, err);
    }
    $("password").select();
  }
}

function logout() {
  setToken(null);
  state.session = null;
  showLogin("You have signed out.");
}

function expireSession() {
  if (!state.session && $("login-view").hidden === false) return;
  setToken(null);
  state.session = null;
  showLogin("Your session expired — please sign in again.");
  toast({ kind: "warn", title: "Session expired", text: "Your session expired — please sign in again." });
}

// =============================================================== dashboard

function enterDashboard() {
  const s = state.session;
  $("login-view").hidden = true;
  $("dashboard-view").hidden = false;
  $("session-area").hidden = false;
  document.title = "Jobs · Pulse";

  $("user-email").textContent = s.email;
  $("user-email").title = s.userId ? `user id ${s.userId}` : "";
  $("user-role").textContent = s.roles.length ? s.roles.join(", ") : "no role";
  $("user-avatar").textContent = (s.email[0] || "?").toUpperCase();
  renderIdentity();

  clearTimeout(state.expiryTimer);
  if (s.exp) {
    const ms = s.exp - Date.now();
    state.expiryTimer = setTimeout(expireSession, Math.max(0, Math.min(ms, 2 ** 31 - 1)));
  }
  if (!s.hasPermissionClaim) loadPermissionsFromServer();

  state.loaded = false;
  state.jobs.clear();
  state.order = [];
  state.cards.clear();
  renderJobsSkeleton();
  loadJobs();
  startLive();
  refreshHealth();
  state.healthTimer = setInterval(refreshHealth, HEALTH_MS);
  state.tickTimer = setInterval(tick, 1000);
}

function stopDashboard() {
  if (state.live) state.live.stop();
  state.live = null;
  state.liveStatus = "idle";
  stopPolling();
  clearInterval(state.healthTimer);
  clearInterval(state.tickTimer);
  clearTimeout(state.expiryTimer);
  clearTimeout(state.reloadTimer);
  state.healthTimer = state.tickTimer = state.expiryTimer = state.reloadTimer = null;
}

async function loadPermissionsFromServer() {
  try {
    const { data } = await api.me();
    if (!state.session || !data) return;
    state.session.permissions = claimList(data.permissions);
    if (Array.isArray(data.roles)) state.session.roles = claimList(data.roles);
    renderIdentity();
    for (const job of state.jobs.values()) updateCard(job);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) expireSession();
  }
}

function renderIdentity() {
  const s = state.session;
  if (!s) return;
  const chips = (items, cls) =>
    items.length ? h("div", { class: "chips" }, items.map((x) => h("span", { class: `chip ${cls}` }, x)))
      : h("span", { class: "muted small" }, "none");
  const mayRun = can(RUN_PERMISSION);
  $("identity-body").replaceChildren(
    h("dl", { class: "kv" },
      h("dt", {}, "Signed in as"), h("dd", {}, s.email),
      h("dt", {}, "Roles"), h("dd", {}, chips(s.roles, "chip-role")),
      h("dt", {}, "Permissions"), h("dd", { "data-testid": "permissions" }, chips(s.permissions, "chip-perm")),
      h("dt", {}, "Session"), h("dd", { id: "session-expiry" }, expiryText()),
    ),
    h("p", { class: `access-note ${mayRun ? "access-yes" : "access-no"}` },
      mayRun ? "You can start, restart and cancel jobs." : `Read-only: starting jobs needs ${RUN_PERMISSION}.`),
  );
}

function expiryText() {
  const s = state.session;
  if (!s || !s.exp) return "no expiry";
  const ms = s.exp - Date.now();
  if (ms <= 0) return "expired";
  return `expires in ${v.formatDuration(ms).replace(/ \d+ s$/, "")}`;
}

// --------------------------------------------------------------- jobs

function renderJobsSkeleton() {
  const list = $("jobs-list");
  list.replaceChildren(
    ...[0, 1].map(() =>
      h("div", { class: "job-card card skeleton", "aria-hidden": "true" },
        h("div", { class: "sk sk-title" }), h("div", { class: "sk sk-line" }), h("div", { class: "sk sk-bar" }))),
  );
  list.setAttribute("aria-busy", "true");
}

async function loadJobs({ quiet = false } = {}) {
  try {
    const { data } = await api.jobs();
    applyJobs((data && data.jobs) || []);
    return true;
  } catch (err) {
    if (!state.loaded) renderJobsError(err);
    if (!quiet) reportError(err, { action: "load", what: "view jobs (etl.access)" });
    else if (err instanceof ApiError && err.status === 401) expireSession();
    return false;
  }
}

function scheduleReload() {
  clearTimeout(state.reloadTimer);
  state.reloadTimer = setTimeout(() => loadJobs({ quiet: true }), 300);
}

function renderJobsError(err) {
  const d = describeError(err, { what: "view jobs (etl.access)" });
  const retry = v.button({ label: "Try again", iconName: "refresh", cls: "btn-secondary btn-sm", onClick: () => { renderJobsSkeleton(); loadJobs(); } });
  $("jobs-list").replaceChildren(
    h("div", { class: "card empty-state", "data-testid": "jobs-error" },
      h("p", { class: "empty-title" }, d.title),
      h("p", { class: "muted" }, d.text),
      err instanceof ApiError && (err.code || err.requestId)
        ? h("p", { class: "support" }, [err.code && `code ${err.code}`, err.requestId && `request id ${err.requestId}`].filter(Boolean).join(" · "))
        : null,
      retry),
  );
  $("jobs-list").removeAttribute("aria-busy");
}

const RANK = { idle: -1, pending: 0, running: 1, retrying: 1, cancelling: 2, succeeded: 3, failed: 3, cancelled: 3 };

function isNewerRun(a, b) {
  const ta = Date.parse(a.created_at || "");
  const tb = Date.parse(b.created_at || "");
  if (!Number.isNaN(ta) && !Number.isNaN(tb) && ta !== tb) return ta > tb;
  return String(a.id) > String(b.id);
}

/** Merge an update of the same run, never moving it backwards. */
function mergeRun(current, incoming) {
  if (!current || current.id !== incoming.id) return incoming;
  const ra = RANK[incoming.state] ?? 1;
  const rb = RANK[current.state] ?? 1;
  if ((incoming.attempts ?? 0) < (current.attempts ?? 0)) return current;
  if ((incoming.attempts ?? 0) === (current.attempts ?? 0) && ra < rb) return current;
  return { ...current, ...incoming };
}

function applyJobs(list) {
  const names = [];
  for (const j of list) {
    if (!j || typeof j.name !== "string") continue;
    names.push(j.name);
    const prev = state.jobs.get(j.name);
    const job = { ...j };
    if (prev && prev.latest_run && job.latest_run && prev.latest_run.id === job.latest_run.id) {
      job.latest_run = mergeRun(prev.latest_run, job.latest_run);
      job.state = job.latest_run.state;
    } else if (prev && prev.latest_run && job.latest_run && isNewerRun(prev.latest_run, job.latest_run)) {
      // a live event already told us about a newer run than this (cached) answer
      job.latest_run = prev.latest_run;
      job.state = prev.latest_run.state;
    }
    if (!job.state) job.state = job.latest_run ? job.latest_run.state : "idle";
    state.jobs.set(j.name, job);
  }
  for (const name of [...state.jobs.keys()]) if (!names.includes(name)) state.jobs.delete(name);
  state.order = names;
  state.loaded = true;
  state.lastUpdate = Date.now();
  renderJobs();
}

/**
 * Apply GET /jobs/status: `{jobs: {name: {state, run_id, progress, started_at, finished_at}}}`
 * (also accepted: `jobs` as a list of `{name, state, last_run_id, last_finished_at, progress}`).
 */
function applyStatus(data) {
  const raw = (data && data.jobs) || {};
  const entries = Array.isArray(raw)
    ? raw.filter((s) => s && typeof s.name === "string").map((s) => [s.name, s])
    : Object.entries(raw);
  let unknown = false;
  for (const [name, s] of entries) {
    const job = state.jobs.get(name);
    if (!job || !s) { unknown = true; continue; }
    const cur = job.latest_run;
    const runId = s.run_id ?? s.last_run_id ?? null;
    if (runId && cur && cur.id === runId) {
      job.latest_run = mergeRun(cur, {
        ...cur,
        state: s.state || cur.state,
        progress: s.progress ?? cur.progress,
        started_at: s.started_at ?? cur.started_at,
        finished_at: s.finished_at ?? s.last_finished_at ?? cur.finished_at,
        error: s.error !== undefined ? s.error : cur.error,
      });
      job.state = job.latest_run.state;
    } else if (runId) {
      unknown = true; // a run we have not seen: the full list will bring it
    } else if (!cur) {
      job.state = s.state || "idle";
    }
    updateCard(job);
  }
  if (unknown) scheduleReload();
  state.lastUpdate = Date.now();
  updateStats();
  return unknown;
}

function renderJobs() {
  const list = $("jobs-list");
  list.removeAttribute("aria-busy");
  if (!state.order.length) {
    state.cards.clear();
    list.replaceChildren(h("div", { class: "card empty-state" },
      h("p", { class: "empty-title" }, "No jobs registered"),
      h("p", { class: "muted" }, "The ETL service reports no jobs.")));
    updateStats();
    return;
  }
  const wanted = [];
  for (const name of state.order) {
    let card = state.cards.get(name);
    if (!card) {
      card = createCard(name);
      state.cards.set(name, card);
    }
    updateCard(state.jobs.get(name));
    wanted.push(card.el);
  }
  for (const [name, card] of state.cards) {
    if (!state.order.includes(name)) { card.el.remove(); state.cards.delete(name); }
  }
  // keep existing nodes (focus survives); only reorder when needed
  const current = [...list.children];
  if (current.length !== wanted.length || current.some((el, i) => el !== wanted[i])) list.replaceChildren(...wanted);
  updateStats();
}

function createCard(name) {
  const refs = {};
  refs.badge = v.stateBadge("idle");
  refs.desc = h("p", { class: "job-desc" });
  refs.schedule = h("dd", { class: "job-schedule" });
  refs.lastRun = h("dd", { class: "job-last-run", "data-testid": "last-run" });
  refs.duration = h("dd", { class: "job-duration", "data-testid": "duration" });
  refs.runId = h("dd", { class: "job-run-id mono" });
  refs.progress = v.progressBar(`${name} progress`);
  refs.progressText = h("span", { class: "progress-text" });
  refs.progressPct = h("span", { class: "progress-pct" });
  refs.error = h("p", { class: "job-error", role: "note" });
  refs.error.hidden = true;
  refs.start = v.button({ label: "Start", iconName: "play", cls: "btn-primary start-btn", testid: "start-btn", onClick: () => startJob(name, false, refs.start) });
  refs.force = v.button({ label: "Force restart", iconName: "force", cls: "btn-warning force-btn", testid: "force-btn", onClick: () => startJob(name, true, refs.force) });
  refs.history = v.button({ label: "History", iconName: "history", cls: "btn-secondary history-btn", testid: "history-btn", onClick: () => openDrawer(name, refs.history) });

  const el = h("article", { class: "job-card card", "data-job": name, "data-testid": `job-${name}`, "aria-labelledby": `job-title-${name}` },
    h("div", { class: "job-top" },
      h("div", { class: "job-heading" },
        h("h3", { class: "job-name", id: `job-title-${name}` }, name),
        refs.badge),
      h("div", { class: "job-actions" },
        h("span", { class: "btn-wrap" }, refs.start),
        h("span", { class: "btn-wrap" }, refs.force),
        refs.history)),
    refs.desc,
    h("dl", { class: "job-meta" },
      h("div", {}, h("dt", {}, "Last run"), refs.lastRun),
      h("div", {}, h("dt", {}, "Duration"), refs.duration),
      h("div", {}, h("dt", {}, "Schedule"), refs.schedule),
      h("div", {}, h("dt", {}, "Run"), refs.runId)),
    h("div", { class: "job-progress" },
      refs.progress,
      h("div", { class: "progress-caption" }, refs.progressText, refs.progressPct)),
    refs.error,
  );
  return { el, refs };
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function updateCard(job) {
  if (!job) return;
  const card = state.cards.get(job.name);
  if (!card) return;
  const { el, refs } = card;
  const run = job.latest_run;
  const st = job.state || (run ? run.state : "idle");
  el.dataset.state = st;
  v.setBadge(refs.badge, st);
  setText(refs.desc, job.description || "");
  refs.desc.hidden = !job.description;
  setText(refs.schedule, job.schedule || "manual");
  const started = run && (run.started_at || run.created_at);
  setText(refs.lastRun, run ? v.formatRelative(started) : "never");
  refs.lastRun.title = run ? v.formatAbsolute(started) : "";
  setText(refs.duration, run ? v.formatDuration(v.runDuration(run)) : "—");
  setText(refs.runId, run ? v.shortId(run.id) : "—");
  refs.runId.title = run ? run.id : "";
  v.setProgress(refs.progress, run);
  setText(refs.progressText, run ? v.progressText(run) || stateSentence(st) : "Never run");
  const pct = v.progressPercent(run);
  setText(refs.progressPct, run && pct !== null ? `${pct}%` : "");
  const error = run && run.error && (st === "failed" || st === "retrying") ? String(run.error) : "";
  setText(refs.error, error);
  refs.error.hidden = !error;

  const allowed = can(RUN_PERMISSION);
  for (const btn of [refs.start, refs.force]) {
    if (btn.classList.contains("busy")) continue;
    v.setAllowed(btn, allowed, NO_RUN_REASON);
  }
  refs.force.classList.toggle("attention", allowed && v.isActive(st) && refs.force.classList.contains("attention"));
}

function stateSentence(st) {
  return {
    succeeded: "Completed", failed: "Failed", cancelled: "Cancelled", idle: "Never run",
  }[st] || "";
}

function updateStats() {
  const jobs = [...state.jobs.values()];
  setText($("stat-jobs"), String(jobs.length));
  setText($("stat-active"), String(jobs.filter((j) => v.isActive(j.state)).length));
  const failed = jobs.filter((j) => j.state === "failed").length;
  setText($("stat-failed"), String(failed));
  $("stat-failed").classList.toggle("bad", failed > 0);
  if (state.lastUpdate) {
    setText($("last-updated"), `Updated ${v.formatRelative(new Date(state.lastUpdate).toISOString())}`);
  }
}

async function startJob(name, force, btn) {
  if (!can(RUN_PERMISSION)) {
    toast({ kind: "error", title: "Permission denied", text: `Not allowed: you don't have permission to start jobs (${RUN_PERMISSION}).`, code: "forbidden" });
    return;
  }
  const label = btn.querySelector(".btn-label");
  const original = label.textContent;
  btn.classList.add("busy");
  btn.disabled = true;
  label.textContent = force ? "Restarting…" : "Starting…";
  const card = state.cards.get(name);
  try {
    const { data, requestId } = await api.startJob(name, force);
    const runId = data && (data.run_id || (data.run && data.run.id));
    toast({
      kind: "success",
      title: force ? `${name} restarted` : `${name} started`,
      text: force ? "Any active run was cancelled; the new run is queued — progress shows live on the job card." : "The run is queued — progress shows live on the job card.",
      runId,
      requestId,
    });
    if (card) card.refs.force.classList.remove("attention");
    if (data && data.run && data.run.job_name) applyRun(data.run);
    else scheduleReload();
  } catch (err) {
    reportError(err, { action: "start", job: name, what: `start jobs (${RUN_PERMISSION})` });
    if (err instanceof ApiError && err.status === 409 && card) {
      card.refs.force.classList.add("attention");
      scheduleReload();
    }
  } finally {
    btn.classList.remove("busy");
    label.textContent = original;
    const job = state.jobs.get(name);
    if (job) updateCard(job);
    else btn.disabled = false;
  }
}

/** Apply one run update (from the WebSocket, a start answer, or a cancel answer). */
function applyRun(run) {
  if (!run || typeof run !== "object" || !run.job_name || !run.id) return;
  const job = state.jobs.get(run.job_name);
  if (!job) {
    scheduleReload();
  } else {
    const cur = job.latest_run;
    if (!cur || cur.id === run.id || isNewerRun(run, cur)) {
      job.latest_run = mergeRun(cur, run);
      job.state = job.latest_run.state;
      updateCard(job);
    }
  }
  drawerApplyRun(run);
  state.lastUpdate = Date.now();
  updateStats();
}

// --------------------------------------------------------------- live updates

function startLive() {
  const token = state.session && state.session.token;
  if (!token) return;
  state.wasDown = false;
  state.live = new LiveChannel({
    path: "/ws/job-status",
    token,
    onMessage: onLiveMessage,
    onStatus: onLiveStatus,
  });
  state.live.start();
}

function onLiveMessage(msg) {
  if (msg.run && typeof msg.run === "object") {
    applyRun(msg.run);
    if (msg.kind === "log" && msg.log) drawerAppendLog(msg.run.id, msg.log);
  } else if (msg.kind === "log" && msg.log && msg.run_id) {
    drawerAppendLog(msg.run_id, msg.log);
  } else if (typeof msg.type === "string" && msg.run_id && msg.job_name) {
    applyFlatEvent(msg);
  } else {
    // an event we do not know (e.g. "lagged"): resynchronise from the API
    scheduleReload();
  }
}

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/**
 * Also understood: a store event forwarded flat, tagged by `type`
 * (`{run_id, job_name, at, type: "state"|"progress"|"log", …}`) — patched onto the
 * run we already hold; an unknown run makes us reload the list.
 */
function applyFlatEvent(ev) {
  if (ev.type === "log") {
    drawerAppendLog(ev.run_id, { at: ev.at, level: ev.level, message: ev.message });
    return;
  }
  const job = state.jobs.get(ev.job_name);
  const item = state.drawer.items.get(ev.run_id);
  const base = job && job.latest_run && job.latest_run.id === ev.run_id ? job.latest_run : item ? item.run : null;
  if (!base) {
    scheduleReload();
    return;
  }
  const patch = { ...base };
  if (ev.type === "state" && typeof ev.state === "string") {
    patch.state = ev.state;
    if (typeof ev.attempt === "number") patch.attempts = ev.attempt;
    if (ev.error !== undefined) patch.error = ev.error;
    if (ev.state === "running" && !patch.started_at) patch.started_at = ev.at || null;
    if (TERMINAL.has(ev.state) && !patch.finished_at) patch.finished_at = ev.at || new Date().toISOString();
  } else if (ev.type === "progress" && ev.progress) {
    patch.progress = ev.progress;
  } else {
    return;
  }
  applyRun(patch);
}

function onLiveStatus(status, info) {
  state.liveStatus = status;
  state.liveInfo = info || {};
  if (status === "live") {
    stopPolling();
    $("live-banner").hidden = true;
    if (state.wasDown) {
      toast({ kind: "success", title: "Live updates resumed", text: "Reconnected to the job-status stream.", timeout: 3500 });
      state.wasDown = false;
    }
    loadJobs({ quiet: true }); // catch up on anything missed while connecting
  } else if (status === "down") {
    state.wasDown = true;
    $("live-banner").hidden = false;
    startPolling();
  }
  renderLiveIndicator();
}

function renderLiveIndicator() {
  const pill = $("live-indicator");
  const s = state.liveStatus;
  const mode = s === "live" ? "live" : s === "down" ? "polling" : state.wasDown ? "polling" : "connecting";
  pill.dataset.status = mode;
  const label = mode === "live" ? "Live" : mode === "polling" ? "Polling" : "Connecting…";
  setText($("live-label"), label);
  pill.title = mode === "live" ? "Live updates over WebSocket" : mode === "polling" ? "Live updates paused — polling every 5 s" : "Connecting to live updates";
  const stat = $("stat-live");
  setText(stat, mode === "live" ? "Live" : mode === "polling" ? "Polling 5 s" : "Connecting");
  stat.dataset.status = mode;
  if (mode !== "live") {
    let detail = "";
    if (s === "down" && state.liveInfo.retryAt) {
      const secs = Math.max(0, Math.ceil((state.liveInfo.retryAt - Date.now()) / 1000));
      detail = secs > 0 ? `Reconnecting in ${secs} s.` : "Reconnecting…";
    } else if (s === "connecting") {
      detail = "Reconnecting…";
    }
    if (state.lastPollError) detail = `${detail} Last poll failed: ${state.lastPollError}`.trim();
    setText($("live-banner-detail"), detail);
  }
}

function startPolling() {
  if (state.pollTimer) return;
  pollOnce();
  state.pollTimer = setInterval(pollOnce, POLL_MS);
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = null;
  state.lastPollError = null;
}

async function pollOnce() {
  const [status, jobs] = await Promise.allSettled([api.status(), api.jobs()]);
  if (!state.session) return;
  const failure = [status, jobs].find((r) => r.status === "rejected");
  if (jobs.status === "fulfilled") applyJobs((jobs.value.data && jobs.value.data.jobs) || []);
  if (status.status === "fulfilled") applyStatus(status.value.data);
  if (failure) {
    const err = failure.reason;
    if (err instanceof ApiError && err.status === 401) {
      expireSession();
      return;
    }
    const d = describeError(err, { what: "view jobs (etl.access)" });
    if (state.lastPollError !== d.text) reportError(err, { what: "view jobs (etl.access)" });
    state.lastPollError = d.text;
  } else {
    state.lastPollError = null;
  }
  renderLiveIndicator();
}

// --------------------------------------------------------------- health

async function refreshHealth() {
  const overall = $("health-overall");
  const body = $("health-body");
  try {
    const { data, status } = await api.health();
    const st = (data && data.status) || (status === 200 ? "healthy" : "unhealthy");
    setText(overall, st);
    overall.className = `health-overall health-${v.healthClass(st)}`;
    if (data && data.services && typeof data.services === "object") body.replaceChildren(v.healthList(data.services));
    else body.replaceChildren(h("p", { class: "muted small" }, "No service details reported."));
  } catch (err) {
    setText(overall, "unreachable");
    overall.className = "health-overall health-bad";
    const d = describeError(err, {});
    v.fill(body,
      h("p", { class: "small" }, d.text),
      err instanceof ApiError && err.requestId ? h("p", { class: "support" }, `request id ${err.requestId}`) : null,
    );
  }
  state.healthAt = Date.now();
  renderHealthTime();
}

function renderHealthTime() {
  if (!state.healthAt) return;
  setText($("health-updated"), `Checked ${v.formatRelative(new Date(state.healthAt).toISOString())} · every ${HEALTH_MS / 1000} s`);
}

// --------------------------------------------------------------- run history drawer

async function openDrawer(name, opener) {
  const d = state.drawer;
  d.job = name;
  d.opener = opener || document.activeElement;
  d.items.clear();
  d.logs.clear();
  setText($("drawer-title"), name);
  $("runs-list").replaceChildren(h("li", { class: "runs-empty muted" }, "Loading runs…"));
  $("drawer-backdrop").hidden = false;
  $("runs-drawer").hidden = false;
  requestAnimationFrame(() => {
    $("runs-drawer").classList.add("open");
    $("drawer-backdrop").classList.add("open");
  });
  document.body.classList.add("drawer-open");
  $("drawer-close").focus();
  await loadRuns();
}

async function loadRuns() {
  const d = state.drawer;
  const name = d.job;
  const seq = ++d.seq;
  try {
    const { data } = await api.runs(name);
    if (d.job !== name || seq !== d.seq) return;
    d.runs = ((data && data.runs) || []).filter((r) => r && r.id);
    renderRuns();
  } catch (err) {
    if (d.job !== name) return;
    const desc = reportError(err, { action: "load", what: "view run history (etl.access)" });
    if (desc) $("runs-list").replaceChildren(h("li", { class: "runs-empty" }, desc.text));
  }
}

function closeDrawer(restoreFocus = true) {
  const d = state.drawer;
  if (!d.job) return;
  d.job = null;
  d.items.clear();
  d.logs.clear();
  $("runs-drawer").classList.remove("open");
  $("drawer-backdrop").classList.remove("open");
  document.body.classList.remove("drawer-open");
  $("runs-drawer").hidden = true;
  $("drawer-backdrop").hidden = true;
  if (restoreFocus && d.opener && document.contains(d.opener)) d.opener.focus();
}

function renderRuns() {
  const d = state.drawer;
  const list = $("runs-list");
  d.items.clear();
  if (!d.runs.length) {
    list.replaceChildren(h("li", { class: "runs-empty muted" }, "This job has not run yet."));
    return;
  }
  list.replaceChildren(...d.runs.map((run) => {
    const item = createRunItem(run);
    d.items.set(run.id, item);
    return item.el;
  }));
}

function createRunItem(run) {
  const refs = {};
  refs.summary = h("div", { class: "run-summary" });
  refs.logsBtn = v.button({ label: "Logs", iconName: "logs", cls: "btn-secondary btn-sm logs-btn", testid: "logs-btn", onClick: () => toggleLogs(run.id) });
  refs.logsBtn.setAttribute("aria-expanded", "false");
  refs.cancel = v.button({ label: "Cancel run", iconName: "stop", cls: "btn-danger btn-sm cancel-btn", testid: "cancel-btn", onClick: () => cancelRun(run.id, refs.cancel) });
  refs.cancelWrap = h("span", { class: "btn-wrap" }, refs.cancel);
  refs.logs = h("div", { class: "run-logs", "data-testid": "run-logs" });
  refs.logs.hidden = true;
  refs.logsBtn.setAttribute("aria-controls", `logs-${run.id}`);
  refs.logs.id = `logs-${run.id}`;
  const el = h("li", { class: "run-item", "data-run": run.id },
    refs.summary,
    h("div", { class: "run-actions" }, refs.logsBtn, refs.cancelWrap),
    refs.logs);
  const item = { el, refs, run };
  updateRunItem(item, run);
  return item;
}

function updateRunItem(item, run) {
  item.run = run;
  const { el, refs } = item;
  el.dataset.state = run.state;
  const started = run.started_at || run.created_at;
  const dur = v.runDuration(run);
  const progress = v.progressBar(`run ${v.shortId(run.id)} progress`);
  v.setProgress(progress, run);
  const showProgress = v.isActive(run.state) || (run.progress && typeof run.progress.done === "number");
  const meta = [
    h("span", { title: v.formatAbsolute(started) }, `Started ${v.formatRelative(started)}`),
    h("span", {}, `Duration ${v.formatDuration(dur)}`),
    run.attempts ? h("span", {}, `Attempt ${run.attempts}`) : null,
    run.requested_by ? h("span", { title: "Requested by (verified user id)" }, `by ${run.requested_by}`) : h("span", {}, "scheduled"),
  ];
  v.fill(refs.summary,
    h("div", { class: "run-head" },
      v.stateBadge(run.state),
      h("code", { class: "run-id selectable", title: run.id }, run.id)),
    h("div", { class: "run-meta" }, meta),
    showProgress ? h("div", { class: "run-progress" }, progress, h("span", { class: "progress-text" }, v.progressText(run))) : null,
    run.error ? h("p", { class: "run-error" }, String(run.error)) : null,
  );
  const active = v.isActive(run.state) && run.state !== "cancelling";
  refs.cancelWrap.hidden = !active;
  if (!refs.cancel.classList.contains("busy")) v.setAllowed(refs.cancel, can(RUN_PERMISSION), NO_RUN_REASON);
}

function drawerApplyRun(run) {
  const d = state.drawer;
  if (!d.job || run.job_name !== d.job) return;
  const item = d.items.get(run.id);
  if (item) {
    const merged = mergeRun(item.run, run);
    const idx = d.runs.findIndex((r) => r.id === run.id);
    if (idx >= 0) d.runs[idx] = merged;
    updateRunItem(item, merged);
  } else {
    d.runs.unshift(run);
    d.runs.sort((a, b) => (isNewerRun(a, b) ? -1 : 1));
    const list = $("runs-list");
    const fresh = createRunItem(run);
    d.items.set(run.id, fresh);
    const empty = list.querySelector(".runs-empty");
    if (empty) empty.remove();
    const pos = d.runs.findIndex((r) => r.id === run.id);
    const next = d.runs[pos + 1] && d.items.get(d.runs[pos + 1].id);
    list.insertBefore(fresh.el, next ? next.el : null);
  }
}

async function toggleLogs(runId) {
  const item = state.drawer.items.get(runId);
  if (!item) return;
  const { refs } = item;
  const open = refs.logs.hidden;
  refs.logs.hidden = !open;
  refs.logsBtn.setAttribute("aria-expanded", String(open));
  setText(refs.logsBtn.querySelector(".btn-label"), open ? "Hide logs" : "Logs");
  if (!open) {
    state.drawer.logs.delete(runId);
    return;
  }
  refs.logs.replaceChildren(h("p", { class: "muted small" }, "Loading logs…"));
  try {
    const { data } = await api.logs(runId);
    if (refs.logs.hidden) return;
    const lines = (data && Array.isArray(data.logs) && data.logs) || [];
    const ol = h("ol", { class: "log-lines" });
    refs.logs.replaceChildren(ol);
    state.drawer.logs.set(runId, ol);
    if (!lines.length) ol.append(h("li", { class: "log-empty muted" }, "No log lines yet."));
    for (const line of lines) ol.append(logLine(line));
    ol.scrollTop = ol.scrollHeight;
  } catch (err) {
    const desc = reportError(err, { action: "load", what: "read run logs (etl.access)" });
    if (desc) refs.logs.replaceChildren(h("p", { class: "small" }, desc.text));
  }
}

function logLine(line) {
  const level = String((line && line.level) || "info").toLowerCase();
  return h("li", { class: `log-line log-${level.replace(/[^a-z]/g, "")}` },
    h("time", { class: "log-time", datetime: line.at || "", title: v.formatAbsolute(line.at) }, v.formatClock(line.at)),
    h("span", { class: "log-level" }, level),
    h("span", { class: "log-msg" }, String((line && line.message) ?? "")));
}

function drawerAppendLog(runId, line) {
  const ol = state.drawer.logs.get(runId);
  if (!ol || !line) return;
  const empty = ol.querySelector(".log-empty");
  if (empty) empty.remove();
  const stick = ol.scrollTop + ol.clientHeight >= ol.scrollHeight - 8;
  ol.append(logLine(line));
  if (stick) ol.scrollTop = ol.scrollHeight;
}

async function cancelRun(runId, btn) {
  if (!can(RUN_PERMISSION)) {
    toast({ kind: "error", title: "Permission denied", text: `Not allowed: you don't have permission to cancel runs (${RUN_PERMISSION}).`, code: "forbidden" });
    return;
  }
  btn.classList.add("busy");
  btn.disabled = true;
  try {
    const { data } = await api.cancelRun(runId);
    toast({ kind: "info", title: "Cancel requested", text: (data && data.message) || `Run ${v.shortId(runId)} is being cancelled.` });
    if (data && data.run) applyRun(data.run);
  } catch (err) {
    if (err instanceof ApiError && err.status === 409) {
      toast({ kind: "info", title: "Already finished", text: err.message || "This run has already finished.", code: err.code, requestId: err.requestId });
      loadRuns();
    } else {
      reportError(err, { action: "cancel", what: `cancel runs (${RUN_PERMISSION})` });
    }
  } finally {
    btn.classList.remove("busy");
    const item = state.drawer.items.get(runId);
    if (item) updateRunItem(item, item.run);
    else btn.disabled = false;
  }
}

// --------------------------------------------------------------- clock

function tick() {
  if (!state.session) return;
  for (const job of state.jobs.values()) updateCard(job);
  updateStats();
  renderHealthTime();
  if (state.liveStatus !== "live") renderLiveIndicator();
  const exp = $("session-expiry");
  if (exp) setText(exp, expiryText());
  for (const item of state.drawer.items.values()) {
    if (v.isActive(item.run.state)) updateRunItem(item, item.run);
  }
}

// =============================================================== boot

function trapFocus(event) {
  const drawer = $("runs-drawer");
  if (drawer.hidden || event.key !== "Tab") return;
  const focusable = [...drawer.querySelectorAll("button:not([disabled]), [href], [tabindex]:not([tabindex='-1'])")]
    .filter((el) => el.offsetParent !== null);
  if (!focusable.length) return;
  const first = focusable[0];
  const last = focusable[focusable.length - 1];
  if (event.shiftKey && document.activeElement === first) { last.focus(); event.preventDefault(); }
  else if (!event.shiftKey && document.activeElement === last) { first.focus(); event.preventDefault(); }
}

function boot() {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", logout);
  $("refresh-btn").addEventListener("click", () => {
    loadJobs();
    refreshHealth();
  });
  $("reconnect-now").addEventListener("click", () => state.live && state.live.reconnectNow());
  $("drawer-close").addEventListener("click", () => closeDrawer());
  $("drawer-refresh").addEventListener("click", () => loadRuns());
  $("drawer-backdrop").addEventListener("click", () => closeDrawer());
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.drawer.job) closeDrawer();
    trapFocus(e);
  });
  for (const btn of document.querySelectorAll(".demo-user")) {
    btn.addEventListener("click", () => {
      $("email").value = btn.dataset.email;
      $("password").value = btn.dataset.password;
      $("login-submit").focus();
    });
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.live) state.live.reconnectNow();
  });

  const token = getToken();
  const session = token ? sessionFromToken(token) : null;
  if (session && (!session.exp || session.exp > Date.now() + 5000)) {
    state.session = session;
    enterDashboard();
  } else if (token) {
    setToken(null);
    showLogin("Your session expired — please sign in again.");
  } else {
    showLogin();
  }
}

boot();
