// Pulse dashboard — the application: the session's pages (jobs, admin), live updates
// (WebSocket, polling while it is down), the health and access panels. The session,
// the sign-in page, the job list, the run history drawer and the admin page have their
// own modules.

import { api, ApiError, describeError, claimList, RUN_PERMISSION, ADMIN_PERMISSION } from "./api.js";
import * as session from "./session.js";
import { initLogin, showLogin, hideLogin } from "./login.js";
import { initDrawer, closeDrawer, tickDrawer } from "./drawer.js";
import {
  resetJobs, stopJobs, refreshCards, loadJobs, applyJobs, applyStatus, applyRun, applyLiveMessage,
} from "./jobs.js";
import { initAdmin, showAdmin, leaveAdmin } from "./admin.js";
import { LiveChannel } from "./ws.js";
import * as v from "./views.js";
import { toast, reportError } from "./toast.js";

const { h, setText } = v;
const { can } = session;

const POLL_MS = 5000;
const HEALTH_MS = 10000;

const $ = (id) => document.getElementById(id);

const state = {
  live: null,
  liveStatus: "idle",
  liveInfo: {},
  wasDown: false,
  pollTimer: null,
  lastPollError: null,
  healthTimer: null,
  healthAt: null,
  tickTimer: null,
};

// =============================================================== session and pages

/** The page the address asks for, when the session may see it. */
function currentPage() {
  return location.hash === "#/admin" && can(ADMIN_PERMISSION) ? "admin" : "jobs";
}

/** Show the page of the address; `focus` moves focus to its heading (after navigation). */
function showPage({ focus = false } = {}) {
  if (!session.currentSession()) return;
  const page = currentPage();
  $("nav-admin").hidden = !can(ADMIN_PERMISSION);
  $("dashboard-view").hidden = page !== "jobs";
  $("admin-view").hidden = page !== "admin";
  for (const link of document.querySelectorAll("[data-page]")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = page === "admin" ? "Admin · Pulse" : "Jobs · Pulse";
  if (page === "admin") showAdmin();
  else leaveAdmin();
  if (focus) $(page === "admin" ? "admin-title" : "dash-title").focus();
}

function enterApp(s) {
  hideLogin();
  $("app-nav").hidden = false;
  $("session-area").hidden = false;
  renderUser();
  if (!s.hasPermissionClaim) loadPermissionsFromServer();

  resetJobs();
  loadJobs();
  startLive();
  refreshHealth();
  state.healthTimer = setInterval(refreshHealth, HEALTH_MS);
  state.tickTimer = setInterval(tick, 1000);
  showPage();
}

/** A renewed token: the socket moves to it, and the roles it carries may have changed. */
function onRenewed(s) {
  if (state.live) state.live.renewed();
  if (!s.hasPermissionClaim) loadPermissionsFromServer();
  renderUser();
  refreshCards();
  showPage();
}

function leaveApp(message) {
  stopDashboard();
  closeDrawer(false);
  leaveAdmin();
  $("dashboard-view").hidden = true;
  $("admin-view").hidden = true;
  $("app-nav").hidden = true;
  $("session-area").hidden = true;
  $("live-banner").hidden = true;
  showLogin(message);
}

function stopDashboard() {
  if (state.live) state.live.stop();
  state.live = null;
  state.liveStatus = "idle";
  stopPolling();
  clearInterval(state.healthTimer);
  clearInterval(state.tickTimer);
  stopJobs();
  state.healthTimer = state.tickTimer = null;
}

/** A token without a permissions claim: ask the gateway what it grants. */
async function loadPermissionsFromServer() {
  try {
    const { data } = await api.me();
    const s = session.currentSession();
    if (!s || !data) return;
    s.permissions = claimList(data.permissions);
    if (Array.isArray(data.roles)) s.roles = claimList(data.roles);
    renderUser();
    refreshCards();
    showPage();
  } catch {
    /* a 401 has ended the session; anything else leaves the UI read-only */
  }
}

function renderUser() {
  const s = session.currentSession();
  if (!s) return;
  $("user-email").textContent = s.email;
  $("user-email").title = s.userId ? `user id ${s.userId}` : "";
  $("user-role").textContent = s.roles.length ? s.roles.join(", ") : "no role";
  $("user-avatar").textContent = (s.email[0] || "?").toUpperCase();
  renderIdentity();
}

function renderIdentity() {
  const s = session.currentSession();
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
      h("dt", {}, "Access token"), h("dd", { id: "session-expiry" }, expiryText()),
    ),
    h("p", { class: `access-note ${mayRun ? "access-yes" : "access-no"}` },
      mayRun ? "You can start, restart and cancel jobs." : `Read-only: starting jobs needs ${RUN_PERMISSION}.`),
  );
}

function expiryText() {
  const s = session.currentSession();
  if (!s || !s.renewAt) return "no expiry";
  const ms = s.renewAt - Date.now();
  if (ms <= 0) return "renewing…";
  return `renews in ${v.formatDuration(ms).replace(/ \d+ s$/, "")}`;
}

// --------------------------------------------------------------- live updates

function startLive() {
  if (!session.currentSession()) return;
  state.wasDown = false;
  state.live = new LiveChannel({
    path: "/ws/job-status",
    // Read at each connect: a reconnect uses the latest renewed token.
    token: () => (session.currentSession() ? session.currentSession().token : null),
    onMessage: applyLiveMessage,
    onStatus: onLiveStatus,
  });
  state.live.start();
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
  const [status, list] = await Promise.allSettled([api.status(), api.jobs()]);
  if (!session.currentSession()) return;
  const failure = [status, list].find((r) => r.status === "rejected");
  if (list.status === "fulfilled") applyJobs((list.value.data && list.value.data.jobs) || []);
  if (status.status === "fulfilled") applyStatus(status.value.data);
  if (failure) {
    const err = failure.reason;
    // A 401 has been dealt with by the session (renewed, or back to sign-in).
    if (err instanceof ApiError && err.status === 401) return;
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

// --------------------------------------------------------------- clock

function tick() {
  if (!session.currentSession()) return;
  refreshCards();
  renderHealthTime();
  if (state.liveStatus !== "live") renderLiveIndicator();
  const exp = $("session-expiry");
  if (exp) setText(exp, expiryText());
  tickDrawer();
}

// =============================================================== boot

function boot() {
  initLogin();
  initDrawer({ applyRun });
  initAdmin();
  session.onSession({ started: enterApp, renewed: onRenewed, ended: leaveApp });
  $("logout").addEventListener("click", async () => {
    $("logout").disabled = true;
    try {
      await session.signOut();
    } finally {
      $("logout").disabled = false;
    }
  });
  $("refresh-btn").addEventListener("click", () => {
    loadJobs();
    refreshHealth();
  });
  $("reconnect-now").addEventListener("click", () => state.live && state.live.reconnectNow());
  window.addEventListener("hashchange", () => showPage({ focus: true }));
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible" || !state.live) return;
    // Timers sleep with the tab: renew a token that fell due, then reconnect with it.
    session.ensureFresh().then(() => state.live && state.live.reconnectNow());
  });
  session.resume();
}

boot();
