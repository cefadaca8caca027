// oidc-provider storage adapter: all artifacts in one Map, saved to a JSON file (0600) so an IdP restart,
// e.g. for a signing key rotation, keeps sessions, grants and refresh tokens, as a real IdP would.
// The built-in memory adapter forgets everything on restart and evicts beyond 1000 entries (a long test session).

import { readFileSync, renameSync, writeFileSync } from 'node:fs';

// Kept as long past expiry as the provider's clock tolerance, so it can still say "expired" rather than "unknown".
const GRACE_SECONDS = 15;
const GRANT_MEMBERS = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode']);

export function createStore(path) {
  const entries = new Map(); // "<Model>:<id>" -> { payload, expiresAt (epoch ms or null) }

  try {
    for (const [key, entry] of JSON.parse(readFileSync(path, 'utf8'))) entries.set(key, entry);
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }

  const alive = (entry) => entry && (entry.expiresAt === null || entry.expiresAt > Date.now());

  function save() {
    for (const [key, entry] of entries) if (!alive(entry)) entries.delete(key);
    writeFileSync(`${path}.tmp`, JSON.stringify([...entries]), { mode: 0o600 });
    renameSync(`${path}.tmp`, path);
  }

  function findWhere(model, predicate) {
    for (const [key, entry] of entries) {
      if (key.startsWith(`${model}:`) && alive(entry) && predicate(entry.payload)) return entry.payload;
    }
    return undefined;
  }

  return class Store {
    constructor(model) {
      this.model = model;
    }

    key(id) {
      return `${this.model}:${id}`;
    }

    async upsert(id, payload, expiresIn) {
      const expiresAt = typeof expiresIn === 'number' ? Date.now() + (expiresIn + GRACE_SECONDS) * 1000 : null;
      entries.set(this.key(id), { payload, expiresAt });
      save();
    }

    async find(id) {
      const entry = entries.get(this.key(id));
      return alive(entry) ? entry.payload : undefined;
    }

    async findByUid(uid) {
      return findWhere(this.model, (payload) => payload.uid === uid);
    }

    async findByUserCode(userCode) {
      return findWhere(this.model, (payload) => payload.userCode === userCode);
    }

    async consume(id) {
      const entry = entries.get(this.key(id));
      if (entry) {
        entry.payload.consumed = Math.floor(Date.now() / 1000);
        save();
      }
    }

    async destroy(id) {
      entries.delete(this.key(id));
      save();
    }

    async revokeByGrantId(grantId) {
      for (const [key, entry] of entries) {
        if (GRANT_MEMBERS.has(key.slice(0, key.indexOf(':'))) && entry.payload.grantId === grantId) {
          entries.delete(key);
        }
      }
      save();
    }
  };
}
