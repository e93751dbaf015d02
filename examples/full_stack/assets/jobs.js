// Pulse dashboard — the job list: one card per ETL job with its latest run, kept up to
// date from the API, the job-status WebSocket and polling; starting jobs.

import { api, ApiError, describeError, RUN_PERMISSION } from "./api.js";
import { can } from "./session.js";
import { openDrawer, drawerApplyRun, drawerAppendLog, drawerRun, NO_RUN_REASON } from "./drawer.js";
import * as v from "./views.js";
import { toast, reportError, supportLine } from "./toast.js";

const { h, setText, mergeRun, isNewerRun } = v;
const $ = (id) => document.getElementById(id);

const jobs = {
  byName: new Map(), // name -> {name, description, schedule, state, latest_run}
  order: [],
  cards: new Map(), // name -> {el, refs}
  loaded: false,
  lastUpdate: null,
  reloadTimer: null,
};

/** Forget every job and show the loading skeleton (a new session). */
export function resetJobs() {
  clearTimeout(jobs.reloadTimer);
  jobs.reloadTimer = null;
  jobs.loaded = false;
  jobs.byName.clear();
  jobs.order = [];
  jobs.cards.clear();
  jobs.lastUpdate = null;
  renderJobsSkeleton();
}

/** Stop the pending reload (the session ended). */
export function stopJobs() {
  clearTimeout(jobs.reloadTimer);
  jobs.reloadTimer = null;
}

/** Redraw every card (the clock moved, or the session's permissions changed). */
export function refreshCards() {
  for (const job of jobs.byName.values()) updateCard(job);
  updateStats();
}

function renderJobsSkeleton() {
  const list = $("jobs-list");
  list.replaceChildren(
    ...[0, 1].map(() =>
      h("div", { class: "job-card card skeleton", "aria-hidden": "true" },
        h("div", { class: "sk sk-title" }), h("div", { class: "sk sk-line" }), h("div", { class: "sk sk-bar" }))),
  );
  list.setAttribute("aria-busy", "true");
}

export async function loadJobs({ quiet = false } = {}) {
  try {
    const { data } = await api.jobs();
    applyJobs((data && data.jobs) || []);
    return true;
  } catch (err) {
    if (!jobs.loaded) renderJobsError(err);
    if (!quiet) reportError(err, { action: "load", what: "view jobs (etl.access)" });
    return false;
  }
}

export function scheduleReload() {
  clearTimeout(jobs.reloadTimer);
  jobs.reloadTimer = setTimeout(() => loadJobs({ quiet: true }), 300);
}

function renderJobsError(err) {
  const d = describeError(err, { what: "view jobs (etl.access)" });
  const retry = v.button({ label: "Try again", iconName: "refresh", cls: "btn-secondary btn-sm", onClick: () => { renderJobsSkeleton(); loadJobs(); } });
  $("jobs-list").replaceChildren(
    h("div", { class: "card empty-state", "data-testid": "jobs-error" },
      h("p", { class: "empty-title" }, d.title),
      h("p", { class: "muted" }, d.text),
      supportLine(err),
      retry),
  );
  $("jobs-list").removeAttribute("aria-busy");
}

export function applyJobs(list) {
  const names = [];
  for (const j of list) {
    if (!j || typeof j.name !== "string") continue;
    names.push(j.name);
    const prev = jobs.byName.get(j.name);
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
    jobs.byName.set(j.name, job);
  }
  for (const name of [...jobs.byName.keys()]) if (!names.includes(name)) jobs.byName.delete(name);
  jobs.order = names;
  jobs.loaded = true;
  jobs.lastUpdate = Date.now();
  renderJobs();
}

/**
 * Apply GET /jobs/status: `{jobs: {name: {state, run_id, progress, started_at, finished_at}}}`
 * (also accepted: `jobs` as a list of `{name, state, last_run_id, last_finished_at, progress}`).
 */
