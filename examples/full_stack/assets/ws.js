// Pulse dashboard — live job-status channel over WebSocket, with reconnect backoff.
//
// The token travels in the Sec-WebSocket-Protocol header as `bearer, <token>`; the
// gateway answers with the protocol `bearer` (a browser drops the connection when a
// requested subprotocol is not answered).

const MIN_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
// A connection that stays open this long resets the backoff.
const STABLE_MS = 10000;

/** The ws:// or wss:// URL of a path on this origin. */
export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/**
 * A self-healing WebSocket subscription.
 *
 * `token` is the access token, or a function answering the current one (read at each
 * connect, so a reconnect uses a renewed token). `onMessage(obj)` gets each parsed text
 * message; `onStatus(status, info)` gets "connecting" | "live" | "down" (info:
 * `{retryInMs, retryAt}` when down, `{renewed: true}` after moving to a renewed token).
 */
export class LiveChannel {
  constructor({ path, token, onMessage, onStatus }) {
    this.path = path;
    this.token = token;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.socket = null;
    // A socket opening with a renewed token, to replace the live one.
    this.spare = null;
    this.attempt = 0;
    this.timer = null;
    this.stableTimer = null;
    this.stopped = false;
    this.status = "idle";
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  /** Close for good (logout). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.stableTimer);
    drop(this.socket, "logout");
    drop(this.spare, "logout");
    this.socket = this.spare = null;
  }

  /** Reconnect now, skipping the remaining backoff. */
  reconnectNow() {
    if (this.stopped || this.status === "live" || this.status === "connecting") return;
    clearTimeout(this.timer);
    this.connect();
  }

  /**
   * The access token was renewed: move to a socket opened with the new one. A live
   * socket is replaced only once the new one is open, so no update falls in a gap; a
   * socket that is down or still connecting with the old token is retried at once.
   */
  renewed() {
    if (this.stopped) return;
    if (this.status !== "live" || !this.socket) {
      drop(this.socket, "token renewed");
      this.socket = null;
      clearTimeout(this.timer);
      this.attempt = 0;
      this.connect();
      return;
    }
    drop(this.spare, "token renewed");
    const spare = this.open();
    this.spare = spare;
    if (!spare) return; // the live socket stays; its next reconnect uses the new token
    spare.onopen = () => {
      if (spare !== this.spare) return;
      this.spare = null;
      const old = this.socket;
      this.socket = spare;
      this.attach(spare);
      drop(old, "token renewed");
      this.setStatus("live", { renewed: true });
    };
    // Refused (or lost before it opened): the live socket carries on.
    spare.onclose = () => {
      if (spare === this.spare) this.spare = null;
    };
  }

  setStatus(status, info = {}) {
    this.status = status;
    if (this.onStatus) this.onStatus(status, info);
  }

  currentToken() {
    return typeof this.token === "function" ? this.token() : this.token;
  }

  /** A new socket carrying the current token, or null when it cannot be made. */
  open() {
    const token = this.currentToken();
    if (!token) return null;
    try {
      return new WebSocket(wsUrl(this.path), ["bearer", token]);
    } catch {
      return null;
    }
  }

  connect() {
    if (this.stopped) return;
    this.setStatus("connecting");
    const socket = this.open();
    if (!socket) {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    this.attach(socket);
    socket.onopen = () => {
      if (socket !== this.socket) return;
      this.setStatus("live");
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => {
        this.attempt = 0;
      }, STABLE_MS);
    };
  }

  /** Handle the messages and the end of `socket`, while it is the current one. */
  attach(socket) {
    socket.onmessage = (event) => {
      if (socket !== this.socket || typeof event.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (msg && typeof msg === "object" && this.onMessage) this.onMessage(msg);
    };
    socket.onerror = () => {
      /* a close event always follows */
    };
    socket.onclose = () => {
      if (socket !== this.socket) return;
      this.socket = null;
      clearTimeout(this.stableTimer);
      this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    if (this.stopped) return;
    const base = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt = Math.min(this.attempt + 1, 10);
    this.setStatus("down", { retryInMs: delay, retryAt: Date.now() + delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }
}

/** Close a socket we no longer listen to. */
function drop(socket, reason) {
  if (!socket) return;
  socket.onopen = socket.onclose = socket.onerror = socket.onmessage = null;
  try {
    socket.close(1000, reason);
  } catch {
    /* already closed */
  }
}
