// The WebSocket session (docs/protocol.md): hello with the stored cursor, replay until
// `synced`, heartbeats, and reconnects with jittered exponential backoff. Sends are kept
// until their `ack` and re-sent with the same `ref` after a reconnect (the server answers a
// known ref with the same ack, so nothing is sent twice).

const PING_EVERY_MS = 8000; // the server wants a frame every 5-10 s
const SILENCE_MS = 25000; // nothing heard for this long: the link is dead, reconnect
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;

export function backoffDelay(attempt) {
  // "Equal jitter": half the exponential step, plus a random share of the other half, so a
  // server restart is not met by every client at the same instant.
  const step = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return step / 2 + Math.random() * (step / 2);
}

export function randomRef() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export class Connection {
  // handlers: {frame(f), state(name, detail), signedOut(message), synced()}
  constructor({ wsUrl, token, userId, handlers }) {
    this.wsUrl = sameHostIfUnroutable(wsUrl);
    this.token = token;
    this.userId = userId;
    this.handlers = handlers;
    this.cursorKey = `chatd.cursor.${userId}`;
    this.cursor = Number(localStorage.getItem(this.cursorKey)) || 0;
    this.ws = null;
    this.live = false; // past welcome (and synced)
    this.stopped = false;
    this.attempt = 0;
    this.retryTimer = 0;
    this.pingTimer = 0;
    this.lastHeard = 0;
    this.pending = new Map(); // ref -> send frame, until acked or refused
    this.onOnline = () => this.reconnectNow();
    window.addEventListener('online', this.onOnline);
  }

  start() { this.open(); }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    if (this.ws) this.ws.close(1000, 'bye');
    this.ws = null;
  }

  open() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.handlers.state('connecting');
    let ws;
    try {
      ws = new WebSocket(this.wsUrl, ['chatd.v1.json']);
    } catch (err) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.live = false;
    ws.onopen = () => {
      const hello = { type: 'hello', token: this.token };
      this.replaying = this.cursor > 0;
      if (this.replaying) hello.since = this.cursor;
      this.lastHeard = Date.now();
      ws.send(JSON.stringify(hello));
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.heartbeat(ws), PING_EVERY_MS);
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      this.onFrame(frame);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      clearInterval(this.pingTimer);
      this.ws = null;
      this.live = false;
      if (this.stopped) return;
      if (event.code === 4001) {
        this.stopped = true;
        this.handlers.signedOut('Your session has ended. Please log in again.');
        return;
      }
      if (event.code === 4002 && this.redirect) {
        this.wsUrl = this.redirect;
        this.redirect = '';
        this.open();
        return;
      }
      this.scheduleReconnect();
    };
  }

  heartbeat(ws) {
    if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastHeard > SILENCE_MS) {
      ws.close(4000, 'silent');
      return;
    }
    ws.send('{"type":"ping"}');
  }

  scheduleReconnect() {
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.handlers.state('waiting', Math.round(delay));
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  reconnectNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    this.attempt = 0;
    this.open();
  }

  advance(seq) {
    if (typeof seq === 'number' && seq > this.cursor) {
      this.cursor = seq;
      localStorage.setItem(this.cursorKey, String(seq));
    }
  }

  onFrame(frame) {
    switch (frame.type) {
      case 'welcome':
        this.attempt = 0;
        if (!this.replaying) {
          // A first connection starts at the head: what came before is read over HTTP.
          this.advance(frame.inbox_head);
          this.becomeLive();
        }
        break;
      case 'synced':
        if (frame.head < this.cursor) {
          // A cursor past the head names entries this inbox never had (say, a server
          // restored from an older backup): start again where the inbox really is.
          this.cursor = frame.head;
          localStorage.setItem(this.cursorKey, String(frame.head));
        }
        this.becomeLive();
        break;
      case 'msg':
        this.handlers.frame(frame);
        this.advance(frame.inbox);
        return;
      case 'ack':
        this.pending.delete(frame.ref);
        this.handlers.frame(frame);
        this.advance(frame.inbox);
        return;
      case 'error':
        if (frame.code === 'wrong_shard' && frame.ws_url) this.redirect = frame.ws_url;
        if (frame.ref && this.pending.has(frame.ref)) {
          if (frame.code === 'rate_limited') {
            const ref = frame.ref;
            setTimeout(() => this.resend(ref), Math.max(100, frame.retry_after || 1000));
            return;
          }
          this.pending.delete(frame.ref);
        }
        break;
      default:
        break;
    }
    this.handlers.frame(frame);
  }

  becomeLive() {
    this.live = true;
    this.handlers.state('online');
    this.handlers.synced();
    for (const frame of this.pending.values()) this.raw(frame);
  }

  raw(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.live) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  resend(ref) {
    const frame = this.pending.get(ref);
    if (frame) this.raw(frame);
  }

  // A message: kept until acked, re-sent with its ref after a reconnect. Returns the ref.
  send(target, body) {
    const ref = randomRef();
    const frame = { type: 'send', ref, body, ...target };
    this.pending.set(ref, frame);
    this.raw(frame);
    return ref;
  }

  read(channel, msgId) { return this.raw({ type: 'read', channel, msg_id: msgId }); }
  typing(channel) { return this.raw({ type: 'typing', channel }); }
}

// A login's ws_url names the host the server was told it has; one bound to every address
// (0.0.0.0, ::) is not a place a browser can reach, so the page's own host stands in for it.
function sameHostIfUnroutable(wsUrl) {
  try {
    const url = new URL(wsUrl);
    if (['0.0.0.0', '[::]'].includes(url.hostname)) {
      url.host = window.location.host;
      url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    }
    return url.toString();
  } catch (err) {
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${window.location.host}/v1/ws`;
  }
}
