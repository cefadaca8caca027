// Where the server extension lives (base_url + prefix) and the calls the extension makes to it.

import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The path the MLflow UI is served at, e.g. `/user/alice/mlflow/` (the trailing slash matters). */
export function uiPath() {
  const prefix = (PageConfig.getOption('mlflowOidcPrefix') || 'mlflow').replace(/^\/+|\/+$/g, '');
  return URLExt.join(PageConfig.getBaseUrl(), prefix, '/');
}

/** One of our sign-in routes, e.g. `oauth/status`, as an absolute URL on this server. */
export function oauthUrl(name) {
  return URLExt.join(uiPath(), 'oauth', name);
}

/** Only a path on this server is a valid `next` (the server refuses other values): drop the origin. */
function pathOf(url) {
  const parsed = new URL(url, location.href);
  return parsed.pathname + parsed.search + parsed.hash;
}

/** The sign-in URL that goes straight to the identity provider; `reuse` skips it when already signed in. */
export function signInUrl(next, { reuse = false } = {}) {
  const query = new URLSearchParams({ next: pathOf(next || uiPath()) });
  if (reuse) {
    query.set('reuse', '1');
  }
  return `${oauthUrl('login')}?${query}`;
}

const settings = () => ServerConnection.makeSettings();

/** The server session's status; with `since`, waits (long poll) until it differs from that version. */
export async function fetchStatus(since, wait) {
  const query = since === undefined ? '' : `?since=${encodeURIComponent(since)}&wait=${wait}`;
  const response = await ServerConnection.makeRequest(oauthUrl('status') + query, {
    headers: { Accept: 'application/json' },
    cache: 'no-store'
  }, settings());
  if (!response.ok) {
    throw new Error(`MLflow sign-in status: HTTP ${response.status}`);
  }
  return response.json();
}

/** Sign the Jupyter server out of MLflow (Jupyter's XSRF token is added by makeRequest). */
export async function signOut() {
  const response = await ServerConnection.makeRequest(oauthUrl('logout'), {
    method: 'POST',
    headers: { Accept: 'application/json' }
  }, settings());
  if (!response.ok) {
    throw new Error(`MLflow sign-out: HTTP ${response.status}`);
  }
  return response.json();
}
