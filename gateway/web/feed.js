// The page's WebSocket: requests answered by req_id, pushed messages handed on, the
// connection's state shown, a stalled or lost socket replaced (with backoff).

const STALL_MS = 5000; // heartbeats come every second to a subscriber: five missed is a stall
const CONNECT_TIMEOUT_MS = 5000; // an upgrade not answered by then is given up and retried
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10000;
const WATCH_EVERY_MS = 1000;
const ANSWER_TIMEOUT_MS = 10000;

export class Connection {
  constructor(url, { onState, onMessage, onOpen }) {
    this.url = url;
    this.onState = onState;
    this.onMessage = onMessage;
    this.onOpen = onOpen;
    this.ws = null;
    this.nextId = 1;
    this.waiting = new Map(); // req_id -> {resolve, reject, timer}
    this.attempt = 0;
    this.lastHeard = 0;
    this.reconnects = 0;
    this.state = "connecting";
    this.stalled = false;
    setInterval(() => this.watch(), WATCH_EVERY_MS);
  }

  setState(state, detail = "") {
    this.state = state;
    this.onState(state, detail);
  }

  start() {
    const state = this.stalled ? "stalled" : this.attempt ? "reconnecting" : "connecting";
    this.setState(state, this.attempt ? `attempt ${this.attempt + 1}` : "");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    const opening = setTimeout(() => { if (ws.readyState === WebSocket.CONNECTING) ws.close(); }, CONNECT_TIMEOUT_MS);
    ws.onopen = async () => {
      clearTimeout(opening);
      this.lastHeard = Date.now();
      try {
        await this.onOpen();
        this.attempt = 0;
        this.stalled = false;
        this.setState("live", this.reconnects ? `reconnected ${this.reconnects}×` : "");
      } catch (problem) {
        ws.close();
      }
    };
    ws.onmessage = (event) => {
      this.lastHeard = Date.now();
      const message = JSON.parse(event.data);
      const waiter = message.req_id !== undefined ? this.waiting.get(message.req_id) : undefined;
      if (waiter) {
        this.waiting.delete(message.req_id);
        clearTimeout(waiter.timer);
        waiter.resolve(message);
        return;
      }
      const pushed = message.type === "batch" ? message.messages : [message];
      for (const one of pushed) this.onMessage(one);
    };
    ws.onclose = (event) => {
      clearTimeout(opening);
      if (this.ws !== ws) return;
      this.ws = null;
      for (const [, waiter] of this.waiting) {
        clearTimeout(waiter.timer);
        waiter.reject(new Error(`connection lost (${event.code})`));
      }
      this.waiting.clear();
      this.retry(event.code === 4001 ? "refused" : "lost");
    };
  }

  retry(why) {
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt += 1;
    this.reconnects += 1;
    this.setState(this.stalled ? "stalled" : "reconnecting",
      `${why}; trying again in ${(delay / 1000).toFixed(1)} s`);
    setTimeout(() => this.start(), delay);
  }

  // A socket that has heard nothing for STALL_MS is dropped and replaced.
  watch() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || this.state !== "live") return;
    if (Date.now() - this.lastHeard > STALL_MS) {
      this.stalled = true; // shown until a new socket is live
      this.setState("stalled", "no data for 5 s");
      this.ws = null;
      ws.onclose = null;
      ws.close();
      for (const [, waiter] of this.waiting) waiter.reject(new Error("connection stalled"));
      this.waiting.clear();
      this.retry("stalled");
    }
  }

  request(op, fields = {}) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error("not connected"));
    const reqId = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(reqId);
        reject(new Error(`no answer to ${op}`));
      }, ANSWER_TIMEOUT_MS);
      this.waiting.set(reqId, { resolve, reject, timer });
      ws.send(JSON.stringify({ op, req_id: reqId, ...fields }));
    });
  }
}
