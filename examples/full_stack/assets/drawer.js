// Pulse dashboard — the run history drawer: a job's runs, their logs, and cancelling.

import { api, ApiError, RUN_PERMISSION } from "./api.js";
import { can } from "./session.js";
import * as v from "./views.js";
import { reportError, toast } from "./toast.js";

const { h, setText, mergeRun, isNewerRun } = v;
const $ = (id) => document.getElementById(id);

/** Why the cancel button is disabled. */
export const NO_RUN_REASON = `You need the ${RUN_PERMISSION} permission to start or cancel jobs`;

const drawer = { job: null, runs: [], items: new Map(), logs: new Map(), opener: null, seq: 0 };
// Where a cancel answer's run goes (the job list), set by initDrawer.
let onRun = () => {};

/** Wire the drawer's buttons; `applyRun(run)` takes the runs that cancel answers carry. */
export function initDrawer({ applyRun }) {
  onRun = applyRun;
  $("drawer-close").addEventListener("click", () => closeDrawer());
  $("drawer-refresh").addEventListener("click", () => loadRuns());
  $("drawer-backdrop").addEventListener("click", () => closeDrawer());
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && drawer.job) closeDrawer();
    trapFocus(e);
  });
}

/** Whether the drawer shows a job. */
export const drawerOpen = () => drawer.job !== null;

/** The run with this id, when the drawer shows it. */
export function drawerRun(runId) {
  const item = drawer.items.get(runId);
  return item ? item.run : null;
}

/** Refresh what the clock changes (durations of active runs). */
export function tickDrawer() {
  for (const item of drawer.items.values()) {
    if (v.isActive(item.run.state)) updateRunItem(item, item.run);
  }
}

/** Open the run history of job `name`; focus goes back to `opener` when it closes. */
export async function openDrawer(name, opener) {
  const d = drawer;
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
  const d = drawer;
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

/** Close the drawer (and put focus back where it was, unless told not to). */
export function closeDrawer(restoreFocus = true) {
  const d = drawer;
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
  const d = drawer;
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

/** Show a run update in the drawer, when it is about the job shown. */
export function drawerApplyRun(run) {
  const d = drawer;
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
  const item = drawer.items.get(runId);
  if (!item) return;
  const { refs } = item;
  const open = refs.logs.hidden;
  refs.logs.hidden = !open;
  refs.logsBtn.setAttribute("aria-expanded", String(open));
  setText(refs.logsBtn.querySelector(".btn-label"), open ? "Hide logs" : "Logs");
  if (!open) {
    drawer.logs.delete(runId);
    return;
  }
  refs.logs.replaceChildren(h("p", { class: "muted small" }, "Loading logs…"));
  try {
    const { data } = await api.logs(runId);
    if (refs.logs.hidden) return;
    const lines = (data && Array.isArray(data.logs) && data.logs) || [];
    const ol = h("ol", { class: "log-lines" });
    refs.logs.replaceChildren(ol);
    drawer.logs.set(runId, ol);
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

/** Append a live log line to a run whose logs are open. */
export function drawerAppendLog(runId, line) {
  const ol = drawer.logs.get(runId);
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
    if (data && data.run) onRun(data.run);
  } catch (err) {
    if (err instanceof ApiError && err.status === 409) {
      toast({ kind: "info", title: "Already finished", text: err.message || "This run has already finished.", code: err.code, requestId: err.requestId });
      loadRuns();
    } else {
      reportError(err, { action: "cancel", what: `cancel runs (${RUN_PERMISSION})` });
    }
  } finally {
    btn.classList.remove("busy");
    const item = drawer.items.get(runId);
    if (item) updateRunItem(item, item.run);
    else btn.disabled = false;
  }
}

// The drawer is a modal dialog: Tab cycles inside it.
function trapFocus(event) {
  const panel = $("runs-drawer");
  if (panel.hidden || event.key !== "Tab") return;
  const focusable = [...panel.querySelectorAll("button:not([disabled]), [href], [tabindex]:not([tabindex='-1'])")]
    .filter((el) => el.offsetParent !== null);
  if (!focusable.length) return;
  const first = focusable[0];
  const last = focusable[focusable.length - 1];
  if (event.shiftKey && document.activeElement === first) { last.focus(); event.preventDefault(); }
  else if (!event.shiftKey && document.activeElement === last) { first.focus(); event.preventDefault(); }
}
