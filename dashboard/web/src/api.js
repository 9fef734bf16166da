// The one way the page talks to the server: the public API under /api/v2, same origin.
import { useEffect, useState } from 'preact/hooks';
import { config } from './config.js';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function loginUrl() {
  return '/login?next=' + encodeURIComponent(location.pathname + location.search);
}

// A share link's page (config.share) reads through the share's own API, which answers the read
// endpoints of the dashboard for that site only.
const BASE = config.share ? config.share.base + '/api/v2' : '/api/v2';

// The address of `path` with `params`: what `api` fetches, and what a download link points at.
export function apiUrl(path, params) {
  const qs = params ? params.toString() : '';
  return BASE + path + (qs ? (path.includes('?') ? '&' : '?') + qs : '');
}

export async function api(path, { method = 'GET', params, body } = {}) {
  const url = apiUrl(path, params);
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = config.csrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(url, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'The server could not be reached. Check that it is running, then reload.');
  }
  if (resp.status === 401 && config.share) {
    location.reload(); // the share's password session ended: the server asks for it again
    throw new ApiError(401, 'Enter the password again.');
  }
  if (resp.status === 401 && !config.dev) {
    location.assign(loginUrl());
    throw new ApiError(401, 'Your session has ended: sign in again.');
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) throw new ApiError(resp.status, (data && data.error) || `The server answered ${resp.status}.`);
  return data;
}

// Loads `path` whenever `key` changes; the answer of an older request never replaces a newer one.
export function useApi(path, params, key, options) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  useEffect(() => {
    if (!path) return undefined;
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    api(path, { params, ...(options || {}) }).then(
      (data) => live && setState({ data, error: null, loading: false }),
      (error) => live && setState({ data: null, error, loading: false }),
    );
    return () => {
      live = false;
    };
  }, [path, key]);
  return state;
}
