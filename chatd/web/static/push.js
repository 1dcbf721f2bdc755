// Web Push, when both sides can: the browser has a push service and the server answers
// GET /v1/push/vapid with its VAPID public key. Anything missing or refused (no support,
// permission denied, 404 from a server without push) leaves the page as it is, silently.

const storeKey = (userId) => `chatd.push.${userId}`;

function supported() {
  return window.isSecureContext && 'serviceWorker' in navigator && 'PushManager' in window
    && 'Notification' in window;
}

function keyBytes(base64url) {
  const b64 = base64url.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

async function activeRegistration() {
  // The worker's scope is /static/ (where it is served); the page at / is not controlled by it
  // and does not need to be: push events reach it whatever it controls.
  const registration = await navigator.serviceWorker.register('/static/sw.js', { scope: '/static/' });
  const worker = registration.installing || registration.waiting;
  if (worker && !registration.active) {
    await new Promise((resolve) => {
      worker.addEventListener('statechange', () => { if (worker.state === 'activated') resolve(); });
    });
  }
  return registration;
}

async function subscribe(api, userId, key) {
  const registration = await activeRegistration();
  const subscription = (await registration.pushManager.getSubscription())
    || (await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key) }));
  const saved = JSON.parse(localStorage.getItem(storeKey(userId)) || 'null');
  if (saved && saved.endpoint === subscription.endpoint) return;
  const answer = await api.subscribePush(subscription);
  localStorage.setItem(storeKey(userId), JSON.stringify({ endpoint: subscription.endpoint, id: answer.id }));
}

export async function setupPush(api, userId, button) {
  button.hidden = true;
  if (!supported() || Notification.permission === 'denied') return;
  let key = '';
  try {
    const answer = await api.pushKey();
    key = answer.public_key || answer.vapid_public_key || answer.key || '';
  } catch (err) {
    return; // no push on this server (404): nothing to offer
  }
  if (!key) return;
  const go = () => subscribe(api, userId, key).catch((err) => console.info('push not enabled:', err.message));
  if (Notification.permission === 'granted') {
    go();
    return;
  }
  button.hidden = false; // asking needs a user's gesture
  button.onclick = async () => {
    button.hidden = true;
    if ((await Notification.requestPermission()) === 'granted') go();
  };
}

// On log-out: this browser stops getting this user's notifications.
export async function dropPush(api, userId) {
  const saved = JSON.parse(localStorage.getItem(storeKey(userId)) || 'null');
  if (!saved) return;
  localStorage.removeItem(storeKey(userId));
  try {
    await api.unsubscribePush(saved.id);
    const registration = await navigator.serviceWorker.getRegistration('/static/');
    const subscription = registration && (await registration.pushManager.getSubscription());
    if (subscription) await subscription.unsubscribe();
  } catch (err) {
    // Gone already.
  }
}
