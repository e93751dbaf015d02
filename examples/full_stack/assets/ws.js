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
 * `onMessage(obj)` gets each parsed text message; `onStatus(status, info)` gets
 * "connecting" | "live" | "down" (info: `{retryInMs}` when down).
 */
export class LiveChannel {
  constructor({ path, token, onMessage, onStatus }) {
    this.path = path;
    this.token = token;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.socket = null;
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
    if (this.socket) {
      const s = this.socket;
      this.socket = null;
      s.onopen = s.onclose = s.onerror = s.onmessage = null;
      try {
        s.close(1000, "logout");
      } catch {
        /* already closed */
      }
    }
  }

  /** Reconnect now, skipping the remaining backoff. */
  reconnectNow() {
    if (this.stopped || this.status === "live" || this.status === "connecting") return;
    clearTimeout(this.timer);
    this.connect();
  }

  setStatus(status, info = {}) {
    this.status = status;
    if (this.onStatus) this.onStatus(status, info);
  }

  connect() {
    if (this.stopped) return;
    this.setStatus("connecting");
    let socket;
    try {
      socket = new WebSocket(wsUrl(this.path), ["bearer", this.token]);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (socket !== this.socket) return;
      this.setStatus("live");
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => {
        this.attempt = 0;
      }, STABLE_MS);
    };
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
