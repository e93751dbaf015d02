// Pulse dashboard — the session: the access token (in memory and this tab's
// sessionStorage), its silent renewal through the HttpOnly refresh cookie (which this
// code never sees), sign-in, sign-out, and the end of a session.
//
// Renewal: at 80 % of the token's life, and once when a call is refused with 401
// `invalid_token` / `token_revoked`. A refused renewal (`401 session_expired`) ends the
// session; a failed one (network, 503) is retried, since the session may well be alive.

import { api, ApiError, useSession, decodeJwt, claimList, hasPermission } from "./api.js";

const STORE_KEY = "pulse.session";
/** The share of a token's life after which it is renewed. */
const RENEW_SHARE = 0.8;
/** Never renew more often than this, whatever the token says. */
const MIN_RENEW_MS = 1000;
/** After a renewal that failed without ending the session (network, overload). */
const RETRY_MS = 5000;
/** A stored token with less life left than this is renewed before it is used. */
const RESUME_MARGIN_MS = 5000;
/** Codes of a 401 that a renewed token may cure. */
const RENEWABLE = new Set(["invalid_token", "token_revoked"]);

/** What the sign-in page says when the gateway refuses to renew the session. */
export const ENDED = "Your session ended — sign in again.";
/** … when the session was revoked (signed out elsewhere, disabled, password changed). */
export const REVOKED = "You were signed out — sign in again.";
/** … after the sign-out button. */
export const SIGNED_OUT = "You have signed out.";
/** … when another tab signed out. */
export const SIGNED_OUT_ELSEWHERE = "You signed out in another tab.";

let current = null;
let renewTimer = null;
let inflight = null;
let signingOut = false;
const handlers = { started() {}, renewed() {}, ended() {} };
// Tabs share the refresh cookie: a sign-out in one tab signs the others out too.
const tabs = typeof BroadcastChannel === "function" ? new BroadcastChannel("pulse.session") : null;

/**
 * Listen to the session: `started(session)`, `renewed(session, previous)` (the claims
 * may differ: roles can change between two tokens), `ended(message)`.
 */
export function onSession(listeners) {
  Object.assign(handlers, listeners);
}

/** The current session (`{token, email, userId, roles, permissions, expiresAt, …}`) or null. */
export function currentSession() {
  return current;
}

/** Whether the current session's permissions grant `permission` (for the UI only). */
export function can(permission) {
  return Boolean(current) && hasPermission(current.permissions, permission);
}

// =============================================================== tokens

/**
 * A session from an access token. Its expiry is measured on this clock from the
 * server's `expires_in` when there is one (the browser's clock may be off); else from
 * the token's own `exp` and `iat`.
 */
function fromToken(token, expiresIn, now = Date.now()) {
  const claims = decodeJwt(token);
  if (!claims) return null;
  let life = null;
  let expiresAt = null;
  if (Number.isFinite(expiresIn) && expiresIn > 0) {
    life = expiresIn * 1000;
    expiresAt = now + life;
  } else if (typeof claims.exp === "number") {
    expiresAt = claims.exp * 1000;
    life = typeof claims.iat === "number" ? (claims.exp - claims.iat) * 1000 : expiresAt - now;
  }
  const renewAt = expiresAt === null ? null : expiresAt - Math.max(0, life) * (1 - RENEW_SHARE);
  return withTiming(token, claims, expiresAt, renewAt);
}

function withTiming(token, claims, expiresAt, renewAt) {
  return {
    token,
    claims,
    email: typeof claims.email === "string" ? claims.email : String(claims.sub || "user"),
    userId: claims.sub != null ? String(claims.sub) : null,
    roles: claimList(claims.roles ?? claims.role),
    permissions: claimList(claims.permissions ?? claims.perms),
    hasPermissionClaim: claims.permissions !== undefined || claims.perms !== undefined,
    expiresAt,
    renewAt,
  };
}

function save(session) {
  try {
    sessionStorage.setItem(STORE_KEY, JSON.stringify({
      token: session.token, expires_at: session.expiresAt, renew_at: session.renewAt,
    }));
  } catch {
    /* storage disabled: the session lasts as long as the page */
  }
}

function load() {
  try {
    const raw = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
    if (!raw || typeof raw.token !== "string") return null;
    const claims = decodeJwt(raw.token);
    if (!claims) return null;
    const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
    if (num(raw.expires_at) === null) return fromToken(raw.token);
    return withTiming(raw.token, claims, num(raw.expires_at), num(raw.renew_at));
  } catch {
    return null;
  }
}

function forget() {
  clearTimeout(renewTimer);
  renewTimer = null;
  current = null;
  try {
    sessionStorage.removeItem(STORE_KEY);
  } catch {
    /* nothing stored */
  }
}

/** Make the token of a login or refresh answer the current one; answers the previous session. */
function adopt(data) {
  const token = data && data.access_token;
  const next = typeof token === "string" ? fromToken(token, Number(data.expires_in)) : null;
  if (!next) throw new ApiError({ status: 200, code: "bad_token", message: "The server sent an unreadable token." });
  const previous = current;
  current = next;
  save(next);
  scheduleRenewal(next.renewAt);
  return previous;
}

