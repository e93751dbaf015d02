// Pulse dashboard — dialogs: a modal form whose errors stay in it, and a secret shown once.

import { ApiError } from "./api.js";
import * as v from "./views.js";
import { supportLine } from "./toast.js";

const { h, setText } = v;

// open <dialog> -> the function that closes it
const openDialogs = new Map();

let uid = 0;
/** A fresh element id. */
export const nextId = (prefix) => `${prefix}-${++uid}`;

/** Mark a button busy (disabled, spinning icon) or not. */
export function setBusy(btn, busy) {
  btn.disabled = busy;
  btn.classList.toggle("busy", busy);
}

/** Show an error in a form's error box, with its code and request id (a 401 has ended the session). */
export function showFormError(box, err) {
  if (err instanceof ApiError && err.status === 401) return;
  const text = err instanceof ApiError && err.status === 403 ? `Not allowed: ${err.message}` : err.message;
  box.replaceChildren(h("span", {}, text));
  const support = supportLine(err);
  if (support) box.append(support);
  box.hidden = false;
}

/** Close every open dialog (the page was left, or the session ended). */
export function closeDialogs() {
  for (const finish of [...openDialogs.values()]) finish();
}

/**
 * A modal dialog (native <dialog>: focus stays inside, Escape closes, focus returns to
 * the opener). `onSubmit` runs on the primary button; its ApiError is shown in the
 * dialog with code and request id, and the dialog stays open to correct and retry. A
 * function `onSubmit` answers runs once the dialog has closed (e.g. the next dialog).
 * `returnFocus()` names where focus goes then, when the opener is gone (a redrawn row).
 */
export function modal({ title, text, fields = [], submitLabel, danger = false, testid, onSubmit, returnFocus }) {
  const opener = document.activeElement;
  const titleId = nextId("dialog-title");
  const error = h("div", { class: "form-error", role: "alert", "data-testid": `${testid}-error`, hidden: true });
  const submit = h("button", {
    type: "submit", class: `btn ${danger ? "btn-danger-solid" : "btn-primary"}`, "data-testid": `${testid}-submit`,
  }, h("span", { class: "btn-label" }, submitLabel));
  const cancel = h("button", { type: "button", class: "btn btn-secondary" }, onSubmit ? "Cancel" : "Close");
  const form = h("form", { class: "form dialog-form", novalidate: true },
    h("h2", { id: titleId, class: "dialog-title" }, title),
    text ? h("p", { class: "dialog-text" }, text) : null,
    fields,
    error,
    h("div", { class: "dialog-actions" }, cancel, onSubmit ? submit : null));
  const dialog = h("dialog", { class: "dialog", "aria-labelledby": titleId, "data-testid": testid }, form);
  // Every way out (Escape, Cancel, done) ends here, once; focus goes back at once.
  const finish = () => {
    if (!openDialogs.has(dialog)) return;
    openDialogs.delete(dialog);
    if (dialog.open) dialog.close();
    dialog.remove();
    const back = typeof returnFocus === "function" ? returnFocus() : null;
    const target = back && document.contains(back) ? back : opener;
    if (target && document.contains(target)) target.focus();
  };
  dialog.addEventListener("close", finish);
  cancel.addEventListener("click", finish);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!onSubmit) return;
    error.hidden = true;
    setBusy(submit, true);
    let then = null;
    try {
      then = await onSubmit();
    } catch (err) {
      setBusy(submit, false);
      if (err instanceof ApiError && err.status === 401) finish();
      else showFormError(error, err);
      return;
    }
    finish();
    if (typeof then === "function") then();
  });
  openDialogs.set(dialog, finish);
  document.body.append(dialog);
  dialog.showModal();
  return { close: finish };
}

/** Show a generated password once, to copy; it is gone when the dialog closes. */
export function showSecret(email, password, { returnFocus } = {}) {
  const id = nextId("secret");
  const input = h("input", {
    id, class: "secret", type: "text", readonly: true, value: password,
    spellcheck: "false", autocomplete: "off", "data-testid": "generated-password",
  });
  const status = h("span", { class: "muted small", role: "status" });
  const copy = v.button({ label: "Copy", iconName: "copy", cls: "btn-secondary", testid: "copy-password" });
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(password);
      setText(status, "Copied.");
    } catch {
      // No clipboard (an insecure origin, a denied permission): select it for Ctrl+C.
      input.select();
      setText(status, "Selected — press Ctrl+C to copy.");
    }
  });
  const dialog = modal({
    title: `Password for ${email}`,
    text: "Shown only this once: copy it now and hand it over safely. It works right away.",
    fields: [h("div", { class: "field" },
      h("label", { for: id }, "Generated password"),
      h("div", { class: "secret-row" }, input, copy),
      status)],
    testid: "secret-dialog",
    returnFocus,
  });
  input.focus();
  input.select();
  return dialog;
}
