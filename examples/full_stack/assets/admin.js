// Pulse dashboard — the admin page (permission `users.manage`): users, roles and the
// audit trail. Every change goes through the gateway's `/api/admin/*`, which checks the
// permission itself; this page only hides what the session may not use.

import { adminApi, ApiError, ADMIN_PERMISSION, claimList } from "./api.js";
import { can, currentSession } from "./session.js";
import * as v from "./views.js";
import { reportError, supportLine, toast } from "./toast.js";
import { closeDialogs, modal, nextId, setBusy, showFormError, showSecret } from "./dialog.js";

const { h, setText } = v;
const $ = (id) => document.getElementById(id);

/** The audit actions the gateway records (the contract's list). */
const AUDIT_ACTIONS = [
  "login_succeeded", "login_failed", "login_throttled", "refresh", "refresh_reuse", "logout",
  "user_added", "user_removed", "user_disabled", "user_enabled", "user_roles_changed",
  "password_changed", "role_added", "role_removed", "job_started", "run_cancelled",
];
const AUDIT_PAGE = 50;
const WHAT = `manage users (${ADMIN_PERMISSION})`;
const USER_COLUMNS = 6;
const AUDIT_COLUMNS = 7;
const SELF_REASON = "You cannot disable or remove yourself — another administrator can.";

const admin = {
  visible: false,
  tab: "users",
  users: [],
  roles: [],
  audit: { events: [], next: null, filters: {}, seq: 0 },
};

/** Wire the page's tabs and forms. */
export function initAdmin() {
  const tabs = [...document.querySelectorAll('#admin-view [role="tab"]')];
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab.id.replace("tab-", "")));
    tab.addEventListener("keydown", (event) => {
      // Arrow keys move between tabs (WAI-ARIA tabs, automatic activation).
      const i = tabs.indexOf(tab);
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (next === undefined) return;
      event.preventDefault();
      const target = tabs[(next + tabs.length) % tabs.length];
      selectTab(target.id.replace("tab-", ""));
      target.focus();
    });
  }
  $("admin-reload").addEventListener("click", () => loadTab(admin.tab));
  $("add-user-form").addEventListener("submit", onAddUser);
  $("add-role-form").addEventListener("submit", onAddRole);
  $("audit-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    loadAudit({ reset: true });
  });
  $("audit-older").addEventListener("click", () => loadAudit({ reset: false }));
  $("audit-action").replaceChildren(
    h("option", { value: "" }, "Any action"),
    ...AUDIT_ACTIONS.map((a) => h("option", { value: a }, a.replace(/_/g, " "))),
  );
}

/** The page was opened: load what it shows (once per visit). */
export function showAdmin() {
  if (!can(ADMIN_PERMISSION) || admin.visible) return;
  admin.visible = true;
  selectTab(admin.tab);
  // The users tab needs the roles (for its form) and the audit tab the users (for names).
  if (admin.tab !== "users") loadUsers();
  if (admin.tab !== "roles") loadRoles();
}

/** The page was left (another page, or the session ended): close its dialogs. */
export function leaveAdmin() {
  admin.visible = false;
  closeDialogs();
  if (!currentSession()) {
    admin.users = [];
    admin.roles = [];
    admin.audit = { events: [], next: null, filters: {}, seq: 0 };
    $("users-body").replaceChildren();
    $("roles-body").replaceChildren();
    $("audit-body").replaceChildren();
  }
}

function selectTab(name) {
  admin.tab = name;
  for (const tab of document.querySelectorAll('#admin-view [role="tab"]')) {
    const selected = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !selected;
  }
  if (admin.visible) loadTab(name);
}

function loadTab(name) {
  if (name === "users") {
    loadUsers();
    loadRoles();
  } else if (name === "roles") {
    loadRoles();
  } else {
    if (!admin.users.length) loadUsers();
    loadAudit({ reset: true });
  }
}

// =============================================================== shared pieces

/** A table body row saying why it is empty (`text`), with an error's support line. */
function messageRow(body, columns, text, err) {
  body.replaceChildren(h("tr", {},
    h("td", { colspan: String(columns), class: "table-message" }, h("span", {}, text), supportLine(err))));
}

