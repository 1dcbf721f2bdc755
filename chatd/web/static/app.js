// The chatd web client: sign-up and log-in, friends with presence, 1:1 and group chats,
// history, unread counts, typing, read receipts. It speaks only the public HTTP API and the
// WebSocket protocol. Text from the server is only ever set as textContent, never as HTML.

import { Api, ApiError } from './api.js';
import { Connection } from './conn.js';
import { setupPush, dropPush } from './push.js';
import { $, el, clear, formatTime, dmChannel, dmPeer } from './ui.js';

const SESSION_KEY = 'chatd.session'; // sessionStorage: this tab only, gone with it
const FRIENDS_POLL_MS = 10000; // friend requests have no WebSocket frame: ask now and then
const TYPING_SEND_MS = 2500; // at most one typing notice per this, per channel
const TYPING_SHOW_MS = 4000;
const PAGE = 30;

const api = new Api();
const state = {
  session: null, // {token, user_id, ws_url, expires_at}
  me: null, // profile
  friends: new Map(), // user_id -> {state, status, last_active}
  channels: new Map(), // channel_id -> Channel
  open: null, // the open channel's id
  conn: null,
  pollTimer: 0,
};

function newChannel(id) {
  const kind = id.startsWith('dm:') ? 'dm' : 'group';
  return {
    id,
    kind,
    name: kind === 'dm' ? dmPeer(id, state.session.user_id) : 'Group',
    order: Number.MAX_SAFE_INTEGER, // the server's place in its list, until a message moves it
    lastTs: 0,
    lastMsgId: 0,
    readMsgId: 0,
    messages: new Map(), // msg_id -> {msg_id, from, body, ts}
    outgoing: new Map(), // ref -> {ref, body, ts, error}
    loaded: false,
    more: false,
    loading: false,
    marks: new Map(), // user_id -> highest msg_id they read (from live read frames)
    typing: new Map(), // user_id -> until (ms)
    members: null,
    asked: false,
  };
}

function channel(id) {
  let ch = state.channels.get(id);
  if (!ch) {
    ch = newChannel(id);
    state.channels.set(id, ch);
    if (ch.kind === 'group') describeGroup(ch);
  }
  return ch;
}

async function describeGroup(ch) {
  if (ch.asked) return;
  ch.asked = true;
  try {
    const group = await api.group(ch.id);
    ch.name = group.name;
    ch.members = group.members;
    render();
  } catch (err) {
    ch.asked = false;
  }
}

const unread = (ch) => Math.max(0, ch.lastMsgId - ch.readMsgId);

// ---------------------------------------------------------------- sign-in

function showAuth(message) {
  $('chat-view').hidden = true;
  $('auth-view').hidden = false;
  $('auth-error').textContent = message || '';
  document.title = 'chatd';
  $('auth-user').focus();
}

