// Injected by mlflow-oidc-jupyter into the MLflow UI it serves: who is signed in, a sign-out link, and a banner
// leading back to sign-in when the session ends or the tracking server answers 401. Plain DOM, no inline code
// (the page's Content-Security-Policy stays as it is); only our own same-origin routes are called.
(function () {
  'use strict';
  if (window.__mlflowOidcOverlay) {
    return;
  }
  window.__mlflowOidcOverlay = true;

  var here = document.currentScript && document.currentScript.src;
  var base = here ? here.replace(/oauth\/ui-overlay\.js(\?.*)?$/, '') : new URL('./', location.href).href;
  var basePath = new URL(base).pathname;
  var WAIT = 25;
  var current = null;
  var chip = null;
  var banner = null;

  function el(tag, props, children) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (key) {
      if (key === 'style') {
        Object.keys(props.style).forEach(function (s) { node.style[s] = props.style[s]; });
      } else {
        node[key] = props[key];
      }
    });
    (children || []).forEach(function (child) {
      node.append(child);
    });
    return node;
  }

  /** Where "Sign in" leads: the provider, then back to this very page (never carrying Jupyter's ?token=). */
  function signInHref() {
    var next = location.pathname + location.hash;
    return base + 'oauth/login?next=' + encodeURIComponent(next);
  }

  function link(text, href, id) {
    return el('a', {
      id: id, href: href, textContent: text,
      style: { color: 'inherit', textDecoration: 'underline', fontWeight: '600', marginLeft: '8px' }
    });
  }

  function renderChip() {
    if (!document.body) {
      return;
    }
    if (!chip) {
      chip = el('div', {
        id: 'mlflow-oidc-identity',
        title: 'The MLflow sign-in of this Jupyter server (used by the MLflow UI and its notebooks)',
        style: {
          position: 'fixed', right: '12px', bottom: '12px', zIndex: '2147483000', background: '#ffffff',
          color: '#1f2933', border: '1px solid #c5ccd3', borderRadius: '14px', padding: '3px 10px',
          font: '12px system-ui, sans-serif', boxShadow: '0 1px 4px rgba(0,0,0,.15)'
        }
      });
      document.body.append(chip);
    }
    chip.replaceChildren();
    if (current && current.signed_in) {
      chip.dataset.state = current.state;
      chip.append(el('span', { textContent: '\u25CF ', style: { color: '#2e9e5b' } }),
        el('span', { id: 'mlflow-oidc-user', textContent: current.username }),
        link('Sign out', base + 'oauth/logout', 'mlflow-oidc-sign-out'));
    } else {
      chip.dataset.state = current ? current.state : 'unknown';
      chip.append(el('span', { textContent: '\u25CF ', style: { color: '#b00020' } }),
        el('span', { textContent: 'Not signed in' }), link('Sign in', signInHref(), 'mlflow-oidc-sign-in'));
    }
  }

  function showBanner(kind, message) {
    if (!document.body) {
      return;
    }
    if (!banner) {
      banner = el('div', {
        id: 'mlflow-oidc-banner',
        role: 'alert',
        style: {
          position: 'fixed', top: '0', left: '0', right: '0', zIndex: '2147483001', padding: '10px 16px',
          font: '14px system-ui, sans-serif', textAlign: 'center', boxShadow: '0 2px 6px rgba(0,0,0,.2)'
        }
      });
      document.body.append(banner);
    }
    banner.dataset.kind = kind;
    banner.replaceChildren();
    if (kind === 'back') {
      banner.style.background = '#e3f4ea';
      banner.style.color = '#14532d';
      banner.append(el('span', { textContent: message }),
        el('a', { id: 'mlflow-oidc-reload', href: location.href, textContent: 'Reload this page',
          style: { color: 'inherit', textDecoration: 'underline', fontWeight: '600', marginLeft: '8px' },
          onclick: function (event) { event.preventDefault(); location.reload(); } }));
    } else {
      banner.style.background = '#fdecea';
      banner.style.color = '#7a1010';
      banner.append(el('span', { textContent: message }), link('Sign in again', signInHref(), 'mlflow-oidc-banner-sign-in'));
    }
  }

  function ended(status) {
    var reason = status && status.message ? ' (' + status.message + ')' : '';
    showBanner('ended', 'Your MLflow sign-in has ended' + reason + '.');
  }

  function update(status) {
    var wasSignedIn = current && current.signed_in;
    current = status;
    renderChip();
    if (!status.signed_in) {
      ended(status);
    } else if (banner && banner.dataset.kind === 'ended' && (!wasSignedIn || status.username)) {
      showBanner('back', 'Signed in again as ' + status.username + '.');
    }
  }

  // JupyterHub's single-user servers honour a cookie on a fetch (not a page load) only with the XSRF token.
  function xsrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : '';
  }

  function getStatus(query) {
    return originalFetch(base + 'oauth/status' + (query || ''), {
      headers: { Accept: 'application/json', 'X-XSRFToken': xsrfToken() },
      credentials: 'same-origin',
      cache: 'no-store'
    }).then(function (response) {
      if (!response.ok) {
        throw new Error('HTTP ' + response.status);
      }
      return response.json();
    });
  }

  function poll(failures) {
    var query = current ? '?since=' + encodeURIComponent(current.version) + '&wait=' + WAIT : '';
    getStatus(query).then(function (status) {
      update(status);
      poll(0);
    }, function () {
      setTimeout(function () { poll(failures + 1); }, Math.min(30000, 1000 * Math.pow(2, failures + 1)));
    });
  }

  /** Whether a URL is one of this UI's own, served by our proxy. */
  function ours(url) {
    var path;
    try {
      path = new URL(url, location.href);
    } catch (e) {
      return false;
    }
    return path.origin === location.origin && path.pathname.indexOf(basePath) === 0;
  }

  /** A request of the UI to our proxy came back 401: the session ended, or the tracking server refused it. */
  function unauthorized(url) {
    if (!ours(url)) {
      return;
    }
    getStatus('').then(function (status) {
      current = status;
      renderChip();
      if (status.signed_in) {
        showBanner('ended', 'MLflow did not accept the sign-in of ' + status.username + ' (HTTP 401).');
      } else {
        ended(status);
      }
    }, function () {
      showBanner('ended', 'MLflow answered 401: your sign-in has ended.');
    });
  }

  /**
   * A script or stylesheet of the UI failed to load. The UI loads a page's code when that page is first opened, and
   * after the sign-in has ended our proxy answers those loads 401 too; the browser tells us only that the load
   * failed, so ask whether the sign-in has ended. Any other failure is not ours to explain.
   */
  function resourceFailed(url) {
    if (!ours(url)) {
      return;
    }
    getStatus('').then(function (status) {
      if (!status.signed_in) {
        update(status);
      }
    }, function () {});
  }

  // Load errors of elements do not bubble: only a listener in the capture phase hears them.
  window.addEventListener('error', function (event) {
    var target = event.target;
    if (target && target !== window && (target.tagName === 'SCRIPT' || target.tagName === 'LINK')) {
      resourceFailed(target.src || target.href);
    }
  }, true);

  var originalFetch = window.fetch.bind(window);
  window.fetch = function (input) {
    return originalFetch.apply(window, arguments).then(function (response) {
      if (response.status === 401) {
        unauthorized(response.url || (input && input.url) || String(input));
      }
      return response;
    });
  };
  var open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url) {
    this.addEventListener('loadend', function () {
      if (this.status === 401) {
        unauthorized(this.responseURL || String(url));
      }
    });
    return open.apply(this, arguments);
  };

  function start() {
    renderChip();
    poll(0);
  }
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
