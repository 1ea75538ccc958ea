// The console's live feed: `/ws/admin` (run-state monitoring, docs/protocol.md). The server sends a
// snapshot of the open alarms and every terminal's state, then each change; the page sends
// nothing. When the socket drops, the page waits 1 s, 2 s, 4 s … up to a minute (with jitter, so
// that a hundred consoles do not come back at the same instant) and reconnects; the next snapshot
// brings it up to date. A session that ended sends the page back to the sign-in page.
import { api, ApiFailure } from "/js/api.js";

const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 60_000;

export class LiveFeed {
  /**
   * `onFrame(frame)` gets every `ServerToAdmin` frame; `onStatus({ state, retryAt })` is told
   * `connecting`, `live` or `waiting` (with when the next attempt is due).
   */
  constructor({ onFrame, onStatus }) {
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.failures = 0;
    this.socket = null;
    this.timer = null;
  }

  start() {
    this.connect();
  }

  /** Reconnect now (the "retry now" button), without waiting for the backoff. */
  retryNow() {
    clearTimeout(this.timer);
    this.timer = null;
    if (!this.socket) this.connect();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.onStatus({ state: "connecting" });
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/ws/admin`);
    } catch {
      this.dropped();
      return;
    }
    this.socket = socket;
    socket.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "snapshot") {
        // Up to date again: the next drop starts the backoff from the beginning.
        this.failures = 0;
        this.onStatus({ state: "live" });
      }
      this.onFrame(frame);
    });
    socket.addEventListener("close", () => {
      if (this.socket === socket) {
        this.socket = null;
        this.dropped();
      }
    });
  }

  async dropped() {
    // Closed because the session ended (logout elsewhere, expiry): back to the sign-in page.
    try {
      await api("GET", "/api/me");
    } catch (failure) {
      if (failure instanceof ApiFailure && failure.status === 401) {
        location.assign("/");
        return;
      }
    }
    const base = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.failures);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.failures += 1;
    this.onStatus({ state: "waiting", retryAt: Date.now() + delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }
}
