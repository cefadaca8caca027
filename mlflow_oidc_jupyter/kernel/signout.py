"""`%mlflow_logout`: end a kernel's sign-in or the Jupyter server's, and say whom that affected."""

from __future__ import annotations

from ..broker_contract import broker_from_env
from ..errors import OIDCError
from ..oidc.broker import BrokerSession, server_state
from ..oidc.default import AnySession
from ..oidc.tokens import Identity
from ..settings import Settings
from .scope import SCOPE_KERNEL, SignOut, as_user


def sign_out(session: AnySession | None, scope: str, scope_words: str) -> SignOut:
    """This kernel's sign-out: it stops using a holder's session, or ends its own (revoked unless shared)."""
    if session is None or (not session.signed_in and session.holder is None):
        if session is not None:
            session.logout()  # drops a leftover cache entry, if any
        return SignOut("This kernel is not signed in to MLflow; nothing to sign out.")
    who = session.identity
    if session.holder is not None:
        session.logout()  # this kernel stops using the holder's session; the holder stays signed in
        server_who = session.holder_identity
        kept = f" stay signed in{as_user(server_who)}" if server_who else " are not affected"
        return SignOut(
            f"This kernel no longer uses the Jupyter server's MLflow sign-in{as_user(who)}: its MLflow calls now "
            f"fail until %mlflow_login. The server, the MLflow UI and other notebooks{kept}; "
            "%mlflow_logout --server (or Sign out in the MLflow UI) signs them all out."
        )
    if scope == SCOPE_KERNEL:
        shared_grant = server_holds(who)
        # The provider may tie this kernel's tokens to the grant of the server's sign-in (same user, same
        # client): revoking them would end the server's too. Then they are only forgotten, never revoked.
        end_session_url = session.logout(revoke=not shared_grant)
        how = (
            "its tokens are forgotten (not revoked: the Jupyter server is signed in as the same user, and "
            "revoking would end that too)"
            if shared_grant
            else "its refresh token is revoked"
        )
        return SignOut(
            f"Signed out of MLflow in this kernel only{as_user(who)}: {how}. The Jupyter server, the MLflow UI and "
            "other notebooks keep their sign-in.",
            None if shared_grant else end_session_url,
        )
    end_session_url = session.logout()
    return SignOut(
        f"Signed out of MLflow{as_user(who)}: refresh token revoked, cached tokens deleted, for {scope_words}.",
        end_session_url,
    )


def server_holds(who: Identity | None) -> bool:
    """Whether the Jupyter server is (or may be) signed in as `who`: then this kernel must not revoke."""
    broker = broker_from_env()
    if broker is None:
        return False
    state = server_state(*broker)
    if state is None:
        return True  # unknown: never risk the server's sign-in
    subject = (state.get("identity") or {}).get("subject") if state.get("signed_in") else None
    return subject is not None and who is not None and subject == who.subject


def sign_out_server(session: AnySession | None) -> SignOut:
    """`--server`: sign the Jupyter server out, for the MLflow UI and every kernel using its session."""
    broker = broker_from_env()
    if broker is None:
        raise OIDCError(
            "This kernel was not started by a Jupyter server with the MLflow sign-in: no server to sign out."
        )
    uses_it = session is not None and session.holder_url == broker[0]
    settings = session.settings if session is not None else Settings.load()
    target = session if uses_it and session is not None else BrokerSession(settings, *broker, background_refresh=False)
    state = server_state(*broker) or {}
    who = Identity.from_dict(state["identity"]) if state.get("signed_in") and state.get("identity") else None
    target.sign_out_holder()
    if target is not session:
        target.close()
    message = (
        f"Signed the Jupyter server out of MLflow{as_user(who)}: the MLflow UI and every notebook using its sign-in"
        + (", this one included," if uses_it else "")
        + " must sign in again. Notebooks signed in on their own (%mlflow_login --new) keep theirs."
    )
    if not uses_it and session is not None and session.signed_in:
        message += f" This kernel keeps its own sign-in{as_user(session.identity)}; %mlflow_logout ends it."
    return SignOut(message)
