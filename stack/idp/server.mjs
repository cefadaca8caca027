// Local OpenID Provider for the test and demo stack: `IDP_CONFIG=<file> node stack/idp/server.mjs`.

import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

import * as pages from './pages.mjs';
import { createStore } from './store.mjs';
import { loadOrCreateKeys, readAccessTokenFormat, readConfig, readTtls } from './settings.mjs';

// Resource indicator every token is minted for when the client names none (MLflow clients never do).
const RESOURCE = 'urn:mlflow';
// An offline_access grant outlives sessions; it still needs an end, so its refresh tokens die within a month.
const OFFLINE_GRANT_TTL = 30 * 24 * 3600;
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

const config = readConfig(process.env.IDP_CONFIG);
const ttls = readTtls();
const { jwks, created: keysCreated } = loadOrCreateKeys(config.keysFile);
const usersByName = new Map(config.users.map((u) => [u.username, u]));
const usersBySub = new Map(config.users.map((u) => [u.sub, u]));
const now = () => Math.floor(Date.now() / 1000);

// Idle lifetime per refresh token, never beyond its grant (IDP_SESSION_TTL, or OFFLINE_GRANT_TTL for offline_access).
function refreshTokenTtl(ctx) {
  const grant = ctx?.oidc?.entities?.Grant;
  const grantLeft = grant?.exp ? grant.exp - now() : Infinity;
  return Math.max(1, Math.min(ttls.refreshToken, grantLeft));
}

// One line per event, never a token, code, secret or password.
function log(message, fields = {}) {
  const tail = Object.entries(fields)
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => {
      const text = String(v).replace(/[^\x20-\x7e]/g, '?').slice(0, 100);
      return `${k}=${/[\s"]/.test(text) ? JSON.stringify(text) : text}`;
    })
    .join(' ');
  process.stdout.write(`${new Date().toISOString()} idp ${message}${tail ? ` ${tail}` : ''}\n`);
}

function usernameOf(accountId) {
  return usersBySub.get(accountId)?.username;
}

function passwordMatches(user, password) {
  const digest = (s) => createHash('sha256').update(String(s)).digest();
  return timingSafeEqual(digest(user.password), digest(password));
}

function parsedUrl(value) {
  const url = URL.parse(value);
  return url && !url.username && !url.password && !url.hash ? url : undefined;
}

// RFC 8252 loopback redirects: any port, any path, plain http on the loopback IP literals.
function isLoopback(url) {
  return url.protocol === 'http:' && ['127.0.0.1', '[::1]'].includes(url.hostname);
}

// A Jupyter server's callback, also behind a base URL and (on 127.0.0.1) over https; nothing else beyond loopback.
function isJupyterCallback(url) {
  if (!url.pathname.endsWith('/mlflow/oauth/callback')) return false;
  return (url.hostname === '127.0.0.1' && ['http:', 'https:'].includes(url.protocol))
    || (url.hostname === 'localhost' && url.protocol === 'http:');
}

function jupyterRedirectAllowed(value) {
  const url = parsedUrl(value);
  return Boolean(url && (isLoopback(url) || isJupyterCallback(url)));
}

function jupyterPostLogoutRedirectAllowed(value) {
  const url = parsedUrl(value);
  return Boolean(url && (isLoopback(url) || (url.protocol === 'http:' && url.hostname === 'localhost')));
}

// The public client of notebooks, servers and the CLI. Alone (one person's machine): RFC 8252 loopback on any port
// and any Jupyter server's callback. Beside a hub (exactRedirectUris set): exactly those, and with none no
// authorization-code flow at all, only the device flow, whose confirmation page shows the person what they approve.
function jupyterClient({ clientId, exactRedirectUris }) {
  const client = {
    client_id: clientId,
    client_name: 'Jupyter',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token', DEVICE_GRANT],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/oauth/callback'],
    post_logout_redirect_uris: ['http://127.0.0.1/'],
  };
  if (exactRedirectUris === undefined) return client;
  if (exactRedirectUris.length === 0) {
    return { ...client, grant_types: ['refresh_token', DEVICE_GRANT], response_types: [], redirect_uris: [],
      post_logout_redirect_uris: [] };
  }
  // 'web': oidc-provider ignores the port of a native client's loopback redirect (RFC 8252 7.3); exact means exact.
  return { ...client, application_type: 'web', redirect_uris: exactRedirectUris, post_logout_redirect_uris: [] };
}
const jupyterLoopback = config.jupyter.exactRedirectUris === undefined;

const resourceServer = {
  audience: config.audience,
  scope: 'openid profile email roles offline_access',
  accessTokenFormat: readAccessTokenFormat(),
  accessTokenTTL: ttls.accessToken,
  jwt: { sign: { alg: 'RS256' } },
};

