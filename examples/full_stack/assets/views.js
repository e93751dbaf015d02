// Pulse dashboard — DOM building blocks and formatting. Everything is built with
// createElement/textContent (never innerHTML with data), so server strings cannot
// inject markup, and nothing needs inline styles (a strict CSP can apply).

const SVG_NS = "http://www.w3.org/2000/svg";

/** Create an element: h("div", {class: "x", onclick: fn, dataset: {...}}, ...children). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

/** Set an element's text, leaving the DOM alone when it is already right. */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** Replace an element's children, skipping null/false ones. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const ICONS = {
  play: "M7 4.5v15l12-7.5z",
  force: "M4 12a8 8 0 0 1 13.7-5.6L20 4v6h-6l2.3-2.3A5.5 5.5 0 1 0 17.5 12H20a8 8 0 0 1-16 0z",
  history: "M13 3a9 9 0 0 0-9 9H1l4 4 4-4H6a7 7 0 1 1 2 4.9l-1.4 1.4A9 9 0 1 0 13 3zm-1 5v5l4.3 2.5.7-1.2-3.5-2.1V8z",
  logout: "M10 17l1.4-1.4L8.8 13H20v-2H8.8l2.6-2.6L10 7l-5 5zM4 5h8V3H4a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h8v-2H4z",
  close: "M18.3 5.7 12 12l6.3 6.3-1.4 1.4L10.6 13.4 4.3 19.7l-1.4-1.4L9.2 12 2.9 5.7l1.4-1.4 6.3 6.3 6.3-6.3z",
  stop: "M6 6h12v12H6z",
  refresh: "M17.7 6.3A8 8 0 1 0 19.7 14h-2.1a6 6 0 1 1-1.4-6.2L13 11h7V4z",
  logs: "M4 5h16v2H4zm0 4h10v2H4zm0 4h16v2H4zm0 4h10v2H4z",
  plus: "M11 5h2v6h6v2h-6v6h-2v-6H5v-2h6z",
  trash: "M9 3h6l1 1h4v2H4V4h4zM6 8h12l-1 13H7z",
  key: "M7 15a3 3 0 1 1 0-6 3 3 0 0 1 0 6zm5.7-5A6 6 0 1 0 12.7 14H16v3h3v-3h2v-4z",
  shield: "M12 2 4 5v6c0 5 3.4 9.4 8 11 4.6-1.6 8-6 8-11V5z",
  copy: "M16 1H4a2 2 0 0 0-2 2v14h2V3h12zm3 4H8a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h11a2 2 0 0 0 2-2V7a2 2 0 0 0-2-2zm0 16H8V7h11z",
  block: "M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zM4 12a8 8 0 0 1 12.9-6.3L5.7 16.9A8 8 0 0 1 4 12zm8 8a8 8 0 0 1-4.9-1.7L18.3 7.1A8 8 0 0 1 12 20z",
  check: "M9 16.2 4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4z",
};

/** A small decorative icon. */
export function icon(name) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.setAttribute("class", "icon");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", ICONS[name] || "");
  svg.append(path);
  return svg;
}

// ---------------------------------------------------------------- formatting

export const ACTIVE_STATES = new Set(["pending", "running", "retrying", "cancelling"]);
export const isActive = (state) => ACTIVE_STATES.has(state);

function parseTime(value) {
  if (!value) return null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t;
}

/** "12 s", "3 min 04 s", "1 h 02 min". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 1000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  const hrs = Math.floor(m / 60);
  return `${hrs} h ${String(m % 60).padStart(2, "0")} min`;
}

/** Duration of a run: finished − started, or so far for an active run. */
export function runDuration(run, now = Date.now()) {
  if (!run) return null;
  const start = parseTime(run.started_at);
  if (start === null) return null;
  const end = parseTime(run.finished_at);
  if (end !== null) return end - start;
  return isActive(run.state) ? Math.max(0, now - start) : null;
}

/** "just now", "5 s ago", "3 min ago", "2 h ago", or a date. */
export function formatRelative(value, now = Date.now()) {
  const t = parseTime(value);
  if (t === null) return "—";
  const diff = Math.round((now - t) / 1000);
  if (diff < 3) return "just now";
  if (diff < 60) return `${diff} s ago`;
  if (diff < 3600) return `${Math.floor(diff / 60)} min ago`;
  if (diff < 86400) return `${Math.floor(diff / 3600)} h ago`;
  return new Date(t).toLocaleDateString(undefined, { month: "short", day: "numeric", year: "numeric" });
}

