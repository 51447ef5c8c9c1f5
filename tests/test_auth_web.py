"""Register, sign in, silent rotation, reuse, sign-out and headers, through the real
forms with CSRF on, as a browser sees them."""

from __future__ import annotations

import json

import pytest
from bs4 import BeautifulSoup
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import SecurityEvent, Session, User

from .conftest import PASSWORD, AuthActions, cookie_value, csrf_token_from, set_cookie_headers


def page_text(response) -> str:
    return BeautifulSoup(response.data, "html.parser").get_text(" ", strip=True)


def signed_in_as(client) -> str | None:
    response = client.get("/api/me")
    return response.json["email"] if response.status_code == 200 else None


# --- accounts -------------------------------------------------------------------------


def test_register_signs_in_and_lands_on_account(client, auth):
    response = auth.register(email="  Alice@Example.COM ")
    assert response.status_code == 302 and response.headers["Location"] == "/account"
    page = client.get("/account")
    assert page.status_code == 200
    assert "alice@example.com" in page_text(page)


def test_register_rejects_a_taken_email_whatever_its_case(client, auth, app):
    auth.register()
    auth.logout()
    response = auth.register(email="ALICE@example.com")
    assert response.status_code == 200
    assert "already exists" in page_text(response)
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(User)).scalar_one() == 1


@pytest.mark.parametrize(
    ("email", "password", "confirm", "message"),
    [
        ("not-an-email", PASSWORD, PASSWORD, "valid email"),
        ("bob@example.com", "short", "short", "8 to 1000 characters"),
        ("bob@example.com", PASSWORD, PASSWORD + "x", "do not match"),
        ("bob@example.com", "x" * 1001, "x" * 1001, "8 to 1000 characters"),
    ],
)
def test_register_form_errors_are_shown_per_field(client, auth, email, password, confirm, message):
    response = auth.register(email=email, password=password, confirm=confirm)
    assert response.status_code == 200
    assert message in page_text(response)
    assert cookie_value(client, "access_token") is None


def test_login_with_the_right_password(client, auth):
    auth.register()
    auth.logout()
    response = auth.login()
    assert response.status_code == 302 and response.headers["Location"] == "/account"
    assert signed_in_as(client) == "alice@example.com"


def test_wrong_password_and_unknown_email_get_the_same_answer(client, auth):
    auth.register()
    auth.logout()
    wrong_password = auth.login(password="not the password")
    unknown_email = auth.login(email="nobody@example.com")
    assert wrong_password.status_code == unknown_email.status_code == 200
    assert "Incorrect email or password." in page_text(wrong_password)
    assert page_text(wrong_password).replace("alice@example.com", "") == page_text(unknown_email).replace(
        "nobody@example.com", ""
    )
    assert signed_in_as(client) is None


def test_unknown_email_still_checks_a_hash(client, auth, monkeypatch):
    from webapp import passwords

    checked = []
    original = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda pw, h: checked.append(h) or original(pw, h))
    auth.login(email="nobody@example.com")
    assert len(checked) == 1


def test_password_truncated_at_72_bytes_does_not_sign_in(client, auth):
    long_password = "a" * 72 + "the rest matters too"
    auth.register(password=long_password)
    auth.logout()
    auth.login(password=long_password[:72])
    assert signed_in_as(client) is None
    auth.login(password=long_password)
    assert signed_in_as(client) == "alice@example.com"


def test_thousand_character_password_works(client, auth):
    password = "é" * 1000
    auth.register(password=password)
    auth.logout()
    auth.login(password=password)
    assert signed_in_as(client) == "alice@example.com"


def test_post_without_csrf_token_is_400_and_signs_nobody_in(client, auth):
    auth.register()
    auth.logout()
    response = client.post("/auth/login", data={"email": "alice@example.com", "password": PASSWORD})
    assert response.status_code == 400
    assert cookie_value(client, "access_token") is None


def test_logout_without_csrf_token_is_400_and_keeps_the_session(client, auth):
    auth.register()
    response = client.post("/auth/logout")
    assert response.status_code == 400
    assert signed_in_as(client) == "alice@example.com"