function loadFailed(body, columns, err, what) {
  if (err instanceof ApiError && err.status === 401) return;
  const text = err instanceof ApiError && err.status === 403
    ? `Not allowed: you need the ${ADMIN_PERMISSION} permission to ${what}.`
    : `Could not load ${what}: ${err.message}`;
  messageRow(body, columns, text, err);
}

function roleChips(roles) {
  return roles.length
    ? h("div", { class: "chips" }, roles.map((r) => h("span", { class: "chip chip-role" }, r)))
    : h("span", { class: "muted small" }, "none");
}

/**
 * Checkboxes for every known role, `checked` ticked: a multi-select that keyboards and
 * screen readers know. `compact` leaves the descriptions to the tooltips.
 */
function roleCheckboxes(checked, testid, { compact = false } = {}) {
  if (!admin.roles.length) return [h("p", { class: "muted small" }, "No roles defined yet.")];
  return admin.roles.map((role) => {
    const id = nextId("role");
    const title = [role.description, role.permissions.join(" ")].filter(Boolean).join(" — ");
    return h("label", { class: "check", for: id, title },
      h("input", {
        id, type: "checkbox", name: "role", value: role.name,
        checked: checked.includes(role.name), "data-testid": testid ? `${testid}-${role.name}` : null,
      }),
      h("span", { class: "check-name" }, role.name),
      role.description && !compact ? h("span", { class: "check-desc" }, role.description) : null);
  });
}

const checkedRoles = (root) => [...root.querySelectorAll('input[name="role"]:checked')].map((i) => i.value);

// =============================================================== users

async function loadUsers() {
  const body = $("users-body");
  if (!admin.users.length) messageRow(body, USER_COLUMNS, "Loading users…");
  try {
    const { data } = await adminApi.users();
    admin.users = ((data && data.users) || []).filter((u) => u && u.id && typeof u.email === "string");
    renderUsers();
  } catch (err) {
    loadFailed(body, USER_COLUMNS, err, "list users");
  }
}

function renderUsers() {
  const body = $("users-body");
  const users = [...admin.users].sort((a, b) => a.email.localeCompare(b.email));
  setText($("users-count"), `${users.length} ${users.length === 1 ? "user" : "users"}`);
  if (!users.length) {
    messageRow(body, USER_COLUMNS, "No users yet.");
  } else {
    body.replaceChildren(...users.map(userRow));
  }
  const actors = $("audit-actors");
  actors.replaceChildren(...users.map((u) => h("option", { value: u.id, label: u.email })));
}

function userRow(user) {
  const me = currentSession();
  const self = Boolean(me && me.userId === user.id);
  const roles = claimList(user.roles);
  const when = (at, none) => (at
    ? h("time", { datetime: at, title: v.formatAbsolute(at) }, v.formatRelative(at))
    : h("span", { class: "muted" }, none));
  const action = (label, iconName, cls, onClick, testid, aria) => {
    const btn = v.button({ label, iconName, cls: `btn-sm ${cls}`, testid, onClick });
    btn.setAttribute("aria-label", aria);
    return btn;
  };
  const toggle = user.disabled
    ? action("Enable", "check", "btn-secondary", () => setDisabled(user, false), "enable-user", `Enable ${user.email}`)
    : action("Disable", "block", "btn-warning", () => confirmDisable(user), "disable-user", `Disable ${user.email}`);
  const remove = action("Remove", "trash", "btn-danger", () => confirmRemove(user), "remove-user", `Remove ${user.email}`);
  // Wrapped, so that the reason shows on hover even while disabled.
  const toggleWrap = h("span", { class: "btn-wrap" }, toggle);
  const removeWrap = h("span", { class: "btn-wrap" }, remove);
  if (self) {
    v.setAllowed(toggle, false, SELF_REASON);
    v.setAllowed(remove, false, SELF_REASON);
  }
  return h("tr", { "data-user": user.email, "data-testid": "user-row" },
    h("th", { scope: "row", class: "cell-email" },
      h("span", { class: "mono" }, user.email),
      self ? h("span", { class: "you" }, "you") : null),
    h("td", {}, roleChips(roles)),
    h("td", {}, h("span", { class: `pill ${user.disabled ? "pill-bad" : "pill-good"}`, "data-testid": "user-state" },
      user.disabled ? "disabled" : "active")),
    h("td", { class: "cell-time" }, when(user.last_login_at, "never")),
    h("td", { class: "cell-time" }, when(user.created_at, "—")),
    h("td", { class: "cell-actions" },
      h("div", { class: "row-actions" },
        action("Roles", "shield", "btn-secondary", () => editRoles(user), "edit-roles", `Change the roles of ${user.email}`),
        action("Password", "key", "btn-secondary", () => resetPassword(user), "reset-password", `Reset the password of ${user.email}`),
        toggleWrap,
        removeWrap)));
}

