"""Access control: off by default, a shared password, or OpenID Connect sign-in (AppTest)."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core.config import SettingsError, load_settings
from tests.helpers import TIMEOUT, png_bytes, upload
from ui import session
from ui.access import user_allowed

PAGES = ("streamlit_app.py", "pages/1_Segment.py", "pages/2_Mask.py", "pages/3_Inpaint.py", "pages/4_Relight.py",
         "pages/5_Batch.py", "pages/6_Models.py")


def app(page: str = "streamlit_app.py") -> AppTest:
    return AppTest.from_file(f"../{page}", default_timeout=TIMEOUT).run()


def test_without_settings_anyone_gets_in(app_without_models):
    at = app()
    assert not at.exception
    assert not any(b.label == "Sign in" for b in at.button) and not at.text_input
    assert any(s.value == "Models and device" for s in at.subheader)


@pytest.mark.parametrize("page", PAGES)
def test_with_a_password_every_page_asks_for_it_first(app_without_models, page):
    app_without_models.setenv("INPAINT_STUDIO_PASSWORD", "open sesame")
    at = app(page)
    assert not at.exception
    assert at.text_input[0].label == "Password"
    assert [t.value for t in at.title] == ["Inpaint Studio"]  # nothing of the page itself
    assert not at.get("page_link")  # not even the navigation


def test_a_wrong_password_is_refused_and_the_right_one_lets_the_session_in(app_without_models):
    app_without_models.setenv("INPAINT_STUDIO_PASSWORD", "open sesame")
    at = app()
    at.text_input[0].input("guess")
    at.button[0].click().run()
    assert any("Wrong password" in e.value for e in at.error)
    assert session.PHOTO not in at.session_state
    at.text_input[0].input("open sesame")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert any(s.value == "Models and device" for s in at.subheader)
    upload(at, "photo.png", png_bytes(__import__("PIL.Image", fromlist=["Image"]).new("RGB", (64, 48))))
    assert at.session_state[session.PHOTO].size == (64, 48)
    at.switch_page("pages/2_Mask.py").run()  # the session stays signed in across pages
    assert not any(t.label == "Password" for t in at.text_input)
    next(b for b in at.sidebar.button if b.label == "Sign out").click().run()
    assert at.text_input[0].label == "Password"


def test_oidc_without_its_secrets_says_what_is_missing(app_without_models, tmp_path, monkeypatch):
    app_without_models.setenv("INPAINT_STUDIO_AUTH", "oidc")
    at = app()
    assert not at.exception
    assert any("[auth]" in e.value and "redirect_uri" in e.value for e in at.error)
    assert not any(s.value == "Models and device" for s in at.subheader)


def test_oidc_shows_a_sign_in_button_to_a_visitor(app_without_models):
    app_without_models.setenv("INPAINT_STUDIO_AUTH", "oidc")
    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT)
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
                          "client_id": "id", "client_secret": "secret",
                          "server_metadata_url": "https://accounts.example.com/.well-known/openid-configuration"}
    at.run()
    assert not at.exception
    assert any(b.label == "Sign in" for b in at.button)
    assert not any(s.value == "Models and device" for s in at.subheader)


def test_allowed_users_by_address_or_domain():
    assert user_allowed("anyone@else.org", ())
    allowed = ("alice@example.com", "@corp.example")
    assert user_allowed("Alice@Example.com", allowed)
    assert user_allowed("bob@corp.example", allowed)
    assert not user_allowed("bob@example.com", allowed)
    assert not user_allowed("mallory@notcorp.example.net", allowed)
    assert not user_allowed(None, allowed)


def test_auth_settings_are_checked():
    assert load_settings({}).auth == "none"
    assert load_settings({"INPAINT_STUDIO_PASSWORD": "pw"}).auth == "password"
    assert "pw" not in repr(load_settings({"INPAINT_STUDIO_PASSWORD": "pw"}))
    with pytest.raises(SettingsError, match="needs INPAINT_STUDIO_PASSWORD"):
        load_settings({"INPAINT_STUDIO_AUTH": "password"})
    with pytest.raises(SettingsError, match="INPAINT_STUDIO_AUTH='ldap'"):
        load_settings({"INPAINT_STUDIO_AUTH": "ldap"})
    settings = load_settings({"INPAINT_STUDIO_AUTH": "oidc", "INPAINT_STUDIO_ALLOWED_USERS": "a@b.c, @d.e"})
    assert settings.allowed_users == ("a@b.c", "@d.e")


@pytest.mark.parametrize("email, let_in", [("alice@corp.example", True), ("eve@elsewhere.org", False)])
def test_a_signed_in_user_gets_in_only_when_allowed(app_without_models, monkeypatch, email, let_in):
    import streamlit

    app_without_models.setenv("INPAINT_STUDIO_AUTH", "oidc")
    app_without_models.setenv("INPAINT_STUDIO_ALLOWED_USERS", "@corp.example")
    # What st.user holds after a provider's sign-in (AppTest has no identity provider).
    monkeypatch.setattr(streamlit, "user", {"is_logged_in": True, "email": email, "name": "A Person"})
    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT)
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32}
    at.run()
    assert not at.exception
    assert any(s.value == "Models and device" for s in at.subheader) is let_in
    if let_in:
        assert any(email in c.value for c in at.sidebar.caption)
    else:
        assert any("may not use this app" in e.value for e in at.error)
