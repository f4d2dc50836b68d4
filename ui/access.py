"""Who may use the app: anyone (the default), people with a shared password, or people signed in
with an OpenID Connect provider through Streamlit's ``st.login``.

Settings (environment or ``.streamlit/secrets.toml``): ``INPAINT_STUDIO_PASSWORD`` turns the
password on; ``INPAINT_STUDIO_AUTH=oidc`` uses ``st.login`` with the ``[auth]`` section of the
secrets (``INPAINT_STUDIO_AUTH_PROVIDER`` names the ``[auth.<provider>]`` to use when there are
several), and ``INPAINT_STUDIO_ALLOWED_USERS`` (``alice@example.com, @example.com``) limits it to
those addresses or domains. Every page calls :func:`require_access` first, so no page draws
anything of the app before the person is in.
"""
from __future__ import annotations

import hmac
import time

import streamlit as st

from core.config import Settings

SIGNED_IN = "signed_in"  # the password was given in this session
FAILURES = "sign_in_failures"


def user_allowed(email: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether ``email`` is in ``allowed`` (addresses, or ``@domain`` for a whole domain); an empty
    list lets anyone signed in through."""
    if not allowed:
        return True
    if not email:
        return False
    email = email.strip().lower()
    return any(email == entry or (entry.startswith("@") and email.endswith(entry)) for entry in allowed)


def require_access(settings: Settings) -> None:
    """Stop the page with a sign-in screen unless this session may use the app."""
    if settings.auth == "password":
        _password_gate(settings)
    elif settings.auth == "oidc":
        _oidc_gate(settings)


def sign_out_control(settings: Settings) -> None:
    """A sign-out button (in the sidebar) when sign-in is on."""
    if settings.auth == "password":
        if st.button("Sign out", icon=":material/logout:", key="sign_out"):
            st.session_state[SIGNED_IN] = False
            st.rerun()
    elif settings.auth == "oidc" and st.user.get("is_logged_in", False):
        st.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'you'}")
        st.button("Sign out", icon=":material/logout:", key="sign_out", on_click=st.logout)


def _password_gate(settings: Settings) -> None:
    if st.session_state.get(SIGNED_IN):
        return
    st.title("Inpaint Studio")
    st.caption("This app is private: enter the password you were given.")
    with st.form("sign_in"):
        entered = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        if hmac.compare_digest(entered.encode(), (settings.password or "").encode()):
            st.session_state[SIGNED_IN] = True
            st.session_state[FAILURES] = 0
            st.rerun()
        failures = st.session_state.get(FAILURES, 0) + 1
        st.session_state[FAILURES] = failures
        time.sleep(min(failures, 6) * 0.5)  # each wrong guess waits a little longer
        st.error("Wrong password. Ask whoever runs this app for it.")
    st.stop()


def _has_auth_secrets() -> bool:
    try:
        return "auth" in st.secrets
    except (FileNotFoundError, OSError, KeyError, ValueError, st.errors.StreamlitSecretNotFoundError):
        return False  # no secrets file at all


def _oidc_gate(settings: Settings) -> None:
    if not _has_auth_secrets():
        st.error(
            "Sign-in is set to OpenID Connect (INPAINT_STUDIO_AUTH=oidc), but `.streamlit/secrets.toml` has "
            "no `[auth]` section: add redirect_uri, cookie_secret, client_id, client_secret and "
            "server_metadata_url (see the README's *Access control*)."
        )
        st.stop()
    if not st.user.get("is_logged_in", False):
        st.title("Inpaint Studio")
        st.caption("This app is private: sign in to use it.")
        provider = (settings.auth_provider,) if settings.auth_provider else ()
        st.button("Sign in", type="primary", icon=":material/login:", on_click=st.login, args=provider)
        st.stop()
    email = st.user.get("email")
    if not user_allowed(email, settings.allowed_users):
        st.error(f"{email or 'This account'} may not use this app. Sign in with another account, or ask "
                 "whoever runs it to add you.")
        st.button("Sign out", on_click=st.logout)
        st.stop()
