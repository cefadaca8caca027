// The Jupyter server's MLflow sign-in as JupyterLab sees it: kept current by a long poll, told to listeners.

import { Signal } from '@lumino/signaling';

import { fetchStatus } from './api';

/** Seconds the server may hold a status request open waiting for a change. */
const WAIT = 25;

/** A short human duration: '42 s', '4 min', '3 h 12 min', '2 d 4 h'. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) {
    return 'unknown';
  }
  if (seconds <= 0) {
    return 'expired';
  }
  const s = Math.floor(seconds);
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
  }
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

const STATE_WORDS = {
  signed_in: 'signed in',
  refreshing: 'signed in',
  refresh_failing: 'token refresh failing, retrying',
  provider_unreachable: 'identity provider unreachable, retrying',
  signing_in: 'signing in',
  login_required: 'sign-in required',
  signed_out: 'signed out'
};

export class SessionStatus {
  constructor() {
    this.current = null;
    this.error = null;
    this.changed = new Signal(this);
    this._stopped = false;
    this._skew = 0; // server clock minus ours, so countdowns agree with the server
  }

  get signedIn() {
    return Boolean(this.current && this.current.signed_in);
  }

  /** Seconds until `epoch` (server time), or null. */
  secondsUntil(epoch) {
    return epoch ? epoch - (Date.now() / 1000 + this._skew) : null;
  }

  /** One line for people: "alice · session 7 h 59 min" or "signed out". */
  summary() {
    const s = this.current;
    if (this.error && !s) {
      return 'status unknown';
    }
    if (!s || !s.configured) {
      return s ? 'not configured' : 'loading…';
    }
    if (!s.signed_in) {
      return STATE_WORDS[s.state] || 'signed out';
    }
    const until = s.session_expires_at || s.access_expires_at;
    const left = s.session_expires_at ? `session ${duration(this.secondsUntil(until))}` : '';
    const trouble = ['refresh_failing', 'provider_unreachable', 'login_required'].includes(s.state)
      ? STATE_WORDS[s.state] : '';
    return [s.username, trouble || left].filter(Boolean).join(' · ');
  }

  /** (label, value) rows for the status dialog. */
  rows() {
    const s = this.current;
    if (!s) {
      return [['State', this.error ? `unknown (${this.error})` : 'loading…']];
    }
    const rows = [['State', STATE_WORDS[s.state] || s.state]];
    if (s.signed_in) {
      rows.push(['User', s.username]);
      rows.push(['Roles', (s.roles || []).join(', ') || 'none']);
      rows.push(['Access token expires in', `${duration(this.secondsUntil(s.access_expires_at))} (renewed automatically)`]);
      rows.push([
        'Session expires in',
        s.session_expires_at
          ? `${duration(this.secondsUntil(s.session_expires_at))} (renewed by each refresh)`
          : 'no limit announced by the identity provider'
      ]);
    }
    if (s.message && s.state !== 'signed_in') {
      rows.push(['Reason', s.message]);
    }
    rows.push(['Covers', 'the MLflow UI and every notebook using this server\'s sign-in (%mlflow_login without --new)']);
    return rows;
  }

  /** Ask now (e.g. after a sign-out from this page), without waiting for the long poll. */
  async refresh() {
    try {
      this._update(await fetchStatus());
    } catch (reason) {
      this._fail(reason);
    }
  }

  /** Keep `current` up to date: long polls, a pause after errors, until `stop()`. */
  async run() {
    let failures = 0;
    while (!this._stopped) {
      try {
        const since = this.current ? this.current.version : undefined;
        this._update(await fetchStatus(since, since === undefined ? 0 : WAIT));
        failures = 0;
      } catch (reason) {
        failures += 1;
        this._fail(reason);
        await new Promise(resolve => setTimeout(resolve, Math.min(30000, 1000 * 2 ** failures)));
      }
    }
  }

  stop() {
    this._stopped = true;
  }

  _update(status) {
    if (status.now) {
      this._skew = status.now - Date.now() / 1000;
    }
    const before = this.current;
    this.current = status;
    this.error = null;
    if (!before || before.version !== status.version || before.state !== status.state) {
      this.changed.emit(status);
    }
  }

  _fail(reason) {
    const message = reason instanceof Error ? reason.message : String(reason);
    if (this.error !== message) {
      this.error = message;
      this.changed.emit(this.current);
    }
  }
}