/**
 * Where focus goes once a row was redrawn: the first enabled of the row's buttons
 * `testids`, else the table's heading (the row is gone).
 */
function backToRow(email, ...testids) {
  return () => {
    const row = [...$("users-body").rows].find((r) => r.dataset.user === email);
    for (const testid of testids) {
      const btn = row && row.querySelector(`[data-testid="${testid}"]`);
      if (btn && !btn.disabled) return btn;
    }
    return $("users-title");
  };
}

/** Put the gateway's answer for one user in the list. */
function replaceUser(user) {
  if (!user || !user.id) return;
  const i = admin.users.findIndex((u) => u.id === user.id);
  if (i >= 0) admin.users[i] = user;
  else admin.users.push(user);
  renderUsers();
}

async function onAddUser(event) {
  event.preventDefault();
  const form = $("add-user-form");
  const errorBox = $("add-user-error");
  const email = $("new-email").value.trim();
  const password = $("new-password").value;
  const roles = checkedRoles($("new-roles"));
  errorBox.hidden = true;
  if (!email) {
    showFormError(errorBox, new Error("Enter the new user's e-mail."));
    $("new-email").focus();
    return;
  }
  const submit = $("add-user-submit");
  setBusy(submit, true);
  try {
    const { data } = await adminApi.addUser(password ? { email, roles, password } : { email, roles });
    if (data && data.user) replaceUser(data.user);
    else loadUsers();
    form.reset();
    toast({ kind: "success", title: "User added", text: `${email} can sign in${roles.length ? ` as ${roles.join(", ")}` : " (no role yet)"}.` });
    if (data && typeof data.password === "string") showSecret(email, data.password, { returnFocus: () => $("new-email") });
    else $("new-email").focus();
  } catch (err) {
    showFormError(errorBox, err);
    (err instanceof ApiError && err.status === 422 && /password/i.test(err.message) ? $("new-password") : $("new-email")).focus();
  } finally {
    setBusy(submit, false);
  }
}

function editRoles(user) {
  const current = claimList(user.roles);
  const group = h("fieldset", { class: "field checks" },
    h("legend", {}, "Roles"),
    h("div", { class: "check-list" }, roleCheckboxes(current, "edit-role")));
  modal({
    title: `Roles of ${user.email}`,
    text: "Tokens issued before the change stop working at once; the user's next request picks up the new roles.",
    fields: [group],
    submitLabel: "Save roles",
    testid: "roles-dialog",
    returnFocus: backToRow(user.email, "edit-roles"),
    onSubmit: async () => {
      const roles = checkedRoles(group);
      const { data } = await adminApi.updateUser(user.id, { roles });
      if (data && data.user) replaceUser(data.user);
      else loadUsers();
      toast({ kind: "success", title: "Roles changed", text: `${user.email}: ${roles.length ? roles.join(", ") : "no role"}.` });
    },
  });
}

function resetPassword(user) {
  const id = nextId("reset");
  const hintId = nextId("reset-hint");
  const input = h("input", { id, type: "password", autocomplete: "new-password", "aria-describedby": hintId });
  modal({
    title: `Reset the password of ${user.email}`,
    text: "Their sessions end at once.",
    fields: [h("div", { class: "field" },
      h("label", { for: id }, "New password ", h("span", { class: "optional" }, "(optional)")),
      input,
      h("p", { id: hintId, class: "field-hint" }, "At least 12 characters. Leave it empty to have one generated, shown once."))],
    submitLabel: "Reset password",
    testid: "password-dialog",
    returnFocus: backToRow(user.email, "reset-password"),
    onSubmit: async () => {
      const { data } = await adminApi.resetPassword(user.id, input.value);
      toast({ kind: "success", title: "Password reset", text: `${user.email}'s sessions have ended.` });
      // Once this dialog has closed, so that the secret's dialog is the one on top.
      if (data && typeof data.password === "string") {
        return () => showSecret(user.email, data.password, { returnFocus: backToRow(user.email, "reset-password") });
      }
      return null;
    },
  });
}

