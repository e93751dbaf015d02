// Pulse dashboard — messages: toasts, and errors reported with their code and request id.

import { ApiError, describeError } from "./api.js";
import { h, icon } from "./views.js";

const TOAST_LIMIT = 4;

/**
 * Show a message in #toast. kind: "error" | "warn" | "success" | "info".
 * Errors carry their code and request id, small, for support.
 */
export function toast({ kind = "info", title, text, code, requestId, runId, timeout }) {
  const box = document.getElementById("toast");
  const key = `${kind}|${title}|${text}`;
  for (const old of box.querySelectorAll(".toast")) {
    if (old.dataset.key === key) old.remove();
  }
  const meta = [];
  if (runId) meta.push(h("span", {}, "run id ", h("code", { class: "selectable" }, runId)));
  if (code) meta.push(h("span", {}, "code ", h("code", {}, code)));
  if (requestId) meta.push(h("span", {}, "request id ", h("code", { class: "selectable" }, requestId)));
  const close = h("button", { type: "button", class: "toast-close", "aria-label": "Dismiss message" }, icon("close"));
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

/** The code an error is reported under: its JSON code, else `http_<status>`. */
export function errorCode(err) {
  if (!(err instanceof ApiError)) return null;
  return err.code || (err.status ? `http_${err.status}` : null);
}

/** "code forbidden · request id …" for support, or null. */
export function supportLine(err) {
  if (!(err instanceof ApiError)) return null;
  const parts = [];
  const code = errorCode(err);
  if (code) parts.push(`code ${code}`);
  if (err.requestId) parts.push(`request id ${err.requestId}`);
  return parts.length ? h("span", { class: "support" }, parts.join(" · ")) : null;
}

/**
 * Report an error to the user as a toast and answer its description. A 401 answers
 * null: the session has already dealt with it (renewed, or back to the sign-in page).
 */
export function reportError(err, ctx = {}) {
  if (err instanceof ApiError && err.status === 401) return null;
  const d = describeError(err, ctx);
  toast({
    kind: err instanceof ApiError && (err.status === 503 || err.status === 409) ? "warn" : "error",
    title: d.title,
    text: d.text,
    code: errorCode(err),
    requestId: err instanceof ApiError ? err.requestId : null,
  });
  return d;
}