def test_sign_in_renews_the_csrf_secret(client, auth):
    before = auth.csrf_token("/auth/login")
    with client.session_transaction() as flask_session:
        secret_before = flask_session["csrf_token"]
    auth.register()
    client.get("/account")  # a page with a form: the new secret is made
    with client.session_transaction() as flask_session:
        secret_after = flask_session["csrf_token"]
    # Compare the secrets, not the tokens: tokens carry a timestamp, so two tokens of one
    # secret differ too.
    assert secret_after != secret_before
    # A token planted before sign-in no longer works after it.
    response = client.post("/auth/logout", data={"csrf_token": before})
    assert response.status_code == 400


# --- redirects --------------------------------------------------------------------------


def test_protected_page_redirects_to_login_with_next(client):
    response = client.get("/account?tab=1")
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login?next=/account?tab%3D1"


def test_login_honours_a_local_next(client, auth):
    auth.register()
    auth.logout()
    response = auth.login(next="/account")
    assert response.headers["Location"] == "/account"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.com",
        "https://evil.com",
        "/\\evil.com",
        "\\\\evil.com",
        "/\t/evil.com",
        "/\n/evil.com",
        "javascript:alert(1)",
        "evil.com",
    ],
)
def test_next_never_leaves_the_site(client, auth, target):
    auth.register()
    auth.logout()
    from urllib.parse import quote

    response = auth.login(next=quote(target, safe=""))
    assert response.status_code == 302
    assert response.headers["Location"] == "/account"


def test_api_answers_401_json_instead_of_redirect(client):
    response = client.get("/api/me")
    assert response.status_code == 401
    assert response.json["error"] == "not_signed_in"


# --- silent rotation and reuse ----------------------------------------------------------


def test_expired_access_token_is_renewed_silently(client, auth, clock, app):
    auth.register()
    old_refresh = cookie_value(client, "refresh_token")
    old_access = cookie_value(client, "access_token")
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    response = client.get("/account")
    assert response.status_code == 200
    assert "alice@example.com" in page_text(response)
    cookies = set_cookie_headers(response)
    assert "access_token" in cookies and "refresh_token" in cookies
    assert cookie_value(client, "refresh_token") != old_refresh
    assert cookie_value(client, "access_token") != old_access


def test_parallel_page_requests_inside_the_grace_window_share_one_rotation(client, auth, clock, app):
    auth.register()
    stale_refresh = cookie_value(client, "refresh_token")
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    first = client.get("/api/me")
    winner_refresh = cookie_value(client, "refresh_token")
    # A second request of the same page load still carries the old cookies.
    client.set_cookie("refresh_token", stale_refresh)
    client.delete_cookie("access_token")
    clock.advance(1)
    second = client.get("/api/me")
    assert first.status_code == second.status_code == 200
    # The late request gets a fresh access token and leaves the refresh cookie alone, so
    # the browser keeps the winner's, whatever order the answers arrive in.
    assert "access_token" in set_cookie_headers(second)
    assert "refresh_token" not in set_cookie_headers(second)
    assert winner_refresh != stale_refresh


def test_a_copy_is_caught_after_a_page_kept_the_access_cookie_of_a_grace_answer(app, clock, auth, client):
    """Two requests of a page share a rotation and the grace answer lands last: the
    browser holds the new refresh token beside the grace answer's access token. Every
    request it sends carries that new refresh token, which proves the rotation reached
    it: a copy of the previous token, used after the grace window, is reuse, and is never
    answered with the current token."""
    auth.register()
    stolen, old_access = cookie_value(client, "refresh_token"), cookie_value(client, "access_token")
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    assert client.get("/api/me").status_code == 200  # rotates: the browser has both new cookies
    twin = app.test_client()  # the same page's other request, sent with the same cookies
    twin.set_cookie("refresh_token", stolen)
    twin.set_cookie("access_token", old_access)
    assert twin.get("/api/me").status_code == 200  # a grace answer: an access cookie only
    client.set_cookie("access_token", cookie_value(twin, "access_token"))  # it arrived last
    for _ in range(6):  # a minute of work on that access cookie
        clock.advance(10)
        assert client.get("/api/me").status_code == 200

    thief = app.test_client()
    thief.set_cookie("refresh_token", stolen)
    answer = thief.get("/account")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/auth/login")
    assert thief.get_cookie("refresh_token") is None  # never the current token
    with app.app_context():
        assert db.session.execute(select(Session.revoked_reason)).scalar_one() == "reuse"


