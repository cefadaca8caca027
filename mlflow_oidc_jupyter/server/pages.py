"""The few HTML pages the extension shows itself: signed out, upstream errors, sign-in results."""

from __future__ import annotations

from html import escape

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#1f2933}"
    "h1{font-size:1.4rem}p{line-height:1.5}.detail{color:#52606d;font-size:.9rem}"
    "a.button,button{display:inline-block;background:#0b69ff;color:#fff;border:0;border-radius:4px;"
    "padding:.6rem 1.2rem;font-size:1rem;text-decoration:none;cursor:pointer}"
)


def page(title: str, message: str, *, action: tuple[str, str] | None = None, detail: str | None = None) -> str:
    """A small page: a title, one sentence, an optional button (label, href) and an optional detail line."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)} · MLflow</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1><p>{escape(message)}</p>",
    ]
    if action:
        label, href = action
        parts.append(f"<p><a class='button' id='mlflow-oidc-action' href='{escape(href)}'>{escape(label)}</a></p>")
    if detail:
        parts.append(f"<p class='detail'>{escape(detail)}</p>")
    parts.append("</body></html>")
    return "".join(parts)


#: The UI routes by URL fragment, which never reaches the server: carry it through the sign-in's `next`.
_KEEP_FRAGMENT = (
    "<script>var a=document.getElementById('mlflow-oidc-action');"
    "if(a&&location.hash&&a.href.indexOf('next=')>0){a.href+=encodeURIComponent(location.hash)}</script>"
)


def signed_out(login_url: str, reason: str | None = None) -> str:
    body = page(
        "Sign in to MLflow",
        "The MLflow UI needs you to sign in with your organisation's account.",
        action=("Sign in", login_url),
        detail=reason,
    )
    return body.replace("</body>", _KEEP_FRAGMENT + "</body>")


def upstream_error(status: int, login_url: str, detail: str | None) -> str:
    if status == 401:
        return page(
            "MLflow did not accept your sign-in",
            "The tracking server refused the token of this session. Signing in again usually fixes it.",
            action=("Sign in again", login_url),
            detail=detail,
        )
    if status == 403:
        return page(
            "MLflow refused access",
            "You are signed in, but your account may not open this page. Ask your MLflow administrator for access.",
            detail=detail,
        )
    return page(
        "MLflow is not available",
        f"The tracking server answered HTTP {status}. Try again in a moment; if it persists, tell its administrator.",
        action=("Try again", ""),
        detail=detail,
    )


def unreachable(upstream: str, reason: str) -> str:
    return page(
        "MLflow cannot be reached",
        f"The tracking server at {upstream} did not answer. Try again in a moment; if it persists, tell its "
        "administrator.",
        action=("Try again", ""),
        detail=reason,
    )


def not_configured(problem: str) -> str:
    return page(
        "The MLflow UI is not set up on this server",
        "The Jupyter server extension mlflow-oidc-jupyter needs its settings (issuer, client, tracking server).",
        detail=problem,
    )


def signin_failed(message: str, login_url: str) -> str:
    return page("Sign-in did not complete", message, action=("Try again", login_url))


def signed_out_done(home_url: str) -> str:
    return page(
        "Signed out of MLflow",
        "This Jupyter server no longer holds your MLflow sign-in: the MLflow UI and every notebook that used it "
        "must sign in again. Notebooks signed in on their own (%mlflow_login --new) keep theirs.",
        action=("Sign in again", home_url),
    )


def signed_in(username: str, ui_url: str) -> str:
    return page(
        "Signed in to MLflow",
        f"This Jupyter server now uses the MLflow sign-in of {username}, for the UI and for notebooks. "
        "You can close this tab.",
        action=("Open MLflow", ui_url),
    )


def confirm_logout(username: str, action_url: str, xsrf_form_html: str) -> str:
    """Sign-out asks first: `xsrf_form_html` is tornado's hidden `_xsrf` input (already markup)."""
    form = (
        f"<form method='post' action='{escape(action_url)}'>{xsrf_form_html}"
        "<button id='mlflow-oidc-action' type='submit'>Sign out</button></form>"
    )
    body = page(
        "Sign out of MLflow?",
        f"This Jupyter server holds the MLflow sign-in of {username}; its notebooks use it too. Signing out ends "
        "it for the MLflow UI and every notebook using it (also at the identity provider); notebooks signed in on "
        "their own (%mlflow_login --new) keep theirs.",
    )
    return body.replace("</body>", form + "</body>")