// Derived from the signing key so browser sessions survive a restart, and end with a key rotation.
const cookieKey = createHash('sha256').update(`idp cookies ${jwks.keys[0].d}`).digest('base64url');

const provider = new Provider(config.issuer, {
  jwks,
  adapter: createStore(config.stateFile),
  cookies: { keys: [cookieKey] },
  clients: [
    jupyterClient(config.jupyter),
    {
      client_id: config.ciBot.clientId,
      client_name: 'CI bot',
      client_secret: config.ciBot.clientSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    },
    ...config.webClients.map((client) => ({
      client_id: client.clientId,
      client_name: client.name,
      client_secret: client.clientSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: client.grantTypes,
      response_types: ['code'],
      redirect_uris: client.redirectUris,
      post_logout_redirect_uris: client.postLogoutRedirectUris,
    })),
  ],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    roles: ['roles'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'roles'],
  async findAccount(_ctx, sub) {
    const user = usersBySub.get(sub);
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          preferred_username: user.username,
          name: user.name,
          email: user.email,
          email_verified: true,
          roles: user.roles,
        };
      },
    };
  },
  async extraTokenClaims(_ctx, token) {
    if (token.kind === 'ClientCredentials' && token.clientId === config.ciBot.clientId) {
      return { preferred_username: 'ci-bot', roles: config.ciBot.roles };
    }
    const user = usersBySub.get(token.accountId);
    if (!user) return undefined;
    return { preferred_username: user.username, email: user.email, name: user.name, roles: user.roles };
  },
  responseTypes: ['code'],
  pkce: { required: () => true },
  allowOmittingSingleRegisteredRedirectUri: false,
  rotateRefreshToken: true,
  // Every client allowed the refresh_token grant gets one; without offline_access it dies with the session.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  features: {
    devInteractions: { enabled: false },
    claimsParameter: { enabled: false },
    clientCredentials: { enabled: true },
    // Public clients may only look at and revoke their own tokens; ci-bot may introspect any.
    introspection: {
      enabled: true,
      allowedPolicy: async (_ctx, client, token) => client.clientAuthMethod !== 'none' || token.clientId === client.clientId,
    },
    revocation: {
      enabled: true,
      allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
    },
    userinfo: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => { ctx.body = pages.logoutPage(form); },
      postLogoutSuccessSource: async (ctx) => { ctx.body = pages.loggedOutPage(); },
    },
    deviceFlow: {
      enabled: true,
      userCodeInputSource: async (ctx, form, _out, err) => { ctx.body = pages.userCodeInputPage(form, err); },
      userCodeConfirmSource: async (ctx, form, client, _info, userCode) => {
        ctx.body = pages.userCodeConfirmPage(form, client.clientName || client.clientId, userCode);
      },
      successSource: async (ctx) => {
        const { client } = ctx.oidc;
        ctx.body = pages.deviceSuccessPage(client.clientName || client.clientId);
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== RESOURCE) throw new errors.InvalidTarget(`unknown resource, use ${RESOURCE}`);
        return resourceServer;
      },
    },
  },
  ttl: {
    AccessToken: ttls.accessToken,
    ClientCredentials: ttls.accessToken,
    IdToken: ttls.idToken,
    AuthorizationCode: ttls.authCode,
    DeviceCode: ttls.deviceCode,
    Interaction: 3600,
    // Absolute from the last login: activity does not stretch a session beyond IDP_SESSION_TTL.
    Session: (_ctx, session) => (session.loginTs
      ? Math.max(1, session.loginTs + ttls.session - now())
      : ttls.session),
    Grant: (_ctx, grant) => (grant.getOIDCScope().split(' ').includes('offline_access')
      ? OFFLINE_GRANT_TTL
      : ttls.session),
    RefreshToken: refreshTokenTtl,
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = pages.errorPage(out);
  },
});

// The jupyter client alone may use any loopback port and path and a Jupyter server's callback route (not beside a hub).
for (const [method, extra] of [
  ['redirectUriAllowed', jupyterRedirectAllowed],
  ['postLogoutRedirectUriAllowed', jupyterPostLogoutRedirectAllowed],
]) {
  const registered = provider.Client.prototype[method];
  provider.Client.prototype[method] = function allowed(value) {
    return registered.call(this, value)
      || (jupyterLoopback && this.clientId === config.jupyter.clientId && extra(value));
  };
}