function confirmDisable(user) {
  modal({
    title: `Disable ${user.email}?`,
    text: "They are signed out at once and cannot sign in until enabled again.",
    submitLabel: "Disable",
    danger: true,
    testid: "disable-dialog",
    returnFocus: backToRow(user.email, "enable-user", "disable-user"),
    onSubmit: () => setDisabled(user, true, { rethrow: true }),
  });
}

async function setDisabled(user, disabled, { rethrow = false } = {}) {
  try {
    const { data } = await adminApi.updateUser(user.id, { disabled });
    if (data && data.user) replaceUser(data.user);
    else loadUsers();
    toast({ kind: "success", title: disabled ? "User disabled" : "User enabled", text: user.email });
    // The row was redrawn under the button that was pressed.
    if (!rethrow) backToRow(user.email, "disable-user", "enable-user")().focus();
  } catch (err) {
    if (rethrow) throw err;
    reportError(err, { what: WHAT });
  }
}

function confirmRemove(user) {
  modal({
    title: `Remove ${user.email}?`,
    text: "The account and its sessions end at once; the audit trail keeps its events. This cannot be undone.",
    submitLabel: "Remove user",
    danger: true,
    testid: "remove-dialog",
    returnFocus: backToRow(user.email),
    onSubmit: async () => {
      await adminApi.removeUser(user.id);
      admin.users = admin.users.filter((u) => u.id !== user.id);
      renderUsers();
      toast({ kind: "success", title: "User removed", text: user.email });
    },
  });
}

// =============================================================== roles

async function loadRoles() {
  const body = $("roles-body");
  if (!admin.roles.length) messageRow(body, 4, "Loading roles…");
  try {
    const { data } = await adminApi.roles();
    admin.roles = ((data && data.roles) || [])
      .filter((r) => r && typeof r.name === "string")
      .map((r) => ({ ...r, permissions: claimList(r.permissions) }))
      .sort((a, b) => a.name.localeCompare(b.name));
    renderRoles();
  } catch (err) {
    loadFailed(body, 4, err, "list roles");
    const box = $("new-roles");
    if (!admin.roles.length) box.replaceChildren(h("p", { class: "muted small" }, "The roles could not be loaded."));
  }
}

function renderRoles() {
  // Keep what is ticked in the add-user form across a reload of the roles.
  const ticked = checkedRoles($("new-roles"));
  $("new-roles").replaceChildren(...roleCheckboxes(ticked, "new-role", { compact: true }));
  const body = $("roles-body");
  if (!admin.roles.length) {
    messageRow(body, 4, "No roles yet.");
    return;
  }
  body.replaceChildren(...admin.roles.map((role) => {
    const count = Number(role.users) || 0;
    const remove = v.button({ label: "Remove", iconName: "trash", cls: "btn-danger btn-sm", testid: "remove-role", onClick: () => confirmRemoveRole(role) });
    remove.setAttribute("aria-label", `Remove the role ${role.name}`);
    if (count > 0) v.setAllowed(remove, false, `Held by ${count} ${count === 1 ? "user" : "users"}: change their roles first.`);
    return h("tr", { "data-role": role.name },
      h("th", { scope: "row" },
        h("span", { class: "mono" }, role.name),
        role.description ? h("span", { class: "cell-sub" }, role.description) : null),
      h("td", {}, role.permissions.length
        ? h("div", { class: "chips" }, role.permissions.map((p) => h("span", { class: "chip chip-perm" }, p)))
        : h("span", { class: "muted small" }, "none")),
      h("td", { class: "cell-num" }, String(count)),
      h("td", { class: "cell-actions" }, h("span", { class: "btn-wrap" }, remove)));
  }));
}

