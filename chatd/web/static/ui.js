// Small DOM helpers. Text goes in as text nodes only: nothing from the server becomes HTML.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child); // strings become text nodes
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
}

export function formatTime(ms, withDay = false) {
  const date = new Date(ms);
  const sameDay = date.toDateString() === new Date().toDateString();
  const options = { hour: '2-digit', minute: '2-digit' };
  if (withDay || !sameDay) Object.assign(options, { month: 'short', day: 'numeric' });
  return date.toLocaleString(undefined, options);
}

// dm:<a>:<b> with a < b in string order (the contract's channel id of a 1:1 chat).
export function dmChannel(me, other) {
  return me < other ? `dm:${me}:${other}` : `dm:${other}:${me}`;
}

export function dmPeer(channelId, me) {
  const [, a, b] = channelId.split(':');
  return a === me ? b : a;
}
