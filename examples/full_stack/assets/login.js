// Pulse dashboard — the sign-in page: the form, the first-administrator hint when the
// gateway has no administrator yet, and the notice of why a session ended.

import { api, ApiError, describeError } from "./api.js";
import { signIn } from "./session.js";
import { h } from "./views.js";
import { supportLine } from "./toast.js";

const $ = (id) => document.getElementById(id);
// What the gateway's setup answer suggests, with a readable placeholder.
const DEFAULT_HINT = "full_stack users add EMAIL --role admin";

/** Wire the form and the demo-user buttons. */
export function initLogin() {
  $("login-form").addEventListener("submit", onSubmit);
  for (const btn of document.querySelectorAll(".demo-user")) {
    btn.addEventListener("click", () => {
      $("email").value = btn.dataset.email;
      $("password").value = btn.dataset.password;
      $("login-submit").focus();
    });
  }
}

/** Show the sign-in page, with `notice` (why the last session ended) if any. */
export function showLogin(notice) {
  $("boot-view").hidden = true;
  $("login-view").hidden = false;
  document.title = "Sign in · Pulse";
  const n = $("login-notice");
  n.hidden = !notice;
  n.textContent = notice || "";
  $("login-error").hidden = true;
  setBusy(false);
  const email = $("email");
  if (!email.value) email.focus();
  else $("password").focus();
  loadSetup();
}

export function hideLogin() {
  $("boot-view").hidden = true;
  $("login-view").hidden = true;
}

/** Ask the gateway whether a first administrator must be created, and say how. */
async function loadSetup() {
  const hint = $("setup-hint");
  try {
    const { data } = await api.setup();
    const required = Boolean(data && data.bootstrap_required === true);
    const command = (data && typeof data.hint === "string" && data.hint) || DEFAULT_HINT;
    $("setup-command").textContent = command.replace("EMAIL", "you@example.com");
    hint.hidden = !required;
    // No administrator means no demo users either: don't offer them.
    $("demo-users").hidden = required || (data && data.demo === false);
  } catch {
    // An older gateway, or none reachable: signing in says what is wrong.
    hint.hidden = true;
  }
}

function setBusy(busy) {
  const btn = $("login-submit");
  btn.disabled = busy;
  btn.classList.toggle("busy", busy);
  btn.querySelector(".btn-label").textContent = busy ? "Signing in…" : "Sign in";
}

function showError(text, err) {
  const box = $("login-error");
  box.replaceChildren(h("span", {}, text));
  const support = supportLine(err);
  if (support) box.append(support);
  box.hidden = false;
}

async function onSubmit(event) {
  event.preventDefault();
  const email = $("email").value.trim();
  const password = $("password").value;
  if (!email || !password) {
    showError("Enter your email and password.");
    (!email ? $("email") : $("password")).focus();
    return;
  }
  $("login-error").hidden = true;
  setBusy(true);
  try {
    await signIn(email, password);
    $("password").value = "";
  } catch (err) {
    setBusy(false);
    if (err instanceof ApiError && err.status === 401) {
      showError("Invalid email or password.", err);
    } else {
      const d = describeError(err, { action: "login", what: "sign in" });
      showError(d.text, err);
    }
    $("password").select();
  }
}
