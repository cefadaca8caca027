// IdP settings: the IDP_CONFIG JSON file, the IDP_*_TTL environment variables and the signing keys file.

import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const TTL_DEFAULTS = {
  IDP_ACCESS_TOKEN_TTL: 300,
  IDP_ID_TOKEN_TTL: 300,
  IDP_REFRESH_TOKEN_TTL: 3600 * 8,
  IDP_SESSION_TTL: 36000,
  IDP_DEVICE_CODE_TTL: 600,
  IDP_AUTH_CODE_TTL: 60,
};

function readTtl(name, env) {
  const raw = env[name];
  if (raw === undefined || raw === '') return TTL_DEFAULTS[name];
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    throw new Error(`${name} must be a positive integer number of seconds, got ${JSON.stringify(raw)}`);
  }
  return value;
}

export function readTtls(env = process.env) {
  return {
    accessToken: readTtl('IDP_ACCESS_TOKEN_TTL', env),
    idToken: readTtl('IDP_ID_TOKEN_TTL', env),
    refreshToken: readTtl('IDP_REFRESH_TOKEN_TTL', env),
    session: readTtl('IDP_SESSION_TTL', env),
    deviceCode: readTtl('IDP_DEVICE_CODE_TTL', env),
    authCode: readTtl('IDP_AUTH_CODE_TTL', env),
  };
}

// IDP_ACCESS_TOKEN_FORMAT: `jwt` (default; validated locally by the gate) or `opaque` (only the provider can tell
// what it means, by introspection: bench/gate_throughput.py's per-request round trip).
export function readAccessTokenFormat(env = process.env) {
  const format = env.IDP_ACCESS_TOKEN_FORMAT || 'jwt';
  if (!['jwt', 'opaque'].includes(format)) {
    throw new Error(`IDP_ACCESS_TOKEN_FORMAT must be "jwt" or "opaque", got ${JSON.stringify(format)}`);
  }
  return format;
}

// A UUID derived from the username: stable across restarts and config rewrites, and clearly not a username,
// so nothing downstream can get away with confusing `sub` and `preferred_username`.
export function subjectFor(username) {
  const hex = createHash('sha256').update(`mlflow-oidc-jupyter user ${username}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

export function readConfig(path) {
  if (!path) throw new Error('IDP_CONFIG must name the JSON configuration file');
  const config = JSON.parse(readFileSync(path, 'utf8'));
  for (const key of ['issuer', 'port', 'keys_file', 'users', 'clients']) {
    if (config[key] === undefined) throw new Error(`IDP_CONFIG ${path}: missing "${key}"`);
  }
  const issuer = new URL(config.issuer);
  if (issuer.pathname !== '/' || issuer.search || issuer.hash) {
    throw new Error('IDP_CONFIG issuer must be an origin without a path, e.g. http://127.0.0.1:8081');
  }
  if (!config.clients.jupyter || !config.clients['ci-bot']?.client_secret) {
    throw new Error('IDP_CONFIG clients must define "jupyter" and "ci-bot" (with client_secret)');
  }
  const users = Object.entries(config.users).map(([username, user]) => ({
    username,
    sub: subjectFor(username),
    password: String(user.password),
    roles: user.roles ?? [],
    email: user.email ?? `${username}@example.org`,
    name: user.name ?? username,
  }));
  // Beside a hub every user can listen on loopback and serve paths under the hub: the public jupyter client then
  // takes exactly these redirect URIs (none: device flow only), not RFC 8252's any-port loopback.
  const jupyterExact = config.clients.jupyter.exact_redirect_uris;
  if (jupyterExact !== undefined) {
    if (!Array.isArray(jupyterExact) || jupyterExact.some((uri) => typeof uri !== 'string' || uri.includes('*'))) {
      throw new Error('IDP_CONFIG clients.jupyter.exact_redirect_uris must be a list of exact URIs, no wildcards');
    }
  }
  // Confidential web clients (e.g. a JupyterHub): every one with its exact redirect URIs, never a pattern.
  const webClients = Object.entries(config.clients)
    .filter(([, client]) => Array.isArray(client.redirect_uris))
    .map(([name, client]) => {
      if (!client.client_secret) throw new Error(`IDP_CONFIG client "${name}" needs a client_secret`);
      for (const uri of [...client.redirect_uris, ...(client.post_logout_redirect_uris ?? [])]) {
        if (uri.includes('*')) throw new Error(`IDP_CONFIG client "${name}": no wildcard redirect URIs (${uri})`);
      }
      return {
        clientId: client.client_id ?? name,
        name: client.client_name ?? name,
        clientSecret: client.client_secret,
        redirectUris: client.redirect_uris,
        postLogoutRedirectUris: client.post_logout_redirect_uris ?? [],
        grantTypes: client.grant_types ?? ['authorization_code', 'refresh_token'],
      };
    });
  return {
    issuer: issuer.origin,
    webClients,
    port: Number(config.port),
    keysFile: config.keys_file,
    stateFile: config.state_file ?? join(dirname(config.keys_file), 'idp-state.json'),
    audience: config.audience ?? 'mlflow',
    users,
    jupyter: { clientId: config.clients.jupyter.client_id ?? 'jupyter', exactRedirectUris: jupyterExact },
    ciBot: {
      clientId: config.clients['ci-bot'].client_id ?? 'ci-bot',
      clientSecret: config.clients['ci-bot'].client_secret,
      roles: config.clients['ci-bot'].roles ?? [],
    },
  };
}

// Deleting the keys file and restarting the IdP rotates the signing key (new kid).
export function loadOrCreateKeys(path) {
  let jwks;
  try {
    jwks = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const key = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
    jwks = { keys: [key] };
    writeFileSync(path, `${JSON.stringify(jwks)}\n`, { mode: 0o600, flag: 'wx' });
    return { jwks, created: true };
  }
  if (!Array.isArray(jwks.keys) || jwks.keys.length === 0 || jwks.keys.some((k) => !k.kid || !k.d)) {
    throw new Error(`keys file ${path} must be a JWKS of private keys, each with a kid`);
  }
  return { jwks, created: false };
}