export function applyStatus(data) {
  const raw = (data && data.jobs) || {};
  const entries = Array.isArray(raw)
    ? raw.filter((s) => s && typeof s.name === "string").map((s) => [s.name, s])
    : Object.entries(raw);
  let unknown = false;
  for (const [name, s] of entries) {
    const job = jobs.byName.get(name);
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
  jobs.lastUpdate = Date.now();
  updateStats();
  return unknown;
}

function renderJobs() {
  const list = $("jobs-list");
  list.removeAttribute("aria-busy");
  if (!jobs.order.length) {
    jobs.cards.clear();
    list.replaceChildren(h("div", { class: "card empty-state" },
      h("p", { class: "empty-title" }, "No jobs registered"),
      h("p", { class: "muted" }, "The ETL service reports no jobs.")));
    updateStats();
    return;
  }
  const wanted = [];
  for (const name of jobs.order) {
    let card = jobs.cards.get(name);
    if (!card) {
      card = createCard(name);
      jobs.cards.set(name, card);
    }
    updateCard(jobs.byName.get(name));
    wanted.push(card.el);
  }
  for (const [name, card] of jobs.cards) {
    if (!jobs.order.includes(name)) { card.el.remove(); jobs.cards.delete(name); }
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
  refs.nextSlot = h("dd", { class: "job-next-slot", "data-testid": "next-slot" });
  refs.lastSlot = h("dd", { class: "job-last-slot", "data-testid": "last-slot" });
  refs.slots = [
    h("div", {}, h("dt", {}, "Next slot"), refs.nextSlot),
    h("div", {}, h("dt", {}, "Last slot"), refs.lastSlot),
  ];
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
      ...refs.slots,
      h("div", {}, h("dt", {}, "Run"), refs.runId)),
    h("div", { class: "job-progress" },
      refs.progress,
      h("div", { class: "progress-caption" }, refs.progressText, refs.progressPct)),
    refs.error,
  );
  return { el, refs };
}

export function updateCard(job) {
  if (!job) return;
  const card = jobs.cards.get(job.name);
  if (!card) return;
  const { el, refs } = card;
  const run = job.latest_run;
  const st = job.state || (run ? run.state : "idle");
  el.dataset.state = st;
  v.setBadge(refs.badge, st);
  setText(refs.desc, job.description || "");
  refs.desc.hidden = !job.description;
  setText(refs.schedule, job.schedule || "manual");
  refs.schedule.title = job.catch_up ? `Missed slots: ${job.catch_up}` : "";
  for (const el of refs.slots) el.hidden = !job.schedule;
  setText(refs.nextSlot, job.next_slot ? v.formatClock(job.next_slot) : "—");
  refs.nextSlot.title = job.next_slot ? v.formatAbsolute(job.next_slot) : "";
  setText(refs.lastSlot, job.last_slot ? v.formatRelative(job.last_slot) : "none yet");
  refs.lastSlot.title = job.last_slot ? v.formatAbsolute(job.last_slot) : "";
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

export function updateStats() {
  const all = [...jobs.byName.values()];
  setText($("stat-jobs"), String(all.length));
  setText($("stat-active"), String(all.filter((j) => v.isActive(j.state)).length));
  const failed = all.filter((j) => j.state === "failed").length;
  setText($("stat-failed"), String(failed));
  $("stat-failed").classList.toggle("bad", failed > 0);
  if (jobs.lastUpdate) {
    setText($("last-updated"), `Updated ${v.formatRelative(new Date(jobs.lastUpdate).toISOString())}`);
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
  const card = jobs.cards.get(name);
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
    const job = jobs.byName.get(name);
    if (job) updateCard(job);
    else btn.disabled = false;
  }
}

/** Apply one run update (from the WebSocket, a start answer, or a cancel answer). */
export function applyRun(run) {
  if (!run || typeof run !== "object" || !run.job_name || !run.id) return;
  const job = jobs.byName.get(run.job_name);
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
  jobs.lastUpdate = Date.now();
  updateStats();
}

/** Apply one message of the job-status WebSocket. */
export function applyLiveMessage(msg) {
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
  const job = jobs.byName.get(ev.job_name);
  const base = job && job.latest_run && job.latest_run.id === ev.run_id ? job.latest_run : drawerRun(ev.run_id);
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