def test_reuse_after_the_grace_window_signs_both_holders_out(app, clock, auth, client):
    auth.register()
    stolen = cookie_value(client, "refresh_token")
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    assert client.get("/account").status_code == 200  # the victim rotates
    assert client.get("/account").status_code == 200  # and the new tokens reached it

    thief = app.test_client()
    thief.set_cookie("refresh_token", stolen)
    clock.advance(app.config["REFRESH_REUSE_GRACE"] + 1)
    response = thief.get("/account")
    assert response.status_code == 302 and response.headers["Location"].startswith("/auth/login")
    assert "Max-Age=0" in set_cookie_headers(response)["refresh_token"]  # cleared
    assert thief.get_cookie("refresh_token") is None

    # The victim's own, newer tokens are dead too: the session is revoked.
    victim = client.get("/account")
    assert victim.status_code == 302
    # Told why, in words: a copy of its sign-in was used elsewhere.
    assert "a copy of this browser's sign-in was used somewhere else" in page_text(
        client.get(victim.headers["Location"])
    )
    with app.app_context():
        assert db.session.execute(
            select(SecurityEvent.kind).where(SecurityEvent.kind == "refresh_token_reused")
        ).scalar_one()


def test_expired_refresh_cookie_shows_session_expired_on_login(app, client, auth, clock):
    auth.register()
    clock.advance(app.config["REFRESH_TOKEN_TTL"] + 1)
    response = client.get("/account")
    assert response.status_code == 302
    login_page = client.get(response.headers["Location"])
    assert "Your session has expired" in page_text(login_page)


def test_explicit_refresh_needs_the_csrf_header(client, auth):
    auth.register()
    old_refresh = cookie_value(client, "refresh_token")
    assert client.post("/auth/refresh").status_code == 400
    assert cookie_value(client, "refresh_token") == old_refresh
    token = csrf_token_from(client.get("/account").data)
    response = client.post("/auth/refresh", headers={"X-CSRFToken": token})
    assert response.status_code == 204
    assert cookie_value(client, "refresh_token") != old_refresh


def test_explicit_refresh_without_cookie_is_401_json(client, auth):
    token = auth.csrf_token("/auth/login")
    response = client.post("/auth/refresh", headers={"X-CSRFToken": token})
    assert response.status_code == 401 and response.json["error"] == "session_expired"


# --- sign-out ---------------------------------------------------------------------------


def test_logout_revokes_so_the_old_access_cookie_is_refused(app, client, auth):
    auth.register()
    access, refresh = cookie_value(client, "access_token"), cookie_value(client, "refresh_token")
    response = auth.logout()
    assert response.status_code == 302 and response.headers["Location"] == "/auth/login"
    assert response.headers["Clear-Site-Data"] == '"cache"'
    cleared = set_cookie_headers(response)
    assert "Max-Age=0" in cleared["access_token"] and "Max-Age=0" in cleared["refresh_token"]

    replay = app.test_client()
    replay.set_cookie("access_token", access)
    replay.set_cookie("refresh_token", refresh)
    assert replay.get("/api/me").status_code == 401
    with app.app_context():
        assert db.session.execute(select(Session.revoked_at)).scalar_one() is not None


def test_logout_response_never_sets_the_cookies_again(app, client, auth, clock):
    auth.register()
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)  # logout's own request rotates first
    response = auth.logout()
    for name in ("access_token", "refresh_token"):
        assert "Max-Age=0" in set_cookie_headers(response)[name]
    assert client.get("/api/me").status_code == 401


# --- cookies and headers ----------------------------------------------------------------


def test_cookie_attributes_without_remember_me(app, client, auth, clock):
    auth.register()
    auth.logout()
    # Time passes while a request is served: the cookie still lives the token's 900 s.
    app.config["CLOCK"] = lambda: clock.advance(0.001)
    response = auth.login()
    cookies = set_cookie_headers(response)
    for name in ("access_token", "refresh_token"):
        assert "HttpOnly" in cookies[name] and "SameSite=Lax" in cookies[name] and "Path=/" in cookies[name]
        assert "Domain" not in cookies[name] and "Secure" not in cookies[name]
    assert "Max-Age=900" in cookies["access_token"]
    assert "Max-Age" not in cookies["refresh_token"] and "Expires" not in cookies["refresh_token"]