/** A full local date and time, for tooltips. */
export function formatAbsolute(value) {
  const t = parseTime(value);
  if (t === null) return "";
  return new Date(t).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

/** Time of day with seconds, for log lines. */
export function formatClock(value) {
  const t = parseTime(value);
  if (t === null) return "";
  return new Date(t).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

/** The short form of a run id (last 8 characters — the random part of a UUID v7). */
export function shortId(id) {
  if (!id) return "—";
  const s = String(id);
  return s.length > 12 ? `…${s.slice(-8)}` : s;
}

/** Percent (0–100) for a run's progress, or null when unknown. */
export function progressPercent(run) {
  if (!run) return 0;
  if (run.state === "succeeded") return 100;
  const p = run.progress;
  if (!p || typeof p.done !== "number") return isActive(run.state) ? null : 0;
  if (typeof p.total !== "number" || p.total <= 0) return isActive(run.state) ? null : 0;
  return Math.max(0, Math.min(100, Math.round((p.done / p.total) * 100)));
}

/** "40 / 100 · page 2 of 5" */
export function progressText(run) {
  if (!run) return "Never run";
  const p = run.progress || {};
  const parts = [];
  if (typeof p.done === "number") parts.push(typeof p.total === "number" ? `${p.done} / ${p.total}` : `${p.done} done`);
  if (p.message) parts.push(p.message);
  if (!parts.length) {
    if (run.state === "pending") return "Waiting for a worker…";
    if (isActive(run.state)) return "Working…";
    return "";
  }
  return parts.join(" · ");
}

// ---------------------------------------------------------------- runs

const RANK = { idle: -1, pending: 0, running: 1, retrying: 1, cancelling: 2, succeeded: 3, failed: 3, cancelled: 3 };

/** Whether run `a` was created after run `b` (ids are UUID v7: they sort by time too). */
export function isNewerRun(a, b) {
  const ta = Date.parse(a.created_at || "");
  const tb = Date.parse(b.created_at || "");
  if (!Number.isNaN(ta) && !Number.isNaN(tb) && ta !== tb) return ta > tb;
  return String(a.id) > String(b.id);
}

/** Merge an update of the same run, never moving it backwards. */
export function mergeRun(current, incoming) {
  if (!current || current.id !== incoming.id) return incoming;
  const ra = RANK[incoming.state] ?? 1;
  const rb = RANK[current.state] ?? 1;
  if ((incoming.attempts ?? 0) < (current.attempts ?? 0)) return current;
  if ((incoming.attempts ?? 0) === (current.attempts ?? 0) && ra < rb) return current;
  return { ...current, ...incoming };
}

// ---------------------------------------------------------------- components

/** A state badge; its text is exactly the state. */
export function stateBadge(state) {
  const el = h("span", { class: "state-badge", "data-testid": "state-badge" });
  setBadge(el, state);
  return el;
}

export function setBadge(el, state) {
  const s = state || "idle";
  if (el.textContent !== s) el.textContent = s;
  el.className = `state-badge state-${s.replace(/[^a-z_-]/gi, "")}`;
  el.dataset.state = s;
}

/** A progress bar: role=progressbar with aria-valuenow, and a fill. */
export function progressBar(label) {
  const fill = h("div", { class: "progress-fill" });
  const el = h("div", {
    class: "progress",
    role: "progressbar",
    "aria-valuemin": "0",
    "aria-valuemax": "100",
    "aria-label": label,
    "data-testid": "progress",
  }, fill);
  el._fill = fill;
  return el;
}

export function setProgress(el, run) {
  const pct = progressPercent(run);
  const state = (run && run.state) || "idle";
  el.dataset.state = state;
  if (pct === null) {
    el.removeAttribute("aria-valuenow");
    el.classList.add("indeterminate");
    el._fill.style.width = "";
  } else {
    el.setAttribute("aria-valuenow", String(pct));
    el.classList.remove("indeterminate");
    el._fill.style.width = `${pct}%`;
  }
  const text = progressText(run);
  if (text) el.setAttribute("aria-valuetext", pct === null ? text : `${pct}% — ${text}`);
  else el.removeAttribute("aria-valuetext");
}

/** A button, optionally wrapped so its tooltip still shows when it is disabled. */
export function button({ label, iconName, cls = "", onClick, testid }) {
  return h(
    "button",
    { type: "button", class: `btn ${cls}`.trim(), onclick: onClick, "data-testid": testid },
    iconName ? icon(iconName) : null,
    h("span", { class: "btn-label" }, label),
  );
}

/** Enable/disable a button with a reason shown as tooltip (on the button and its wrapper). */
export function setAllowed(btn, allowed, reason) {
  btn.disabled = !allowed;
  if (allowed) {
    btn.removeAttribute("aria-disabled");
    btn.removeAttribute("title");
    if (btn.parentElement && btn.parentElement.classList.contains("btn-wrap")) btn.parentElement.removeAttribute("title");
  } else {
    btn.setAttribute("aria-disabled", "true");
    btn.title = reason;
    if (btn.parentElement && btn.parentElement.classList.contains("btn-wrap")) btn.parentElement.title = reason;
  }
}

export function healthClass(status) {
  const s = String(status || "").toLowerCase();
  if (["healthy", "ok", "up", "pass", "closed"].includes(s)) return "good";
  if (["degraded", "warn", "warning", "half_open", "half-open", "unknown", "checking"].includes(s)) return "warn";
  return "bad";
}

const SERVICE_LABELS = {
  backend_service: "API gateway",
  etl_service: "ETL service",
  database: "Database",
};

/** Render the services list of a /health answer. */
export function healthList(services) {
  const list = h("ul", { class: "health-list" });
  const entries = Object.entries(services || {});
  const order = ["backend_service", "etl_service", "database"];
  entries.sort(([a], [b]) => {
    const ia = order.indexOf(a), ib = order.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  for (const [name, info] of entries) {
    const status = info && typeof info === "object" ? info.status : info;
    const details = [];
    if (info && typeof info === "object") {
      if (info.reason != null) details.push(String(info.reason));
      if (typeof info.latency_ms === "number") details.push(`${info.latency_ms} ms`);
      for (const [k, v] of Object.entries(info)) {
        if (["status", "reason", "latency_ms"].includes(k) || v === null || v === undefined || typeof v === "object") continue;
        details.push(`${k.replace(/_/g, " ")}: ${v}`);
      }
    }
    const cls = healthClass(status);
    list.append(
      h("li", { class: "health-item", "data-service": name },
        h("span", { class: `dot dot-${cls}`, "aria-hidden": "true" }),
        h("div", { class: "health-item-body" },
          h("span", { class: "health-name" }, SERVICE_LABELS[name] || name),
          details.length ? h("span", { class: "health-detail", title: details.join("\n") }, details.join(" · ")) : null,
        ),
        h("span", { class: `health-status health-${cls}`, "data-testid": `health-${name}` }, String(status || "unknown")),
      ),
    );
  }
  return list;
}
