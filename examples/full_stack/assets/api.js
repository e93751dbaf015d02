// Pulse dashboard — HTTP client, JSON errors and permission helpers.
//
// Every call goes to the page's own origin: the frontend service forwards `/api/*`
// and `/ws/*` to the gateway, and `/health` to the gateway's `/health`. The access
// token comes from the session (session.js), which plugs itself in with `useSession`.

/** The permission to start and cancel jobs. */
export const RUN_PERMISSION = "etl.jobs.run";
/** The permission of the admin page and `/api/admin/*`. */
export const ADMIN_PERMISSION = "users.manage";

/** An HTTP or network failure, carrying what support needs (code, request id). */
export class ApiError extends Error {
  constructor({ status = 0, code = null, requestId = null, message, retryAfter = null, body = null }) {
    super(message);
    this.name = "ApiError";
    /** HTTP status, 0 for a network error. */
    this.status = status;
    /** The stable `code` of the JSON error body, when there is one. */
    this.code = code;
    /** The request id: from the error body, the response header, or the one we sent. */
    this.requestId = requestId;
    /** Seconds from the `Retry-After` header, when present. */
    this.retryAfter = retryAfter;
    /** The parsed JSON body, when there is one. */
    this.body = body;
  }
}

// ---------------------------------------------------------------- session hooks

const sessionHooks = {
  token: () => null,
  renew: null,
};

/**
 * Plug the session in. `token()` answers the access token to send (or null);
 * `renew(sentToken, err)` is called when an authenticated call was refused with 401
 * and answers the token to retry with once, or null when the session is over.
 */
export function useSession({ token, renew }) {
  sessionHooks.token = token;
  sessionHooks.renew = renew;
}

// ---------------------------------------------------------------- claims

/**
 * Decode the payload of a JWT (base64url JSON), for display only — the gateway
 * verifies the signature; the page never trusts these claims for anything but UI.
 */
export function decodeJwt(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    let b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    b64 += "=".repeat((4 - (b64.length % 4)) % 4);
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** Normalise a claim that may be a list or a space/comma separated string. */
export function claimList(value) {
  if (Array.isArray(value)) return value.filter((v) => typeof v === "string" && v !== "");
  if (typeof value === "string") return value.split(/[\s,]+/).filter(Boolean);
  return [];
}

/**
 * Whether `grant` covers `permission` — the same rule as pulse-core's `rbac::grants`:
 * dotted names; a trailing `*` segment matches one or more whole segments (`etl.*`
 * grants `etl.jobs.run` but not `etl` nor `etlx.read`); `*` alone grants everything;
 * a `*` elsewhere matches exactly one segment; empty names/segments never match.
 */
export function grants(grant, permission) {
  if (typeof grant !== "string" || typeof permission !== "string") return false;
  if (permission === "" || permission.split(".").some((s) => s === "")) return false;
  const wanted = permission.split(".");
  const segments = grant.split(".");
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i];
    if (segment === "") return false;
    const isLast = i === segments.length - 1;
    if (i >= wanted.length) return false;
    if (segment === "*" && isLast) return true;
    if (segment === "*") continue;
    if (segment !== wanted[i]) return false;
  }
  return wanted.length === segments.length;
}

/** Whether any grant in `permissions` covers `permission`. */
export function hasPermission(permissions, permission) {
  return claimList(permissions).some((g) => grants(g, permission));
}

// ---------------------------------------------------------------- requests

function newRequestId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function parseRetryAfter(value) {
  if (!value) return null;
  const secs = Number(value);
  if (Number.isFinite(secs) && secs >= 0) return Math.ceil(secs);
  const at = Date.parse(value);
  if (Number.isNaN(at)) return null;
  return Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/**
 * Send a request to the page's origin and parse its JSON answer.
 *
 * Options: `body` (sent as JSON), `auth` (default true: add the bearer token, and on a
 * 401 let the session renew it and retry once — the gateway refuses before anything is
 * forwarded, so a retried POST never runs twice), `okStatuses` (statuses whose JSON body
 * is returned instead of thrown, e.g. 503 for `/health`), `timeoutMs` (default 15 s).
 * Returns `{status, data, requestId}`; throws ApiError otherwise.
 */
export async function request(method, path, options = {}) {
  const auth = options.auth ?? true;
  const token = auth ? sessionHooks.token() : null;
  try {
    return await send(method, path, options, token);
  } catch (err) {
    if (!token || !sessionHooks.renew || !(err instanceof ApiError) || err.status !== 401) throw err;
    const renewed = await sessionHooks.renew(token, err);
    if (!renewed) throw err;
    return send(method, path, options, renewed);
  }
}

async function send(method, path, { body, okStatuses = [], timeoutMs = 15000 }, token) {
  const sentId = newRequestId();
  const headers = { Accept: "application/json", "X-Request-ID": sentId };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      // The refresh cookie (HttpOnly, path /api/auth/) rides along on same-origin calls only.
      credentials: "same-origin",
      cache: "no-store",
      signal: controller.signal,
    });
  } catch (err) {
    const aborted = err && err.name === "AbortError";
    throw new ApiError({
      status: 0,
      code: aborted ? "client_timeout" : "network_error",
      requestId: sentId,
      message: aborted
        ? "The Pulse server did not answer in time."
        : "Network error — can't reach the Pulse server. Check your connection.",
    });
  } finally {
    clearTimeout(timer);
  }

  const text = await response.text().catch(() => "");
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  const requestId =
    (data && typeof data.request_id === "string" && data.request_id) ||
    response.headers.get("x-request-id") ||
    response.headers.get("x-correlation-id") ||
    sentId;

  if (response.ok || okStatuses.includes(response.status)) {
    return { status: response.status, data, requestId };
  }
  throw new ApiError({
    status: response.status,
    code: (data && typeof data.code === "string" && data.code) || null,
    requestId,
    retryAfter: parseRetryAfter(response.headers.get("retry-after")),
    message: (data && typeof data.error === "string" && data.error) || `HTTP ${response.status} ${response.statusText}`.trim(),
    body: data,
  });
}