def test_remember_me_makes_the_refresh_cookie_persistent(app, client, auth, clock):
    auth.register()
    auth.logout()
    app.config["CLOCK"] = lambda: clock.advance(0.001)
    cookies = set_cookie_headers(auth.login(remember=True))
    assert "Max-Age=604800" in cookies["refresh_token"]


@pytest.mark.parametrize("app_config", [{"COOKIE_SECURE": True, "COOKIE_SAMESITE": "Strict"}])
def test_secure_cookies_use_host_prefix(client, app_config):
    register_page = client.get("/auth/register", base_url="https://localhost")
    token = csrf_token_from(register_page.data)
    response = client.post(
        "/auth/register",
        base_url="https://localhost",
        headers={"Referer": "https://localhost/auth/register"},
        data={"email": "alice@example.com", "password": PASSWORD, "confirm": PASSWORD, "csrf_token": token},
    )
    cookies = set_cookie_headers(response)
    for name in ("__Host-access_token", "__Host-refresh_token", "__Host-session"):
        assert "Secure" in cookies[name] and "SameSite=Strict" in cookies[name] and "HttpOnly" in cookies[name]
        assert "Path=/" in cookies[name] and "Domain" not in cookies[name]
    # The browser that holds them is signed in by them.
    assert client.get("/api/me", base_url="https://localhost").json["email"] == "alice@example.com"
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert int(response.headers["Strict-Transport-Security"].split("=")[1].split(";")[0]) >= 31536000


def test_security_headers_on_every_page(client, auth):
    for response in (client.get("/"), client.get("/auth/login"), client.get("/nope")):
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Cache-Control" not in client.get("/").headers or client.get("/").headers["Cache-Control"] != "no-store"
    auth.register()
    assert client.get("/account").headers["Cache-Control"] == "no-store"
    assert client.get("/api/me").headers["Cache-Control"] == "no-store"
    assert client.get("/").headers["Cache-Control"] == "no-store"


def test_landing_page_says_who_is_signed_in(client, auth):
    landing = client.get("/")
    assert "Sign in" in page_text(landing)
    # What a browser tab shows: plain words, nothing of the page inside.
    assert BeautifulSoup(landing.data, "html.parser").title.get_text() == "Welcome · Webapp"
    auth.register()
    assert "Signed in as alice@example.com" in page_text(client.get("/"))


# --- bad cookies and outages ------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
        "x" * 10_000,
        "\u2603" * 50,
        "abc.0." + "A" * 43,
    ],
)
def test_malformed_cookies_are_signed_out_requests(app, value):
    # Sent raw, as an attacker would: UTF-8 bytes seen as latin-1 by WSGI. A client
    # without a cookie jar, or the jar would replace this header.
    raw = value.encode().decode("latin-1")
    client = app.test_client(use_cookies=False)
    cookie = {"Cookie": f"access_token={raw}; refresh_token={raw}"}
    response = client.get("/account", headers=cookie)
    assert response.status_code == 302
    if value:
        # The cookies arrived and were judged worthless: the answer clears them.
        assert "Max-Age=0" in set_cookie_headers(response)["refresh_token"]
    assert client.get("/api/me", headers=cookie).status_code == 401


def test_database_unreachable_is_503_and_cookies_stay(clock):
    from webapp import tokens

    from .conftest import make_app

    dead = make_app("postgresql+psycopg://postgres@127.0.0.1:1/nothing", clock)
    policy = dead.extensions["session_policy"]
    now = int(clock().timestamp())
    client = dead.test_client()
    # Genuine tokens: the app must ask the (unreachable) database about them.
    client.set_cookie("refresh_token", tokens.mint_refresh_token("A" * 22, 3, keys=policy.keys))
    for access_expires in (now + 60, now - 60):  # valid, then expired (forces a rotation)
        access = tokens.encode_access_token(
            user_id=1,
            session_id="A" * 22,
            counter=0,
            issued_at=now - 100,
            expires_at=access_expires,
            keys=policy.keys,
            issuer=policy.issuer,
            audience=policy.audience,
        )
        client.set_cookie("access_token", access)
        for path in ("/account", "/api/me", "/healthz"):
            response = client.get(path)
            assert response.status_code == 503, path
            assert not {"access_token", "refresh_token"} & set(set_cookie_headers(response))
    assert client.get("/healthz").json["error"] == "unavailable"
    assert "unavailable" in client.get("/account").get_data(as_text=True)


