// The HTTP API (docs/api.md): JSON in and out, the bearer token in a header, never in a URL.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || 'network';
    this.retryAfter = body && body.retry_after;
  }
}

export class Api {
  constructor() {
    this.token = '';
    this.onUnauthorized = () => {};
  }

  async call(method, path, body) {
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const init = { method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, { error: 'network', message: 'the server cannot be reached' });
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const error = new ApiError(response.status, data);
      if (response.status === 401 && this.token) this.onUnauthorized(error);
      throw error;
    }
    return data;
  }

  signup(userId, password, displayName) {
    const body = { user_id: userId, password };
    if (displayName) body.display_name = displayName;
    return this.call('POST', '/v1/signup', body);
  }
  login(userId, password) { return this.call('POST', '/v1/login', { user_id: userId, password }); }
  logout() { return this.call('POST', '/v1/logout'); }
  me() { return this.call('GET', '/v1/me'); }
  friends() { return this.call('GET', '/v1/friends'); }
  befriend(userId) { return this.call('PUT', `/v1/friends/${encodeURIComponent(userId)}`); }
  unfriend(userId) { return this.call('DELETE', `/v1/friends/${encodeURIComponent(userId)}`); }
  presence(userIds) {
    const query = userIds.map((u) => `user_id=${encodeURIComponent(u)}`).join('&');
    return this.call('GET', `/v1/presence?${query}`);
  }
  channels() { return this.call('GET', '/v1/channels?limit=500'); }
  messages(channelId, before, limit = 30) {
    let query = `limit=${limit}`;
    if (before) query += `&before=${before}`;
    return this.call('GET', `/v1/channels/${encodeURIComponent(channelId)}/messages?${query}`);
  }
  createGroup(name, members) { return this.call('POST', '/v1/groups', { name, members }); }
  group(channelId) { return this.call('GET', `/v1/groups/${encodeURIComponent(channelId)}`); }
  pushKey() { return this.call('GET', '/v1/push/vapid'); }
  subscribePush(subscription) {
    const json = subscription.toJSON();
    return this.call('POST', '/v1/push/subscriptions', {
      kind: 'webpush', endpoint: json.endpoint, keys: { p256dh: json.keys.p256dh, auth: json.keys.auth },
    });
  }
  unsubscribePush(id) { return this.call('DELETE', `/v1/push/subscriptions/${encodeURIComponent(id)}`); }
}