const enc = encodeURIComponent;

/** The API the dashboard uses (all relative to the page origin). */
export const api = {
  login: (email, password) =>
    request("POST", "/api/auth/login", { body: { email, password }, auth: false }),
  // Cookie only: the HttpOnly refresh token is rotated by the answer.
  refresh: () => request("POST", "/api/auth/refresh", { auth: false }),
  logout: () => request("POST", "/api/auth/logout"),
  setup: () => request("GET", "/api/auth/setup", { auth: false, timeoutMs: 8000 }),
  me: () => request("GET", "/api/auth/me"),
  jobs: () => request("GET", "/api/etl/jobs"),
  status: () => request("GET", "/api/etl/jobs/status"),
  startJob: (name, force) =>
    request("POST", `/api/etl/jobs/${enc(name)}/start`, { body: { force: Boolean(force) } }),
  runs: (name, limit = 20) => request("GET", `/api/etl/jobs/${enc(name)}/runs?limit=${limit}`),
  run: (id) => request("GET", `/api/etl/runs/${enc(id)}`),
  logs: (id) => request("GET", `/api/etl/runs/${enc(id)}/logs`),
  cancelRun: (id) => request("POST", `/api/etl/runs/${enc(id)}/cancel`, { body: {} }),
  health: () => request("GET", "/health", { auth: false, okStatuses: [503], timeoutMs: 8000 }),
};

/** The admin API (`users.manage`). */
export const adminApi = {
  users: () => request("GET", "/api/admin/users"),
  /** `{email, roles, password?}`; without a password the answer carries a generated one. */
  addUser: (user) => request("POST", "/api/admin/users", { body: user }),
  /** `{roles?, disabled?}`. */
  updateUser: (id, patch) => request("PATCH", `/api/admin/users/${enc(id)}`, { body: patch }),
  /** Without a password the answer carries a generated one. */
  resetPassword: (id, password) =>
    request("POST", `/api/admin/users/${enc(id)}/password`, { body: password ? { password } : {} }),
  removeUser: (id) => request("DELETE", `/api/admin/users/${enc(id)}`),
  roles: () => request("GET", "/api/admin/roles"),
  /** `{name, permissions, description?}`. */
  addRole: (role) => request("POST", "/api/admin/roles", { body: role }),
  removeRole: (name) => request("DELETE", `/api/admin/roles/${enc(name)}`),
  /** `filters`: `{action?, actor?, target?, before?, limit?}`; empty ones are left out. */
  audit: (filters = {}) => {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(filters)) {
      if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
    }
    const qs = query.toString();
    return request("GET", `/api/admin/audit${qs ? `?${qs}` : ""}`);
  },
};

/**
 * A clear, human message for an error, given what the user was doing.
 * `ctx`: `{action: "start"|"cancel"|"load"|…, job, what}`.
 */
export function describeError(err, ctx = {}) {
  if (!(err instanceof ApiError)) {
    return { title: "Something went wrong", text: String((err && err.message) || err) };
  }
  const what = ctx.what || "do that";
  switch (err.status) {
    case 0:
      return { title: "Network error", text: err.message };
    case 401:
      return { title: "Session ended", text: "Your session ended — sign in again." };
    case 403:
      return {
        title: "Permission denied",
        text: `Not allowed: you don't have permission to ${what}.`,
      };
    case 404:
      return { title: "Not found", text: err.message };
    case 409: {
      if (ctx.action === "start") {
        const runId = (err.body && err.body.run_id) || "unknown";
        return {
          title: "Job already running",
          text: `${ctx.job || "This job"} is already running (run id ${runId}) — use Force restart to cancel it and start a new run.`,
        };
      }
      return { title: "Conflict", text: err.message };
    }
    case 422:
      return { title: "Rejected", text: err.message };
    case 429: {
      const wait = err.retryAfter != null ? ` Try again in ${err.retryAfter} s.` : " Try again later.";
      return { title: "Too many requests", text: `Too many attempts.${wait}` };
    }
    case 502:
      return { title: "Bad gateway", text: "The ETL service gave an invalid answer. Try again in a moment." };
    case 503: {
      const retry = err.retryAfter != null ? `, retry in ${err.retryAfter} s` : "";
      if (err.code === "overloaded") {
        // Too many requests at once (e.g. sign-ins waiting for a password check): not the ETL's fault.
        return { title: "Server busy", text: `The server is busy${retry || ", retry shortly"}.` };
      }
      if (err.code === "circuit_open" || err.retryAfter != null) {
        return {
          title: "ETL service unavailable",
          text: `ETL service unavailable — circuit open${retry || ", retry shortly"}.`,
        };
      }
      return { title: "ETL service unavailable", text: "ETL service unavailable — try again shortly." };
    }
    case 504:
      return { title: "Timed out", text: "ETL service timed out — the request took too long. Try again." };
    default:
      return { title: `Error ${err.status}`, text: err.message };
  }
}