def test_healthz_is_200_when_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json["status"] == "ok"


@pytest.mark.parametrize(
    "body", ["5", "[1]", '"abc"', "[" * 30000, '{"email": ["alice@example.com"], "password": "x"}']
)
@pytest.mark.parametrize("path", ["/auth/login", "/auth/register"])
def test_json_bodies_to_form_endpoints_are_not_read(client, auth, path, body):
    auth.register()
    auth.logout()
    token = auth.csrf_token(path)
    response = client.post(path, data=body, content_type="application/json", headers={"X-CSRFToken": token})
    assert response.status_code == 200  # the form re-renders, empty
    assert signed_in_as(client) is None


@pytest.mark.parametrize(
    ("path", "email"), [("/auth/login", "alice@example.com"), ("/auth/register", "bob@example.com")]
)
def test_valid_credentials_in_a_json_body_sign_nobody_in_and_create_nobody(app, client, auth, path, email):
    auth.register()
    auth.logout()
    with app.app_context():
        users_before = db.session.execute(select(func.count()).select_from(User)).scalar_one()
    token = auth.csrf_token(path)
    body = json.dumps({"email": email, "password": PASSWORD, "confirm": PASSWORD, "csrf_token": token})
    # The CSRF header passes the check: only the form's refusal to read JSON stops this.
    response = client.post(path, data=body, content_type="application/json", headers={"X-CSRFToken": token})
    assert response.status_code == 200  # the form re-renders, empty
    assert signed_in_as(client) is None
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(User)).scalar_one() == users_before


def test_a_secret_rotation_keeps_open_pages_working(database_url, clock):
    from .conftest import TEST_SECRET, make_app

    before = make_app(database_url, clock)
    browser = before.test_client()
    AuthActions(browser).register()
    page_token = csrf_token_from(browser.get("/account").data)

    after = make_app(
        database_url, clock, environ={"SECRET_KEY": "the-new-secret-" + "n" * 40, "SECRET_KEY_FALLBACKS": TEST_SECRET}
    )
    browser.application = after  # the same browser, its cookies and its open page
    assert browser.get("/api/me").status_code == 200
    response = browser.post("/auth/refresh", headers={"X-CSRFToken": page_token})
    assert response.status_code == 204


def test_no_token_appears_in_a_page_a_json_body_or_a_log(app, client, auth, clock, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    auth.register()
    clock.advance(app.config["ACCESS_TOKEN_TTL"] + 1)
    client.get("/account")  # a rotation, too
    secrets_seen = {cookie_value(client, "access_token"), cookie_value(client, "refresh_token")}
    # The refresh token's MAC alone is as secret as the token.
    secrets_seen.add(cookie_value(client, "refresh_token").rsplit(".", 1)[1])
    bodies = [
        client.get(path).get_data(as_text=True)
        for path in (
            "/",
            "/account",
            "/account/sessions",
            "/account/password",
            "/api/me",
            "/api/session",
            "/api/security-events",
        )
    ]
    for secret in secrets_seen:
        assert all(secret not in body for body in bodies)
        assert secret not in caplog.text


def test_a_database_error_logs_no_email_or_password_hash(app, client, auth, caplog):
    import logging

    from sqlalchemy import text

    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("the failure is made by dropping a table, which PostgreSQL's foreign keys refuse")
    with app.app_context():
        db.session.execute(text("DROP TABLE users"))
        db.session.commit()
    caplog.set_level(logging.WARNING)
    response = auth.register(email="carol@example.com")
    assert response.status_code == 503
    assert caplog.text  # the outage is logged...
    assert "carol@example.com" not in caplog.text  # ...without the statement's parameters
    assert "bcrypt_sha256$" not in caplog.text
