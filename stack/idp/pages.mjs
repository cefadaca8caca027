// HTML pages of the local IdP: login, device flow, logout and errors (no external assets, everything escaped).

const STYLE = `body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}
main{max-width:22rem;margin:4rem auto;background:#fff;padding:1.5rem 2rem;border-radius:6px;box-shadow:0 1px 3px #0003}
h1{font-size:1.4rem;font-weight:500}label{display:block;margin:.8rem 0 .2rem}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}
button{margin-top:1rem;padding:.5rem 1rem;font-size:1rem}.error{color:#b00020}.muted{color:#666;font-size:.9rem}
code{font-size:1.4rem}`;

export function escapeHtml(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>
<body><main><h1>${escapeHtml(title)}</h1>
${body}
</main></body></html>`;
}

export function loginPage({ uid, clientId, username, error }) {
  const message = error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : '';
  return page('Sign in', `${message}
<p class="muted">to continue to <strong>${escapeHtml(clientId)}</strong></p>
<form id="login" method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<label for="username">Username</label>
<input id="username" type="text" name="username" value="${escapeHtml(username)}" required autofocus>
<label for="password">Password</label>
<input id="password" type="password" name="password" required>
<button type="submit">Sign in</button>
</form>
<p class="muted"><a href="/interaction/${escapeHtml(uid)}/abort">Cancel</a></p>`);
}

// The oidc-provider supplies `form` (with its xsrf field); our buttons submit it via the form attribute.
export function userCodeInputPage(form, err) {
  let message = '<p>Enter the code displayed on your device.</p>';
  if (err && (err.userCode || err.name === 'NoCodeError')) {
    message = '<p class="error" role="alert">The code you entered is incorrect. Try again.</p>';
  } else if (err && err.name === 'AbortedError') {
    // oidc-provider's answer to the confirm form's "Deny" (its `abort` field): the device now gets access_denied.
    message = '<p class="error" role="alert">Sign-in denied. The device will not be signed in.</p>';
  } else if (err) {
    message = '<p class="error" role="alert">There was an error processing your request.</p>';
  }
  return page('Connect a device', `${message}
${form}
<button type="submit" form="op.deviceInputForm">Continue</button>`);
}

export function userCodeConfirmPage(form, clientId, userCode) {
  return page('Confirm device', `<p><strong>${escapeHtml(clientId)}</strong> asks to sign in.
Check that this code is shown on your device:</p>
<p><code>${escapeHtml(userCode)}</code></p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Deny</button>`);
}

export function deviceSuccessPage(clientId) {
  return page('Device connected', `<p>Sign-in to <strong>${escapeHtml(clientId)}</strong> succeeded.
You can close this page and return to your device.</p>`);
}

// Logging out is harmless, so the page submits itself; the button is there for browsers without JS.
export function logoutPage(form) {
  const confirmed = form.replace('</form>', '<input type="hidden" name="logout" value="yes"></form>');
  return page('Sign out', `<p>Signing you out…</p>
${confirmed}
<button type="submit" form="op.logoutForm">Sign out</button>
<script>document.forms['op.logoutForm'].submit()</script>`);
}

export function loggedOutPage() {
  return page('Signed out', '<p>You have been signed out.</p>');
}

export function errorPage(out) {
  const description = out.error_description ? `<p>${escapeHtml(out.error_description)}</p>` : '';
  return page('Sign-in error', `<p class="error" role="alert"><strong>${escapeHtml(out.error)}</strong></p>
${description}`);
}
