// The service worker for Web Push: shows a notification per push, opens the client on a click.
// The payload is the server's JSON ({from, channel, preview, count, ...}); text only.

self.addEventListener('push', (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (err) {
    data = {};
  }
  const title = data.from ? `chatd: ${data.from}` : 'chatd';
  const body = data.count > 1 ? `${data.count} new messages` : (data.preview || 'New message');
  event.waitUntil(self.registration.showNotification(title, {
    body, tag: data.channel || 'chatd', icon: '/static/icon.svg', data: { channel: data.channel || '' },
  }));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    for (const client of windows) {
      if (new URL(client.url).pathname === '/') return client.focus();
    }
    return self.clients.openWindow('/');
  })());
});