async function onAuthSubmit(event) {
  event.preventDefault();
  const action = event.submitter && event.submitter.value === 'signup' ? 'signup' : 'login';
  const userId = $('auth-user').value.trim();
  const password = $('auth-password').value;
  const error = $('auth-error');
  error.textContent = '';
  if (!/^[a-z0-9_]{3,32}$/.test(userId)) {
    error.textContent = 'The user id is 3 to 32 characters: a-z, 0-9 and _.';
    $('auth-user').focus();
    return;
  }
  if (password.length < 8) {
    error.textContent = 'The password has at least 8 characters.';
    $('auth-password').focus();
    return;
  }
  const buttons = event.currentTarget.querySelectorAll('button');
  buttons.forEach((b) => { b.disabled = true; });
  try {
    if (action === 'signup') await api.signup(userId, password, $('auth-name').value.trim());
    const session = await api.login(userId, password);
    $('auth-password').value = '';
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    start(session);
  } catch (err) {
    error.textContent = authMessage(err, action);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

function authMessage(err, action) {
  if (!(err instanceof ApiError)) return 'Something went wrong.';
  if (err.code === 'conflict') return 'That user id is taken.';
  if (err.code === 'unauthorized') return 'Wrong user id or password.';
  if (err.code === 'rate_limited') {
    return `Too many attempts: try again in ${Math.ceil((err.retryAfter || 1000) / 1000)} s.`;
  }
  if (err.code === 'network') return 'The server cannot be reached.';
  return `${action === 'signup' ? 'Sign-up' : 'Log-in'} failed: ${err.message}`;
}

function start(session) {
  state.session = session;
  api.token = session.token;
  state.friends = new Map();
  state.channels = new Map();
  state.open = null;
  $('auth-view').hidden = true;
  $('chat-view').hidden = false;
  $('me').textContent = session.user_id;
  render();
  api.me().then((me) => {
    state.me = me;
    $('me').textContent = me.display_name === me.user_id ? me.user_id : `${me.display_name} (${me.user_id})`;
  }).catch(() => {});
  refreshFriends();
  refreshChannels();
  state.conn = new Connection({
    wsUrl: session.ws_url,
    token: session.token,
    userId: session.user_id,
    handlers: {
      frame: onFrame,
      state: showConnState,
      signedOut: signOut,
      synced: onSynced,
    },
  });
  state.conn.start();
  clearInterval(state.pollTimer);
  state.pollTimer = setInterval(() => {
    if (document.visibilityState === 'visible') refreshFriends();
  }, FRIENDS_POLL_MS);
  setupPush(api, session.user_id, $('push-btn'));
  $('friend-id').focus();
}

function signOut(message) {
  if (state.conn) state.conn.stop();
  state.conn = null;
  clearInterval(state.pollTimer);
  sessionStorage.removeItem(SESSION_KEY);
  api.token = '';
  state.session = null;
  showAuth(message);
}

async function onLogout() {
  const userId = state.session && state.session.user_id;
  try {
    if (userId) await dropPush(api, userId);
    await api.logout();
  } catch (err) {
    // The token is forgotten here either way.
  }
  signOut('');
}

// ---------------------------------------------------------------- data

async function refreshFriends() {
  let rows;
  try {
    rows = (await api.friends()).friends;
  } catch (err) {
    return;
  }
  const next = new Map();
  for (const row of rows) {
    const old = state.friends.get(row.user_id) || {};
    next.set(row.user_id, { ...old, state: row.state });
  }
  state.friends = next;
  render();
  const unknown = rows.filter((r) => r.state === 'friends' && !next.get(r.user_id).status);
  for (let i = 0; i < unknown.length; i += 100) {
    try {
      const answer = await api.presence(unknown.slice(i, i + 100).map((r) => r.user_id));
      for (const p of answer.presence) setPresence(p);
    } catch (err) {
      // A friendship ended meanwhile (403): the next refresh shows it.
    }
  }
  render();
}

function setPresence(p) {
  const friend = state.friends.get(p.user_id);
  if (!friend) return false;
  friend.status = p.status;
  friend.last_active = p.last_active;
  return true;
}

async function refreshChannels() {
  let rows;
  try {
    rows = (await api.channels()).channels;
  } catch (err) {
    return;
  }
  rows.forEach((row, i) => {
    const ch = channel(row.channel_id);
    ch.kind = row.kind;
    ch.name = row.name;
    ch.order = i;
    ch.lastMsgId = Math.max(ch.lastMsgId, row.last_msg_id);
    ch.readMsgId = Math.max(ch.readMsgId, row.read_msg_id);
  });
  render();
  markRead();
}

function onSynced() {
  refreshChannels();
  refreshFriends();
  const ch = openChannel();
  if (ch && ch.loaded) loadNewer(ch);
}

function addMessage(ch, m) {
  if (!ch.messages.has(m.msg_id)) {
    ch.messages.set(m.msg_id, { msg_id: m.msg_id, from: m.from, body: m.body, ts: m.ts });
  }
  ch.lastMsgId = Math.max(ch.lastMsgId, m.msg_id);
  ch.lastTs = Math.max(ch.lastTs, m.ts);
}

function onFrame(f) {
  const me = state.session.user_id;
  switch (f.type) {
    case 'msg': {
      const ch = channel(f.channel);
      addMessage(ch, f);
      ch.typing.delete(f.from);
      if (f.from === me) ch.readMsgId = Math.max(ch.readMsgId, f.msg_id);
      break;
    }
    case 'ack': {
      const ch = channel(f.channel);
      const out = [...state.channels.values()].map((c) => c.outgoing.get(f.ref)).find(Boolean);
      for (const c of state.channels.values()) c.outgoing.delete(f.ref);
      addMessage(ch, { msg_id: f.msg_id, from: me, body: out ? out.body : '', ts: f.ts });
      ch.readMsgId = Math.max(ch.readMsgId, f.msg_id);
      break;
    }
    case 'presence':
      if (!setPresence(f)) refreshFriends();
      break;
    case 'typing': {
      const ch = channel(f.channel);
      ch.typing.set(f.user_id, Date.now() + TYPING_SHOW_MS);
      setTimeout(render, TYPING_SHOW_MS + 50);
      break;
    }
    case 'read': {
      const ch = channel(f.channel);
      if (f.user_id === me) {
        ch.readMsgId = Math.max(ch.readMsgId, f.msg_id); // read on another device
      } else {
        ch.marks.set(f.user_id, Math.max(ch.marks.get(f.user_id) || 0, f.msg_id));
      }
      break;
    }
    case 'error':
      if (f.ref) {
        for (const c of state.channels.values()) {
          const out = c.outgoing.get(f.ref);
          if (out) out.error = f.message || f.code;
        }
      }
      break;
    default:
      return;
  }
  renderSoon();
  markRead();
}

function openChannel() {
  return state.open ? state.channels.get(state.open) : null;
}

// One read mark per burst of messages, not one per message (read frames are rate-limited).
let readTimer = 0;
function markRead() {
  if (!readTimer) readTimer = setTimeout(sendRead, 100);
}

function sendRead() {
  readTimer = 0;
  const ch = openChannel();
  if (!ch || !state.conn || document.visibilityState !== 'visible') return;
  // Offline, the mark waits: `synced` calls this again once the link is back.
  if (ch.lastMsgId > ch.readMsgId && state.conn.read(ch.id, ch.lastMsgId)) {
    ch.readMsgId = ch.lastMsgId;
    render();
  }
}

async function loadOlder(ch) {
  if (ch.loading || (ch.loaded && !ch.more)) return;
  ch.loading = true;
  const ids = [...ch.messages.keys()];
  const before = ch.loaded && ids.length ? Math.min(...ids) : 0;
  const scroller = $('scroller');
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  try {
    const page = await api.messages(ch.id, before, PAGE);
    for (const m of page.messages) addMessage(ch, m);
    ch.more = page.more;
  } catch (err) {
    // A 1:1 channel with no message yet has nothing to read; other errors show as no history.
    ch.more = false;
  } finally {
    ch.loading = false;
  }
  const first = !ch.loaded;
  ch.loaded = true;
  render();
  if (first) scroller.scrollTop = scroller.scrollHeight;
  else scroller.scrollTop = scroller.scrollHeight - fromBottom; // keep the view where it was
  markRead();
}

async function loadNewer(ch) {
  // After a reconnect the inbox replay brings what was missed; this also covers an inbox
  // that was reset (a cursor past the head), by asking the channel itself.
  const ids = [...ch.messages.keys()];
  const after = ids.length ? Math.max(...ids) : 0;
  if (!after) return;
  try {
    const page = await api.call(
      'GET', `/v1/channels/${encodeURIComponent(ch.id)}/messages?after=${after}&limit=100`);
    for (const m of page.messages) addMessage(ch, m);
    render();
    markRead();
  } catch (err) {
    // Nothing newer to show.
  }
}

// ---------------------------------------------------------------- actions

function openConversation(id, focus = true) {
  const ch = channel(id);
  state.open = id;
  $('chat-view').classList.add('conversation-open');
  render();
  if (!ch.loaded) loadOlder(ch);
  else $('scroller').scrollTop = $('scroller').scrollHeight;
  if (ch.kind === 'group' && !ch.members) describeGroup(ch);
  markRead();
  if (focus) $('compose-input').focus();
}

function closeConversation() {
  const id = state.open;
  state.open = null;
  $('chat-view').classList.remove('conversation-open');
  render();
  const button = document.querySelector(`[data-channel="${CSS.escape(id || '')}"]`);
  if (button) button.focus();
}

function onCompose(event) {
  event.preventDefault();
  const input = $('compose-input');
  const body = input.value;
  const ch = openChannel();
  if (!ch || !body.trim()) return;
  const me = state.session.user_id;
  const target = ch.kind === 'dm' ? { to: dmPeer(ch.id, me) } : { channel: ch.id };
  const ref = state.conn.send(target, body);
  ch.outgoing.set(ref, { ref, body, ts: Date.now(), error: '' });
  ch.lastTs = Date.now();
  ch.typingSent = 0;
  input.value = '';
  render();
  $('scroller').scrollTop = $('scroller').scrollHeight;
}

function onComposeKey(event) {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $('compose').requestSubmit();
  }
}

function onComposeInput() {
  const ch = openChannel();
  if (!ch || !state.conn || !$('compose-input').value) return;
  if (ch.kind === 'dm' && ch.lastMsgId === 0) return; // no channel to be typing in yet
  const now = Date.now();
  if (now - (ch.typingSent || 0) >= TYPING_SEND_MS) {
    ch.typingSent = now;
    state.conn.typing(ch.id);
  }
}

async function onAddFriend(event) {
  event.preventDefault();
  const input = $('friend-id');
  const userId = input.value.trim();
  $('friend-error').textContent = '';
  try {
    await befriend(userId);
    input.value = '';
  } catch (err) {
    $('friend-error').textContent = err.code === 'not_found' ? `No user ${userId}.` : err.message;
  }
}

async function befriend(userId) {
  const answer = await api.befriend(userId);
  const old = state.friends.get(userId) || {};
  state.friends.set(userId, { ...old, state: answer.state });
  render();
  if (answer.state === 'friends') refreshFriends();
}

async function unfriend(userId) {
  try {
    await api.unfriend(userId);
  } catch (err) {
    return;
  }
  state.friends.delete(userId);
  render();
}

async function onCreateGroup(event) {
  event.preventDefault();
  const name = $('group-name').value.trim();
  const members = [...$('group-friends').querySelectorAll('input:checked')].map((i) => i.value);
  for (const id of $('group-others').value.split(/[\s,]+/)) {
    if (id && !members.includes(id)) members.push(id);
  }
  $('group-error').textContent = '';
  if (!name) {
    $('group-error').textContent = 'A group needs a name.';
    return;
  }
  try {
    const group = await api.createGroup(name, members);
    const ch = channel(group.channel_id);
    ch.name = group.name;
    ch.members = group.members;
    ch.asked = true;
    ch.lastTs = group.created_at || Date.now();
    $('group-form').reset();
    $('new-group').open = false;
    openConversation(group.channel_id);
  } catch (err) {
    $('group-error').textContent = err.code === 'not_found' ? 'One of those users does not exist.' : err.message;
  }
}

// ---------------------------------------------------------------- rendering

function showConnState(name, delay) {
  const node = $('conn-state');
  node.dataset.state = name;
  if (name === 'online') node.textContent = 'Online';
  else if (name === 'connecting') node.textContent = 'Connecting…';
  else node.textContent = `Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`;
}

function dot(status) {
  const online = status === 'online';
  return el('span', { class: `dot ${online ? 'online' : 'offline'}`, role: 'img', 'aria-label': online ? 'online' : 'offline' });
}

// Frames can come by the thousand (a replay after a long absence): they ask for one render
// soon instead of one each.
let renderTimer = 0;
function renderSoon() {
  if (!renderTimer) renderTimer = setTimeout(render, 30);
}

function render() {
  clearTimeout(renderTimer);
  renderTimer = 0;
  if (!state.session) return;
  renderChannels();
  renderFriends();
  renderConversation();
  const total = [...state.channels.values()].reduce((n, ch) => n + unread(ch), 0);
  document.title = total ? `(${total}) chatd` : 'chatd';
}

function sortedChannels() {
  return [...state.channels.values()]
    .filter((ch) => ch.lastMsgId > 0 || ch.kind === 'group' || ch.outgoing.size || ch.id === state.open)
    .sort((a, b) => (b.lastTs - a.lastTs) || (a.order - b.order) || a.id.localeCompare(b.id));
}

function renderChannels() {
  const list = $('channel-list');
  clear(list);
  const now = Date.now();
  const channels = sortedChannels();
  $('channels-empty').hidden = channels.length > 0;
  for (const ch of channels) {
    const count = unread(ch);
    const typing = [...ch.typing].some(([, until]) => until > now);
    const button = el('button', {
      type: 'button', class: 'item', 'data-channel': ch.id,
      'aria-current': ch.id === state.open ? 'true' : 'false',
    });
    if (ch.kind === 'dm') {
      const friend = state.friends.get(dmPeer(ch.id, state.session.user_id));
      button.append(dot(friend && friend.status));
    } else {
      button.append(el('span', { class: 'group-mark', 'aria-hidden': 'true' }, '#'));
    }
    button.append(el('span', { class: 'name' }, ch.name));
    if (typing) button.append(el('span', { class: 'hint' }, 'typing…'));
    if (count) {
      button.append(el('span', { class: 'badge' },
        el('span', { 'aria-hidden': 'true' }, String(count)),
        el('span', { class: 'visually-hidden' }, `${count} unread`)));
    }
    button.addEventListener('click', () => openConversation(ch.id));
    list.append(el('li', {}, button));
  }
}

function renderFriends() {
  const list = $('friend-list');
  clear(list);
  const me = state.session.user_id;
  const rows = [...state.friends].sort(([a], [b]) => a.localeCompare(b));
  for (const [userId, friend] of rows) {
    const li = el('li', { class: `friend ${friend.state}`, 'data-user': userId });
    if (friend.state === 'friends') {
      const open = el('button', { type: 'button', class: 'item', 'aria-label': `Chat with ${userId}, ${friend.status === 'online' ? 'online' : 'offline'}` });
      open.append(dot(friend.status), el('span', { class: 'name' }, userId));
      open.addEventListener('click', () => openConversation(dmChannel(me, userId)));
      li.append(open);
    } else if (friend.state === 'pending') {
      li.append(el('span', { class: 'name' }, userId), el('span', { class: 'hint' }, 'wants to be friends'));
      const accept = el('button', { type: 'button', class: 'primary small', 'aria-label': `Accept ${userId}` }, 'Accept');
      accept.addEventListener('click', () => befriend(userId).catch(() => {}));
      const decline = el('button', { type: 'button', class: 'small', 'aria-label': `Decline ${userId}` }, 'Decline');
      decline.addEventListener('click', () => unfriend(userId));
      li.append(accept, decline);
    } else {
      li.append(el('span', { class: 'name' }, userId), el('span', { class: 'hint' }, 'request sent'));
      const cancel = el('button', { type: 'button', class: 'small', 'aria-label': `Cancel the request to ${userId}` }, 'Cancel');
      cancel.addEventListener('click', () => unfriend(userId));
      li.append(cancel);
    }
    list.append(li);
  }
  // The group form's checkboxes: friends only (anyone can be added by id below them).
  const box = $('group-friends');
  const checked = new Set([...box.querySelectorAll('input:checked')].map((i) => i.value));
  box.querySelectorAll('.check').forEach((n) => n.remove());
  const friends = rows.filter(([, f]) => f.state === 'friends');
  $('group-friends-empty').hidden = friends.length > 0;
  for (const [userId] of friends) {
    const id = `member-${userId}`;
    const input = el('input', { type: 'checkbox', id, value: userId });
    input.checked = checked.has(userId);
    box.append(el('div', { class: 'check' }, input, el('label', { for: id }, userId)));
  }
}

function receiptsFor(ch) {
  // Each reader is shown under the last of my messages their mark covers.
  const me = state.session.user_id;
  const mine = [...ch.messages.values()].filter((m) => m.from === me).map((m) => m.msg_id).sort((a, b) => a - b);
  const seen = new Map();
  for (const [userId, mark] of ch.marks) {
    let at = 0;
    for (const id of mine) if (id <= mark) at = id;
    if (at) seen.set(at, [...(seen.get(at) || []), userId]);
  }
  return { seen, last: mine.length ? mine[mine.length - 1] : 0 };
}

function renderConversation() {
  const ch = openChannel();
  $('conversation').hidden = !ch;
  $('empty-pane').hidden = Boolean(ch);
  if (!ch) return;
  const me = state.session.user_id;
  $('conv-title').textContent = ch.name;
  let sub = '';
  if (ch.kind === 'dm') {
    const friend = state.friends.get(dmPeer(ch.id, me));
    if (friend && friend.status === 'online') sub = 'online';
    else if (friend && friend.last_active) sub = `last seen ${formatTime(friend.last_active, true)}`;
  } else if (ch.members) {
    sub = `${ch.members.length} members: ${ch.members.join(', ')}`;
  }
  $('conv-sub').textContent = sub;
  $('older-btn').hidden = !(ch.loaded && ch.more);

  const scroller = $('scroller');
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  const list = $('messages');
  clear(list);
  const { seen, last } = receiptsFor(ch);
  const messages = [...ch.messages.values()].sort((a, b) => a.msg_id - b.msg_id);
  for (const m of messages) {
    const mine = m.from === me;
    const li = el('li', { class: `msg ${mine ? 'mine' : 'theirs'}`, 'data-msg': String(m.msg_id) });
    li.append(el('div', { class: 'meta' },
      el('span', { class: 'from' }, mine ? 'You' : m.from),
      el('time', { datetime: new Date(m.ts).toISOString() }, formatTime(m.ts))));
    li.append(el('div', { class: 'body' }, m.body));
    if (mine && seen.has(m.msg_id)) {
      const names = seen.get(m.msg_id);
      li.append(el('div', { class: 'receipt seen' }, ch.kind === 'dm' ? 'Seen' : `Seen by ${names.join(', ')}`));
    } else if (mine && m.msg_id === last) {
      li.append(el('div', { class: 'receipt' }, 'Sent'));
    }
    list.append(li);
  }
  for (const out of ch.outgoing.values()) {
    const li = el('li', { class: 'msg mine pending' });
    li.append(el('div', { class: 'meta' }, el('span', { class: 'from' }, 'You')));
    li.append(el('div', { class: 'body' }, out.body));
    li.append(el('div', { class: out.error ? 'receipt error' : 'receipt' }, out.error ? `Not sent: ${out.error}` : 'Sending…'));
    list.append(li);
  }
  if (atBottom) scroller.scrollTop = scroller.scrollHeight;

  const now = Date.now();
  const typers = [...ch.typing].filter(([, until]) => until > now).map(([u]) => u);
  $('typing').textContent = typers.length ? `${typers.join(' and ')} ${typers.length > 1 ? 'are' : 'is'} typing…` : '';
}

// ---------------------------------------------------------------- wiring

function init() {
  $('auth-form').addEventListener('submit', onAuthSubmit);
  $('logout-btn').addEventListener('click', onLogout);
  $('friend-form').addEventListener('submit', onAddFriend);
  $('friends-refresh').addEventListener('click', () => refreshFriends());
  $('group-form').addEventListener('submit', onCreateGroup);
  $('compose').addEventListener('submit', onCompose);
  $('compose-input').addEventListener('keydown', onComposeKey);
  $('compose-input').addEventListener('input', onComposeInput);
  $('back-btn').addEventListener('click', closeConversation);
  $('older-btn').addEventListener('click', () => { const ch = openChannel(); if (ch) loadOlder(ch); });
  $('scroller').addEventListener('scroll', () => {
    const ch = openChannel();
    if (ch && ch.loaded && ch.more && $('scroller').scrollTop < 40) loadOlder(ch);
  });
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && state.open) closeConversation();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && state.session) {
      markRead();
      refreshFriends();
    }
  });
  api.onUnauthorized = () => signOut('Your session has ended. Please log in again.');
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
  } catch (err) {
    saved = null;
  }
  if (saved && saved.token && (!saved.expires_at || saved.expires_at > Date.now())) start(saved);
  else showAuth('');
}

init();