function scheduleRenewal(at) {
  clearTimeout(renewTimer);
  renewTimer = null;
  if (at === null || at === undefined) return;
  const ms = Math.max(MIN_RENEW_MS, at - Date.now());
  renewTimer = setTimeout(() => {
    // A failure that may heal has already scheduled the next try; one that ends the
    // session has already said so.
    renew().catch(() => {});
  }, Math.min(ms, 2 ** 31 - 1));
}

// =============================================================== renewal

/**
 * Renew the access token now (one renewal at a time, across tabs). Answers the new
 * token, or null when the session ended (the `ended` listener has been told); throws
 * an ApiError when the gateway could not be asked (the session goes on).
 */
export function renew(reason = "expired") {
  if (!current) return Promise.resolve(null);
  if (!inflight) inflight = refresh(reason).finally(() => { inflight = null; });
  return inflight;
}

/** Renew first if the token is due (e.g. a tab coming back from sleep). */
export async function ensureFresh() {
  if (current && current.renewAt !== null && Date.now() >= current.renewAt) {
    await renew().catch(() => {});
  }
}

// Tabs rotate one shared cookie: two rotating at once would look like a stolen token
// being reused, and the gateway would revoke the whole family. So they take turns.
function oneTabAtATime(task) {
  if (navigator.locks && typeof navigator.locks.request === "function") {
    return navigator.locks.request("pulse.refresh", task);
  }
  return task();
}

async function refresh(reason) {
  const before = current;
  let data;
  try {
    ({ data } = await oneTabAtATime(() => api.refresh()));
  } catch (err) {
    if (current !== before) return current ? current.token : null;
    if (err instanceof ApiError && err.status === 401) {
      end(reason === "revoked" ? REVOKED : ENDED);
      return null;
    }
    scheduleRenewal(Date.now() + RETRY_MS);
    throw err;
  }
  // Signed out (or in again) while the answer was on its way: that session wins.
  if (current !== before) return current ? current.token : null;
  const previous = adopt(data);
  handlers.renewed(current, previous);
  return current.token;
}

/** The request hook: a 401 to a call made with `sentToken`. */
async function renewFor(sentToken, err) {
  if (!current) return null;
  // Renewed while this call was on its way: retry with the new token.
  if (current.token !== sentToken) return current.token;
  if (!RENEWABLE.has(err.code)) {
    end(ENDED);
    return null;
  }
  return renew(err.code === "token_revoked" ? "revoked" : "expired");
}

useSession({ token: () => (current ? current.token : null), renew: renewFor });

// =============================================================== start and end

/** Sign in; throws the ApiError of a refused login. */
export async function signIn(email, password) {
  const { data } = await api.login(email, password);
  forget();
  adopt(data);
  handlers.started(current);
}

/**
 * At page load: this tab's stored token if it has life left, else a renewal through
 * the refresh cookie (a new tab of a live session signs in by itself).
 */
export async function resume() {
  const stored = load();
  if (stored && (stored.expiresAt === null || stored.expiresAt > Date.now() + RESUME_MARGIN_MS)) {
    current = stored;
    scheduleRenewal(stored.renewAt);
    handlers.started(current);
    return;
  }
  forget();
  try {
    const { data } = await oneTabAtATime(() => api.refresh());
    adopt(data);
    handlers.started(current);
  } catch (err) {
    forget();
    // Only a tab that had a session is told it ended; a fresh one just shows sign-in.
    const transient = !(err instanceof ApiError) || err.status !== 401;
    handlers.ended(stored ? (transient ? "Could not reach the server to resume your session — sign in again." : ENDED) : null);
  }
}

/** End the session here and show `message` (the gateway has already refused it). */
export function end(message) {
  if (!current || signingOut) return;
  forget();
  handlers.ended(message);
}

/**
 * Sign out: the gateway revokes the access token and the refresh family and clears the
 * cookie; other tabs are told. The page signs out even when the gateway cannot be reached.
 */
export async function signOut() {
  if (!current || signingOut) return;
  signingOut = true;
  let failure = null;
  try {
    await api.logout();
  } catch (err) {
    // 401: already over on the server's side, which is what was asked.
    if (!(err instanceof ApiError) || err.status !== 401) failure = err;
  } finally {
    signingOut = false;
  }
  forget();
  if (tabs) tabs.postMessage({ type: "signed_out" });
  handlers.ended(failure
    ? "Signed out of this page, but the server could not be reached: the session may stay valid until it expires."
    : SIGNED_OUT);
}

if (tabs) {
  tabs.onmessage = (event) => {
    if (!event.data || event.data.type !== "signed_out" || !current) return;
    // Revoke this tab's own access token too; the family is gone already.
    signingOut = true;
    api.logout().catch(() => {}).finally(() => { signingOut = false; });
    forget();
    handlers.ended(SIGNED_OUT_ELSEWHERE);
  };
}
