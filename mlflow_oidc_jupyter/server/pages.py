"""The few HTML pages the extension shows itself: signed out, upstream errors, sign-in results."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

#: Every value is escaped (autoescape); only tornado's own `_xsrf` input is passed in as markup.
_pages = Environment(
    loader=PackageLoader("mlflow_oidc_jupyter.server", "templates"), autoescape=select_autoescape(["html"])
)


def _render(template: str, title: str, message: str, **values: object) -> str:
    return _pages.get_template(template).render(title=title, message=message, **values)


def page(title: str, message: str, *, action: tuple[str, str] | None = None, detail: str | None = None) -> str:
    """A small page: a title, one sentence, an optional button (label, href) and an optional detail line."""
    return _render("page.html", title, message, action=action, detail=detail)


def signed_out(login_url: str, reason: str | None = None) -> str:
    return _render(
        "signed_out.html",
        "Sign in to MLflow",
        "The MLflow UI needs you to sign in with your organisation's account.",
        action=("Sign in", login_url),
        detail=reason,
    )


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
    return _render(
        "confirm_logout.html",
        "Sign out of MLflow?",
        f"This Jupyter server holds the MLflow sign-in of {username}; its notebooks use it too. Signing out ends "
        "it for the MLflow UI and every notebook using it (also at the identity provider); notebooks signed in on "
        "their own (%mlflow_login --new) keep theirs.",
        action_url=action_url,
        xsrf_form_html=Markup(xsrf_form_html),  # noqa: S704 - tornado's own markup, no user input
    )