provider.on('grant.success', (ctx) => {
  // Announce the refresh token's idle limit as Keycloak does (refresh_expires_in): clients show when the session
  // ends and refresh before it. The body is still ours to change: koa sends it after this event.
  if (ctx.body?.refresh_token) ctx.body.refresh_expires_in = refreshTokenTtl(ctx);
  log('token issued', {
    client: ctx.oidc.client?.clientId,
    grant_type: ctx.oidc.params.grant_type,
    user: usernameOf(ctx.oidc.account?.accountId),
    refresh_token: ctx.body?.refresh_token ? 'yes' : 'no',
  });
});
provider.on('grant.error', (ctx, err) => {
  if (['authorization_pending', 'slow_down'].includes(err.error)) return;
  log('token refused', {
    client: ctx.oidc.client?.clientId,
    grant_type: ctx.oidc.params?.grant_type,
    error: err.error,
    reason: err.error_detail ?? err.error_description,
  });
});
provider.on('authorization.error', (ctx, err) => {
  const reason = err.error_detail ?? err.error_description;
  log('authorization refused', { client: ctx.oidc.client?.clientId, error: err.error, reason });
});
provider.on('end_session.success', (ctx) => log('logout', { client: ctx.oidc.client?.clientId }));
provider.on('server_error', (_ctx, err) => console.error('idp server error', err));

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16384) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function sendHtml(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

async function autoConsent(req, res, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const consent = { grantId: await grant.save() };
  await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
}

// Our own login and consent steps; oidc-provider sends the browser to /interaction/<uid>.
async function interaction(req, res, url) {
  const [, , uid, action] = url.pathname.split('/');
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch {
    sendHtml(res, 400, pages.page('Sign-in expired', '<p>This sign-in request is no longer valid. '
      + 'Start again from the application.</p>'));
    return;
  }
  if (details.uid !== uid) {
    sendHtml(res, 400, pages.page('Sign-in error', '<p>This sign-in page does not belong to your request.</p>'));
    return;
  }
  const clientId = details.params.client_id;
  if (action === 'abort') {
    log('login cancelled', { client: clientId });
    const result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }
  if (details.prompt.name === 'consent') {
    await autoConsent(req, res, details);
    return;
  }
  if (details.prompt.name !== 'login') {
    sendHtml(res, 400, pages.page('Sign-in error', '<p>Unsupported sign-in step.</p>'));
    return;
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const username = form.get('username') ?? '';
    const user = usersByName.get(username);
    if (user && passwordMatches(user, form.get('password') ?? '')) {
      log('login ok', { user: username, client: clientId });
      const result = { login: { accountId: user.sub } };
      await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
      return;
    }
    log('login failed', { user: username, client: clientId });
    sendHtml(res, 401, pages.loginPage({ uid, clientId, username, error: 'Invalid username or password.' }));
    return;
  }
  sendHtml(res, 200, pages.loginPage({ uid, clientId, username: details.params.login_hint ?? '' }));
}

// oidc-provider drops offline_access unless prompt=consent (OIDC Core 11); consent is automatic here, so ask for it.
function requestConsentForOfflineAccess(req, url) {
  const scope = url.searchParams.get('scope') ?? '';
  if (scope.split(' ').includes('offline_access') && !url.searchParams.has('prompt')) {
    url.searchParams.set('prompt', 'consent');
    req.url = `${url.pathname}${url.search}`;
  }
}

const oidc = provider.callback();
const server = createServer((req, res) => {
  const url = new URL(req.url, config.issuer);
  if (url.pathname.startsWith('/interaction/')) {
    interaction(req, res, url).catch((err) => {
      console.error('idp interaction error', err);
      if (!res.headersSent) sendHtml(res, 500, pages.page('Sign-in error', '<p>Something went wrong.</p>'));
    });
    return;
  }
  if (req.method === 'GET' && url.pathname === '/auth') requestConsentForOfflineAccess(req, url);
  oidc(req, res);
});

server.listen(config.port, '127.0.0.1', () => {
  log('listening', {
    issuer: config.issuer,
    kid: jwks.keys[0].kid,
    keys: keysCreated ? 'generated' : 'loaded',
    access_ttl: ttls.accessToken,
    refresh_ttl: ttls.refreshToken,
    session_ttl: ttls.session,
  });
});

// Stop as a real IdP does: take no new connections, close idle ones, and let requests in flight finish first.
// Cutting one off could lose a refresh token rotation halfway: the old token is already consumed (saved) but the
// client never receives the new one, so its next refresh is invalid_grant and the session ends. Bounded: whatever
// is still open after STOP_GRACE_MS is cut.
const STOP_GRACE_MS = 5000;
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => {
      server.closeAllConnections();
      process.exit(0);
    }, STOP_GRACE_MS);
  });
}
