// The service's JSON API, called with the signed-in administrator's
// credentials. Errors come back as APIError carrying the service's
// {status, errorCode, title, detail, hint, requestId} body.

const base = '/data/infrastructure/manager';

export const paths = {
  appRegistration: `${base}/byok/app-registration`,
  preflight: `${base}/byok/preflight`,
  configs: `${base}/customer/config`,
  config: (name) => `${base}/customer/config/${encodeURIComponent(name)}?configType=BYOK_CONFIG`,
  health: `${base}/byok/health`,
  recheck: `${base}/byok/health/check`,
  alerts: (status) => `${base}/byok/alerts?status=${encodeURIComponent(status)}`,
  acknowledge: (id) => `${base}/byok/alerts/${encodeURIComponent(id)}/acknowledge`,
  webhooks: `${base}/byok/webhooks`,
  webhook: (id) => `${base}/byok/webhooks/${encodeURIComponent(id)}`,
  webhookTest: (id) => `${base}/byok/webhooks/${encodeURIComponent(id)}/test`,
  history: `${base}/byok/history`,
  report: (format) => `${base}/byok/history/report?format=${encodeURIComponent(format)}`,
  audit: (query) => `${base}/byok/audit?${new URLSearchParams(query)}`,
};

export class APIError extends Error {
  constructor(status, body) {
    const b = body || {};
    super(b.title || `Request failed (${status})`);
    this.status = status;
    this.code = b.errorCode || '';
    this.title = b.title || `Request failed (${status})`;
    this.detail = b.detail || '';
    this.hint = b.hint || '';
    this.requestId = b.requestId || '';
  }

  get permissionMissing() {
    return this.status === 403 && this.code === 'PERMISSION_REQUIRED';
  }

  get signInNeeded() {
    return this.status === 401;
  }
}

export class Client {
  // creds: {org, apiKey, token}
  constructor(creds) {
    this.creds = creds;
  }

  async request(method, path, body) {
    const headers = {
      Accept: 'application/json',
      Authorization: `Bearer ${this.creds.token}`,
      'x-api-key': this.creds.apiKey,
      'x-gw-ims-org-id': this.creds.org,
    };
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch {
      throw new APIError(0, {
        title: 'Service unreachable',
        detail: 'The page could not reach the service.',
        hint: 'Check your connection; the page keeps trying.',
      });
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      throw new APIError(res.status, data && typeof data === 'object' ? data : { detail: text.slice(0, 300) });
    }
    return data;
  }

  // file fetches a download (a report, a CSV) as a Blob with the same
  // credentials; errors come back as APIError like every call.
  async file(path) {
    let res;
    try {
      res = await fetch(path, {
        headers: { Authorization: `Bearer ${this.creds.token}`, 'x-api-key': this.creds.apiKey, 'x-gw-ims-org-id': this.creds.org },
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch {
      throw new APIError(0, { title: 'Service unreachable', detail: 'The page could not reach the service.', hint: 'Check your connection and try again.' });
    }
    if (!res.ok) {
      let data = null;
      try { data = await res.json(); } catch { data = null; }
      throw new APIError(res.status, data);
    }
    return res.blob();
  }

  get(path) { return this.request('GET', path); }
  post(path, body) { return this.request('POST', path, body === undefined ? {} : body); }
  delete(path) { return this.request('DELETE', path); }
}