async function onAddRole(event) {
  event.preventDefault();
  const errorBox = $("add-role-error");
  const name = $("role-name").value.trim();
  const permissions = claimList($("role-permissions").value);
  const description = $("role-description").value.trim();
  errorBox.hidden = true;
  if (!name) {
    showFormError(errorBox, new Error("Enter the role's name."));
    $("role-name").focus();
    return;
  }
  const submit = $("add-role-submit");
  setBusy(submit, true);
  try {
    await adminApi.addRole(description ? { name, permissions, description } : { name, permissions });
    $("add-role-form").reset();
    toast({ kind: "success", title: "Role added", text: `${name}: ${permissions.join(" ") || "no permission"}.` });
    await loadRoles();
    $("role-name").focus();
  } catch (err) {
    showFormError(errorBox, err);
    $("role-name").focus();
  } finally {
    setBusy(submit, false);
  }
}

function confirmRemoveRole(role) {
  modal({
    title: `Remove the role ${role.name}?`,
    text: "Nobody holds it; it can be added again later.",
    submitLabel: "Remove role",
    danger: true,
    testid: "remove-role-dialog",
    returnFocus: () => $("roles-title"),
    onSubmit: async () => {
      await adminApi.removeRole(role.name);
      admin.roles = admin.roles.filter((r) => r.name !== role.name);
      renderRoles();
      toast({ kind: "success", title: "Role removed", text: role.name });
    },
  });
}

// =============================================================== audit

async function loadAudit({ reset }) {
  const a = admin.audit;
  const body = $("audit-body");
  const older = $("audit-older");
  if (reset) {
    a.filters = { action: $("audit-action").value, actor: $("audit-actor").value.trim() };
    a.events = [];
    a.next = null;
    messageRow(body, AUDIT_COLUMNS, "Loading events…");
  }
  const seq = ++a.seq;
  setBusy(older, true);
  try {
    const { data } = await adminApi.audit({ ...a.filters, limit: AUDIT_PAGE, before: reset ? null : a.next });
    if (seq !== a.seq) return;
    const events = ((data && data.events) || []).filter((e) => e && e.id != null);
    a.events = reset ? events : a.events.concat(events);
    a.next = data && data.next_before != null ? data.next_before : null;
    if (!a.events.length) messageRow(body, AUDIT_COLUMNS, "No events match these filters.");
    else if (reset) body.replaceChildren(...events.map(auditRow));
    else body.append(...events.map(auditRow));
  } catch (err) {
    if (seq !== a.seq) return;
    if (reset) loadFailed(body, AUDIT_COLUMNS, err, "read the audit trail");
    else reportError(err, { what: WHAT });
  } finally {
    if (seq === a.seq) {
      setBusy(older, false);
      older.hidden = a.next === null;
    }
  }
}

/** A user's e-mail for an id the audit names, else the id itself. */
function who(id) {
  if (id === null || id === undefined || id === "") return h("span", { class: "muted" }, "—");
  const user = admin.users.find((u) => u.id === String(id));
  return user
    ? h("span", { title: `user id ${id}` }, user.email)
    : h("span", { class: "mono" }, String(id));
}

function detailText(detail) {
  if (!detail || typeof detail !== "object") return "";
  return Object.entries(detail)
    .map(([key, value]) => `${key.replace(/_/g, " ")}: ${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join(" · ");
}

function auditRow(event) {
  const detail = detailText(event.detail);
  return h("tr", { "data-action": String(event.action || ""), "data-testid": "audit-row" },
    h("td", { class: "cell-time" },
      h("time", { datetime: event.at || "", title: v.formatAbsolute(event.at) }, v.formatRelative(event.at))),
    h("td", {}, h("span", { class: `action-tag action-${String(event.action || "").split("_")[0]}` }, String(event.action || "?"))),
    h("td", {}, who(event.actor)),
    h("td", {}, who(event.target)),
    h("td", { class: "cell-detail", title: detail }, detail || h("span", { class: "muted" }, "—")),
    h("td", { class: "cell-request" },
      event.request_id ? h("code", { class: "selectable", title: event.request_id }, v.shortId(event.request_id)) : null),
    h("td", { class: "cell-client" }, event.client_addr ? String(event.client_addr) : null));
}
